/* Marker editor, live mode: a graph cut of the image from the strokes on screen after every stroke
 * (POST /api/images/{id}/live), shown under the strokes; Accept takes it as markers. */

import { api } from "./api.js";
import { decodeLabels, encodeLabels } from "./codec.js";
import { $, enc, fail, toast } from "./dom.js";
import { app } from "./state.js";

export const liveMethods = {
  setLive(on) {
    this.live = on;
    $("live-toggle").checked = on;
    if (!on) {
      this.liveLabels = null;
      $("live-accept").disabled = true;
      $("live-status").textContent = "";
      this.paintLive();
      this.draw();
    } else {
      this.requestLive();
    }
  },

  /* one request in flight; strokes drawn meanwhile ask again when it returns, with the strokes of then */
  async requestLive() {
    if (!this.live || !this.labels) return;
    if (this.liveBusy) { this.livePending = true; return; }
    const seen = new Set();
    for (let i = 0; i < this.labels.length && seen.size < 2; i++) if (this.labels[i]) seen.add(this.labels[i]);
    if (seen.size < 2) {  // the cut needs strokes of two classes; no request until there are
      this.liveLabels = null;
      $("live-accept").disabled = true;
      $("live-status").textContent = "live: draw a background and an object stroke";
      this.paintLive();
      this.draw();
      return;
    }
    this.liveBusy = true;
    const id = this.imageId;
    try {
      const body = { shape: this.shape, encoding: app.project.marker_encoding, data: await encodeLabels(this.labels) };
      const answer = await api(`/api/images/${enc(id)}/live`, { method: "POST", json: body });
      if (id !== this.imageId || !this.live) return;
      this.liveLabels = await decodeLabels(answer.data);
      $("live-accept").disabled = false;
      $("live-status").textContent = `live · ${Math.round(answer.seconds * 1000)} ms`;
    } catch (error) {
      if (id !== this.imageId) return;
      this.liveLabels = null;
      $("live-accept").disabled = true;
      if (error.status === 400) $("live-status").textContent = "live: draw a background and an object stroke";
      else fail(error);
    } finally {
      this.liveBusy = false;
      this.paintLive();
      this.draw();
      if (this.livePending) { this.livePending = false; this.requestLive(); }
    }
  },

  paintLive() {
    const canvas = this.liveCanvas;
    if (!this.liveLabels || !this.rows) { canvas.width = 0; return; }
    canvas.width = this.cols;
    canvas.height = this.rows;
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(this.cols, this.rows);
    for (let r = 0; r < this.rows; r++) {
      for (let c = 0; c < this.cols; c++) {
        const label = this.liveLabels[this.index(r, c)];
        if (label > 0) this.setOverlayPixel(r, c, label + 1, image.data);  // class k is marker label k + 1
      }
    }
    ctx.putImageData(image, 0, 0);
  },

  /* the live segmentation becomes markers of every unmarked pixel (one undo step) */
  acceptLive() {
    if (!this.liveLabels) return;
    const indices = [], after = [];
    for (let i = 0; i < this.labels.length; i++) {
      if (this.labels[i] === 0) { indices.push(i); after.push(this.liveLabels[i] + 1); }
    }
    if (!indices.length) return;
    const entry = { indices: Int32Array.from(indices), before: new Uint8Array(indices.length), after: Uint8Array.from(after) };
    this.apply(entry, entry.after);
    this.undoStack.push(entry);
    this.redoStack = [];
    this.setDirty(true);
    toast(`Took the live segmentation as markers of ${indices.length} pixels; save to keep them`);
  },
};
