/* The project's images (GET /api/images) and the two image pickers (marker editor, prediction). */

import { api } from "./api.js";
import { $, el } from "./dom.js";
import { editor } from "./editor.js";
import { app } from "./state.js";

export async function refreshImages() {
  const data = await api("/api/images");
  app.images = data.images;
  app.byId = new Map(app.images.map((info) => [info.id, info]));
  fillImageSelect($("image-select"), editor.imageId, true);
  fillImageSelect($("pred-image-select"), $("pred-image-select").value || null, false);
}

function fillImageSelect(select, current, withMarks) {
  const keep = current || select.value;
  select.replaceChildren(...app.images.map((info) => {
    let label = info.id;
    if (withMarks && info.marker_version) label += `  ✎ v${info.marker_version}`;
    if (withMarks && info.selected_round) label += `  ★${info.selected_round}`;
    return el("option", { value: info.id, text: label });
  }));
  if (keep && app.byId.has(keep)) select.value = keep;
}
