/* Marker editor, view transform: canvas size, fit, zoom, image <-> screen coordinates, drawing a frame. */

import { $ } from "./dom.js";

export const viewMethods = {
  resize() {
    const wrap = $("canvas-wrap");
    const dpr = window.devicePixelRatio || 1;
    const width = wrap.clientWidth, height = wrap.clientHeight;
    if (!width || !height) return;
    const first = !this.cssWidth;
    this.cssWidth = width; this.cssHeight = height;
    this.canvas.width = Math.round(width * dpr);
    this.canvas.height = Math.round(height * dpr);
    if (first) this.fit(); else this.draw();
  },

  fit() {
    if (!this.cssWidth || !this.rows) return;
    const scale = Math.min(this.cssWidth / this.cols, this.cssHeight / this.rows) * 0.94;
    this.scale = scale;
    this.ox = (this.cssWidth - this.cols * scale) / 2;
    this.oy = (this.cssHeight - this.rows * scale) / 2;
    this.draw();
  },

  zoomAt(x, y, factor) {
    const scale = Math.max(0.05, Math.min(80, this.scale * factor));
    factor = scale / this.scale;
    this.ox = x - (x - this.ox) * factor;
    this.oy = y - (y - this.oy) * factor;
    this.scale = scale;
    this.draw();
  },

  toImage(x, y) { return [(x - this.ox) / this.scale, (y - this.oy) / this.scale]; },

  /* client (viewport) coordinates of image point (x, y) of the current view; used by tests */
  imageToClient(x, y) {
    const rect = this.canvas.getBoundingClientRect();
    return [rect.left + this.ox + x * this.scale, rect.top + this.oy + y * this.scale];
  },

  draw() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.render(); });
  },

  render() {
    const ctx = this.ctx;
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#202124";
    ctx.fillRect(0, 0, this.cssWidth || 0, this.cssHeight || 0);
    if (!this.picture) return;
    ctx.imageSmoothingEnabled = false;
    const w = this.cols * this.scale, h = this.rows * this.scale;
    ctx.drawImage(this.picture, this.ox, this.oy, w, h);
    if (this.liveLabels && this.liveCanvas.width) {
      ctx.globalAlpha = 0.4;
      ctx.drawImage(this.liveCanvas, this.ox, this.oy, w, h);
    }
    ctx.globalAlpha = this.opacity;
    ctx.drawImage(this.overlay, this.ox, this.oy, w, h);
    ctx.globalAlpha = 1;
    if (this.pointer && this.tool !== "pan" && !this.pan) {
      const [x, y] = this.pointer;
      ctx.beginPath();
      ctx.arc(x, y, Math.max(1.5, (this.size / 2) * this.scale), 0, 2 * Math.PI);
      ctx.strokeStyle = this.tool === "eraser" ? "#fff" : `rgb(${this.palette[this.cls].join(",")})`;
      ctx.lineWidth = 1.5;
      ctx.stroke();
    }
  },
};
