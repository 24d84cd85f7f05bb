"""Tables, figures and a markdown report from the numbers of :func:`run_protocol`.

Every table row says what its model learned from (column "masks used",
:data:`~hitlseg.experiments.protocol.MASKS_USED`): the sU-Net decoder and the baseline are trained
on every training mask, the adaptive decoder and the strokes learner on the robot's strokes only.
A refined model ``"MODEL+REFINER"`` (``--refine``) learned from what ``MODEL`` learned from.
With one split there is no spread to show: cells give the value alone, without "± std".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hitlseg.experiments.protocol import MASKS_USED
from hitlseg.experiments.scoring import columns
from hitlseg.project.files import save_figure, write_json, write_text


def _models(split: dict) -> list[str]:
    """The models of a method part, each followed by its refined versions (``"sunet+crf"``...)."""
    method = next(iter(split["methods"].values()))
    return [m for base in ("adaptive", "sunet", "strokes") if base in method
            for m in (base, *(k for k in method if k.startswith(base + "+")))]


def _mean_std(summaries: list[dict]) -> dict[str, tuple[float, float]]:
    """Per column, mean and standard deviation over splits of :func:`columns` views."""
    values = [columns(s) for s in summaries]
    return {c: (float(np.mean([v[c] for v in values])), float(np.std([v[c] for v in values]))) for c in values[0]}


def table_one(results: dict) -> dict:
    """Validation Dice mean and std over splits: ``{method: {model: {column: (mean, std)}}}``."""
    splits = results["splits"]
    table: dict = {method: {model: _mean_std([s["methods"][method][model]["val"] for s in splits])
                            for model in _models(splits[0])}
                   for method in results["config"]["methods"]}
    if "baseline" in splits[0]:
        table["baseline (all backprop)"] = {"unet": _mean_std([s["baseline"]["val"] for s in splits])}
    return table


def table_two(results: dict) -> dict:
    """Test Dice of the split with the best validation Dice, per method and model, and the baseline."""
    table: dict = {}
    splits = results["splits"]
    for method in results["config"]["methods"]:
        table[method] = {}
        for model in _models(splits[0]):
            best = max(splits, key=lambda s: s["methods"][method][model]["val"]["mean"])
            table[method][model] = {"split": best["index"], **columns(best["methods"][method][model]["test"])}
    if "baseline" in splits[0]:
        best = max(splits, key=lambda s: s["baseline"]["val"]["mean"])
        table["baseline (all backprop)"] = {"unet": {"split": best["index"], **columns(best["baseline"]["test"])}}
    return table


def correlation(first: dict) -> dict:
    """Pearson correlation of inverse descriptor distance to the first image and per-image Dice."""
    distance = np.asarray(first["distance"], dtype=float)
    dice = np.asarray(first["dice"], dtype=float)
    keep = distance > 0  # the marked image itself
    inverse = 1.0 / distance[keep]
    if keep.sum() < 3 or np.std(inverse) == 0 or np.std(dice[keep]) == 0:
        return {"r": float("nan"), "slope": float("nan"), "intercept": float("nan"), "n": int(keep.sum())}
    r = float(np.corrcoef(inverse, dice[keep])[0, 1])
    slope, intercept = np.polyfit(inverse, dice[keep], 1)
    return {"r": r, "slope": float(slope), "intercept": float(intercept), "n": int(keep.sum())}


def stopping_table(results: dict) -> dict:
    """The stopping signal of each method's selection log, over splits.

    Returns ``{method: {"normalized_radius": [(mean, std) per round], "first_stop": [round or
    None per split]}}``: the normalised coverage radius (comparable across rounds, see
    :mod:`hitlseg.selection.stopping`) after each marked image, and the first round in which each
    split's log suggested stopping (None: never). Splits whose log predates the normalised radius
    (parts of an older run) are left out of both; a method with no such split is left out.
    """
    table: dict = {}
    for method in results["config"]["methods"]:
        logs = [s["methods"][method]["rounds"] for s in results["splits"]]
        logs = [log for log in logs if log and all("normalized_radius" in r for r in log)]
        if not logs:
            continue
        n = min(len(log) for log in logs)
        radii = np.array([[r["normalized_radius"] for r in log[:n]] for log in logs], dtype=float)
        first_stop = [next((k + 1 for k, r in enumerate(log) if r.get("suggestion") == "stop"), None) for log in logs]
        table[method] = {"normalized_radius": [(float(m), float(d)) for m, d in zip(radii.mean(0), radii.std(0))],
                         "first_stop": first_stop}
    return table


def _stopping_lines(table: dict, spread: bool = True) -> list[str]:
    if not table:
        return ["Not recorded (the selection logs predate the normalised radius).", ""]
    n = max(len(cells["normalized_radius"]) for cells in table.values())
    over = "mean ± std over splits" if spread else "one split"
    lines = [f"Normalised coverage radius (radius / pool diameter, {over}) after each marked image, "
             "and the round in which stopping was first suggested per split (– when never).", "",
             "| method | " + " | ".join(f"round {k}" for k in range(1, n + 1)) + " | stop suggested at |",
             "|---|" + "---|" * (n + 1)]
    for method, cells in table.items():
        radii = [_cell(v, spread) for v in cells["normalized_radius"]] + [""] * (n - len(cells["normalized_radius"]))
        stops = ", ".join("–" if k is None else str(k) for k in cells["first_stop"])
        lines.append(f"| {method} | " + " | ".join(radii) + f" | {stops} |")
    return lines + [""]


def _figure_curves(results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    spread = len(results["splits"]) > 1
    for method in results["config"]["methods"]:
        curves = np.array([s["methods"][method]["curve_val_dice"] for s in results["splits"]], dtype=float)
        x = np.arange(1, curves.shape[1] + 1)
        mean, std = curves.mean(0), curves.std(0)
        ax.plot(x, mean, marker="o", label=method)
        if spread:
            ax.fill_between(x, mean - std, mean + std, alpha=0.15)
    ax.set_xlabel("marked images")
    ax.set_ylabel("validation Dice (adaptive decoder)")
    ax.set_title("Figure 6: Dice after each selected image " + ("(mean ± std over splits)" if spread else "(one split)"))
    ax.set_xticks(x)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def _figure_projection(first: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    coords = np.asarray(first["coords"])
    dice = np.asarray(first["dice"])
    fig, ax = plt.subplots(figsize=(6, 5))
    points = ax.scatter(coords[:, 0], coords[:, 1], c=dice, cmap="viridis", s=22, vmin=0, vmax=1)
    row = first["ids"].index(first["first"])
    ax.scatter(*coords[row], marker="*", s=300, c="red", edgecolors="black", label=f"marked: {first['first']}")
    fig.colorbar(points, label="Dice under the first image's filters")
    ax.set_title("Figure 7: training pool (t-SNE of descriptors)")
    ax.legend(loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def _figure_correlation(first: dict, fit: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    distance = np.asarray(first["distance"], dtype=float)
    dice = np.asarray(first["dice"], dtype=float)
    keep = distance > 0
    inverse = 1.0 / distance[keep]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(inverse, dice[keep], s=14, alpha=0.7)
    if np.isfinite(fit["slope"]):
        xs = np.linspace(inverse.min(), inverse.max(), 50)
        ax.plot(xs, fit["slope"] * xs + fit["intercept"], color="red", label=f"r = {fit['r']:.3f}")
        ax.legend()
    ax.set_xlabel("1 / descriptor distance to the marked image")
    ax.set_ylabel("Dice under its filters")
    ax.set_title("Figure 9: closeness to the marked image vs Dice")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def quality_table(results: dict) -> dict:
    """Predicted against true test Dice of every scored model (``--quality-model``), per split.

    Returns ``{(method, model): [test.quality of each split]}``; empty when no model was scored.
    """
    table: dict = {}
    for split in results["splits"]:
        parts = [(method, part) for method, part in split["methods"].items()]
        if "baseline" in split:
            parts.append(("baseline (all backprop)", {"unet": split["baseline"]}))
        for method, part in parts:
            for model, scores in part.items():
                found = isinstance(scores, dict) and isinstance(scores.get("test"), dict) and scores["test"].get("quality")
                if found:
                    table.setdefault((method, model), []).append(found)
    return table


def _quality_lines(table: dict) -> list[str]:
    if not table:
        return []
    lines = ["## Predicted quality (no ground truth read)", "",
             "Each test prediction scored by the quality model, beside its true mean Dice; Pearson r over the "
             "test images (mean over splits).", "",
             "| method | model | predicted Dice | true Dice | Pearson r |", "|---|---|---|---|---|"]
    for (method, model), rows in table.items():
        rs = [r["pearson"] for r in rows if r["pearson"] is not None]
        r = f"{np.mean(rs):.3f}" if rs else "–"
        lines.append(f"| {method} | {model} | {np.mean([x['predicted'] for x in rows]):.3f} | "
                     f"{np.mean([x['true'] for x in rows]):.3f} | {r} |")
    return lines + [""]


def _cell(value, spread: bool = True) -> str:
    """A table cell: ``mean ± std`` for a (mean, std) pair, the mean alone when ``spread`` is off (one split)."""
    if isinstance(value, tuple):
        return f"{value[0]:.3f} ± {value[1]:.3f}" if spread else f"{value[0]:.3f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def masks_used(model: str) -> str:
    """What ``model`` learned from, for the column "masks used" (:data:`MASKS_USED`); a refined
    model ``"MODEL+REFINER"`` learned from what ``MODEL`` learned from."""
    return MASKS_USED.get(model.split("+")[0], "–")


def _markdown_table(table: dict, spread: bool = True) -> list[str]:
    rows = [(method, model, cells) for method, models in table.items() for model, cells in models.items()]
    headers = list(rows[0][2])
    lines = ["| method | model | masks used | " + " | ".join(headers) + " |", "|---|---|---|" + "---|" * len(headers)]
    for method, model, cells in rows:
        lines.append(f"| {method} | {model} | {masks_used(model)} | "
                     + " | ".join(_cell(cells[h], spread) for h in headers) + " |")
    return lines


def _trained(config: dict) -> str:
    nets = [name for name, on in (("sU-Net decoders", config["sunet"]), ("all-backprop baseline", config["baseline"])) if on]
    text = (f"{' and '.join(nets)} trained {config['epochs']} epochs on all training masks" if nets
            else "no network trained on masks")
    if config.get("strokes"):
        text += (f"; `strokes`: the strokes learner on the robot's strokes only, {config.get('self_training', 0)} "
                 f"self-training iterations over the other training images")
    return text


def _learned_from(config: dict) -> list[str]:
    """The paragraph saying what each model of the tables learned from."""
    lines = ["What each model learned from (column \"masks used\"):", "",
             "- `adaptive`: the FLIM encoder learned from the robot's strokes on the selected images, with the "
             "parameter-free adaptive decoder; no mask."]
    if config["sunet"]:
        lines.append("- `sunet`: the same frozen FLIM encoder (from the selected images' strokes) with a decoder trained "
                     "by backprop on **every training mask**, not only the selected images': its Dice measures the "
                     "selected images' filters under full supervision of the decoder, not what marking those images "
                     "alone gives.")
    if config.get("strokes"):
        lines.append("- `strokes`: the strokes learner on the robot's strokes of the selected images and pseudo-labels of "
                     "the other training images; no mask.")
    if config["baseline"]:
        lines.append("- `unet` (baseline): an all-backprop U-Net trained on every training mask.")
    if config.get("refine"):
        refined = [f"`{m}+{r}`" for m in ("sunet", "strokes") if config.get(m) for r in config["refine"]]
        lines.append("- " + ", ".join(refined) + ": the same model's class "
                     "probabilities on the same images refined by `hitlseg.refine` with default settings, so each "
                     "is a paired comparison with the unrefined row. The adaptive decoder gives saliency, not class "
                     "probabilities, and is not refined; nor is the baseline.")
    return lines + [""]


def write_report(results: dict, out: str | Path, command: str | None = None, wall_seconds: float | None = None) -> Path:
    """Write ``report.md``, the PNG figures and ``summary.json`` (tables and correlations) to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    first = results["splits"][0]["first_image"]
    fits = [correlation(s["first_image"]) for s in results["splits"]]
    _figure_curves(results, out / "figure6_curves.png")
    _figure_projection(first, out / "figure7_projection.png")
    _figure_correlation(first, fits[0], out / "figure9_correlation.png")
    one, two = table_one(results), table_two(results)
    stopping = stopping_table(results)
    config = results["config"]
    spread = len(results["splits"]) > 1
    lines = [f"# Image-selection experiment: {Path(results['dataset']).name}", ""]
    if command:
        lines += ["Command:", "", f"    {command}", ""]
    if wall_seconds is not None:
        lines += [f"Wall time: {wall_seconds / 60:.1f} min on this machine.", ""]
    sizes = results["splits"][0]["sizes"]
    lines += [
        f"{config['splits']} splits ({sizes['train']} train / {sizes['val']} validation / {sizes['test']} test images), "
        f"{config['images']} marked images per method, robot markers, gtfree policy `{config['policy']}`, adaptive decoder "
        f"`{config['decoder']}`, {_trained(config)}.",
        "",
        *_learned_from(config),
        "## Table I: validation Dice " + ("(mean ± std over splits)" if spread else "(one split)"), "",
        *_markdown_table(one, spread), "",
        "## Table II: test Dice of the best split (by validation Dice)" if spread else "## Table II: test Dice", "",
        *_markdown_table(two), "",
        "## Figure 6: Dice after each newly selected image", "", "![Figure 6](figure6_curves.png)", "",
        "## Figure 7: projection coloured by Dice under the first image's filters", "",
        "![Figure 7](figure7_projection.png)", "",
        "## Figure 9: inverse descriptor distance vs Dice", "", "![Figure 9](figure9_correlation.png)", "",
        "Pearson r per split: " + ", ".join(f"{f['r']:.3f}" for f in fits), "",
        "## Stopping signal", "",
        *_stopping_lines(stopping, spread),
        *_quality_lines(quality_table(results)),
        "## Selected images", "",
    ]
    for split in results["splits"]:
        for method, part in split["methods"].items():
            lines.append(f"- split {split['index']}, {method}: {', '.join(part['selected'])}")
    write_text(out / "report.md", "\n".join(lines) + "\n")
    summary = {"table_one": {m: {k: {c: list(v) for c, v in cells.items()} for k, cells in models.items()} for m, models in one.items()},
               "table_two": two, "correlation": fits,
               "masks_used": {model: masks_used(model) for models in one.values() for model in models},
               "stopping": {m: {"normalized_radius": [list(v) for v in cells["normalized_radius"]],
                                "first_stop": cells["first_stop"]} for m, cells in stopping.items()},
               "quality": {f"{method}/{model}": rows for (method, model), rows in quality_table(results).items()}}
    write_json(out / "summary.json", summary)
    return out / "report.md"
