"""The report of a weak-supervision study (:mod:`hitlseg.experiments.weak`): a table per test group, a figure, CAM overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hitlseg.project.files import save_figure, write_text

LABELS = {"all_foreground": "every pixel object (trivial)", "cam_only": "CAM-only, thresholded",
          "cam_crf": "CAM-only + dense CRF", "no_pseudo": "active learning, no pseudo-labels",
          "joint": "joint (pseudo-labels)", "full": "full supervision"}


def rows(results: dict, group: str) -> list[dict]:
    """Table rows of ``group``: ``method``, ``budget``, ``round``, ``oracle_images`` and the figures of each."""
    out = []
    for name, part in results["parts"].items():
        method, result = part["method"], part["result"]
        base = {"part": name, "method": method, "budget": part.get("budget")}
        if method == "all_foreground":
            out.append({**base, **result.get(group, {})})
        elif method == "cam_only":
            figures = result.get(group, {})
            out.append({**base, "foreground_dice": figures.get("cam_dice"), "accuracy": figures.get("accuracy"),
                        "seconds": result.get("seconds")})
            if figures.get("cam_crf_dice") is not None:
                out.append({**base, "method": "cam_crf", "foreground_dice": figures["cam_crf_dice"],
                            "accuracy": figures.get("accuracy")})
        else:
            for row in result["rounds"]:
                figures = row.get(group, {})
                out.append({**base, "round": row["round"], "oracle_images": row["oracle_images"],
                            "dice": figures.get("dice"), "dice_per_class": figures.get("dice_per_class") or {},
                            "foreground_dice": figures.get("foreground_dice"), "cam_dice": figures.get("cam_dice"),
                            "accuracy": figures.get("accuracy"), "seconds": row.get("train_seconds")})
    return out


def _fmt(value, digits=3):
    return "–" if value is None else f"{value:.{digits}f}"


def _figure(results: dict, group: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    table = rows(results, group)
    for method in ("no_pseudo", "joint"):
        for budget in sorted({r["budget"] for r in table if r["method"] == method}):
            points = [r for r in table if r["method"] == method and r["budget"] == budget]
            ax.plot([r["oracle_images"] for r in points], [np.nan if r["dice"] is None else r["dice"] for r in points],
                    marker="o", label=f"{LABELS[method]}, budget {budget:g}")
    styles = {"all_foreground": ":", "cam_only": "--", "cam_crf": "-.", "full": "-"}
    for r in table:
        if r["method"] in styles:
            value = r.get("dice") if r["method"] == "full" else r.get("foreground_dice")
            if value is not None:
                ax.axhline(value, color="grey", ls=styles[r["method"]], lw=1)
                ax.text(ax.get_xlim()[0], value, f" {LABELS[r['method']]}", fontsize=7, color="grey", va="bottom")
    ax.set_xlabel("training images annotated by the oracle")
    ax.set_ylabel(f"{group}: Dice")
    ax.set_title(f"Weak supervision, {group}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def write_weak_report(results: dict, out: str | Path, command: str | None = None) -> Path:
    """``report.md`` and one figure per test group (``dice_GROUP.png``) in ``out``; returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = results["config"]
    k = results["n_classes"]
    sizes = results["sizes"]
    labels = results["labels"]
    lines = [f"# Weak supervision: {Path(results['dataset']).name}", ""]
    if command:
        lines += ["Command:", "", f"    {command}", ""]
    split = ("the dataset's own split (meta.csv)" if results["split"] == "meta.csv"
             else f"a seeded hold-out of {config['holdout']:.0%} (seed {config['seed']})")
    budgets = "; ".join(f"{key}: {b['oracle_images']} images ({b['per_round']} per round, "
                        f"{b['fraction']:.1%} of the training images)" for key, b in results["budgets"].items())
    counts = ", ".join(f"{name} {n}" for name, n in labels["counts"].items())
    lines += [
        f"{sizes['train']} training images with image-level labels "
        f"(the dataset's labels: {counts}); test groups from {split}: "
        + ", ".join(f"{g} ({sizes[g]})" for g in results["groups"]) + f". Max side {results['max_side'] or 'full'} px, "
        f"{k} object class(es). Oracle: {config['oracle']}, random images, {config['rounds']} rounds"
        + (f"; budgets {budgets}" if budgets else "") + f". Classifier warm-up {config['warmup_epochs']} epochs, "
        f"{config['epochs']} joint epochs per round (CAM-only: {config['warmup_epochs'] + config['rounds'] * config['epochs']} "
        f"classifier epochs; full supervision: {config['rounds'] * config['epochs']}); norm {config['norm']}; seed "
        f"{config['seed']}. Nothing was tuned on the test images.", "",
        "Dice: mean over the object classes of the segmentation; foreground Dice: object against background "
        "(the only figure of the trivial mask and of CAM-only). Seconds: training per round (choice, annotation, "
        "pseudo-labels, training; round 1 includes the classifier warm-up), or the whole CAM-only run.", ""]
    per_class = [str(c) for c in range(1, k + 1)] if k > 1 else []
    for group in results["groups"]:
        lines += [f"## {group} ({sizes[group]} images)", "",
                  "| method | budget | round | oracle images | Dice | " + "".join(f"class {c} | " for c in per_class)
                  + "foreground Dice | CAM Dice | accuracy | seconds |",
                  "|---|---|---|---|---|" + "---|" * len(per_class) + "---|---|---|---|"]
        for r in rows(results, group):
            cells = [LABELS.get(r["method"], r["method"]), "–" if r["budget"] is None else f"{r['budget']:g}",
                     str(r.get("round", "–")), str(r.get("oracle_images", "–")), _fmt(r.get("dice"))]
            cells += [_fmt((r.get("dice_per_class") or {}).get(c)) for c in per_class]
            cells += [_fmt(r.get("foreground_dice")), _fmt(r.get("cam_dice")), _fmt(r.get("accuracy")),
                      _fmt(r.get("seconds"), 0)]
            lines.append("| " + " | ".join(cells) + " |")
        figure = out / f"dice_{group}.png"
        _figure(results, group, figure)
        lines += ["", f"![Dice against oracle images, {group}]({figure.name})", ""]
    shown = results["overlays"]["ids"]
    if shown:
        drawn = [(name, part["figures"]) for name, part in results["parts"].items() if part.get("figures")]
        lines += ["## CAM overlays", "",
                  "Ground truth (object classes coloured), then the CAM of the predicted class (red high, blue low) "
                  "of each trained network, and the segmentation of the networks that have one.", "",
                  "| image | truth | " + " | ".join(f"{name} {kind}" for name, figs in drawn
                                                    for kind in ("CAM", "segmentation")
                                                    if kind == "CAM" or "segmentation" in next(iter(figs.values()))) + " |"]
        columns = 2 + sum(1 + int("segmentation" in next(iter(figs.values()))) for _, figs in drawn)
        lines.append("|" + "---|" * columns)
        for i in shown:
            cells = [i, f"![](figures/{results['overlays']['truth'][i]})"]
            for _, figs in drawn:
                names = figs.get(i, {})
                cells.append(f"![](figures/{names['cam']})" if "cam" in names else "–")
                if "segmentation" in next(iter(figs.values())):
                    cells.append(f"![](figures/{names['segmentation']})" if "segmentation" in names else "–")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"Computed in {sum(p.get('part_seconds', 0.0) for p in results['parts'].values()):.0f} s over all "
              "(resumed) runs.", ""]
    write_text(out / "report.md", "\n".join(lines))
    return out / "report.md"
