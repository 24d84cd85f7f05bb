"""Adaptive decoders on held-out images: Dice and F-beta of every rule, and the rule ``auto`` picks.

For each dataset a FLIM model is fitted on the marked images (schisto: the 5 human-marked
images; wbc1 and hippocampus: robot strokes on ``--draws`` seeded draws of 5 and 3 images) and
every decoder rule segments the other images. Per rule it reports the foreground Dice of the
mask, the mean Dice over classes, the F-beta (beta^2 = 0.3) of the mask and the maximum and
adaptive F-beta of the foreground saliency (:func:`hitlseg.metrics.f_measure`), and the marker
recall by which ``auto`` chooses (no ground truth). The peer's figures (pyflim on the same schisto
markers, quoted from issue 14; arXiv 2504.20872) are printed beside them, not measured here.

    python benchmarks/decoders.py [--draws 3] [--limit 40] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit  # noqa: E402

from hitlseg.dataset import Dataset  # noqa: E402
from hitlseg.flim import DECODERS, FLIMModel  # noqa: E402
from hitlseg.metrics import dice_score, f_measure, mean_dice  # noqa: E402
from hitlseg.robot import Robot  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
PEER = {"pyflim_dice_schisto_12_unmarked": 0.754, "paper_best_f_beta_schisto": 0.86}


def mask_f_beta(mask: np.ndarray, truth: np.ndarray, beta2: float = 0.3) -> float:
    """F-beta of a binary mask against a binary truth (1 when both are empty)."""
    tp = float(np.logical_and(mask, truth).sum())
    predicted, actual = float(mask.sum()), float(truth.sum())
    if predicted == 0 and actual == 0:
        return 1.0
    precision = tp / predicted if predicted else 0.0
    recall = tp / actual if actual else 0.0
    return (1 + beta2) * precision * recall / (beta2 * precision + recall) if precision + recall else 0.0


def evaluate(model: FLIMModel, samples, classes: int) -> dict:
    """Scores of every rule on ``samples`` (each with image and mask)."""
    out = {}
    for rule in DECODERS:
        scores = {"dice_foreground": [], "mean_dice": [], "f_beta_mask": [], "f_beta_max": [], "f_beta_adaptive": []}
        for sample in samples:
            decoded = model.predict(sample.image, rule)
            truth = sample.mask > 0
            scores["dice_foreground"].append(dice_score(decoded.mask > 0, truth))
            if classes > 1 and rule != "weights":
                scores["mean_dice"].append(mean_dice(decoded.mask, sample.mask, labels=range(1, classes + 1)))
            scores["f_beta_mask"].append(mask_f_beta(decoded.mask > 0, truth))
            if truth.ndim == 2:  # the saliency measures are 2D
                measure = f_measure(decoded.saliency.max(0), truth)
                scores["f_beta_max"].append(measure.maximum)
                scores["f_beta_adaptive"].append(measure.adaptive)
        out[rule] = {k: round(float(np.mean(v)), 4) for k, v in scores.items() if v}
    return out


def run(model: FLIMModel, held_out, classes: int) -> dict:
    scores = evaluate(model, held_out, classes)
    best = max(scores, key=lambda r: scores[r]["mean_dice" if classes > 1 and r != "weights" else "dice_foreground"]
               if (classes == 1 or r != "weights") else -1)
    return {"auto_chose": model.decoder, "marker_recall": model.decoder_scores, "best_on_held_out": best,
            "rules": scores}


def schisto() -> dict:
    dataset = Dataset.from_folder(SHARED / "schisto")
    marked = [s.id for s in dataset if s.markers_path]
    samples = {i: dataset.load(i) for i in dataset.ids}
    start = time.perf_counter()
    model = FLIMModel.fit([samples[i].image for i in marked], [samples[i].markers for i in marked])
    fit_seconds = time.perf_counter() - start
    held_out = [samples[i] for i in dataset.ids if i not in marked]
    return {"marked": marked, "held_out": len(held_out), "fit_seconds_with_auto": round(fit_seconds, 2),
            **run(model, held_out, 1), "peer_quoted": PEER}


def robot_draws(name: str, n_marked: int, draws: int, limit: int) -> list[dict]:
    dataset = Dataset.from_folder(SHARED / name)
    out = []
    for draw in range(draws):
        rng = np.random.default_rng(draw)
        marked = sorted(rng.choice(dataset.ids, n_marked, replace=False).tolist())
        rest = [i for i in dataset.ids if i not in marked][:limit]
        loaded = {i: dataset.load(i) for i in marked + rest}
        classes = int(max(loaded[i].mask.max() for i in marked))
        robot = Robot(seed=draw)
        markers = [robot.mark(loaded[i].mask, key=i) for i in marked]
        model = FLIMModel.fit([loaded[i].image for i in marked], markers, seed=draw)
        out.append({"draw": draw, "marked": marked, "held_out": len(rest), **run(model, [loaded[i] for i in rest], classes)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=3, help="seeded draws of robot-marked images (wbc1, hippocampus)")
    parser.add_argument("--limit", type=int, default=40, help="held-out images per draw (wbc1, hippocampus)")
    parser.add_argument("--out", help="also write the JSON line here")
    args = parser.parse_args()
    result = {"benchmark": "decoders", "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_average_start": list(os.getloadavg())}
    if (SHARED / "schisto").is_dir():
        result["schisto_human_markers"] = schisto()
    if (SHARED / "wbc1").is_dir():
        result["wbc1_robot_5_images"] = robot_draws("wbc1", 5, args.draws, args.limit)
    if (SHARED / "hippocampus").is_dir():
        result["hippocampus_robot_3_volumes"] = robot_draws("hippocampus", 3, args.draws, args.limit)
    if len(result) == 5:
        result["skipped"] = "no dataset under ../shared/datasets"
    result["load_average_end"] = list(os.getloadavg())
    emit(result, args.out)


if __name__ == "__main__":
    main()
