/* hitlseg web interface: selection view, marker editor, model view, improve view. ES modules, no build step:
 * index.html loads this one; it binds the controls, loads the project and opens the first view.
 *
 * Talks to the JSON API under /api (see /docs); markers travel as codec.js encodes them. */

import { api } from "./api.js";
import { $, el, fail, toast } from "./dom.js";
import { bindEditorControls } from "./editor-controls.js";
import { editor } from "./editor.js";
import { refreshImages } from "./images.js";
import { bindImproveControls, refreshImprove } from "./improve.js";
import { followJob } from "./jobs.js";
import { bindModelControls, refreshModels } from "./model.js";
import { learnFilters, markImage, refreshSelection } from "./selection.js";
import { app } from "./state.js";
import { VIEWS, onShow, showView } from "./views.js";
import { bindWeakControls, refreshWeak, showCamSlice, showImageClass } from "./weak.js";

onShow.editor = () => editor.resize();
onShow.selection = () => { if (window.Plotly && $("projection-plot").data) Plotly.Plots.resize("projection-plot"); };
onShow.model = () => refreshModels().catch(fail);
onShow.improve = () => refreshImprove().catch(fail);
editor.afterOpen = () => showImageClass().catch(fail);
editor.afterSlice = () => showCamSlice();
editor.afterSave = () => {
  refreshImages().catch(fail);
  if (app.selection) refreshSelection().catch(fail);
};

/* what each kind of job is called, and what to refresh when it ends */
const JOB_KINDS = {
  learn: ["Learning filters", () => refreshSelection()],
  "train-sunet": ["Training the sU-Net", () => refreshModels()],
  "train-adaptive": ["Fitting FLIM", () => refreshModels()],
  propose: ["Scoring the images", () => refreshImprove()],
  retrain: ["Retraining", () => refreshImprove()],
  "train-cam": ["Training the image classifier", () => refreshWeak()],
};

/* After a reload or in another tab: follow every job still queued or running, oldest first, with its progress,
   and say when each is ready. */
async function resumeJobs() {
  const { jobs: list } = await api("/api/jobs");
  const waiting = list.filter((job) => job.state === "queued" || job.state === "running").reverse();
  for (const job of waiting) {
    const [label, refresh] = JOB_KINDS[job.kind] || [job.kind, async () => {}];
    try {
      const finished = await followJob(job, label);
      const id = finished.result && finished.result.id;
      toast(`${label}: ready${id !== undefined && job.kind !== "learn" ? ` (model ${id})` : ""}`);
      await refresh();
    } catch (error) {
      fail(error);
    }
  }
}

async function start() {
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {  // the cookie is set now: keep the token out of the address bar
    params.delete("token");
    history.replaceState(null, "", location.pathname + (params.toString() ? `?${params}` : "") + location.hash);
  }
  editor.init();
  bindEditorControls();
  bindModelControls();
  for (const view of VIEWS) $(`tab-${view}`).onclick = () => showView(view);
  bindImproveControls();
  bindWeakControls();
  $("sel-learn").onclick = () => learnFilters();
  $("mark-this").onclick = () => markImage($("mark-this").dataset.id);
  $("mark-proposal").onclick = () => {
    const id = app.selection && app.selection.proposal;
    if (id) markImage(id); else showView("editor");
  };

  try {
    app.project = await api("/api/project");
  } catch (error) {
    document.body.replaceChildren(el("p", { class: "panel", text: `Cannot reach the project: ${error.message}` }));
    return;
  }
  document.title = `hitlseg · ${app.project.name}`;
  $("project-name").textContent = `${app.project.name} · ${app.project.images} images`;
  editor.setClasses(app.project.class_names, app.project.palette);
  $("pred-legend").replaceChildren(...app.project.class_names.slice(1).map((name, index) => el("span", {}, [
    el("span", { class: "swatch", style: `background:${app.project.palette[index + 1]}` }), name])));
  await refreshImages();
  await refreshSelection();
  await refreshWeak();

  const hash = decodeURIComponent(location.hash.slice(1));
  let first = app.selection.proposal || app.selection.pending[0] ||
              (app.selection.current && app.selection.current.recommendation.most_distant[0]?.id) || app.images[0]?.id;
  if (hash.startsWith("editor/") && app.byId.has(hash.slice(7))) first = hash.slice(7);
  if (first) await editor.open(first).catch(fail);
  showView(hash.startsWith("editor") ? "editor" : VIEWS.includes(hash) ? hash : "selection");
  resumeJobs().catch(fail);
  document.body.dataset.ready = "1";
}

/* #selection, #model, #improve, #editor/ID: links, back and forward open the view (and the image) they name */
async function route() {
  const hash = decodeURIComponent(location.hash.slice(1));
  if (hash.startsWith("editor/")) {
    const id = hash.slice(7);
    if (!app.byId || !app.byId.has(id)) { toast(`No image ${id} in this project`, true); return; }
    if (id !== editor.imageId && !(await editor.open(id))) return;
    // the image took a while to load: a view chosen meanwhile (a click on a tab) wins over this route
    if (decodeURIComponent(location.hash.slice(1)) !== hash) return;
    showView("editor", false);
  } else if (VIEWS.includes(hash)) {
    showView(hash, false);
  }
}

window.addEventListener("popstate", () => route().catch(fail));
window.addEventListener("hashchange", () => route().catch(fail));
// modules run in document order with deferred scripts (after Plotly.js), all before DOMContentLoaded
document.addEventListener("DOMContentLoaded", () => start().catch(fail));
