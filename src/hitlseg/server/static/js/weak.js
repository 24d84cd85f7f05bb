/* Image-level classes in the marker editor: the image's class (PUT /api/weak/labels/{id}), the classifier's
 * predicted class and its class activation map over the image (GET /api/weak/...), training the classifier (a job). */

import { api } from "./api.js";
import { $, el, enc, fail, toast } from "./dom.js";
import { editor } from "./editor.js";
import { followJob } from "./jobs.js";

export const weak = { state: null };

/* the classes, labels and classifier of the project; then the open image's part */
export async function refreshWeak() {
  weak.state = await api("/api/weak");
  $("image-class-list").replaceChildren(...weak.state.classes.map((name) => el("option", { value: name })));
  await showImageClass();
}

/* the open image's class, the classifier's prediction and (when asked) its CAM */
export async function showImageClass() {
  const id = editor.imageId;
  if (!id || !weak.state) return;
  $("image-class").value = weak.state.labels[id] || "";
  const model = weak.state.model;
  $("cam-toggle").disabled = !model;
  $("image-class-predicted").textContent = "";
  if (!model) { $("cam-panel").hidden = true; return; }
  const answer = await api(`/api/weak/classify/${enc(id)}`);
  if (id !== editor.imageId) return;
  const p = answer.probabilities[answer.class];
  $("image-class-predicted").textContent = `classifier: ${answer.class} (${(100 * p).toFixed(0)}%)`;
  $("cam-panel").hidden = !$("cam-toggle").checked;
  if ($("cam-toggle").checked) {
    showCamSlice();
    $("cam-caption").textContent = `where the classifier sees ${answer.class}`;
  }
}

/* the CAM of the slice the editor shows (a volume's slice or axis changed) */
export function showCamSlice() {
  const model = weak.state && weak.state.model;
  if (!model || !editor.imageId || !$("cam-toggle").checked) return;
  const slice = editor.ndim === 3 ? `&slice=${editor.slice}&axis=${editor.axis}` : "";
  $("cam-img").src = `/api/weak/cam/${enc(editor.imageId)}.png?model=${model.id}${slice}`;
}

async function setImageClass() {
  const id = editor.imageId;
  const text = $("image-class").value.trim();
  await api(`/api/weak/labels/${enc(id)}`, { method: "PUT", json: { label: text || null } });
  toast(text ? `${id}: class ${text}` : `${id}: class removed`);
  await refreshWeak();
}

async function trainClassifier() {
  const job = await api("/api/weak/train", { method: "POST", json: {} });
  const finished = await followJob(job, "Training the image classifier");
  const accuracy = finished.result && finished.result.metrics && finished.result.metrics.training_accuracy;
  toast(`Image classifier ready${accuracy !== undefined ? ` (training accuracy ${(100 * accuracy).toFixed(0)}%)` : ""}`);
  await refreshWeak();
}

export function bindWeakControls() {
  $("image-class-set").onclick = () => setImageClass().catch(fail);
  $("image-class").addEventListener("keydown", (e) => { if (e.key === "Enter") setImageClass().catch(fail); });
  $("cam-toggle").onchange = () => showImageClass().catch(fail);
  $("train-classifier").onclick = () => trainClassifier().catch(fail);
}
