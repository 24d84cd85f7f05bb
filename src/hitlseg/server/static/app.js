/* hitlseg web interface: selection view, marker editor, model view, improve view. Plain JS, no build step.
 *
 * Talks to the JSON API under /api (see /docs). Markers travel as the uint8 label array
 * (0 unmarked, c+1 for class c), zlib-compressed (CompressionStream "deflate") and base64-encoded.
 */
"use strict";

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

/* Plotly config of every chart: nothing leaves this machine. The bundled Plotly.js (v4, from the
 * plotly Python package) shows a "Share chart..." mode-bar button by default (showSendToCloud,
 * button "sendChartToCloud") that posts the chart's data to plotlyServerURL, by default Plotly's
 * cloud.plotly.com; older versions had "Edit in Chart Studio" (showEditInChartStudio, button
 * "sendDataToCloud"), and the logo links to plotly.com. Keys a version does not know are ignored. */
const PLOTLY_CONFIG = Object.freeze({
  displaylogo: false,
  showSendToCloud: false,
  showEditInChartStudio: false,
  plotlyServerURL: "",
  modeBarButtonsToRemove: Object.freeze(["sendChartToCloud", "sendDataToCloud"]),
});

/* PLOTLY_CONFIG with a chart's own options (which cannot override it; buttons to remove add up) */
function plotlyConfig(options = {}) {
  return { ...options, ...PLOTLY_CONFIG,
           modeBarButtonsToRemove: [...PLOTLY_CONFIG.modeBarButtonsToRemove, ...(options.modeBarButtonsToRemove || [])] };
}

const app = {
  project: null,      // GET /api/project
  images: [],         // GET /api/images
  byId: new Map(),
  selection: null,    // GET /api/selection
  focusId: null,      // image shown in the selection detail panel
  models: [],
  modelId: null,
  view: "selection",
};

/* ------------------------------------------------------------------ helpers */

class ApiError extends Error {
  constructor(status, message, body) { super(message); this.status = status; this.body = body; }
}

async function api(path, options = {}) {
  const init = { credentials: "same-origin", ...options };
  if (options.json !== undefined) {
    init.body = JSON.stringify(options.json);
    init.headers = { "Content-Type": "application/json", ...(options.headers || {}) };
    delete init.json;
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = { error: text }; }
  if (!response.ok) {
    throw new ApiError(response.status, (body && body.error) || `${response.status} ${response.statusText}`, body);
  }
  return body;
}

let toastTimer = null;
function toast(message, isError = false) {
  const box = $("toast");
  box.textContent = message;
  box.className = isError ? "error" : "";
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, isError ? 9000 : 3500);
}

function fail(error) {
  console.error(error);
  toast(error.message || String(error), true);
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toFixed(digits);
}

function pct(value) {
  if (value === null || value === undefined) return "–";
  return `${(100 * value).toFixed(1)}%`;
}

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function b64FromBytes(bytes) {
  let binary = "";
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) binary += String.fromCharCode.apply(null, bytes.subarray(i, i + chunk));
  return btoa(binary);
}

function bytesFromB64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

async function pipeBytes(bytes, transform) {
  const stream = new Blob([bytes]).stream().pipeThrough(transform);
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function encodeLabels(labels) {
  return b64FromBytes(await pipeBytes(labels, new CompressionStream("deflate")));
}

async function decodeLabels(data) {
  return pipeBytes(bytesFromB64(data), new DecompressionStream("deflate"));
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`could not load ${src}`));
    image.src = src;
  });
}

