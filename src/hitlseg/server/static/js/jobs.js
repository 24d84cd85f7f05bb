/* The job bar in the header: follows a background job (GET /api/jobs/{id}) with its progress until it ends. */

import { api } from "./api.js";
import { $, fail } from "./dom.js";

/* " · about N s left", from the time spent so far and the share done (nothing until 5% is done) */
export function timeLeft(job) {
  const fraction = job.progress && job.progress.fraction;
  if (!fraction || fraction < 0.05 || fraction >= 1 || !job.elapsed_s) return "";
  const left = job.elapsed_s * (1 - fraction) / fraction;
  return left < 90 ? ` · about ${Math.max(1, Math.round(left))} s left` : ` · about ${Math.round(left / 60)} min left`;
}

// the browser tests and the console use it
window.timeLeft = timeLeft;

/* the finished job, or an Error when it failed or was cancelled */
export async function followJob(job, label) {
  const box = $("job-status");
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
  }
  if (job.state !== "done") throw new Error(`${label}: ${job.error || job.state}`);
  return job;
}
