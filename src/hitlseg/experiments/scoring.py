"""Dice summaries shared by the experiment protocols: per class, their mean, and BraTS regions."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hitlseg.metrics import brats_dice, dice_per_class


def is_brats(classes: Sequence[int]) -> bool:
    """True when the label set looks like BraTS (labels within 1..4, enhancing tumour 4 present)."""
    classes = set(int(c) for c in classes)
    return bool(classes) and classes <= {1, 2, 3, 4} and 4 in classes


def score(prediction: np.ndarray, truth: np.ndarray, classes: Sequence[int], brats: bool = False) -> dict:
    """Dice of one prediction: ``{"class": {c: dice}, "mean": ..., "regions": {WT, TC, ET}}``."""
    per_class = dice_per_class(prediction, truth, labels=list(classes))
    result = {"class": {str(c): float(v) for c, v in per_class.items()}, "mean": float(np.mean(list(per_class.values())))}
    if brats:
        result["regions"] = {k: float(v) for k, v in brats_dice(prediction, truth).items()}
    return result


def average(scores: Sequence[dict]) -> dict:
    """Mean over images of :func:`score` results (same keys)."""
    if not scores:
        return {}
    out = {"mean": float(np.mean([s["mean"] for s in scores])),
           "class": {c: float(np.mean([s["class"][c] for s in scores])) for c in scores[0]["class"]}}
    if "regions" in scores[0]:
        out["regions"] = {r: float(np.mean([s["regions"][r] for s in scores])) for r in scores[0]["regions"]}
    return out


def columns(summary: dict) -> dict[str, float]:
    """Flat ``{"mean": .., "class 1": .., "WT": ..}`` view of an :func:`average` result."""
    flat = {"mean": summary["mean"]}
    flat.update({f"class {c}": v for c, v in summary["class"].items()})
    flat.update(summary.get("regions", {}))
    return flat
