/* Improve view (active learning): which image to correct next under an sU-Net, its uncertainty, starting
 * from its prediction, retraining, and the quality per round against the effort spent. */

import { api } from "./api.js";
import { plotlyConfig } from "./charts.js";
import { $, el, enc, fail, fmt, toast } from "./dom.js";
import { editor } from "./editor.js";
import { followJob } from "./jobs.js";
import { app } from "./state.js";
import { showView } from "./views.js";

const improve = { summary: null, imageId: null };

export async function refreshImprove() {
  const [summary, models] = await Promise.all([api("/api/active"), api("/api/models")]);
  improve.summary = summary;
  app.models = models.models;
  const select = $("imp-model");
  const nets = app.models.filter((m) => m.kind === "sunet");
  const keep = select.value;
  select.replaceChildren(...nets.slice().reverse().map((m) => el("option", { value: String(m.id),
    text: `model ${m.id}` + roundLabel(m.params) })));
  if (keep && nets.some((m) => String(m.id) === keep)) select.value = keep;
  $("imp-propose").disabled = !nets.length;
  $("imp-retrain").disabled = $("imp-fresh").disabled = !nets.length;
  const strategies = $("imp-strategy");
  if (!strategies.options.length) strategies.replaceChildren(...summary.strategies.map((name) => el("option", { text: name })));
  renderProposal(summary.proposal);
  renderImproveChart(summary);
}

/* " (round 2)", " (round 2, from scratch)" or "" for a first model */
function roundLabel(params) {
  const parts = [];
  if (params.round) parts.push(`round ${params.round}`);
  if (params.fresh) parts.push("from scratch");
  return parts.length ? ` (${parts.join(", ")})` : "";
}

function renderProposal(proposal) {
  const box = $("imp-proposal");
  const first = proposal && proposal.proposals[0];
  improve.imageId = first ? first.image_id : null;
  $("imp-accept").disabled = $("imp-edit").disabled = $("imp-review").disabled = !first;
  renderAccepted();
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

/* the proposed image's accepted mask, when its current markers were reviewed */
function renderAccepted() {
  const id = improve.imageId;
  const version = id && improve.summary && improve.summary.accepted ? improve.summary.accepted[id] : undefined;
  $("imp-accepted-figure").hidden = version === undefined;
  if (version === undefined) {
    $("imp-accepted").removeAttribute("src");
    return;
  }
  $("imp-accepted").src = `/api/active/accepted/${enc(id)}.png?v=${version}`;
  $("imp-accepted-caption").textContent = `accepted mask (graph cut under your strokes, version ${version})`;
}

function renderImproveChart(summary) {
  const rounds = summary.rounds;
  const effort = summary.effort;
  $("imp-effort").textContent = `Your effort so far: ${effort.images} marked image(s), ${effort.pixels} marked pixels, ` +
    `${Math.round(effort.seconds)} s recorded in the editor.`;
  if (!window.Plotly || !rounds.length) return;
  const withDice = rounds.some((r) => r.mean_dice !== null && r.mean_dice !== undefined);
  const x = rounds.map((r) => `model ${r.model_id}` + (r.fresh ? " (scratch)" : ""));
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

function reviewImage() {
  const id = improve.imageId;
  const proposal = improve.summary && improve.summary.proposal;
  if (!id || !proposal) return Promise.resolve();
  return whileDisabled("imp-review", async () => {
    const markers = await api(`/api/images/${enc(id)}/markers`);
    const result = await api("/api/active/review", { method: "POST",
      json: { model_id: Number($("imp-model").value) || proposal.model_id, image_id: id, base_version: markers.version } });
    toast(`${id}: accepted mask of version ${result.version}; retraining will learn from it`);
    await refreshImprove();
  });
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

function retrainFresh() {
  const body = { model_id: Number($("imp-model").value) };
  return whileDisabled("imp-fresh", async () => {
    const job = await api("/api/active/fresh", { method: "POST", json: body });
    const finished = await followJob(job, "Retraining from scratch");
    $("imp-model").value = "";
    toast(`Model ${finished.result.id} is ready${roundLabel(finished.result.params)}`);
    await refreshImprove();
  });
}

export function bindImproveControls() {
  $("imp-propose").onclick = () => proposeNext();
  $("imp-accept").onclick = () => acceptPrediction();
  $("imp-edit").onclick = () => { if (improve.imageId) editor.open(improve.imageId).then(() => showView("editor")).catch(fail); };
  $("imp-retrain").onclick = () => retrainModel();
  $("imp-fresh").onclick = () => retrainFresh();
  $("imp-review").onclick = () => reviewImage();
}
