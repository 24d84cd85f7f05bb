"""Evaluating folders of predicted masks against ground truth, matched by file stem."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hitlseg.errors import InputError
from hitlseg.io import is_image_file, read_mask, stem_of
from hitlseg.metrics import evaluate_masks
from hitlseg.progress import Progress, report


def _masks_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: folder not found")
    found = {}
    for path in sorted(folder.iterdir()):
        if is_image_file(path):
            stem = stem_of(path)
            if stem in found:
                raise InputError(f"{folder}: two files have the stem {stem!r}: {found[stem].name} and {path.name}")
            found[stem] = path
    return found


def voxel_spacing(meta) -> tuple[float, ...] | None:
    """Voxel size per array axis (z, y, x) from a NIfTI header, or None for 2D images."""
    if meta is None or meta.header is None:
        return None
    zooms = meta.header.get_zooms()[:3]
    return tuple(float(z) for z in zooms[::-1])


def evaluate_folders(pred_dir: str | Path, truth_dir: str | Path, progress: Progress = None) -> dict:
    """Dice, IoU and HD95 per image and their means, for masks matched by stem.

    ``truth_dir`` may be a folder of masks or a dataset folder with a ``masks/`` sub-folder.
    HD95 is in voxel units for 2D and in millimetres (header spacing) for NIfTI.

    Returns
    -------
    dict
        ``classes``, ``images`` (one row per matched image), ``mean`` (per-class means and overall
        means), ``missing`` (truth without prediction) and ``unmatched`` (prediction without truth).
    """
    truth_dir = Path(truth_dir)
    if (truth_dir / "masks").is_dir():
        truth_dir = truth_dir / "masks"
    preds, truths = _masks_by_stem(Path(pred_dir)), _masks_by_stem(truth_dir)
    common = sorted(set(preds) & set(truths))
    if not common:
        raise InputError(f"{pred_dir}: no predicted mask has the stem of a mask in {truth_dir}")
    rows = []
    for index, stem in enumerate(common):
        report(progress, index, len(common), stem)
        pred, _ = read_mask(preds[stem])
        truth, meta = read_mask(truths[stem])
        if pred.shape != truth.shape:
            raise InputError(f"{preds[stem]}: shape {pred.shape} differs from ground truth {truths[stem]} {truth.shape}")
        rows.append((stem, pred, truth, meta))
    report(progress, len(common), len(common), "")
    from hitlseg.dataset import task_classes

    n_classes = task_classes({str(truths[stem]): np.unique(t) for stem, _, t, _ in rows})  # the one label rule
    predicted = {int(c) for _, p, _, _ in rows for c in np.unique(p) if c > 0}
    classes = sorted(set(range(1, n_classes + 1)) | predicted)  # a class the truth lacks scores 0
    images = []
    for stem, pred, truth, meta in rows:
        result = evaluate_masks(pred, truth, labels=classes or None, spacing=voxel_spacing(meta))
        images.append({
            "id": stem,
            "dice": {str(c): v for c, v in result["dice"].items()},
            "iou": {str(c): v for c, v in result["iou"].items()},
            "hd95": {str(c): v for c, v in result["hd95"].items()},
            "mean_dice": result["mean_dice"],
            "mean_iou": result["mean_iou"],
            "mean_hd95": result["mean_hd95"],
        })

    def average(key: str, cls: int) -> float:
        values = [row[key][str(cls)] for row in images]
        return float(np.mean(values))

    mean = {key: {str(c): average(key, c) for c in classes} for key in ("dice", "iou", "hd95")}
    for key in ("mean_dice", "mean_iou", "mean_hd95"):
        mean[key] = float(np.mean([row[key] for row in images]))
    return {
        "classes": classes,
        "images": images,
        "mean": mean,
        "missing": sorted(set(truths) - set(preds)),
        "unmatched": sorted(set(preds) - set(truths)),
    }
