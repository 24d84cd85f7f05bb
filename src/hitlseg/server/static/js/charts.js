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
export function plotlyConfig(options = {}) {
  return { ...options, ...PLOTLY_CONFIG,
           modeBarButtonsToRemove: [...PLOTLY_CONFIG.modeBarButtonsToRemove, ...(options.modeBarButtonsToRemove || [])] };
}
