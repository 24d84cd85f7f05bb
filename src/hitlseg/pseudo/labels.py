"""HISE pseudo-labels: confidence, tripartition, local consistency and the progressive schedule.

Zhang et al., "Hierarchical self-ensembling ... (HISE)", Sci China Inf Sci 2020: the confident
pixels of a model's prediction over the unlabelled pool become training labels. A pixel's
confidence is ``mu = max_j p_j``; pixels with ``mu > delta`` take their arg-max class (confident
object, confident background), the others form an uncertain band (typically at edges) that is
never trusted: they get :data:`IGNORE`. Images are ranked by local consistency ``tau_l`` and the
top ``gamma`` fraction is machine-annotated, with ``beta`` and ``gamma`` on a schedule.

:data:`IGNORE` (255) is the value of a training-mask pixel that carries no label: unmarked
pixels of strokes, the uncertain band of pseudo-labels. :func:`hitlseg.nets.train` computes
its losses on the other pixels only. A person's strokes always override machine labels
(:func:`merge_strokes`). Everything here is pure numpy over one image's probabilities
``(K + 1, *spatial)`` (2D or 3D, class 0 background).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Mapping

import numpy as np

from hitlseg.errors import InputError

#: Mask value of a pixel without a label.
IGNORE = 255


def _check_unit(value, name: str, *, low_open: bool = True, high_open: bool = True) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: must be a number, got {value!r}") from None
    low_ok = value > 0 if low_open else value >= 0
    high_ok = value < 1 if high_open else value <= 1
    if not (np.isfinite(value) and low_ok and high_ok):
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise InputError(f"{name}: must be in {interval}, got {value}")
    return value


def _check_probabilities(probabilities) -> np.ndarray:
    p = np.asarray(probabilities, dtype=np.float32)
    if p.ndim not in (3, 4) or p.shape[0] < 2:
        raise InputError(f"probabilities: need (K + 1, *spatial) with at least 2 classes in 2D or 3D, got shape {p.shape}")
    if not np.isfinite(p).all() or p.min() < -1e-4 or p.max() > 1 + 1e-4:
        raise InputError("probabilities: values must be finite and in [0, 1]")
    if np.abs(p.sum(0) - 1).max() > 1e-3:
        raise InputError("probabilities: must sum to 1 over the class axis")
    return p


def confidence(probabilities) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel confidence ``mu = max_j p_j`` (float32) and the arg-max labels (uint8)."""
    p = _check_probabilities(probabilities)
    return p.max(0), p.argmax(0).astype(np.uint8)


def tripartition(probabilities, delta: float) -> np.ndarray:
    """Pseudo-label mask: the arg-max class where ``mu > delta``, :data:`IGNORE` elsewhere.

    Parameters
    ----------
    probabilities : ndarray, shape (K + 1, *spatial)
    delta : float in (0, 1)
        Confidence a pixel must exceed to be labelled.

    Returns
    -------
    ndarray of uint8, shape (*spatial)
    """
    delta = _check_unit(delta, "delta")
    mu, labels = confidence(probabilities)
    if labels.size and int(labels.max()) >= IGNORE:
        raise InputError(f"probabilities: {labels.max() + 1} classes collide with the ignore value {IGNORE}")
    return np.where(mu > delta, labels, IGNORE).astype(np.uint8)


def confident_prediction(probabilities, delta: float, keep: float = 0.5) -> np.ndarray:
    """The prediction's confident pixels: above ``delta``, or at least the surer ``keep`` of each predicted class.

    What "start from the prediction" saves as markers. A model trained for a few epochs (or on
    few strokes) is often less sure than ``delta`` nearly everywhere, and :func:`tripartition`
    alone then keeps nothing. Here a pixel predicted ``c`` is kept when its confidence ``mu`` is
    above ``delta`` or at least ``q_c``, the ``1 - keep`` quantile of ``mu`` over the pixels
    predicted ``c``: where more than ``keep`` of a class is surer than ``delta`` this is the
    tripartition, elsewhere the surer ``keep`` of the class, for the person to correct.

    Parameters
    ----------
    probabilities : ndarray, shape (K + 1, *spatial)
    delta : float in (0, 1)
    keep : float in (0, 1]
        Fraction of each predicted class kept at least.

    Returns
    -------
    ndarray of uint8, shape (*spatial)
        The arg-max class where kept, :data:`IGNORE` elsewhere.
    """
    delta = _check_unit(delta, "delta")
    keep = _check_unit(keep, "keep", high_open=False)
    mu, labels = confidence(probabilities)
    if labels.size and int(labels.max()) >= IGNORE:
        raise InputError(f"probabilities: {labels.max() + 1} classes collide with the ignore value {IGNORE}")
    quantile = np.ones(int(labels.max()) + 1 if labels.size else 1, dtype=np.float32)
    for c in np.unique(labels):
        quantile[c] = np.quantile(mu[labels == c], 1.0 - keep)
    kept = (mu > delta) | (mu >= quantile[labels])
    return np.where(kept, labels, IGNORE).astype(np.uint8)


def local_consistency(probabilities, beta: float) -> float:
    """HISE local consistency ``tau_l``: mean confidence of the object pixels whose confidence is below ``beta``.

    Conventions: object pixels (arg-max not background) but none below ``beta``: 1.0 (fully
    consistent); no object pixel at all: 0.0 (nothing to trust).
    """
    beta = _check_unit(beta, "beta", high_open=False)
    mu, labels = confidence(probabilities)
    objects = labels > 0
    if not objects.any():
        return 0.0
    low = objects & (mu < beta)
    return float(mu[low].mean()) if low.any() else 1.0


