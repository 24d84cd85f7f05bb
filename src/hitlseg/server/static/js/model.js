/* Model view: train an sU-Net or fit FLIM with an adaptive decoder, the models and their held-out Dice,
 * and the prediction of the chosen model on any image (refined on request), with its Dice and downloads. */

import { api } from "./api.js";
import { $, el, enc, fail, fmt, toast } from "./dom.js";
import { followJob } from "./jobs.js";
import { app } from "./state.js";

function kindName(kind) {
  return { sunet: "sU-Net", flim: "FLIM + adaptive decoder", unet: "U-Net" }[kind] || kind;
}

export async function refreshModels() {
  if (app.quality === undefined) app.quality = await api("/api/quality");
  $("pred-rank").hidden = !app.quality.available;
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
  if (app.quality && app.quality.available) {
    // the quality model's estimate: the only figure when the image has no ground truth
    const q = await api(`/api/models/${app.modelId}/quality/${enc(id)}`);
    rows.push(el("tr", {}, [el("th", { text: "Predicted quality" }), el("th", { text: "Dice" })]));
    rows.push(el("tr", { "data-testid": "pred-quality" }, [el("td", { text: "no ground truth read" }), el("td", { text: fmt(q.dice) })]));
  }
  box.replaceChildren(el("table", {}, rows));
}

/* Reorder the prediction picker by the predicted quality of the current model, worst first. */
async function rankByQuality() {
  if (app.modelId === null) return;
  $("pred-rank").disabled = true;
  try {
    const job = await api(`/api/models/${app.modelId}/quality`, { method: "POST" });
    const finished = await followJob(job, "Scoring the predictions");
    const select = $("pred-image-select");
    const options = new Map([...select.options].map((o) => [o.value, o]));
    const ranked = finished.result.ranking.filter((r) => options.has(r.image_id));
    select.replaceChildren(...ranked.map((r) => {
      const option = options.get(r.image_id);
      option.textContent = `${r.image_id}  (predicted Dice ${fmt(r.dice)})`;
      return option;
    }));
    if (ranked.length) select.value = ranked[0].image_id;
    await showPrediction();
  } finally {
    $("pred-rank").disabled = false;
  }
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

export function bindModelControls() {
  $("train-btn").onclick = () => train();
  $("pred-image-select").addEventListener("change", () => showPrediction().catch(fail));
  const step = (delta) => {
    const select = $("pred-image-select");
    select.selectedIndex = (select.selectedIndex + delta + select.options.length) % select.options.length;
    showPrediction().catch(fail);
  };
  $("pred-prev").onclick = () => step(-1);
  $("pred-next").onclick = () => step(1);
  $("pred-rank").onclick = () => rankByQuality().catch(fail);
  $("pred-alpha").addEventListener("change", () => showPrediction().catch(fail));
  $("pred-refine").addEventListener("change", () => showPrediction().catch(fail));
  $("pred-axis").addEventListener("change", () => { $("pred-slice").value = 1e9; showPrediction().catch(fail); });
  $("pred-slice").addEventListener("change", () => showPrediction().catch(fail));
}