function hexToRgb(hex) {
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

/* ------------------------------------------------------------------ jobs */

const jobs = { current: null };
const VIEWS = ["selection", "editor", "model", "improve"];

/* " · about N s left", from the time spent so far and the share done (nothing until 5% is done) */
function timeLeft(job) {
  const fraction = job.progress && job.progress.fraction;
  if (!fraction || fraction < 0.05 || fraction >= 1 || !job.elapsed_s) return "";
  const left = job.elapsed_s * (1 - fraction) / fraction;
  return left < 90 ? ` · about ${Math.max(1, Math.round(left))} s left` : ` · about ${Math.round(left / 60)} min left`;
}

async function followJob(job, label) {
  const box = $("job-status");
  jobs.current = job;
  $("job-label").textContent = label;
  box.hidden = false;
  $("job-cancel").onclick = () => api(`/api/jobs/${job.id}/cancel`, { method: "POST" }).catch(fail);
  try {
    while (true) {
      const progress = job.progress || {};
      $("job-progress").value = progress.total ? progress.done / progress.total : 0;
      if (!progress.total) $("job-progress").removeAttribute("value");
      $("job-message").textContent = (progress.message || job.state) + timeLeft(job);
      if (["done", "failed", "cancelled"].includes(job.state)) break;
      await new Promise((resolve) => setTimeout(resolve, 400));
      job = await api(`/api/jobs/${job.id}`);
    }
  } finally {
    box.hidden = true;
    jobs.current = null;
  }
  if (job.state !== "done") throw new Error(`${label}: ${job.error || job.state}`);
  return job;
}

/* ------------------------------------------------------------------ views */

function showView(name, updateHash = true) {
  app.view = name;
  for (const view of VIEWS) {
    $(`view-${view}`).hidden = view !== name;
    $(`tab-${view}`).classList.toggle("active", view === name);
  }
  if (updateHash) {  // a new history entry per view change, so that back/forward move between views
    const hash = name === "editor" && editor.imageId ? `#editor/${enc(editor.imageId)}` : `#${name}`;
    if (location.hash !== hash) history.pushState(null, "", hash);
  }
  if (name === "editor") { editor.resize(); }
  if (name === "selection" && window.Plotly && $("projection-plot").data) Plotly.Plots.resize("projection-plot");
  if (name === "model") refreshModels().catch(fail);
  if (name === "improve") refreshImprove().catch(fail);
}

async function refreshImages() {
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

/* ------------------------------------------------------------------ selection view */

const TRACE = {
  other: { name: "other images", color: "#b8b8bd", symbol: "circle", size: 7 },
  closest: { name: "closest", color: "#0a84ff", symbol: "circle", size: 11 },
  distant: { name: "most distant", color: "#ff8a00", symbol: "circle", size: 11 },
  chosen: { name: "chosen, not learned yet", color: "#7d3cff", symbol: "diamond", size: 12 },
  selected: { name: "selected (learned)", color: "#e3b505", symbol: "star", size: 18 },
};

async function refreshSelection() {
  app.selection = await api("/api/selection");
  renderSelection();
}

function renderSelection() {
  const sel = app.selection;
  const current = sel.current;
  const marked = Object.keys(sel.marked).length;
  const parts = current
    ? [el("b", { text: `Round ${current.round}` }), ` · ${current.selected.length} image(s) learned · ${current.n_maps} feature maps`]
    : [el("b", { text: "No round yet" }), " · proposed first image: ", el("b", { text: sel.proposal || "–" })];
  parts.push(` · ${marked} marked`);
  if (sel.pending.length) parts.push(" · ", el("span", { class: "pending", text: `to learn: ${sel.pending.join(", ")}` }));
  $("sel-status").replaceChildren(...parts);
  $("projection-empty").hidden = Boolean(current);
  $("mark-proposal").textContent = sel.proposal ? `Mark the proposed image ${sel.proposal}` : "Open the marker editor";
  renderPlot();
  renderLists();
  renderStopping();
  if (app.focusId && app.byId.has(app.focusId)) showDetail(app.focusId, false);
}

function groups() {
  const sel = app.selection;
  const current = sel.current;
  if (!current) return null;
  const learned = new Set(current.selected);
  const closest = current.recommendation.closest.map((r) => r.id);
  const distant = current.recommendation.most_distant.map((r) => r.id);
  const chosen = sel.selected.map((row) => row.image_id).filter((id) => !learned.has(id));
  return { learned, closest, distant, chosen };
}

function roleOf(id) {
  const g = groups();
  if (!g) return null;
  if (g.learned.has(id)) return { kind: "selected", text: `selected in round ${app.selection.current.selected.indexOf(id) + 1}` };
  if (g.chosen.includes(id)) return { kind: "chosen", text: "chosen for marking (filters not learned from it yet)" };
  const rec = app.selection.current.recommendation;
  let index = g.distant.indexOf(id);
  if (index >= 0) return { kind: "distant", text: `most distant #${index + 1} (distance ${fmt(rec.most_distant[index].distance)})` };
  index = g.closest.indexOf(id);
  if (index >= 0) return { kind: "closest", text: `closest #${index + 1} (distance ${fmt(rec.closest[index].distance)})` };
  const twin = (rec.near_duplicates || []).find((n) => n.id === id);
  if (twin) return { kind: "other", text: `not recommended: near-duplicate of ${twin.of} (distance ${fmt(twin.distance)})` };
  return { kind: "other", text: "not recommended this round" };
}

function renderPlot() {
  const div = $("projection-plot");
  const current = app.selection.current;
  if (!window.Plotly) { div.textContent = "Plotly.js did not load."; return; }
  if (!current) { Plotly.purge(div); return; }
  const g = groups();
  const coords = current.projection.coords;
  const buckets = { other: [], closest: [], distant: [], chosen: [], selected: [] };
  for (const id of Object.keys(coords)) {
    let kind = "other";
    if (g.learned.has(id)) kind = "selected";
    else if (g.chosen.includes(id)) kind = "chosen";
    else if (g.distant.includes(id)) kind = "distant";
    else if (g.closest.includes(id)) kind = "closest";
    buckets[kind].push(id);
  }
  const traces = Object.entries(buckets).map(([kind, ids]) => ({
    type: "scatter", mode: "markers", name: `${TRACE[kind].name} (${ids.length})`,
    x: ids.map((id) => coords[id][0]), y: ids.map((id) => coords[id][1]), customdata: ids,
    hovertemplate: "%{customdata}<extra>" + TRACE[kind].name + "</extra>",
    marker: { color: TRACE[kind].color, symbol: TRACE[kind].symbol, size: TRACE[kind].size,
              line: { color: kind === "other" ? "#fff" : "#333", width: kind === "other" ? 0.5 : 1 } },
  }));
  if (app.focusId && coords[app.focusId]) {
    traces.push({ type: "scatter", mode: "markers", name: "shown", x: [coords[app.focusId][0]], y: [coords[app.focusId][1]],
                  customdata: [app.focusId], hoverinfo: "skip", showlegend: false,
                  marker: { size: 24, color: "rgba(0,0,0,0)", line: { color: "#d0021b", width: 2.5 } } });
  }
  const layout = {
    margin: { l: 30, r: 10, t: 30, b: 30 }, hovermode: "closest", dragmode: "pan",
    title: { text: `${current.projection.method === "tsne" ? "t-SNE" : "PCA"} projection of the descriptors — round ${current.round}`, font: { size: 13 } },
    legend: { orientation: "h", y: -0.08 }, xaxis: { zeroline: false, showticklabels: false },
    yaxis: { zeroline: false, showticklabels: false }, uirevision: "keep",
  };
  Plotly.react(div, traces, layout, plotlyConfig({ responsive: true, scrollZoom: true,
                                                   modeBarButtonsToRemove: ["select2d", "lasso2d"] }));
  if (!div.dataset.bound) {
    div.on("plotly_click", (event) => {
      const point = event.points && event.points[0];
      if (point && point.customdata) showDetail(point.customdata);
    });
    div.dataset.bound = "1";
  }
}

function renderLists() {
  const current = app.selection.current;
  for (const [listId, key] of [["distant-list", "most_distant"], ["closest-list", "closest"]]) {
    const list = $(listId);
    const items = current ? current.recommendation[key] : [];
    list.replaceChildren(...items.map((rec, index) => {
      const item = el("li", { "data-id": rec.id, "data-testid": `${listId}-${index}`, title: rec.id, tabindex: "0",
                              "aria-label": `${index + 1}. ${rec.id}, distance ${fmt(rec.distance, 2)}`,
                              onclick: () => showDetail(rec.id),
                              onkeydown: (event) => { if (event.key === "Enter" && event.target === item) showDetail(rec.id); } }, [
        el("img", { src: `/api/images/${enc(rec.id)}/thumbnail`, alt: rec.id }),
        el("div", {}, [el("span", { class: "rank", text: `${index + 1}.` }), rec.id]),
        el("div", { class: "muted", text: `d = ${fmt(rec.distance, 2)}`, title: "distance to the selected images" }),
        el("button", { class: "small", text: "Mark", "aria-label": `Mark image ${rec.id}`,
                       onclick: (event) => { event.stopPropagation(); markImage(rec.id); } }),
      ]);
      item.classList.toggle("focus", rec.id === app.focusId);
      return item;
    }));
    if (!items.length) list.append(el("li", { class: "muted", text: current ? "none left" : "after the first round" }));
  }
  renderDuplicates(current);
}

// Images left out of both lists because they are almost identical to a selected image.
function renderDuplicates(current) {
  const note = $("duplicates-note");
  const twins = current ? current.recommendation.near_duplicates || [] : [];
  note.hidden = !twins.length;
  note.replaceChildren();
  if (!twins.length) return;
  note.append(`Not recommended (near-duplicates of selected images, closer than ${fmt(current.recommendation.duplicate_threshold, 2)}): `);
  twins.forEach((twin, index) => {
    if (index) note.append(", ");
    note.append(el("a", { href: "#", text: twin.id, "data-id": twin.id,
                          onclick: (event) => { event.preventDefault(); showDetail(twin.id); } }),
                ` of ${twin.of}`);
  });
}

function renderStopping() {
  const rounds = app.selection.rounds;
  const body = $("stopping-table").querySelector("tbody");
  // relative_change is (previous - current) / previous of the normalised radius; shown as the
  // radius's signed change: "+20.1%" when it rose, "−5.3%" when it fell
  const signedChange = (change) => {
    if (change === null || change === undefined) return "–";
    const value = Number((-100 * change).toFixed(1));
    return `${value > 0 ? "+" : value < 0 ? "\u2212" : ""}${Math.abs(value).toFixed(1)}%`;
  };
  body.replaceChildren(...rounds.map((r, index) => el("tr", { class: index === rounds.length - 1 ? "last" : "" }, [
    el("td", { text: String(r.round) }),
    el("td", { text: `${r.image_id} (v${r.version})` }),
    el("td", { text: String(r.n_maps) }),
    el("td", { text: fmt(r.stopping.normalized_radius),
               title: `radius / pool diameter; raw radius ${fmt(r.stopping.radius, 2)} in this round's descriptor units` }),
    el("td", { text: signedChange(r.stopping.relative_change),
               title: "change of the normalised radius since the previous round" }),
    el("td", { text: r.stopping.stop ? "yes" : "no" }),
    el("td", { text: r.stopping.reason }),
  ])));
  const advice = $("stop-advice");
  if (!rounds.length) {
    advice.className = "";
    advice.textContent = "The coverage radius (how far the farthest image lies from the selected ones) is tracked after every round.";
    return;
  }
  const last = rounds[rounds.length - 1].stopping;
  advice.className = last.stop ? "stop" : "go";
  advice.textContent = last.stop ? `Stopping suggested: ${last.reason}. More images add little; train a model.`
                                 : `Keep selecting: ${last.reason}.`;
}

function showDetail(id, redraw = true) {
  app.focusId = id;
  const round = app.selection && app.selection.current ? app.selection.current.round : 0;
  $("detail-title").textContent = `Image ${id}`;
  const role = roleOf(id);
  const info = app.byId.get(id);
  $("detail-info").textContent = [role ? role.text : "", info && info.marker_version ? `markers v${info.marker_version}` : ""]
    .filter(Boolean).join(" · ");
  const heat = $("heatmap-img");
  if (round) {
    heat.hidden = false;
    heat.dataset.id = id;
    heat.src = `/api/selection/heatmap/${enc(id)}.png?round=${round}`;
  } else {
    heat.hidden = true;
  }
  $("detail-image").src = `/api/images/${enc(id)}/png`;
  $("mark-this").disabled = false;
  $("mark-this").dataset.id = id;
  for (const item of document.querySelectorAll(".rec-list li")) item.classList.toggle("focus", item.dataset.id === id);
  if (redraw && app.selection && app.selection.current) renderPlot();
}

async function markImage(id) {
  try {
    const result = await api("/api/selection/select", { method: "POST", json: { image_id: id, source: "person" } });
    if (!result.already_selected) toast(`Selected ${id} (round ${result.round}): mark it, save, learn filters`);
    await refreshImages();
    await openInEditor(id);
    refreshSelection().catch(fail);
  } catch (error) { fail(error); }
}

async function openInEditor(id) {
  const opened = await editor.open(id);
  if (opened) showView("editor");
}

async function learnFilters() {
  try {
    if (editor.dirty) {
      const saved = await editor.save();
      if (!saved) return;
    }
    $("learn-filters").disabled = $("sel-learn").disabled = true;
    const job = await api("/api/selection/learn", { method: "POST" });
    const finished = await followJob(job, "Learning filters");
    await refreshSelection();
    await refreshImages();
    const learned = (finished.result && finished.result.rounds) || [];
    toast(learned.length ? `Learned filters from ${learned.map((r) => r.image_id).join(", ")}` : "Nothing new to learn");
    const g = groups();
    if (g && g.distant.length) showDetail(g.distant[0]);
    showView("selection");
  } catch (error) {
    fail(error);
  } finally {
    $("learn-filters").disabled = $("sel-learn").disabled = false;
  }
}

/* ------------------------------------------------------------------ marker editor */

const editor = {
  imageId: null, info: null, shape: null, ndim: 2, labels: null, version: 0, dirty: false,
  axis: 0, slice: 0, rows: 0, cols: 0, picture: null, pictures: new Map(),
  overlay: document.createElement("canvas"), overlayData: null,
  live: false, liveLabels: null, liveCanvas: document.createElement("canvas"), liveBusy: false, livePending: false,
  scale: 1, ox: 0, oy: 0, tool: "brush", cls: 1, size: 3, opacity: 0.7,
  editSeconds: 0, lastEdit: null,
  undoStack: [], redoStack: [], stroke: null, pan: null, pointer: null, spaceDown: false,
  canvas: null, ctx: null, frame: 0, palette: [],

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
  },

  /* -- live mode: a graph cut from the strokes on screen after every stroke (POST /api/images/{id}/live) -- */
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

  /* -- view transform -- */
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

  /* -- painting -- */
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
  },

  /* Saves of this tab run one at a time: a save asked for while one is in flight waits for it and is then
     based on the version it returned, so a double click (or Learn with unsaved strokes) is never a conflict
     with oneself. */
  save() {
    const run = () => this.saveNow();
    this.saveQueue = (this.saveQueue || Promise.resolve()).then(run, run);
    return this.saveQueue;
  },

  async saveNow() {
    if (!this.labels || !this.dirty) return !this.dirty;
    const imageId = this.imageId;
    const edits = this.edits;
    const body = { base_version: this.version, shape: this.shape, encoding: app.project.marker_encoding,
                   data: await encodeLabels(this.labels) };
    try {
      const result = await api(`/api/images/${enc(imageId)}/markers`, { method: "PUT", json: body });
      if (imageId !== this.imageId) return true;  // another image was opened meanwhile
      this.version = result.version;
      const seconds = this.editSeconds;
      this.editSeconds = 0;
      this.lastEdit = null;
      if (seconds > 0 && !result.unchanged) {
        api("/api/active/time", { method: "POST", json: { image_id: imageId, version: result.version, seconds } }).catch(fail);
      }
      this.conflict = null;
      $("conflict-banner").hidden = true;
      if (this.edits === edits) this.setDirty(false); else this.updateStatus();  // strokes drawn during the save stay unsaved
      const missing = result.missing ? ` · still missing: ${result.missing}` : "";
      toast(result.unchanged ? `Markers of ${imageId} are unchanged: version ${result.version}`
                             : `Saved markers of ${imageId}: version ${result.version} (${result.n_marked} marked pixels)${missing}`);
      refreshImages().catch(fail);
      if (app.selection) refreshSelection().catch(fail);
      return true;
    } catch (error) {
      if (error.status === 409) {
        const latest = error.body && error.body.latest_version;
        this.conflict = { latest, base: this.version };
        $("conflict-text").textContent = `Version ${latest} of these markers was saved elsewhere after you opened ` +
          `version ${this.version}. Keep yours (saved over version ${latest}), take theirs (your unsaved strokes ` +
          `are dropped), or merge both (pixels where the two disagree are left unmarked for you to check).`;
        $("conflict-banner").hidden = false;
        return false;
      }
      fail(error);
      return false;
    }
  },

  /* conflict resolution: keep mine (rebase onto the latest version), take theirs, or merge (three-way, on the server) */
  async keepMine() {
    if (!this.conflict) return;
    this.version = this.conflict.latest;
    this.conflict = null;
    $("conflict-banner").hidden = true;
    this.setDirty(true);
    await this.save();
  },

  async takeTheirs() {
    this.conflict = null;
    await this.open(this.imageId, true);
  },

  async mergeTheirs() {
    if (!this.conflict) return;
    const body = { base_version: this.conflict.base, shape: this.shape, encoding: app.project.marker_encoding,
                   data: await encodeLabels(this.labels) };
    const merged = await api(`/api/images/${enc(this.imageId)}/markers/merge`, { method: "POST", json: body });
    const labels = await decodeLabels(merged.data);
    const conflicts = await decodeLabels(merged.conflicts);
    this.labels.set(labels);
    this.conflictMask = merged.n_conflicts ? conflicts : null;
    this.version = merged.version;
    this.conflict = null;
    this.undoStack = [];
    this.redoStack = [];
    this.paintOverlay();
    this.draw();
    this.setDirty(true);
    $("conflict-text").textContent = merged.n_conflicts
      ? `Merged with version ${merged.version}: ${merged.n_conflicts} pixels where both edits disagree are left ` +
        `unmarked (outlined in white). Check them, then save.`
      : `Merged with version ${merged.version}: no pixel disagrees. Save to keep the merge.`;
    $("conflict-banner").hidden = false;
    $("conflict-banner").dataset.merged = String(merged.n_conflicts);
  },
};

