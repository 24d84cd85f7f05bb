"""Segmentation and salient-object metrics.

Segmentation metrics take integer label masks of shape ``(H, W)`` or ``(D, H, W)``: 0 is
background, 1..K are classes (boolean masks are accepted as one class). Per-class functions
evaluate ``labels`` (default: 1..K with K the largest label in either mask) and return
``{label: value}``; the binary functions (:func:`dice_score`, :func:`iou_score`, :func:`hd95`)
take foreground as ``label > 0``.

Saliency metrics take a float saliency map ``sal`` with values in [0, 1] and a binary ground
truth ``gt`` (bool, or 0/1 values) of the same shape, 2D or 3D; the S-measure is 2D only. The map
is used as given (no min-max rescaling). Threshold curves use the 256 thresholds ``t/255``,
``t = 0..255``: a pixel is foreground at threshold ``t`` when ``floor(255 * sal) >= t``. The
adaptive threshold is ``min(2 * mean(sal), 1)`` and a pixel is foreground when ``sal >= thr``.

Empty-case conventions
----------------------
- Dice and IoU: both masks empty (for a class, or foreground) -> 1.0; one empty and the other
  not -> 0.0. A class absent from both masks therefore scores 1.0.
- HD95: both empty -> 0.0; one empty and the other not -> ``inf``.
- Means over classes (:func:`mean_dice`, :func:`mean_iou`, :func:`evaluate_masks`): when there
  are no classes to evaluate (both masks all background, ``labels`` not given) the mean Dice/IoU
  is 1.0 and the mean HD95 is 0.0; one infinite HD95 makes the mean HD95 ``inf``.
- F-measure: precision is 0 when nothing is predicted, recall is 0 when ``gt`` is empty, and F is
  0 when precision and recall are both 0.
- S-measure: ``gt`` all background -> ``1 - mean(sal)``; ``gt`` all foreground -> ``mean(sal)``.
- E-measure: ``gt`` all background -> fraction of predicted background; ``gt`` all foreground ->
  fraction of predicted foreground (per threshold).

Notes
-----
The S- and E-measures follow Fan et al.'s MATLAB code (and PySODMetrics) formula for formula,
with three deliberate differences that only matter in corner cases: the E-measure divides the
enhanced-alignment sum by the number of pixels N, as in the paper, where the MATLAB code and
PySODMetrics divide by ``N - 1`` (so a perfect map scores exactly 1; their E is ours times
``N / (N - 1)``); the S-measure centroid is rounded half away from zero as MATLAB's ``round``
does (PySODMetrics uses ``np.round``, half to even, so the two differ when a centroid coordinate
is exactly ``k + 0.5`` with ``k`` even); and an S-measure quadrant with no pixels (centroid on
the last row or column) contributes 0 instead of NaN.

``tests/test_metrics.py::test_saliency_metrics_agree_with_pysodmetrics`` compares S, E
(adaptive, mean, max and the curve, after the ``N / (N - 1)`` correction), F (adaptive, max and
the curve) and MAE with PySODMetrics 1.6 (``Smeasure``, ``Emeasure``, ``FmeasureV2``, ``MAE``)
on ten seeded maps, to 1e-10; it is skipped where ``py_sod_metrics`` is not installed.
PySODMetrics' threshold curves run from threshold 255 down to 0.

References
----------
.. [1] Fan, Cheng, Liu, Li and Borji, "Structure-measure: A new way to evaluate foreground
   maps", ICCV 2017.
.. [2] Fan, Gong, Cao, Ren, Cheng and Borji, "Enhanced-alignment measure for binary foreground
   map evaluation", IJCAI 2018.
.. [3] Achanta, Hemami, Estrada and Suesstrunk, "Frequency-tuned salient region detection",
   CVPR 2009 (F-measure with beta^2 = 0.3).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from hitlseg.errors import InputError

__all__ = [
    "BRATS_REGIONS",
    "EMeasure",
    "FMeasure",
    "brats_dice",
    "brats_regions",
    "dice_per_class",
    "dice_score",
    "e_measure",
    "evaluate_masks",
    "f_measure",
    "hd95",
    "hd95_per_class",
    "iou_per_class",
    "iou_score",
    "mae",
    "mean_dice",
    "mean_iou",
    "s_measure",
    "saliency_metrics",
]

#: MATLAB's ``eps``, used where the reference code adds it.
_EPS = float(np.spacing(1.0))
#: Largest label value counted with ``np.bincount``; larger ones use ``np.unique``.
_BINCOUNT_MAX = 1 << 22
_N_THRESHOLDS = 256

#: BraTS regions as sets of labels (1 necrosis/non-enhancing core, 2 oedema, 4 enhancing tumour).
BRATS_REGIONS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 3, 4), "TC": (1, 3, 4), "ET": (4,)}


# --------------------------------------------------------------------------- validation


def _check_mask(a, name: str) -> np.ndarray:
    from hitlseg.validate import check_label_mask

    return check_label_mask(a, name, bool_as_int=False)


def _check_pair(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    pred = _check_mask(pred, "pred")
    truth = _check_mask(truth, "truth")
    if pred.shape != truth.shape:
        raise InputError(f"shape mismatch: pred has shape {pred.shape} but truth has shape {truth.shape}")
    return pred, truth


def _check_labels(labels, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    if labels is None:
        k = max(int(pred.max()), int(truth.max()))
        return np.arange(1, k + 1, dtype=np.int64)
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
        raise InputError(f"labels must be an iterable of positive integers, got {labels!r}")
    values = list(labels)
    if not values:
        raise InputError("labels is empty; give at least one class label or None for 1..K")
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"labels must be positive integers (classes 1..K), got {v!r}")
    return np.unique(np.asarray(values, dtype=np.int64))


def _check_spacing(spacing, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    arr = np.atleast_1d(np.asarray(spacing))
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InputError(f"spacing must be a positive number or one per axis, got {spacing!r}")
    if arr.size == 1:
        arr = np.repeat(arr, ndim)
    if arr.size != ndim:
        raise InputError(f"spacing must have {ndim} values (one per axis) for {ndim}D masks, got {arr.size}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise InputError(f"spacing values must be finite and > 0, got {tuple(arr.tolist())}")
    return tuple(arr.tolist())


def _check_saliency(sal, gt, *, allow_3d: bool = True) -> tuple[np.ndarray, np.ndarray]:
    sal = np.asarray(sal)
    gt = np.asarray(gt)
    if sal.dtype != bool and (not np.issubdtype(sal.dtype, np.number) or np.iscomplexobj(sal)):
        raise InputError(
            f"sal must be a real-valued saliency map with values in [0, 1], got dtype {sal.dtype}"
        )
    if allow_3d:
        dims = "2D (H, W) or 3D (D, H, W)"
    else:
        dims = "2D (H, W) (the S-measure is defined for 2D maps only)"
    for name, a in (("sal", sal), ("gt", gt)):
        if a.ndim not in ((2, 3) if allow_3d else (2,)):
            raise InputError(f"{name} must be {dims}, got {a.ndim}D shape {a.shape}")
        if a.size == 0:
            raise InputError(f"{name} is empty (shape {a.shape})")
    if sal.shape != gt.shape:
        raise InputError(f"shape mismatch: sal has shape {sal.shape} but gt has shape {gt.shape}")
    sal = sal.astype(np.float64)
    if not np.all(np.isfinite(sal)):
        raise InputError("sal contains NaN or infinite values")
    lo, hi = float(sal.min()), float(sal.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(
            f"sal values must lie in [0, 1], got range [{lo:g}, {hi:g}] (divide 8-bit maps by 255)"
        )
    if gt.dtype != bool:
        if not np.issubdtype(gt.dtype, np.number) or np.iscomplexobj(gt):
            raise InputError(f"gt must be a binary mask (bool or 0/1 values), got dtype {gt.dtype}")
        bad = (gt != 0) & (gt != 1)
        if bad.any():
            raise InputError(f"gt must be a binary mask (bool or 0/1 values), found value {gt[bad][0]!r}")
        gt = gt.astype(bool)
    return sal, gt


# --------------------------------------------------------------------------- Dice and IoU


def _counts(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Number of occurrences of each of ``labels`` in the 1-D array ``values``."""
    out = np.zeros(labels.size, dtype=np.int64)
    if values.size == 0 or labels.size == 0:
        return out
    vmax = int(values.max())
    if vmax <= _BINCOUNT_MAX:
        bc = np.bincount(values.astype(np.intp, copy=False), minlength=vmax + 1)
        inside = labels <= vmax
        out[inside] = bc[labels[inside]]
    else:
        uniq, cnt = np.unique(values, return_counts=True)
        idx = np.minimum(np.searchsorted(uniq, labels), uniq.size - 1)
        hit = uniq[idx] == labels
        out[hit] = cnt[idx[hit]]
    return out


