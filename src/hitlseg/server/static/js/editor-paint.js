/* Marker editor, painting: brush and eraser strokes on the label array, panning, undo and redo, editing time. */

import { $ } from "./dom.js";

export const paintMethods = {
  offsets() {
    if (this._offsets && this._offsets.size === this.size) return this._offsets.list;
    const r = this.size / 2, list = [];
    const reach = Math.ceil(r);
    for (let dy = -reach; dy <= reach; dy++) {
      for (let dx = -reach; dx <= reach; dx++) if (dx * dx + dy * dy <= r * r || (dx === 0 && dy === 0)) list.push([dy, dx]);
    }
    this._offsets = { size: this.size, list };
    return list;
  },

  dab(x, y) {
    const value = this.tool === "eraser" ? 0 : this.cls + 1;
    const cr = Math.floor(y), cc = Math.floor(x);
    const data = this.overlayData.data;
    let changed = false;
    for (const [dy, dx] of this.offsets()) {
      const r = cr + dy, c = cc + dx;
      if (r < 0 || c < 0 || r >= this.rows || c >= this.cols) continue;
      const i = this.index(r, c);
      const old = this.labels[i];
      if (old === value) continue;
      if (!this.stroke.before.has(i)) this.stroke.before.set(i, old);
      this.labels[i] = value;
      this.setOverlayPixel(r, c, value, data);
      changed = true;
    }
    return changed;
  },

  strokeTo(x, y) {
    const [px, py] = this.stroke.last;
    const distance = Math.hypot(x - px, y - py);
    const steps = Math.max(1, Math.ceil(distance / Math.max(0.5, this.size / 4)));
    let changed = false;
    for (let k = 1; k <= steps; k++) changed = this.dab(px + ((x - px) * k) / steps, py + ((y - py) * k) / steps) || changed;
    this.stroke.last = [x, y];
    if (changed) this.overlay.getContext("2d").putImageData(this.overlayData, 0, 0);
  },

  down(event) {
    if (!this.labels) return;
    this.canvas.setPointerCapture(event.pointerId);
    const panning = event.button === 1 || (event.button === 0 && (this.tool === "pan" || this.spaceDown));
    if (panning) {
      this.pan = { x: event.offsetX, y: event.offsetY, ox: this.ox, oy: this.oy };
      this.canvas.classList.add("panning");
      return;
    }
    if (event.button !== 0) return;
    const [x, y] = this.toImage(event.offsetX, event.offsetY);
    this.stroke = { before: new Map(), last: [x, y] };
    if (this.dab(x, y)) this.overlay.getContext("2d").putImageData(this.overlayData, 0, 0);
    this.draw();
  },

  move(event) {
    this.pointer = [event.offsetX, event.offsetY];
    if (this.pan) {
      this.ox = this.pan.ox + event.offsetX - this.pan.x;
      this.oy = this.pan.oy + event.offsetY - this.pan.y;
    } else if (this.stroke) {
      const [x, y] = this.toImage(event.offsetX, event.offsetY);
      this.strokeTo(x, y);
    }
    const [x, y] = this.toImage(event.offsetX, event.offsetY);
    const inside = x >= 0 && y >= 0 && x < this.cols && y < this.rows;
    $("editor-status").textContent = inside ? `x ${Math.floor(x)}  y ${Math.floor(y)}` + this.statusSuffix() : this.statusSuffix();
    this.draw();
  },

  up(event) {
    if (this.pan) {
      this.pan = null;
      this.canvas.classList.toggle("panning", this.tool === "pan");
    }
    if (this.stroke) {
      const before = this.stroke.before;
      this.stroke = null;
      if (before.size) {
        const indices = Int32Array.from(before.keys());
        const entry = { indices, before: Uint8Array.from(before.values()), after: Uint8Array.from(indices, (i) => this.labels[i]) };
        this.undoStack.push(entry);
        if (this.undoStack.length > 200) this.undoStack.shift();
        this.redoStack = [];
        this.setDirty(true);
        this.requestLive();
      }
    }
    this.draw();
  },

  apply(entry, values) {
    for (let k = 0; k < entry.indices.length; k++) this.labels[entry.indices[k]] = values[k];
    this.paintOverlay();
    this.draw();
  },

  undo() {
    const entry = this.undoStack.pop();
    if (!entry) return;
    this.apply(entry, entry.before);
    this.redoStack.push(entry);
    this.setDirty(true);
    this.requestLive();
  },

  redo() {
    const entry = this.redoStack.pop();
    if (!entry) return;
    this.apply(entry, entry.after);
    this.undoStack.push(entry);
    this.setDirty(true);
    this.requestLive();
  },

  setDirty(dirty) {
    if (dirty) { this.tick(); this.edits = (this.edits || 0) + 1; }
    this.dirty = dirty;
    this.updateStatus();
  },

  /* editing time of the current image: sums the gaps between edits, a gap over a minute counts as one minute */
  tick() {
    const now = performance.now();
    if (this.lastEdit !== null) this.editSeconds += Math.min(60, (now - this.lastEdit) / 1000);
    else this.editSeconds += 2;  // the first stroke itself
    this.lastEdit = now;
  },
};
