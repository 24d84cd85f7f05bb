/* Marker editor, saving: versioned saves one at a time, and the three ways out of a stale-version conflict. */

import { api } from "./api.js";
import { decodeLabels, encodeLabels } from "./codec.js";
import { $, enc, fail, toast } from "./dom.js";
import { app } from "./state.js";

export const saveMethods = {
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
      this.afterSave();  // the image list and the selection
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
