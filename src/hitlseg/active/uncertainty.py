"""Pixel uncertainty from a model's probabilities, and how it becomes one score per image.

All functions take class probabilities ``(K + 1, *spatial)`` of one image (2D or 3D) or, for
the disagreement measures, the stacked probabilities of ``M`` members ``(M, K + 1, *spatial)``
(MC-dropout passes or ensemble models). Pure numpy.
"""

from __future__ import annotations

import numpy as np

from hitlseg.errors import InputError

MEASURES = ("least_confidence", "margin", "entropy")
REDUCTIONS = ("mean", "sum", "max", "topk")

_EPS = 1e-12


def _probs(p, name: str = "probabilities", members: bool = False) -> np.ndarray:
    p = np.asarray(p, dtype=np.float32)
    need = 4 if members else 3
    if p.ndim not in (need, need + 1) or p.shape[1 if members else 0] < 2:
        what = "(M, K + 1, *spatial)" if members else "(K + 1, *spatial)"
        raise InputError(f"{name}: need {what} with at least 2 classes in 2D or 3D, got shape {p.shape}")
    if members and p.shape[0] < 2:
        raise InputError(f"{name}: disagreement needs at least 2 members, got {p.shape[0]}")
    if not np.isfinite(p).all():
        raise InputError(f"{name}: values must be finite")
    return p


def entropy(p) -> np.ndarray:
    """Shannon entropy over the class axis (axis 0), normalised by ``log(K + 1)`` to [0, 1]."""
    p = np.asarray(p, dtype=np.float32)
    h = -(p * np.log(np.clip(p, _EPS, 1.0))).sum(0)
    return (h / np.log(p.shape[0])).astype(np.float32)


def pixel_uncertainty(probabilities, measure: str = "entropy") -> np.ndarray:
    """Per-pixel uncertainty in [0, 1] of one image's probabilities.

    ``least_confidence``: ``1 - max_j p_j``; ``margin``: ``1 - (p_(1) - p_(2))`` (one minus the
    gap between the two most likely classes); ``entropy``: normalised Shannon entropy (Settles,
    "Active Learning Literature Survey", 2009, section 3.1).
    """
    if measure not in MEASURES:
        raise InputError(f"measure: unknown {measure!r} (use one of {', '.join(MEASURES)})")
    p = _probs(probabilities)
    if measure == "least_confidence":
        return (1.0 - p.max(0)).astype(np.float32)
    if measure == "margin":
        top2 = np.partition(p, p.shape[0] - 2, axis=0)[-2:]
        return (1.0 - (top2[1] - top2[0])).astype(np.float32)
    return entropy(p)


def mutual_information(members) -> np.ndarray:
    """BALD / generalised Jensen-Shannon divergence of ``M`` members, per pixel, normalised to [0, 1].

    ``H(mean_m p_m) - mean_m H(p_m)``: the mutual information between the label and the model
    (Houlsby et al. 2011, "Bayesian Active Learning for Classification and Preference Learning";
    Gal et al. ICML 2017 with MC-dropout members). With equal weights it is exactly the
    Jensen-Shannon divergence of the members, the ensemble disagreement of Kuo et al. (MICCAI
    2018, "Cost-Sensitive Active Learning for Intracranial Hemorrhage Detection").
    """
    m = _probs(members, "members", members=True)
    return np.clip(entropy(m.mean(0)) - np.mean([entropy(x) for x in m], axis=0), 0.0, 1.0).astype(np.float32)


def member_variance(members) -> np.ndarray:
    """Variance of the members' probabilities, averaged over classes, per pixel (Yang et al. MICCAI 2017)."""
    m = _probs(members, "members", members=True)
    return m.var(0).mean(0).astype(np.float32)


def _check_fraction(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: must be a number in (0, 1], got {value!r}") from None
    if not (np.isfinite(value) and 0 < value <= 1):
        raise InputError(f"{name}: must be in (0, 1], got {value}")
    return value


def reduce(uncertainty, reduction: str = "mean", top_fraction: float = 0.05) -> float:
    """One image score from per-pixel uncertainty.

    ``mean`` and ``sum`` favour images uncertain everywhere (``sum`` also large images),
    ``max`` the single worst pixel, ``topk`` the mean of the ``top_fraction`` most uncertain
    pixels (robust to a few noisy pixels, sensitive to a small uncertain structure).
    """
    if reduction not in REDUCTIONS:
        raise InputError(f"reduction: unknown {reduction!r} (use one of {', '.join(REDUCTIONS)})")
    u = np.asarray(uncertainty, dtype=np.float64).ravel()
    if u.size == 0:
        raise InputError("uncertainty: empty image")
    if reduction == "mean":
        return float(u.mean())
    if reduction == "sum":
        return float(u.sum())
    if reduction == "max":
        return float(u.max())
    k = max(1, int(round(_check_fraction(top_fraction, "top_fraction") * u.size)))
    return float(np.partition(u, u.size - k)[-k:].mean())


def patch_means(uncertainty, patch: int = 16) -> np.ndarray:
    """Mean uncertainty of non-overlapping ``patch``-sized blocks (edges padded by reflection), flattened."""
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 1:
        raise InputError(f"patch: must be a positive integer, got {patch!r}")
    u = np.asarray(uncertainty, dtype=np.float64)
    pad = [(0, (-s) % patch) for s in u.shape]
    u = np.pad(u, pad, mode="reflect") if any(p[1] for p in pad) and min(u.shape) > 1 else np.pad(u, pad, mode="edge")
    shape = []
    for s in u.shape:
        shape += [s // patch, patch]
    return u.reshape(shape).mean(axis=tuple(range(1, 2 * u.ndim, 2))).ravel()


def top_patch_value(uncertainty, patch: int = 16, k: int = 8) -> float:
    """Sum of the ``k`` most uncertain patches' mean uncertainty (the knapsack value of Kuo et al. 2018)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k: must be a positive integer, got {k!r}")
    means = patch_means(uncertainty, patch)
    k = min(int(k), means.size)
    return float(np.partition(means, means.size - k)[-k:].sum())
