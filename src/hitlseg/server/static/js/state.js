/* What the page knows of the project, shared by every view. */

export const app = {
  project: null,      // GET /api/project
  images: [],         // GET /api/images
  byId: new Map(),
  selection: null,    // GET /api/selection
  focusId: null,      // image shown in the selection detail panel
  models: [],
  modelId: null,
  quality: undefined, // GET /api/quality: is a quality model loaded
  view: "selection",
};

// the console uses it, and the browser tests may (page.evaluate)
window.app = app;
