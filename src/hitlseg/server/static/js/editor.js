/* Marker editor: the image (or a slice of a volume) under the markers, drawn on a canvas. This module holds
 * the editor's state, loading and the overlay; its view transform, painting and undo, live mode, and saving
 * are the method groups of editor-view.js, editor-paint.js, editor-live.js and editor-save.js. */

import { api } from "./api.js";
import { decodeLabels } from "./codec.js";
import { $, el, enc, hexToRgb, loadImage } from "./dom.js";
import { liveMethods } from "./editor-live.js";
import { paintMethods } from "./editor-paint.js";
import { saveMethods } from "./editor-save.js";
import { viewMethods } from "./editor-view.js";
import { app } from "./state.js";

export const editor = {
  imageId: null, info: null, shape: null, ndim: 2, labels: null, version: 0, dirty: false,
  axis: 0, slice: 0, rows: 0, cols: 0, picture: null, pictures: new Map(),
  overlay: document.createElement("canvas"), overlayData: null,
  live: false, liveLabels: null, liveCanvas: document.createElement("canvas"), liveBusy: false, livePending: false,
  scale: 1, ox: 0, oy: 0, tool: "brush", cls: 1, size: 3, opacity: 0.7,
  editSeconds: 0, lastEdit: null,
  undoStack: [], redoStack: [], stroke: null, pan: null, pointer: null, spaceDown: false,
  canvas: null, ctx: null, frame: 0, palette: [],
  afterSave: () => {},  // what else to refresh after a save (set by main.js)
  afterOpen: () => {},  // what else to show for a newly opened image (set by main.js)
  afterSlice: () => {},  // what else follows a volume's slice or axis (set by main.js)

  init() {
    this.canvas = $("editor-canvas");
    this.ctx = this.canvas.getContext("2d");
    new ResizeObserver(() => this.resize()).observe($("canvas-wrap"));
    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => this.down(e));
    c.addEventListener("pointermove", (e) => this.move(e));
    c.addEventListener("pointerup", (e) => this.up(e));
    c.addEventListener("pointercancel", (e) => this.up(e));
    c.addEventListener("pointerleave", () => { this.pointer = null; this.draw(); });
    c.addEventListener("wheel", (e) => { e.preventDefault(); this.zoomAt(e.offsetX, e.offsetY, Math.pow(1.0015, -e.deltaY)); }, { passive: false });
    c.addEventListener("contextmenu", (e) => e.preventDefault());
    c.addEventListener("auxclick", (e) => e.preventDefault());
  },

  setClasses(names, palette) {
    this.palette = palette.map(hexToRgb);
    const box = $("class-buttons");
    box.replaceChildren(...names.map((name, index) => el("button", {
      class: "cls" + (index === this.cls ? " active" : ""), id: `class-${index}`, "data-testid": `class-${index}`,
      title: `${name} (key ${index})`, onclick: () => this.setClass(index),
    }, [el("span", { class: "swatch", style: `background:${palette[index]}` }), name])));
  },

  setClass(index) {
    if (index < 0 || index >= this.palette.length) return;
    this.cls = index;
    if (this.tool === "eraser" || this.tool === "pan") this.setTool("brush");
    document.querySelectorAll("#class-buttons .cls").forEach((b, i) => b.classList.toggle("active", i === index));
  },

  setTool(tool) {
    this.tool = tool;
    for (const name of ["brush", "eraser", "pan"]) $(`tool-${name}`).classList.toggle("active", name === tool);
    this.canvas.classList.toggle("panning", tool === "pan");
  },

  setSize(size) {
    this.size = Math.max(1, Math.min(40, Math.round(size)));
    $("brush-size").value = this.size;
    $("brush-size-value").textContent = this.size;
    this.draw();
  },

  /* -- loading -- */
  async open(id, force = false) {
    if (!force && this.dirty && id !== this.imageId &&
        !window.confirm(`Markers of ${this.imageId} are not saved. Discard them?`)) {
      $("image-select").value = this.imageId;
      return false;
    }
    const info = app.byId.get(id) || await api(`/api/images/${enc(id)}`);
    const markers = await api(`/api/images/${enc(id)}/markers`);
    const labels = await decodeLabels(markers.data);
    const size = markers.shape.reduce((a, b) => a * b, 1);
    if (labels.length !== size) throw new Error(`markers of ${id}: got ${labels.length} bytes for shape ${markers.shape}`);
    this.imageId = id;
    this.picture = null;  // until showSlice has drawn this image, nothing of the last one is shown
    this.info = info;
    this.shape = markers.shape;
    this.ndim = markers.shape.length;
    this.labels = labels;
    this.version = markers.version;
    this.dirty = false;
    this.editSeconds = 0;
    this.lastEdit = null;
    this.undoStack = [];
    this.redoStack = [];
    this.pictures = new Map();
    this.liveLabels = null;
    $("live-accept").disabled = true;
    $("live-status").textContent = "";
    $("conflict-banner").hidden = true;
    this.conflict = null;
    this.conflictMask = null;
    $("image-select").value = id;
    $("slice-controls").hidden = this.ndim !== 3;
    if (this.ndim === 3) {
      this.axis = Math.min(this.axis, 2);
      $("axis-select").value = String(this.axis);
      this.slice = Math.floor(this.shape[this.axis] / 2);
    } else {
      this.axis = 0;
      this.slice = 0;
    }
    await this.showSlice();
    this.fit();
    this.updateStatus();
    if (app.view === "editor") history.replaceState(null, "", `#editor/${enc(id)}`);
    if (this.live) this.requestLive();
    this.afterOpen(id);
    return true;
  },

  viewShape() {
    if (this.ndim === 2) return [this.shape[0], this.shape[1]];
    const [d, h, w] = this.shape;
    return [[h, w], [d, w], [d, h]][this.axis];
  },

  /* index in the label array of view pixel (r, c) */
  index(r, c) {
    if (this.ndim === 2) return r * this.shape[1] + c;
    const [, h, w] = this.shape;
    const s = this.slice;
    if (this.axis === 0) return s * h * w + r * w + c;
    if (this.axis === 1) return r * h * w + s * w + c;
    return r * h * w + c * w + s;
  },

  async showSlice() {
    [this.rows, this.cols] = this.viewShape();
    if (this.ndim === 3) {
      const slider = $("slice-slider");
      slider.max = this.shape[this.axis] - 1;
      slider.value = this.slice;
      $("slice-label").textContent = `${this.slice + 1} / ${this.shape[this.axis]}`;
    }
    const key = `${this.axis}:${this.slice}`;
    let picture = this.pictures.get(key);
    if (!picture) {
      const query = this.ndim === 3 ? `?slice=${this.slice}&axis=${this.axis}` : "";
      const id = this.imageId;
      picture = await loadImage(`/api/images/${enc(id)}/png${query}`);
      if (id !== this.imageId) return;
      this.pictures.set(key, picture);
    }
    this.picture = picture;
    this.overlay.width = this.cols;
    this.overlay.height = this.rows;
    this.overlayData = this.overlay.getContext("2d").createImageData(this.cols, this.rows);
    this.paintOverlay();
    this.paintLive();
    this.draw();
    if (this.ndim === 3) this.afterSlice();
  },

  paintOverlay() {
    const data = this.overlayData.data;
    const flagged = this.conflictMask;
    for (let r = 0; r < this.rows; r++) {
      for (let c = 0; c < this.cols; c++) {
        const i = this.index(r, c);
        if (flagged && flagged[i] && this.labels[i] === 0) {  // a merge conflict still unresolved: white
          const o = 4 * (r * this.cols + c);
          data[o] = 255; data[o + 1] = 255; data[o + 2] = 255; data[o + 3] = 255;
        } else {
          this.setOverlayPixel(r, c, this.labels[i], data);
        }
      }
    }
    this.overlay.getContext("2d").putImageData(this.overlayData, 0, 0);
  },

  setOverlayPixel(r, c, label, data) {
    const o = 4 * (r * this.cols + c);
    if (label === 0) { data[o + 3] = 0; return; }
    const rgb = this.palette[(label - 1) % this.palette.length] || [255, 255, 255];
    data[o] = rgb[0]; data[o + 1] = rgb[1]; data[o + 2] = rgb[2]; data[o + 3] = 255;
  },


  statusSuffix() {
    return this.imageId ? `   ·   ${this.imageId}  ${this.shape.join("×")}` : "";
  },

  updateStatus() {
    const label = this.version ? `version ${this.version}` : "no markers saved";
    $("marker-version").textContent = this.dirty ? `${label} · unsaved changes` : label;
    $("save-markers").disabled = !this.dirty;
    $("undo").disabled = !this.undoStack.length;
    $("redo").disabled = !this.redoStack.length;
    $("editor-status").textContent = this.statusSuffix();
  }
};

Object.assign(editor, viewMethods, paintMethods, liveMethods, saveMethods);

// the browser tests and the console use it
window.editor = editor;
