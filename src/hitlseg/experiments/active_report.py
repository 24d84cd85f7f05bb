"""Curves of test Dice against annotation effort, and the effort each strategy needs, from an active study."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hitlseg.project.files import save_figure, write_json, write_text

THRESHOLDS = (0.9, 0.95)


def curves(results: dict) -> dict:
    """Per strategy, per split: cumulative effort (seconds, pixels, images) and test mean Dice after each round."""
    out: dict = {}
    for split in results["splits"]:
        for strategy, part in split["strategies"].items():
            rows = {"seconds": [], "pixels": [], "images": [], "dice": []}
            for r in part["rounds"]:
                rows["seconds"].append(r["totals"]["seconds"])
                rows["pixels"].append(r["totals"]["pixels"])
                rows["images"].append(r["totals"]["images"])
                rows["dice"].append((r.get("evaluation") or {}).get("mean", float("nan")))
            rows["marked_fraction"] = part["rounds"][-1]["totals"]["marked_fraction"]
            refreshed = ((part.get("refresh") or {}).get("evaluation") or {}).get("mean")
            if refreshed is not None:  # the fresh model after the last round: no extra effort
                rows["refreshed"] = float(refreshed)
            out.setdefault(strategy, []).append(rows)
    return out


def reference(split: dict, results: dict) -> float | None:
    """The split's all-backprop U-Net test Dice, else the study's fixed reference, else None."""
    baseline = split.get("baseline")
    if baseline and baseline.get("test"):
        return float(baseline["test"]["mean"])
    value = results["config"].get("reference")
    return float(value) if value is not None else None


def effort_to_reach(results: dict, with_refresh: bool = False) -> dict:
    """Per strategy and threshold: per split, the effort at the first round reaching ``threshold x reference``.

    ``with_refresh`` also counts the model retrained from scratch after the last round
    (:meth:`hitlseg.active.ActiveLoop.refresh`) as a point at the last round's effort.

    Returns ``{strategy: {"0.9": {"splits": [..seconds or None..], "seconds", "pixels", "images",
    "reached", "saving_vs_random"}}}``; means are over the splits where the threshold was reached,
    the saving against random over the splits where both reached it.
    """
    table: dict = {}
    per_strategy = curves(results)
    refs = [reference(s, results) for s in results["splits"]]
    for strategy, rows in per_strategy.items():
        table[strategy] = {}
        for fraction in THRESHOLDS:
            hits = []
            for row, ref in zip(rows, refs):
                hit = None
                points = list(enumerate(row["dice"]))
                if with_refresh and "refreshed" in row:
                    points.append((len(row["dice"]) - 1, row["refreshed"]))
                if ref is not None:
                    for k, dice in points:
                        if dice >= fraction * ref:
                            hit = {"seconds": row["seconds"][k], "pixels": row["pixels"][k], "images": row["images"][k]}
                            break
                hits.append(hit)
            found = [h for h in hits if h is not None]
            cell = {"splits": [h["seconds"] if h else None for h in hits], "reached": f"{len(found)}/{len(hits)}"}
            for key in ("seconds", "pixels", "images"):
                cell[key] = float(np.mean([h[key] for h in found])) if found else None
            table[strategy][str(fraction)] = cell
    for strategy in table:  # paired: only splits where both this strategy and random reached the threshold
        for fraction, cell in table[strategy].items():
            base = table.get("random", {}).get(fraction, {}).get("splits", [])
            pairs = [(a, b) for a, b in zip(cell["splits"], base) if a is not None and b]
            cell["saving_vs_random"] = float(np.mean([1 - a / b for a, b in pairs])) if pairs else None
    return table


def synthesis_comparison(results: dict) -> dict:
    """Per strategy with a ``+synthetic`` arm: test Dice of both arms per round, their paired difference, costs.

    Returns ``{strategy: {"rounds": [...], "without": [...], "with": [...], "difference": [...],
    "seconds_without", "seconds_with" (effort), "kept_per_round", "synthesis_seconds_per_round"}}``;
    Dice values are means over the splits where both arms ran, the difference is paired per split.
    """
    from hitlseg.experiments.active import SYNTHETIC_ARM

    per_strategy = curves(results)
    out: dict = {}
    for arm, rows_with in per_strategy.items():
        if not arm.endswith(SYNTHETIC_ARM) or arm[: -len(SYNTHETIC_ARM)] not in per_strategy:
            continue
        strategy = arm[: -len(SYNTHETIC_ARM)]
        rows_without = per_strategy[strategy]
        n = min(len(r["dice"]) for r in rows_with + rows_without)
        a = np.array([r["dice"][:n] for r in rows_without[: len(rows_with)]], dtype=float)
        b = np.array([r["dice"][:n] for r in rows_with[: len(a)]], dtype=float)
        synthesis = [r.get("synthesis") or {} for split in results["splits"]
                     for r in split["strategies"].get(arm, {}).get("rounds", [])[1:]]
        out[strategy] = {
            "rounds": list(range(n)), "splits": len(b),
            "without": np.nanmean(a, 0).tolist(), "with": np.nanmean(b, 0).tolist(),
            "difference": np.nanmean(b - a, 0).tolist(),
            "seconds_without": float(np.mean([r["seconds"][n - 1] for r in rows_without[: len(b)]])),
            "seconds_with": float(np.mean([r["seconds"][n - 1] for r in rows_with[: len(b)]])),
            "kept_per_round": float(np.mean([x.get("kept", 0) for x in synthesis])) if synthesis else None,
            "synthesis_seconds_per_round": float(np.mean([x.get("seconds", 0.0) for x in synthesis])) if synthesis else None}
    return out


def _figure(per_strategy: dict, key: str, label: str, path: Path, refs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    spread = max(len(rows) for rows in per_strategy.values()) > 1  # one split: no spread to draw
    for strategy, rows in per_strategy.items():
        n = min(len(r["dice"]) for r in rows)
        x = np.mean([r[key][:n] for r in rows], axis=0)
        y = np.array([r["dice"][:n] for r in rows], dtype=float)
        mean, std = np.nanmean(y, 0), np.nanstd(y, 0)
        ax.plot(x, mean, marker="o", markersize=3, label=strategy)
        if spread:
            ax.fill_between(x, mean - std, mean + std, alpha=0.15)
    known = [r for r in refs if r is not None]
    if known:
        ref = float(np.mean(known))
        for fraction in THRESHOLDS:
            ax.axhline(fraction * ref, color="grey", lw=0.8, ls="--")
            ax.text(ax.get_xlim()[0], fraction * ref, f" {fraction:.0%} of full supervision", va="bottom", fontsize=7,
                    color="grey")
    ax.set_xlabel(label)
    ax.set_ylabel("test mean Dice")
    ax.set_title("Quality against annotation effort " + ("(mean ± std over splits)" if spread else "(one split)"))
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def _fmt(value, digits=0, suffix=""):
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def _reach_table(reach: dict) -> list[str]:
    """Markdown rows of :func:`effort_to_reach`'s table."""
    lines = ["| strategy | 90%: seconds | images | saving vs random | 95%: seconds | images | saving vs random |",
             "|---|---|---|---|---|---|---|"]
    for strategy, cells in reach.items():
        a, b = cells["0.9"], cells["0.95"]
        lines.append(f"| {strategy} | {_fmt(a['seconds'])} ({a['reached']}) | {_fmt(a['images'], 1)} | "
                     f"{_fmt(None if a['saving_vs_random'] is None else 100 * a['saving_vs_random'], 0, '%')} | "
                     f"{_fmt(b['seconds'])} ({b['reached']}) | {_fmt(b['images'], 1)} | "
                     f"{_fmt(None if b['saving_vs_random'] is None else 100 * b['saving_vs_random'], 0, '%')} |")
    return lines


