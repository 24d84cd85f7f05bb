/* Selection view: the projection of the image descriptors, the closest and most distant recommendations,
 * near-duplicates, the stopping signal per round, and the detail panel with a filter-attention heatmap. */

import { api } from "./api.js";
import { plotlyConfig } from "./charts.js";
import { $, el, enc, fail, fmt, toast } from "./dom.js";
import { editor } from "./editor.js";
import { refreshImages } from "./images.js";
import { followJob } from "./jobs.js";
import { app } from "./state.js";
import { showView } from "./views.js";

const TRACE = {
  other: { name: "other images", color: "#b8b8bd", symbol: "circle", size: 7 },
  closest: { name: "closest", color: "#0a84ff", symbol: "circle", size: 11 },
  distant: { name: "most distant", color: "#ff8a00", symbol: "circle", size: 11 },
  chosen: { name: "chosen, not learned yet", color: "#7d3cff", symbol: "diamond", size: 12 },
  selected: { name: "selected (learned)", color: "#e3b505", symbol: "star", size: 18 },
};

// Plot titles of the projection methods (hitlseg.selection.projection.METHODS, and the fallback "trivial").
const PROJECTION_NAMES = { tsne: "t-SNE", pca: "PCA", umap: "UMAP", trivial: "Trivial" };

export async function refreshSelection() {
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

export function groups() {
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
    title: { text: `${PROJECTION_NAMES[current.projection.method] || current.projection.method} projection of the descriptors — round ${current.round}`, font: { size: 13 } },
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

export function showDetail(id, redraw = true) {
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
  showSimilar(id, round).catch(fail);
}

// The strip of images nearest to the one shown, by the current filters' descriptor; click one to show it.
async function showSimilar(id, round) {
  const box = $("similar");
  if (!round) { box.hidden = true; return; }
  const data = await api(`/api/selection/similar/${enc(id)}?k=6`);
  if (app.focusId !== id) return;  // another image was shown meanwhile
  box.hidden = false;
  $("similar-list").replaceChildren(...data.similar.map((hit) => el("li", {
    "data-id": hit.id, "data-testid": `similar-${hit.rank - 1}`, title: hit.id, tabindex: "0",
    "aria-label": `${hit.rank}. ${hit.id}, distance ${fmt(hit.distance, 2)}`,
    onclick: () => showDetail(hit.id),
    onkeydown: (event) => { if (event.key === "Enter") showDetail(hit.id); } }, [
    el("img", { src: `/api/images/${enc(hit.id)}/thumbnail`, alt: hit.id }),
    el("div", { text: hit.id }),
    el("div", { class: "muted", text: `d = ${fmt(hit.distance, 2)}` }),
  ])));
}

export async function markImage(id) {
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

export async function learnFilters() {
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