@dataclass(frozen=True)
class Schedule:
    """Progressive HISE schedule: ``beta_t = max(beta_min, beta0 - d_beta t)``, ``gamma_t = min(gamma_max, gamma0 + d_gamma t)``.

    Attributes
    ----------
    delta : float in (0, 1)
        Tripartition threshold.
    beta0, d_beta, beta_min : float
        Local-consistency threshold at ``t = 0``, its decrease per iteration and its floor.
    gamma0, d_gamma, gamma_max : float
        Machine-annotated fraction of the pool at ``t = 0``, its increase and its ceiling.
    """

    delta: float = 0.95
    beta0: float = 0.95
    d_beta: float = 0.05
    gamma0: float = 0.3
    d_gamma: float = 0.2
    beta_min: float = 0.5
    gamma_max: float = 1.0

    def __post_init__(self):
        _check_unit(self.delta, "delta")
        _check_unit(self.beta0, "beta0", high_open=False)
        _check_unit(self.gamma0, "gamma0", high_open=False)
        _check_unit(self.beta_min, "beta_min", high_open=False)
        _check_unit(self.gamma_max, "gamma_max", high_open=False)
        for name in ("d_beta", "d_gamma"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
                raise InputError(f"{name}: must be a non-negative number, got {value!r}")

    def at(self, t: int) -> tuple[float, float]:
        """``(beta_t, gamma_t)`` at iteration ``t`` (0-based)."""
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0:
            raise InputError(f"t: must be a non-negative integer, got {t!r}")
        return max(self.beta_min, self.beta0 - self.d_beta * t), min(self.gamma_max, self.gamma0 + self.d_gamma * t)


def choose_images(scores: Mapping[Hashable, float], gamma: float) -> list:
    """The ``ceil(gamma * n)`` ids of highest ``tau_l``, highest first (ties keep the mapping's order)."""
    gamma = _check_unit(gamma, "gamma", high_open=False)
    items = list(scores.items())
    if not items:
        return []
    n = min(len(items), math.ceil(gamma * len(items) - 1e-9))
    order = sorted(range(len(items)), key=lambda i: (-float(items[i][1]), i))
    return [items[i][0] for i in order[:n]]


def merge_strokes(pseudo, markers) -> np.ndarray:
    """Pseudo-labels with a person's strokes on top: where ``markers > 0`` the label is ``markers - 1``."""
    pseudo = np.asarray(pseudo)
    markers = np.asarray(markers)
    if pseudo.shape != markers.shape:
        raise InputError(f"markers: shape {markers.shape} differs from the pseudo-labels' {pseudo.shape}")
    out = pseudo.astype(np.uint8, copy=True)
    marked = markers > 0
    out[marked] = markers[marked].astype(np.int64) - 1
    return out


def markers_to_target(markers) -> np.ndarray:
    """Training mask of strokes: marker ``c + 1`` -> class ``c``, unmarked -> :data:`IGNORE`."""
    markers = np.asarray(markers)
    if not np.issubdtype(markers.dtype, np.integer) or (markers.size and markers.min() < 0):
        raise InputError("markers: must be non-negative integer labels (0 unmarked, c + 1 for class c)")
    if not (markers > 0).any():
        raise InputError("markers: no pixel is marked")
    if int(markers.max()) > IGNORE:
        raise InputError(f"markers: class {int(markers.max()) - 1} collides with the ignore value {IGNORE}")
    target = np.full(markers.shape, IGNORE, dtype=np.uint8)
    marked = markers > 0
    target[marked] = markers[marked] - 1
    return target


def check_ignore(n_classes: int) -> None:
    """Raise :class:`InputError` if the ignore value would collide with a class label."""
    if int(n_classes) >= IGNORE:
        raise InputError(f"n_classes: {n_classes} classes collide with the ignore value {IGNORE} (at most {IGNORE - 1})")


def agreement(pseudo, truth) -> dict:
    """Pseudo-labels against ground truth on their labelled pixels (for evaluation only).

    Returns ``accuracy`` (pixel accuracy), ``dice`` and ``iou`` per object class present in
    either (on labelled pixels), and ``labelled`` (share of pixels that are not :data:`IGNORE`).
    """
    pseudo = np.asarray(pseudo)
    truth = np.asarray(truth)
    if pseudo.shape != truth.shape:
        raise InputError(f"truth: shape {truth.shape} differs from the pseudo-labels' {pseudo.shape}")
    labelled = pseudo != IGNORE
    p, t = pseudo[labelled].astype(np.int64), truth[labelled].astype(np.int64)
    out = {"labelled": float(labelled.mean()) if labelled.size else 0.0,
           "accuracy": float((p == t).mean()) if p.size else float("nan"), "dice": {}, "iou": {}}
    for k in sorted(set(np.unique(p).tolist()) | set(np.unique(t).tolist())):
        if k == 0:
            continue
        a, b = p == k, t == k
        inter, union, total = int((a & b).sum()), int((a | b).sum()), int(a.sum() + b.sum())
        out["dice"][int(k)] = 2 * inter / total if total else 1.0
        out["iou"][int(k)] = inter / union if union else 1.0
    return out
