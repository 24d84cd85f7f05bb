/* Marker editor, controls: the toolbar, the conflict banner and the keyboard shortcuts. */

import { $, fail } from "./dom.js";
import { editor } from "./editor.js";
import { learnFilters } from "./selection.js";
import { app } from "./state.js";

export function bindEditorControls() {
  $("image-select").addEventListener("change", (e) => editor.open(e.target.value).catch(fail));
  const step = (delta) => {
    const ids = app.images.map((i) => i.id);
    const index = ids.indexOf(editor.imageId);
    const next = ids[(index + delta + ids.length) % ids.length];
    if (next) editor.open(next).catch(fail);
  };
  $("prev-image").onclick = () => step(-1);
  $("next-image").onclick = () => step(1);
  $("tool-brush").onclick = () => editor.setTool("brush");
  $("tool-eraser").onclick = () => editor.setTool("eraser");
  $("tool-pan").onclick = () => editor.setTool("pan");
  $("brush-size").addEventListener("input", (e) => editor.setSize(Number(e.target.value)));
  $("live-toggle").addEventListener("change", (e) => editor.setLive(e.target.checked));
  $("live-accept").onclick = () => editor.acceptLive();
  $("undo").onclick = () => editor.undo();
  $("redo").onclick = () => editor.redo();
  $("zoom-in").onclick = () => editor.zoomAt(editor.cssWidth / 2, editor.cssHeight / 2, 1.25);
  $("zoom-out").onclick = () => editor.zoomAt(editor.cssWidth / 2, editor.cssHeight / 2, 0.8);
  $("zoom-fit").onclick = () => editor.fit();
  $("marker-opacity").addEventListener("input", (e) => { editor.opacity = Number(e.target.value) / 100; editor.draw(); });
  $("axis-select").addEventListener("change", (e) => {  // each axis keeps the slice it was left on
    editor.sliceByAxis = editor.sliceByAxis || {};
    editor.sliceByAxis[editor.axis] = editor.slice;
    editor.axis = Number(e.target.value);
    const kept = editor.sliceByAxis[editor.axis];
    editor.slice = kept !== undefined ? kept : Math.floor(editor.shape[editor.axis] / 2);
    editor.showSlice().then(() => editor.fit()).catch(fail);
  });
  $("slice-slider").addEventListener("input", (e) => { editor.slice = Number(e.target.value); editor.showSlice().catch(fail); });
  $("save-markers").onclick = () => editor.save();
  $("learn-filters").onclick = () => learnFilters();
  $("conflict-reload").onclick = () => editor.takeTheirs().catch(fail);
  $("conflict-keep").onclick = () => editor.keepMine().catch(fail);
  $("conflict-merge").onclick = () => editor.mergeTheirs().catch(fail);

  document.addEventListener("keydown", (event) => {
    if (app.view !== "editor") return;
    const tag = (event.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || (tag === "select" && !event.ctrlKey)) return;
    const key = event.key.toLowerCase();
    if ((event.ctrlKey || event.metaKey) && key === "z") { event.preventDefault(); event.shiftKey ? editor.redo() : editor.undo(); return; }
    if ((event.ctrlKey || event.metaKey) && key === "y") { event.preventDefault(); editor.redo(); return; }
    if ((event.ctrlKey || event.metaKey) && key === "s") {  // what the Save button does, only when it is enabled
      event.preventDefault();
      if (!$("save-markers").disabled) editor.save();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const sliceStep = { arrowup: 1, pageup: 10, arrowdown: -1, pagedown: -10 }[key];
    if (sliceStep && editor.ndim === 3) {  // move through the volume's slices
      event.preventDefault();
      const next = Math.max(0, Math.min(editor.shape[editor.axis] - 1, editor.slice + sliceStep));
      if (next !== editor.slice) { editor.slice = next; editor.showSlice().catch(fail); }
      return;
    }
    if (key === " ") { editor.spaceDown = true; event.preventDefault(); return; }
    if (/^[0-9]$/.test(key)) { editor.setClass(Number(key)); return; }
    if (key === "b") editor.setTool("brush");
    else if (key === "e") editor.setTool("eraser");
    else if (key === "p") editor.setTool("pan");
    else if (key === "[") editor.setSize(editor.size - 1);
    else if (key === "]") editor.setSize(editor.size + 1);
    else if (key === "f") editor.fit();
    else if (key === "+" || key === "=") $("zoom-in").click();
    else if (key === "-") $("zoom-out").click();
  });
  document.addEventListener("keyup", (event) => { if (event.key === " ") editor.spaceDown = false; });
  window.addEventListener("beforeunload", (event) => {
    if (editor.dirty) { event.preventDefault(); event.returnValue = ""; }
  });
}
