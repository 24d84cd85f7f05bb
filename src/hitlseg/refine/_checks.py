"""Input checks shared by the refiners: images, probabilities, markers and labels.

Every check raises :class:`~hitlseg.errors.InputError` naming the argument and what is wrong,
before any work is done.
"""

from __future__ import annotations

import numbers

import numpy as np

from hitlseg.errors import InputError

#: Absolute tolerance on ``sum_k probabilities[k] - 1`` at every pixel.
SUM_TOLERANCE = 1e-3


def check_image(image, name: str = "image") -> np.ndarray:
    """A finite float image ``(C, H, W)`` or ``(C, D, H, W)`` as float32 (float64 kept)."""
    a = np.asarray(image)
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise InputError(f"{name}: expected a numeric array (C, *spatial), got dtype {a.dtype}")
    if a.ndim not in (3, 4):
        raise InputError(f"{name}: expected shape (C, H, W) or (C, D, H, W) (channel first), got shape {a.shape}")
    if a.size == 0 or min(a.shape) == 0:
        raise InputError(f"{name}: array is empty (shape {a.shape})")
    if a.dtype != np.float64:
        a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise InputError(f"{name}: contains NaN or infinite values")
    return a


def check_probabilities(probabilities, spatial: tuple[int, ...] | None = None, name: str = "probabilities",
                        tolerance: float = SUM_TOLERANCE) -> np.ndarray:
    """Probabilities ``(K+1, *spatial)`` with ``K >= 1``, in [0, 1], summing to one at every pixel.

    Parameters
    ----------
    probabilities : array-like
        Soft segmentation, one channel per class (background first).
    spatial : tuple of int, optional
        The spatial shape they must have (the image's).
    name : str
        Argument name for messages.
    tolerance : float
        Largest accepted ``|sum_k p_k - 1|``.

    Returns
    -------
    numpy.ndarray of float64
    """
    p = np.asarray(probabilities)
    if p.dtype == bool or not np.issubdtype(p.dtype, np.number):
        raise InputError(f"{name}: expected a float array (K+1, *spatial), got dtype {p.dtype}")
    p = p.astype(np.float64, copy=False)
    if p.ndim not in (3, 4):
        raise InputError(f"{name}: expected shape (K+1, H, W) or (K+1, D, H, W), got shape {p.shape}")
    if p.shape[0] < 2:
        raise InputError(f"{name}: need at least 2 channels (background and one class), got {p.shape[0]}")
    if spatial is not None and tuple(p.shape[1:]) != tuple(spatial):
        raise InputError(f"{name}: spatial shape {tuple(p.shape[1:])} does not match the image's {tuple(spatial)}")
    if not np.isfinite(p).all():
        raise InputError(f"{name}: contains NaN or infinite values")
    lo, hi = float(p.min()), float(p.max())
    if lo < -tolerance or hi > 1 + tolerance:
        raise InputError(f"{name}: values must lie in [0, 1], found [{lo:.4g}, {hi:.4g}]")
    error = np.abs(p.sum(0) - 1.0)
    worst = float(error.max())
    if worst > tolerance:
        where = tuple(int(i) for i in np.unravel_index(int(np.argmax(error)), error.shape))
        raise InputError(f"{name}: must sum to one over the class axis (tolerance {tolerance:g}); the sum is "
                         f"{float(p.sum(0)[where]):.4g} at pixel {where} (apply a softmax first?)")
    return np.clip(p, 0.0, 1.0)


def _integer_array(values, spatial: tuple[int, ...], name: str, expected: str) -> np.ndarray:
    """``values`` as an integer array of shape ``spatial`` (booleans as 0/1), else an InputError."""
    a = np.asarray(values)
    if a.dtype == bool:
        a = a.astype(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"{name}: expected {expected}, got dtype {a.dtype}")
    if tuple(a.shape) != tuple(spatial):
        raise InputError(f"{name}: shape {tuple(a.shape)} does not match the image's spatial shape {tuple(spatial)}")
    return a


def check_markers(markers, spatial: tuple[int, ...], n_labels: int | None = None, name: str = "markers") -> np.ndarray:
    """Markers ``(*spatial)``: 0 unmarked, ``c + 1`` for class ``c``; at most ``n_labels`` classes (background included)."""
    m = _integer_array(markers, spatial, name, "an integer array (0 unmarked, c + 1 for class c)")
    lo, hi = int(m.min()), int(m.max())
    if lo < 0:
        raise InputError(f"{name}: values must be >= 0 (0 unmarked, c + 1 for class c), found {lo}")
    if n_labels is not None and hi > n_labels:
        raise InputError(f"{name}: value {hi} marks class {hi - 1}, but there are only {n_labels} labels "
                         f"(classes 0..{n_labels - 1})")
    if hi > 255:
        raise InputError(f"{name}: values must be at most 255 (uint8 markers), found {hi}")
    return m.astype(np.int64, copy=False)


def check_labels(labels, spatial: tuple[int, ...], n_labels: int, name: str = "labels") -> np.ndarray:
    """A label array ``(*spatial)`` with values in ``0..n_labels-1``."""
    a = _integer_array(labels, spatial, name, "an integer label array")
    if a.min() < 0 or a.max() >= n_labels:
        raise InputError(f"{name}: values must lie in 0..{n_labels - 1}, found [{int(a.min())}, {int(a.max())}]")
    return a.astype(np.int64, copy=False)


def check_positive(value, name: str, allow_zero: bool = False) -> float:
    """A finite positive (or non-negative) real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise InputError(f"{name}: expected a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise InputError(f"{name}: must be {'non-negative' if allow_zero else 'positive'}, got {value!r}")
    return float(value)


def check_count(value, name: str, minimum: int = 1) -> int:
    """An integer at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name}: expected an integer, got {value!r}")
    if value < minimum:
        raise InputError(f"{name}: must be at least {minimum}, got {value!r}")
    return int(value)