function bindEditorControls() {
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

/* ------------------------------------------------------------------ model view */

function kindName(kind) {
  return { sunet: "sU-Net", flim: "FLIM + adaptive decoder", unet: "U-Net" }[kind] || kind;
}

async function refreshModels() {
  const data = await api("/api/models");
  app.models = data.models;
  if (app.modelId === null && app.models.length) app.modelId = app.models[app.models.length - 1].id;
  const body = $("models-table").querySelector("tbody");
  body.replaceChildren(...app.models.slice().reverse().map((m) => {
    const metrics = m.metrics || {};
    const dice = metrics.dice ? Object.entries(metrics.dice).map(([c, v]) => `${app.project.class_names[c] || c}: ${fmt(v)}`).join(", ") : "no ground truth";
    const row = el("tr", { class: m.id === app.modelId ? "active" : "", "data-testid": `model-row-${m.id}`,
                           onclick: () => { app.modelId = m.id; refreshModels().catch(fail); } }, [
      el("td", {}, [el("input", { type: "radio", name: "model-pick", ...(m.id === app.modelId ? { checked: "" } : {}) })]),
      el("td", { text: String(m.id) }),
      el("td", { text: kindName(m.kind) + (m.kind === "flim" ? ` (${m.params.decoder})` : "") }),
      el("td", { text: Object.keys(m.params.images || {}).join(", ") }),
      el("td", { text: m.params.epochs ? String(m.params.epochs) + (m.params.self_training ? ` + ${m.params.self_training} self-training` : "") : "–" }),
      el("td", { text: dice }),
      el("td", { text: metrics.mean_dice !== undefined ? fmt(metrics.mean_dice) : "–" }),
      el("td", { text: (m.created_at || "").replace("T", " ").slice(0, 19) }),
    ]);
    return row;
  }));
  if (!app.models.length) body.append(el("tr", {}, [el("td", { colspan: "8", class: "muted", text: "No model yet: mark images, then train." })]));
  await showPrediction();
}

async function showPrediction() {
  const image = $("prediction-img");
  const id = $("pred-image-select").value;
  const info = app.byId.get(id);
  const link = $("download-mask");
  if (app.modelId === null || !id || !info) {
    image.removeAttribute("src");
    link.removeAttribute("href");
    $("download-preview").removeAttribute("href");
    $("pred-metrics").textContent = "";
    $("pred-caption").textContent = "prediction";
    return;
  }
  let query = `?alpha=${Number($("pred-alpha").value) / 100}`;
  const model = app.models.find((m) => m.id === app.modelId);
  const refineSelect = $("pred-refine");
  refineSelect.disabled = !model || model.kind === "flim";  // the adaptive decoders give no probabilities to refine
  if (refineSelect.disabled) refineSelect.value = "";
  const refine = refineSelect.value ? `&refine=${refineSelect.value}` : "";
  $("pred-slice-controls").hidden = info.ndim !== 3;
  if (info.ndim === 3) {
    const axis = Number($("pred-axis").value);
    const slider = $("pred-slice");
    slider.max = info.shape[axis] - 1;
    if (Number(slider.value) > Number(slider.max)) slider.value = Math.floor(info.shape[axis] / 2);
    query += `&axis=${axis}&slice=${slider.value}`;
  }
  const refined = refine ? `, refined by ${refineSelect.selectedOptions[0].textContent}` : "";
  $("pred-caption").textContent = `prediction of model ${app.modelId} (${model ? kindName(model.kind) : ""}${refined})`;
  image.src = `/api/models/${app.modelId}/predictions/${enc(id)}.png${query}${refine}`;
  $("pred-original").src = `/api/images/${enc(id)}/png${info.ndim === 3 ? query.replace(/^\?alpha=[^&]*&/, "?") : ""}`;
  $("truth-figure").hidden = !info.has_mask;
  if (info.has_mask) $("truth-img").src = `/api/images/${enc(id)}/truth.png${query}`;
  link.href = `/api/models/${app.modelId}/predictions/${enc(id)}/mask`;
  $("download-preview").href = `/api/models/${app.modelId}/predictions/${enc(id)}/preview.png`;
  const metrics = await api(`/api/models/${app.modelId}/metrics?image_id=${enc(id)}${refine}`);
  const box = $("pred-metrics");
  const rows = [];
  if (metrics.image && metrics.image.has_mask) {
    rows.push(el("tr", {}, [el("th", { text: "This image" }), el("th", { text: "Dice" })]));
    for (const [c, v] of Object.entries(metrics.image.dice)) rows.push(el("tr", {}, [el("td", { text: app.project.class_names[c] || c }), el("td", { text: fmt(v) })]));
    rows.push(el("tr", {}, [el("td", { text: "mean" }), el("td", { text: fmt(metrics.image.mean_dice) })]));
  } else {
    rows.push(el("tr", {}, [el("td", { class: "muted", text: "No ground truth for this image." })]));
  }
  const stored = metrics.metrics || {};
  if (stored.dice) {
    rows.push(el("tr", {}, [el("th", { text: `Held-out (${stored.images} images)` }), el("th", { text: "Dice" })]));
    for (const [c, v] of Object.entries(stored.dice)) rows.push(el("tr", {}, [el("td", { text: app.project.class_names[c] || c }), el("td", { text: fmt(v) })]));
    rows.push(el("tr", {}, [el("td", { text: "mean" }), el("td", { text: fmt(stored.mean_dice) })]));
  }
  box.replaceChildren(el("table", {}, rows));
}

async function train() {
  const kind = document.querySelector("input[name=train-kind]:checked").value;
  const body = { kind, epochs: Number($("train-epochs").value), decoder: $("train-decoder").value,
                 self_training: Number($("train-self-training").value) };
  $("train-btn").disabled = true;
  try {
    const job = await api("/api/models/train", { method: "POST", json: body });
    const finished = await followJob(job, kind === "sunet" ? "Training the sU-Net" : "Fitting FLIM");
    app.modelId = finished.result.id;
    const warnings = finished.result.warnings || [];
    toast(`Model ${finished.result.id} is ready` + (warnings.length ? `. Note: ${warnings.join("; ")}` : ""), warnings.length > 0);
    await refreshModels();
  } catch (error) {
    fail(error);
  } finally {
    $("train-btn").disabled = false;
  }
}

function bindModelControls() {
  $("train-btn").onclick = () => train();
  $("pred-image-select").addEventListener("change", () => showPrediction().catch(fail));
  const step = (delta) => {
    const select = $("pred-image-select");
    select.selectedIndex = (select.selectedIndex + delta + select.options.length) % select.options.length;
    showPrediction().catch(fail);
  };
  $("pred-prev").onclick = () => step(-1);
  $("pred-next").onclick = () => step(1);
  $("pred-alpha").addEventListener("change", () => showPrediction().catch(fail));
  $("pred-refine").addEventListener("change", () => showPrediction().catch(fail));
  $("pred-axis").addEventListener("change", () => { $("pred-slice").value = 1e9; showPrediction().catch(fail); });
  $("pred-slice").addEventListener("change", () => showPrediction().catch(fail));
}

/* ------------------------------------------------------------------ improve view */

const improve = { summary: null, imageId: null };

async function refreshImprove() {
  const [summary, models] = await Promise.all([api("/api/active"), api("/api/models")]);
  improve.summary = summary;
  app.models = models.models;
  const select = $("imp-model");
  const nets = app.models.filter((m) => m.kind === "sunet");
  const keep = select.value;
  select.replaceChildren(...nets.slice().reverse().map((m) => el("option", { value: String(m.id),
    text: `model ${m.id}` + (m.params.round ? ` (round ${m.params.round})` : "") })));
  if (keep && nets.some((m) => String(m.id) === keep)) select.value = keep;
  $("imp-propose").disabled = !nets.length;
  $("imp-retrain").disabled = !nets.length;
  const strategies = $("imp-strategy");
  if (!strategies.options.length) strategies.replaceChildren(...summary.strategies.map((name) => el("option", { text: name })));
  renderProposal(summary.proposal);
  renderImproveChart(summary);
}

function renderProposal(proposal) {
  const box = $("imp-proposal");
  const first = proposal && proposal.proposals[0];
  improve.imageId = first ? first.image_id : null;
  $("imp-accept").disabled = $("imp-edit").disabled = !first;
  if (!first) {
    box.textContent = "No proposal yet: pick an sU-Net and press Propose.";
    $("imp-prediction").removeAttribute("src");
    $("imp-uncertainty").removeAttribute("src");
    return;
  }
  box.replaceChildren(
    el("p", {}, [el("strong", { text: first.image_id, "data-testid": "imp-proposed-id" }),
                 ` proposed by ${proposal.strategy} under model ${proposal.model_id}`]),
    el("p", { class: "muted", text: `why: ${proposal.criterion} = ${fmt(first.score)}, the highest of ` +
                                    `${proposal.free} unmarked image(s)` }));
  $("imp-prediction").src = `/api/models/${proposal.model_id}/predictions/${enc(first.image_id)}.png`;
  $("imp-uncertainty").src = `/api/active/uncertainty/${proposal.model_id}/${enc(first.image_id)}.png`;
}

function renderImproveChart(summary) {
  const rounds = summary.rounds;
  const effort = summary.effort;
  $("imp-effort").textContent = `Your effort so far: ${effort.images} marked image(s), ${effort.pixels} marked pixels, ` +
    `${Math.round(effort.seconds)} s recorded in the editor.`;
  if (!window.Plotly || !rounds.length) return;
  const withDice = rounds.some((r) => r.mean_dice !== null && r.mean_dice !== undefined);
  const x = rounds.map((r) => `model ${r.model_id}`);
  const traces = [{ x, y: rounds.map((r) => withDice ? r.mean_dice : r.confidence), name: withDice ? "held-out Dice" : "model confidence",
                    mode: "lines+markers", type: "scatter" },
                  { x, y: rounds.map((r) => (r.effort || {}).seconds ?? null), name: "effort (s)", yaxis: "y2",
                    mode: "lines+markers", type: "scatter" }];
  Plotly.react("imp-chart", traces, { margin: { l: 45, r: 45, t: 10, b: 40 }, showlegend: true, legend: { orientation: "h" },
    yaxis: { title: withDice ? "Dice" : "confidence", range: [0, 1] }, yaxis2: { title: "seconds", overlaying: "y", side: "right" } },
    plotlyConfig({ displayModeBar: false, responsive: true }));
}

/* run ``work`` with button ``id`` disabled; errors become a notification */
async function whileDisabled(id, work) {
  $(id).disabled = true;
  try {
    await work();
  } catch (error) {
    fail(error);
  } finally {
    $(id).disabled = false;
  }
}

function proposeNext() {
  const body = { model_id: Number($("imp-model").value), strategy: $("imp-strategy").value, n: 1 };
  return whileDisabled("imp-propose", async () => {
    const job = await api("/api/active/propose", { method: "POST", json: body });
    await followJob(job, "Scoring the images");
    await refreshImprove();
  });
}

async function acceptPrediction() {
  const id = improve.imageId;
  const proposal = improve.summary && improve.summary.proposal;
  if (!id || !proposal) return;
  try {
    const markers = await api(`/api/images/${enc(id)}/markers`);
    const result = await api("/api/active/accept", { method: "POST",
      json: { model_id: proposal.model_id, image_id: id, base_version: markers.version } });
    toast(`${id}: the prediction's confident pixels are version ${result.version}; correct them and save`);
    await editor.open(id, true);
    showView("editor");
  } catch (error) {
    fail(error);
  }
}

function retrainModel() {
  const body = { model_id: Number($("imp-model").value), epochs: Number($("imp-epochs").value) };
  return whileDisabled("imp-retrain", async () => {
    const job = await api("/api/active/retrain", { method: "POST", json: body });
    const finished = await followJob(job, "Retraining");
    $("imp-model").value = "";
    toast(`Model ${finished.result.id} is ready (round ${finished.result.params.round})`);
    await refreshImprove();
  });
}

/* what each kind of job is called, and what to refresh when it ends */
const JOB_KINDS = {
  learn: ["Learning filters", () => refreshSelection()],
  "train-sunet": ["Training the sU-Net", () => refreshModels()],
  "train-adaptive": ["Fitting FLIM", () => refreshModels()],
  propose: ["Scoring the images", () => refreshImprove()],
  retrain: ["Retraining", () => refreshImprove()],
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

function bindImproveControls() {
  $("imp-propose").onclick = () => proposeNext();
  $("imp-accept").onclick = () => acceptPrediction();
  $("imp-edit").onclick = () => { if (improve.imageId) editor.open(improve.imageId).then(() => showView("editor")).catch(fail); };
  $("imp-retrain").onclick = () => retrainModel();
}

/* ------------------------------------------------------------------ start */

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
document.addEventListener("DOMContentLoaded", () => start().catch(fail));