def _overlaps(pred: np.ndarray, truth: np.ndarray, labels: np.ndarray):
    """Per-label sizes of pred, truth and their intersection."""
    p = pred.ravel()
    t = truth.ravel()
    return _counts(p, labels), _counts(t, labels), _counts(p[p == t], labels)


def _dice_from(n_pred, n_truth, n_inter) -> np.ndarray:
    n_pred, n_truth, n_inter = (np.asarray(x, dtype=np.float64) for x in (n_pred, n_truth, n_inter))
    denom = n_pred + n_truth
    return np.where(denom == 0, 1.0, 2.0 * n_inter / np.maximum(denom, 1.0))


def _iou_from(n_pred, n_truth, n_inter) -> np.ndarray:
    n_pred, n_truth, n_inter = (np.asarray(x, dtype=np.float64) for x in (n_pred, n_truth, n_inter))
    union = n_pred + n_truth - n_inter
    return np.where(union == 0, 1.0, n_inter / np.maximum(union, 1.0))


def _binary_overlap(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    p = pred > 0
    t = truth > 0
    return int(np.count_nonzero(p)), int(np.count_nonzero(t)), int(np.count_nonzero(p & t))


def dice_score(pred, truth) -> float:
    """Dice coefficient of the foregrounds (``label > 0``) of two masks.

    Parameters
    ----------
    pred, truth : array_like of int or bool, shape (H, W) or (D, H, W)
        Predicted and reference masks.

    Returns
    -------
    float
        ``2 |P & T| / (|P| + |T|)``; 1.0 when both are empty, 0.0 when only one is.
    """
    pred, truth = _check_pair(pred, truth)
    return float(_dice_from(*_binary_overlap(pred, truth)))


def iou_score(pred, truth) -> float:
    """Intersection over union (Jaccard) of the foregrounds (``label > 0``) of two masks.

    Returns ``|P & T| / |P | T|``; 1.0 when both are empty, 0.0 when only one is.
    """
    pred, truth = _check_pair(pred, truth)
    return float(_iou_from(*_binary_overlap(pred, truth)))


def _as_dict(labels: np.ndarray, values) -> dict[int, float]:
    return {int(k): float(v) for k, v in zip(labels, values)}


def dice_per_class(pred, truth, labels: Iterable[int] | None = None) -> dict[int, float]:
    """Dice coefficient of each class.

    Parameters
    ----------
    pred, truth : array_like of int, shape (H, W) or (D, H, W)
        Predicted and reference label masks (0 background).
    labels : iterable of int, optional
        Classes to evaluate (positive integers). Default: 1..K, K the largest label in either mask.

    Returns
    -------
    dict of int to float
        ``{label: dice}``; a class absent from both masks scores 1.0, from one of them 0.0.
    """
    pred, truth = _check_pair(pred, truth)
    labs = _check_labels(labels, pred, truth)
    return _as_dict(labs, _dice_from(*_overlaps(pred, truth, labs)))


def iou_per_class(pred, truth, labels: Iterable[int] | None = None) -> dict[int, float]:
    """IoU (Jaccard index) of each class; same arguments and conventions as :func:`dice_per_class`."""
    pred, truth = _check_pair(pred, truth)
    labs = _check_labels(labels, pred, truth)
    return _as_dict(labs, _iou_from(*_overlaps(pred, truth, labs)))


def _mean(values: Sequence[float], empty: float) -> float:
    return float(np.mean(values)) if len(values) else empty


def mean_dice(pred, truth, labels: Iterable[int] | None = None) -> float:
    """Mean of :func:`dice_per_class` over the classes; 1.0 when there are no classes."""
    return _mean(list(dice_per_class(pred, truth, labels).values()), 1.0)


def mean_iou(pred, truth, labels: Iterable[int] | None = None) -> float:
    """Mean of :func:`iou_per_class` over the classes; 1.0 when there are no classes."""
    return _mean(list(iou_per_class(pred, truth, labels).values()), 1.0)


# --------------------------------------------------------------------------- HD95


def _surface(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with a face neighbour in the background or outside the array."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _hd95_bool(p: np.ndarray, t: np.ndarray, spacing: tuple[float, ...]) -> float:
    has_p, has_t = bool(p.any()), bool(t.any())
    if not has_p and not has_t:
        return 0.0
    if has_p != has_t:
        return float("inf")
    # Crop to the bounding box of both masks: outside it both are background, so the surfaces
    # (erosion with border_value=0) and the distances between surface voxels are unchanged.
    box = ndimage.find_objects((p | t).view(np.uint8))[0]
    p, t = p[box], t[box]
    sp, st = _surface(p), _surface(t)
    to_t = ndimage.distance_transform_edt(~st, sampling=spacing)[sp]
    to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)[st]
    return float(max(np.percentile(to_t, 95), np.percentile(to_p, 95)))


def hd95(pred, truth, spacing: float | Sequence[float] | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance between the foreground surfaces.

    Surfaces are the foreground (``label > 0``) voxels with a face neighbour in the background
    (or on the array border). For each surface voxel of one mask, the Euclidean distance to the
    nearest surface voxel of the other is taken; the result is the larger of the two directed
    95th percentiles (linear interpolation), as in MONAI and DeepMind's surface-distance.

    Parameters
    ----------
    pred, truth : array_like of int or bool, shape (H, W) or (D, H, W)
        Predicted and reference masks.
    spacing : float or sequence of float, optional
        Voxel size along each axis (array axis order), or one value for all; default 1.

    Returns
    -------
    float
        Distance in units of ``spacing``; 0.0 when both masks are empty, ``inf`` when only one is.
    """
    pred, truth = _check_pair(pred, truth)
    sp = _check_spacing(spacing, pred.ndim)
    return _hd95_bool(pred > 0, truth > 0, sp)


def hd95_per_class(
    pred, truth, labels: Iterable[int] | None = None, spacing: float | Sequence[float] | None = None
) -> dict[int, float]:
    """HD95 of each class (see :func:`hd95`); ``labels`` as in :func:`dice_per_class`."""
    pred, truth = _check_pair(pred, truth)
    labs = _check_labels(labels, pred, truth)
    sp = _check_spacing(spacing, pred.ndim)
    return {int(c): _hd95_bool(pred == c, truth == c, sp) for c in labs}


# --------------------------------------------------------------------------- evaluation


def evaluate_masks(
    pred, truth, labels: Iterable[int] | None = None, spacing: float | Sequence[float] | None = None
) -> dict:
    """Per-class Dice, IoU and HD95 of a predicted label mask, with their means.

    Parameters
    ----------
    pred, truth : array_like of int, shape (H, W) or (D, H, W)
        Predicted and reference label masks (0 background).
    labels : iterable of int, optional
        Classes to evaluate; default 1..K, K the largest label in either mask.
    spacing : float or sequence of float, optional
        Voxel size per axis for HD95; default 1.

    Returns
    -------
    dict
        ``{"labels": [..], "dice": {c: ..}, "iou": {c: ..}, "hd95": {c: ..},
        "mean_dice": .., "mean_iou": .., "mean_hd95": ..}`` with Python ints and floats. HD95
        may be ``inf`` (class missing from one mask); with no classes the means are 1.0, 1.0, 0.0.
    """
    pred, truth = _check_pair(pred, truth)
    labs = _check_labels(labels, pred, truth)
    sp = _check_spacing(spacing, pred.ndim)
    counts = _overlaps(pred, truth, labs)
    dice = _as_dict(labs, _dice_from(*counts))
    iou = _as_dict(labs, _iou_from(*counts))
    hd = {int(c): _hd95_bool(pred == c, truth == c, sp) for c in labs}
    return {
        "labels": [int(c) for c in labs],
        "dice": dice,
        "iou": iou,
        "hd95": hd,
        "mean_dice": _mean(list(dice.values()), 1.0),
        "mean_iou": _mean(list(iou.values()), 1.0),
        "mean_hd95": _mean(list(hd.values()), 0.0),
    }


# --------------------------------------------------------------------------- BraTS


def _brats_checked(mask: np.ndarray, name: str) -> dict[str, np.ndarray]:
    top = int(mask.max())
    if top > 4:
        raise InputError(f"{name} has label {top}; BraTS masks use labels 0-4")
    return {region: np.isin(mask, labs) for region, labs in BRATS_REGIONS.items()}


def brats_regions(mask) -> dict[str, np.ndarray]:
    """Brain-tumour regions of a BraTS label mask.

    Parameters
    ----------
    mask : array_like of int, shape (H, W) or (D, H, W)
        Labels 0-4 (BraTS 2017-2021: 1 necrotic/non-enhancing core, 2 oedema, 4 enhancing).

    Returns
    -------
    dict of str to ndarray of bool
        ``{"WT": labels {1,2,3,4}, "TC": labels {1,3,4}, "ET": label {4}}``.
    """
    return _brats_checked(_check_mask(mask, "mask"), "mask")


def brats_dice(pred, truth) -> dict[str, float]:
    """Dice of the BraTS regions WT, TC and ET (see :func:`brats_regions`).

    Returns ``{"WT": .., "TC": .., "ET": ..}``; a region empty in both masks scores 1.0.
    """
    pred, truth = _check_pair(pred, truth)
    rp, rt = _brats_checked(pred, "pred"), _brats_checked(truth, "truth")
    return {k: float(_dice_from(*_binary_overlap(rp[k], rt[k]))) for k in BRATS_REGIONS}


# --------------------------------------------------------------------------- saliency


@dataclass(frozen=True)
class FMeasure:
    """F-measure of a saliency map.

    Attributes
    ----------
    adaptive : float
        F at the adaptive threshold ``min(2 * mean(sal), 1)``.
    maximum, mean : float
        Maximum and mean of ``curve``.
    curve, precision, recall : ndarray, shape (256,)
        Values at thresholds ``t/255``, ``t = 0..255``.
    """

    adaptive: float
    maximum: float
    mean: float
    curve: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


@dataclass(frozen=True)
class EMeasure:
    """E-measure of a saliency map.

    Attributes
    ----------
    adaptive : float
        E at the adaptive threshold ``min(2 * mean(sal), 1)``.
    maximum, mean : float
        Maximum and mean of ``curve``.
    curve : ndarray, shape (256,)
        E at thresholds ``t/255``, ``t = 0..255``.
    """

    adaptive: float
    maximum: float
    mean: float
    curve: np.ndarray


def _adaptive_threshold(sal: np.ndarray) -> float:
    return min(2.0 * float(sal.mean()), 1.0)


def _threshold_counts(sal: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True positives and predicted positives at thresholds t/255, t = 0..255 (one pass)."""
    q = (sal * 255.0).astype(np.intp)  # floor, since sal >= 0; 1.0 -> 255
    hist = np.bincount((q + _N_THRESHOLDS * gt).ravel(), minlength=2 * _N_THRESHOLDS)
    bg, fg = hist[:_N_THRESHOLDS], hist[_N_THRESHOLDS:]
    tp = np.cumsum(fg[::-1])[::-1]  # tp[t] = #(gt & q >= t)
    npred = tp + np.cumsum(bg[::-1])[::-1]
    return tp, npred


def _adaptive_counts(sal: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    binary = sal >= _adaptive_threshold(sal)
    return int(np.count_nonzero(binary & gt)), int(np.count_nonzero(binary))


def _f_from_counts(tp, npred, ngt: int, beta2: float):
    tp = np.asarray(tp, dtype=np.float64)
    npred = np.asarray(npred, dtype=np.float64)
    precision = np.where(npred > 0, tp / np.maximum(npred, 1.0), 0.0)
    recall = tp / ngt if ngt > 0 else np.zeros_like(tp)
    denom = beta2 * precision + recall
    f = np.where(denom > 0, (1.0 + beta2) * precision * recall / np.where(denom > 0, denom, 1.0), 0.0)
    return f, precision, recall


def _e_from_counts(tp, npred, ngt: int, n: int):
    """Mean enhanced alignment of a binarised map from its confusion counts (Fan et al. 2018)."""
    tp = np.asarray(tp, dtype=np.float64)
    npred = np.asarray(npred, dtype=np.float64)
    if ngt == 0:
        total = n - npred
    elif ngt == n:
        total = npred
    else:
        fp = npred - tp
        fn = ngt - tp
        tn = n - npred - fn
        mp, mg = npred / n, ngt / n
        a_fg, a_bg = 1.0 - mp, -mp  # bias-removed prediction at predicted fg / bg
        b_fg, b_bg = 1.0 - mg, -mg  # bias-removed truth at true fg / bg

        def enhanced(a, b):
            xi = 2.0 * a * b / (a * a + b * b + _EPS)  # alignment
            return (xi + 1.0) ** 2 / 4.0

        total = (
            tp * enhanced(a_fg, b_fg)
            + fp * enhanced(a_fg, b_bg)
            + fn * enhanced(a_bg, b_fg)
            + tn * enhanced(a_bg, b_bg)
        )
    return total / n


def mae(sal, gt) -> float:
    """Mean absolute error ``mean(|sal - gt|)`` between a saliency map and a binary ground truth."""
    sal, gt = _check_saliency(sal, gt)
    return float(np.mean(np.abs(sal - gt)))


def _f_measure(sal: np.ndarray, gt: np.ndarray, beta2: float) -> FMeasure:
    ngt = int(np.count_nonzero(gt))
    curve, precision, recall = _f_from_counts(*_threshold_counts(sal, gt), ngt, beta2)
    adaptive = float(_f_from_counts(*_adaptive_counts(sal, gt), ngt, beta2)[0])
    return FMeasure(adaptive, float(curve.max()), float(curve.mean()), curve, precision, recall)


def f_measure(sal, gt, beta2: float = 0.3) -> FMeasure:
    """F-measure ``(1 + b2) P R / (b2 P + R)`` of a saliency map, adaptive and over 256 thresholds.

    Parameters
    ----------
    sal : array_like of float, shape (H, W) or (D, H, W)
        Saliency map with values in [0, 1].
    gt : array_like of bool or 0/1, same shape
        Binary ground truth.
    beta2 : float
        Weight ``beta^2`` of precision; 0.3 as in Achanta et al. 2009.

    Returns
    -------
    FMeasure
        Adaptive, maximum and mean F with the F, precision and recall curves.
    """
    sal, gt = _check_saliency(sal, gt)
    if not np.isfinite(beta2) or beta2 <= 0:
        raise InputError(f"beta2 must be a positive number, got {beta2!r}")
    return _f_measure(sal, gt, float(beta2))


def _e_measure(sal: np.ndarray, gt: np.ndarray) -> EMeasure:
    n, ngt = gt.size, int(np.count_nonzero(gt))
    curve = _e_from_counts(*_threshold_counts(sal, gt), ngt, n)
    adaptive = float(_e_from_counts(*_adaptive_counts(sal, gt), ngt, n))
    return EMeasure(adaptive, float(curve.max()), float(curve.mean()), curve)


def e_measure(sal, gt) -> EMeasure:
    """Enhanced-alignment measure (Fan et al., IJCAI 2018), adaptive and over 256 thresholds.

    For a binarised map ``FM`` and the ground truth ``GT``, each minus its mean, the alignment is
    ``xi = 2 FM GT / (FM^2 + GT^2 + eps)`` pixel-wise, the enhanced alignment ``(1 + xi)^2 / 4``
    and E its mean over pixels. If ``gt`` is all background E is the fraction of predicted
    background; if all foreground, the fraction of predicted foreground. Computed from
    confusion counts, so all 256 thresholds cost one histogram.

    Parameters
    ----------
    sal : array_like of float, shape (H, W) or (D, H, W)
        Saliency map with values in [0, 1].
    gt : array_like of bool or 0/1, same shape
        Binary ground truth.

    Returns
    -------
    EMeasure
        Adaptive, maximum and mean E with the E curve.
    """
    sal, gt = _check_saliency(sal, gt)
    return _e_measure(sal, gt)


def _object_score(x: np.ndarray) -> float:
    if x.size == 0:
        return 0.0
    mu = float(x.mean())
    sigma = float(x.std(ddof=1)) if x.size > 1 else 0.0  # MATLAB std of a scalar is 0
    return 2.0 * mu / (mu * mu + 1.0 + sigma + _EPS)


def _ssim(x: np.ndarray, y: np.ndarray) -> float:
    n = x.size
    mx, my = float(x.mean()), float(y.mean())
    dx, dy = x - mx, y - my
    var_x = float(np.sum(dx * dx)) / (n - 1 + _EPS)
    var_y = float(np.sum(dy * dy)) / (n - 1 + _EPS)
    cov = float(np.sum(dx * dy)) / (n - 1 + _EPS)
    a = 4.0 * mx * my * cov
    b = (mx * mx + my * my) * (var_x + var_y)
    if a != 0:
        return a / (b + _EPS)
    return 1.0 if b == 0 else 0.0


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))  # MATLAB round for x >= 0


def _s_measure(sal: np.ndarray, gt: np.ndarray, alpha: float) -> float:
    y = float(gt.mean())
    if y == 0.0:
        return 1.0 - float(sal.mean())
    if y == 1.0:
        return float(sal.mean())
    # Object-aware similarity: foreground and background treated as objects.
    s_object = y * _object_score(sal[gt]) + (1.0 - y) * _object_score(1.0 - sal[~gt])
    # Region-aware similarity: split at the (1-based, MATLAB-rounded) centroid of gt.
    h, w = gt.shape
    rows, cols = np.nonzero(gt)
    total = rows.size
    cy = _round_half_up(float(np.sum(rows + 1)) / total)
    cx = _round_half_up(float(np.sum(cols + 1)) / total)
    area = h * w
    parts = [
        ((slice(0, cy), slice(0, cx)), cx * cy / area),
        ((slice(0, cy), slice(cx, w)), (w - cx) * cy / area),
        ((slice(cy, h), slice(0, cx)), cx * (h - cy) / area),
    ]
    parts.append(((slice(cy, h), slice(cx, w)), 1.0 - sum(wt for _, wt in parts)))
    s_region = 0.0
    for box, weight in parts:
        p, g = sal[box], gt[box]
        if p.size:  # an empty quadrant has weight 0
            s_region += weight * _ssim(p, g.astype(np.float64))
    return max(0.0, alpha * s_object + (1.0 - alpha) * s_region)


def s_measure(sal, gt, alpha: float = 0.5) -> float:
    """Structure measure (Fan et al., ICCV 2017) of a 2D saliency map.

    ``S = alpha * S_o + (1 - alpha) * S_r`` (clipped at 0), where ``S_o`` compares the map with
    the foreground and background as objects (``2 m / (m^2 + 1 + sigma + eps)`` per object,
    weighted by the object's area fraction) and ``S_r`` is an SSIM-like score over the four
    quadrants cut at the ground-truth centroid, weighted by area. If ``gt`` is all background,
    ``S = 1 - mean(sal)``; if all foreground, ``S = mean(sal)``.

    Parameters
    ----------
    sal : array_like of float, shape (H, W)
        Saliency map with values in [0, 1]. 3D maps raise :class:`~hitlseg.errors.InputError`.
    gt : array_like of bool or 0/1, shape (H, W)
        Binary ground truth.
    alpha : float
        Weight of the object-aware term, in [0, 1].

    Returns
    -------
    float
        S in [0, 1].
    """
    sal, gt = _check_saliency(sal, gt, allow_3d=False)
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must lie in [0, 1], got {alpha!r}")
    return _s_measure(sal, gt, float(alpha))


def saliency_metrics(sal, gt) -> dict[str, float]:
    """All saliency metrics of one map.

    Returns
    -------
    dict of str to float
        Keys ``"S", "E_adaptive", "E_max", "E_mean", "F_adaptive", "F_max", "MAE"``. For 3D
        maps, where the S-measure is not defined, ``"S"`` is NaN.
    """
    sal, gt = _check_saliency(sal, gt)
    e = _e_measure(sal, gt)
    f = _f_measure(sal, gt, 0.3)
    return {
        "S": _s_measure(sal, gt, 0.5) if sal.ndim == 2 else float("nan"),
        "E_adaptive": e.adaptive,
        "E_max": e.maximum,
        "E_mean": e.mean,
        "F_adaptive": f.adaptive,
        "F_max": f.maximum,
        "MAE": float(np.mean(np.abs(sal - gt))),
    }