def _refresh_row(label: str, strategy: str, records: list[dict]) -> str:
    """One row of the refresh table: warm and fresh validation and test Dice, training seconds (means of ``records``)."""
    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    before = [r.get("before") or {} for r in records]
    after = [r.get("evaluation") or {} for r in records]
    return (f"| {label} | {strategy} | {_fmt(mean([b.get('validation') for b in before]), 3)} | "
            f"{_fmt(mean([a.get('validation') for a in after]), 3)} | {_fmt(mean([b.get('mean') for b in before]), 3)} | "
            f"{_fmt(mean([a.get('mean') for a in after]), 3)} | {_fmt(mean([r.get('train_seconds') for r in records]))} |")


def _review_text(config: dict) -> str:
    passes = int(config.get("review_passes") or 0)
    if not passes:
        return ""
    return (f" (a review: up to {passes} passes, each refined by a graph cut over the model's probabilities; "
            "the image then trains on the accepted mask)")


def write_active_report(results: dict, out: str | Path, command: str | None = None) -> Path:
    """``report.md``, ``summary.json`` and two figures (Dice against seconds and against marked pixels) in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    per_strategy = curves(results)
    refs = [reference(s, results) for s in results["splits"]]
    _figure(per_strategy, "seconds", "annotation effort (simulated seconds)", out / "dice_vs_seconds.png", refs)
    _figure(per_strategy, "pixels", "marked pixels", out / "dice_vs_pixels.png", refs)
    reach = effort_to_reach(results)
    config = results["config"]
    sizes = results["splits"][0]["sizes"]
    lines = [f"# Active learning: {Path(results['dataset']).name}", ""]
    if command:
        lines += ["Command:", "", f"    {command}", ""]
    ref_text = ", ".join(_fmt(r, 3) for r in refs)
    fixed = not any(s.get("baseline") for s in results["splits"])
    ref_what = ("a fixed value given with --reference" if fixed else
                "the all-backprop U-Net on the full masks of the training split")
    lines += [
        f"{len(results['splits'])} split(s) ({sizes['train']} train / {sizes['val']} validation / {sizes['test']} test "
        f"images). Round 0: robot strokes on the {config['images']} images the ground-truth-free selection picks; then "
        f"{config['rounds']} rounds of {config['per_round']} image(s) with the robot's corrective "
        + ("fills of" if config.get("correction") == "fill" else "strokes on") + " the prediction's errors"
        + _review_text(config) + ", warm-started retraining with self-training. "
        "Effort is simulated seconds "
        "(hitlseg.active.TimeModel: 4 s per image, 2 s per stroke, 2 ms per marked pixel).",
        "", f"Reference Dice of full supervision ({ref_what}), per split: {ref_text}.", "",
        "## Test Dice after each round " + ("(mean over splits)" if len(results["splits"]) > 1 else "(one split)"), "",
        "| strategy | " + " | ".join(f"r{k}" for k in range(config["rounds"] + 1)) + " | marked pixels of the split |",
        "|---|" + "---|" * (config["rounds"] + 2),
    ]
    for strategy, rows in per_strategy.items():
        n = max(len(r["dice"]) for r in rows)
        cells = []
        for k in range(n):
            values = [r["dice"][k] for r in rows if k < len(r["dice"])]
            cells.append(f"{np.nanmean(values):.3f}")
        lines.append(f"| {strategy} | " + " | ".join(cells) + f" | {np.mean([r['marked_fraction'] for r in rows]):.3%} |")
    lines += ["", "## Effort to reach 90% and 95% of full supervision", ""] + _reach_table(reach)
    lines += ["", "(n/m): splits where the threshold was reached within the rounds; means are over those splits, the "
              "saving against random over the splits where both reached it.", ""]
    reach_refreshed = None
    if any("refreshed" in r for rows in per_strategy.values() for r in rows):
        reach_refreshed = effort_to_reach(results, with_refresh=True)
        lines += ["Counting the model retrained from scratch after the last round (at the last round's effort):", ""]
        lines += _reach_table(reach_refreshed) + [""]
    lines += ["![Dice against seconds](dice_vs_seconds.png)", "", "![Dice against pixels](dice_vs_pixels.png)", ""]
    synthesis = synthesis_comparison(results)
    if synthesis:
        n = max(len(c["rounds"]) for c in synthesis.values())
        lines += ["## With and without synthetic samples (equal human effort)", "",
                  f"The `+synthetic` arms add {config.get('synthetic')} synthetic sample(s) per annotated image to every "
                  "correction round's training (hitlseg.synthesis: altered accepted masks, a mask-conditioned "
                  "generator continued round after round, the most uncertain realistic candidates by MC dropout). "
                  "Test mean Dice after each round (mean over splits) and the paired difference:", "",
                  "| strategy | arm | " + " | ".join(f"r{k}" for k in range(n)) + " | effort (s) | kept per round | "
                  "synthesis s per round |", "|---|---|" + "---|" * (n + 3)]
        for strategy, c in synthesis.items():
            lines.append(f"| {strategy} | without | " + " | ".join(f"{v:.3f}" for v in c["without"]) +
                         f" | {c['seconds_without']:.0f} | | |")
            lines.append(f"| {strategy} | with | " + " | ".join(f"{v:.3f}" for v in c["with"]) +
                         f" | {c['seconds_with']:.0f} | {_fmt(c['kept_per_round'], 1)} | "
                         f"{_fmt(c['synthesis_seconds_per_round'], 0)} |")
            lines.append(f"| {strategy} | difference | " + " | ".join(f"{v:+.3f}" for v in c["difference"]) + " | | | |")
        lines.append("")
    reviewed = [(split["index"], strategy, part["accepted_dice"]) for split in results["splits"]
                for strategy, part in split["strategies"].items() if part.get("accepted_dice")]
    if reviewed:
        lines += ["## Accepted masks of the reviewed images", "",
                  "Dice of each reviewed image's accepted mask against its ground truth (measured by the study; "
                  "the loop never sees it).", "", "| split | strategy | images | mean | min |", "|---|---|---|---|---|"]
        for index, strategy, dice in reviewed:
            values = list(dice.values())
            lines.append(f"| {index} | {strategy} | {len(values)} | {np.mean(values):.3f} | {min(values):.3f} |")
        lines.append("")
    refreshed = [(split["index"], strategy, part["refresh"]) for split in results["splits"]
                 for strategy, part in split["strategies"].items() if part.get("refresh")]
    if refreshed:
        lines += ["## Retrained from scratch after the last round", "",
                  "The last round's warm-started model against a fresh sU-Net trained on the same labels "
                  "(hitlseg.active.ActiveLoop.refresh; no extra effort). Mean Dice:", "",
                  "| split | strategy | validation: warm | fresh | test: warm | fresh | training s |",
                  "|---|---|---|---|---|---|---|"]
        for index, strategy, r in refreshed:
            lines.append(_refresh_row(str(index), strategy, [r]))
        strategies = list(dict.fromkeys(k for _, k, _ in refreshed))
        if len(results["splits"]) > 1:
            for strategy in strategies:
                lines.append(_refresh_row("mean", strategy, [r for _, k, r in refreshed if k == strategy]))
        lines.append("")
    lines += ["## Queried images", ""]
    for split in results["splits"]:
        lines.append(f"- split {split['index']}, round 0: {', '.join(split['round0']['first'])}")
        for strategy, part in split["strategies"].items():
            queried = [", ".join(r["queried"]) for r in part["rounds"][1:]]
            lines.append(f"- split {split['index']}, {strategy}: {'; '.join(queried)}")
    write_text(out / "report.md", "\n".join(lines) + "\n")
    write_json(out / "summary.json", {"curves": per_strategy, "effort_to_reach": reach,
                                      "effort_to_reach_with_refresh": reach_refreshed, "reference": refs,
                                      "synthesis": synthesis,
                                      "refresh": [{"split": i, "strategy": k, "before": r.get("before"),
                                                   "evaluation": r.get("evaluation")} for i, k, r in refreshed]})
    return out / "report.md"
