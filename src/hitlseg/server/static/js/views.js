/* The four views behind the tabs: one shown at a time, each with its own address (#selection, #editor/ID ...). */

import { $, enc } from "./dom.js";
import { editor } from "./editor.js";
import { app } from "./state.js";

export const VIEWS = ["selection", "editor", "model", "improve"];

/* what to do when a view is shown, by view name (filled in by main.js) */
export const onShow = {};

export function showView(name, updateHash = true) {
  app.view = name;
  for (const view of VIEWS) {
    $(`view-${view}`).hidden = view !== name;
    $(`tab-${view}`).classList.toggle("active", view === name);
  }
  if (updateHash) {  // a new history entry per view change, so that back/forward move between views
    const hash = name === "editor" && editor.imageId ? `#editor/${enc(editor.imageId)}` : `#${name}`;
    if (location.hash !== hash) history.pushState(null, "", hash);
  }
  if (onShow[name]) onShow[name]();
}
