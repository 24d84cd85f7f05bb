"""Annotation effort: a documented time model, a fitted cost model, and the 0-1 knapsack.

Effort is counted from the strokes themselves, so a robot study and a person's session are
measured alike. :class:`TimeModel` turns strokes into seconds; :class:`CostModel` predicts the
seconds an image will take from its *predicted* mask, fitted to recorded effort, as Kuo et al.
(MICCAI 2018, "Cost-Sensitive Active Learning for Intracranial Hemorrhage Detection") do;
:func:`knapsack` picks the most valuable set of images within a time budget.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from hitlseg.errors import InputError


def _labels(markers, name: str = "markers") -> np.ndarray:
    m = np.asarray(markers)
    if m.ndim not in (2, 3) or not np.issubdtype(m.dtype, np.integer):
        raise InputError(f"{name}: need integer labels of shape (H, W) or (D, H, W), got {m.dtype} {m.shape}")
    return m


def count_strokes(markers) -> int:
    """Strokes in a marker image: connected components (8-connected) of each marker label.

    Volumes are drawn slice by slice, so in 3D the components of every axial slice (axis 0)
    are counted: a robot stroke that spans 5 slices is 5 strokes of a person.
    """
    m = _labels(markers)
    slices = m if m.ndim == 3 else m[None]
    structure = np.ones((3, 3), bool)
    total = 0
    for plane in slices:
        for label in np.unique(plane):
            if label > 0:
                total += int(ndimage.label(plane == label, structure=structure)[1])
    return total


@dataclass(frozen=True)
class TimeModel:
    """Simulated annotation seconds: ``per_image + per_stroke * strokes + per_pixel * marked pixels``.

    Defaults are assumptions, stated so a study can be re-weighted: 4 s to look at an image and
    its prediction, 2 s to start and steer a stroke, 2 ms per marked pixel (a 3-pixel brush
    drawn at about 150 pixels per second). The web app records real seconds from the editor;
    :class:`CostModel` can be fitted to either.
    """

    per_image: float = 4.0
    per_stroke: float = 2.0
    per_pixel: float = 0.002

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise InputError(f"{name}: must be a non-negative number of seconds, got {value!r}")

    def effort(self, markers, before=None) -> dict:
        """Strokes, marked pixels and seconds of the strokes in ``markers`` that ``before`` lacked."""
        m = _labels(markers)
        if before is not None:
            before = _labels(before, "before")
            if before.shape != m.shape:
                raise InputError(f"before: shape {before.shape} differs from the markers' {m.shape}")
            m = np.where(m != before, m, 0)
        pixels = int((m > 0).sum())
        strokes = count_strokes(m) if pixels else 0
        seconds = self.per_image + self.per_stroke * strokes + self.per_pixel * pixels
        return {"strokes": strokes, "pixels": pixels, "seconds": float(seconds)}

    def to_dict(self) -> dict:
        return asdict(self)


def mask_features(labels) -> np.ndarray:
    """Cost features of a predicted mask: ``[boundary pixels, connected components]`` of its object classes.

    Boundary pixels: object pixels with a face neighbour of another label; components are
    counted per object class (face connectivity).
    """
    m = _labels(labels, "labels")
    boundary = np.zeros(m.shape, bool)
    for axis in range(m.ndim):
        diff = np.diff(m, axis=axis) != 0
        lo = [slice(None)] * m.ndim
        hi = [slice(None)] * m.ndim
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        boundary[tuple(lo)] |= diff
        boundary[tuple(hi)] |= diff
    boundary &= m > 0
    components = sum(int(ndimage.label(m == k)[1]) for k in np.unique(m) if k > 0)
    return np.array([float(boundary.sum()), float(components)])


class CostModel:
    """Log-linear annotation time: ``log T = w0 + w1 log(1 + boundary) + w2 log(1 + components)``.

    Kuo et al. (MICCAI 2018) predict labelling time from the predicted mask's boundary length
    and number of connected components; fitted here by least squares (with a small ridge, so a
    handful of records gives a stable fit) to recorded ``(features, seconds)``.
    """

    MIN_RECORDS = 3

    def __init__(self, ridge: float = 1e-2):
        self.ridge = float(ridge)
        self.weights: np.ndarray | None = None
        self.records = 0

    @staticmethod
    def design(features) -> np.ndarray:
        f = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if f.shape[1] != 2 or (f < 0).any():
            raise InputError(f"features: need non-negative [boundary, components] rows, got shape {f.shape}")
        return np.column_stack([np.ones(len(f)), np.log1p(f)])

    def fit(self, features, seconds) -> "CostModel":
        x = self.design(features)
        t = np.asarray(seconds, dtype=np.float64).ravel()
        if len(t) != len(x):
            raise InputError(f"seconds: {len(t)} values for {len(x)} feature rows")
        if len(t) < self.MIN_RECORDS:
            raise InputError(f"cost model: needs at least {self.MIN_RECORDS} recorded annotations, got {len(t)}")
        if not np.isfinite(t).all() or (t <= 0).any():
            raise InputError("seconds: recorded annotation times must be positive")
        penalty = self.ridge * np.diag([0.0, 1.0, 1.0])
        self.weights = np.linalg.solve(x.T @ x + penalty, x.T @ np.log(t))
        self.records = len(t)
        return self

    def predict(self, features) -> np.ndarray:
        if self.weights is None:
            raise InputError("cost model: not fitted (record some annotations first)")
        return np.exp(self.design(features) @ self.weights)

    def to_dict(self) -> dict:
        return {"weights": None if self.weights is None else self.weights.tolist(), "records": self.records}


def knapsack(values, costs, budget: float, *, resolution: float = 1.0, max_items: int | None = None) -> list[int]:
    """Indices of the most valuable subset whose total cost fits ``budget`` (0-1 knapsack, exact DP).

    Costs are rounded up to multiples of ``resolution`` (so the chosen set never exceeds the
    budget); ``max_items`` also caps the set's size. Ties keep the earlier items. Raises
    :class:`InputError` when even the cheapest item does not fit.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    c = np.asarray(costs, dtype=np.float64).ravel()
    if len(v) != len(c):
        raise InputError(f"costs: {len(c)} costs for {len(v)} values")
    if not len(v):
        raise InputError("knapsack: no item to choose from")
    if not (np.isfinite(v).all() and np.isfinite(c).all()) or (c <= 0).any():
        raise InputError("knapsack: values must be finite and costs positive")
    if not (isinstance(budget, (int, float, np.floating, np.integer)) and math.isfinite(budget) and budget > 0):
        raise InputError(f"budget: must be a positive number, got {budget!r}")
    if not resolution > 0:
        raise InputError(f"resolution: must be positive, got {resolution!r}")
    if c.min() > budget:
        raise InputError(f"budget: {budget:g} s is below the cheapest image ({c.min():.1f} s)")
    cap = int(math.floor(budget / resolution + 1e-9))
    w = np.ceil(c / resolution - 1e-9).astype(np.int64)
    k_max = len(v) if max_items is None else int(max_items)
    if k_max < 1:
        raise InputError(f"max_items: must be a positive integer, got {max_items!r}")
    k_max = min(k_max, len(v))
    # dp[k, b]: best value of exactly k items of total weight <= b; -inf when impossible.
    dp = np.full((k_max + 1, cap + 1), -np.inf)
    dp[0] = 0.0
    keep = np.zeros((len(v), k_max + 1, cap + 1), bool)
    for i in range(len(v)):
        if w[i] > cap:
            continue
        candidate = dp[:-1, : cap + 1 - w[i]] + v[i]
        better = candidate > dp[1:, w[i]:] + 1e-12
        dp[1:, w[i]:] = np.where(better, candidate, dp[1:, w[i]:])
        keep[i, 1:, w[i]:] = better
    k, b = int(np.argmax(dp[:, cap])), cap  # fewest items among equally valuable sets
    chosen = []
    for i in reversed(range(len(v))):
        if k > 0 and keep[i, k, b]:
            chosen.append(i)
            b -= w[i]
            k -= 1
    return sorted(chosen)
