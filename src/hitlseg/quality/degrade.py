"""Controlled degradations of a label mask, the training data of a no-reference quality model.

Galdran et al., "A no-reference quality metric for retinal vessel tree segmentation" (MICCAI
2018) degrade ground-truth segmentations in controlled ways and teach a network the similarity
of each degraded mask to the truth. Every degradation here takes an integer label mask
``(*spatial)`` (0 background, 1..K classes; 2D or 3D), a ``strength`` in [0, 1] (0 leaves the
mask unchanged, 1 is the most severe) and a ``numpy.random.Generator``, and returns a new mask of
the same shape and dtype. Sizes are relative to each class's own scale (three times the mean
distance of its pixels to its boundary: the radius of a disk, three quarters of the width of a
ring), so the same strength means a similar loss of Dice on small and large objects.

``erode``, ``dilate``
    Each class shrunk (its outer band given to the nearest other label) or grown, by up to 0.7
    and 1.0 times its scale.
``holes``
    Up to five balls cut out of the classes, radius up to half the scale.
``blobs``
    Up to five spurious balls of random classes anywhere in the image.
``boundary``
    Smooth random displacement of every boundary: each pixel takes the label whose signed
    distance plus smooth noise (amplitude up to 0.6 times the scale) is largest.
``shift``
    The whole mask translated by up to the foreground's scale in a random direction.
``swap``
    The foreground inside a ball (radius up to the foreground's scale) takes the next class
    (class ``c`` becomes ``c mod K + 1``; with one class the ball's foreground is lost).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

from hitlseg.errors import InputError

__all__ = ["DEGRADATIONS", "degrade", "random_degradation"]

#: Default number of degradations :func:`random_degradation` composes (drawn uniformly in 1..this).
MAX_STEPS = 3


# ----------------------------------------------------------------------------------------- helpers


def _classes(mask: np.ndarray) -> list[int]:
    return [int(c) for c in np.unique(mask) if c > 0]


def _inside_distance(region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of every pixel of ``region`` to the nearest pixel outside it, and that pixel's index."""
    distance, index = ndimage.distance_transform_edt(region, return_indices=True)
    return distance, index


def _scale(distance_inside: np.ndarray, region: np.ndarray) -> float:
    """Three times the mean inner distance: the radius of a disk or ball."""
    return 3.0 * float(distance_inside[region].mean()) if region.any() else 0.0


def _foreground_scale(mask: np.ndarray) -> float:
    fg = mask > 0
    if not fg.any():
        return 0.1 * min(mask.shape)
    return _scale(ndimage.distance_transform_edt(fg), fg)


def _ball(shape, centre, radius: float) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius**2


def _give_to_nearest_other(mask: np.ndarray, c: int, take: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Pixels ``take`` of class ``c`` relabelled with the label of their nearest non-``c`` pixel."""
    out = mask.copy()
    out[take] = mask[tuple(i[take] for i in index)]
    return out


# ------------------------------------------------------------------------------------ degradations


def erode(mask, strength, rng, n_classes=None):
    """Shrink every class by up to 0.7 times its scale."""
    for c in _classes(mask):
        region = mask == c
        if region.all():
            continue
        distance, index = _inside_distance(region)
        take = region & (distance <= strength * 0.7 * _scale(distance, region))
        mask = _give_to_nearest_other(mask, c, take, index)
    return mask


def dilate(mask, strength, rng, n_classes=None):
    """Grow every class by up to its scale (classes grown later win where two meet)."""
    out = mask.copy()
    for c in _classes(mask):
        region = mask == c
        scale = _scale(ndimage.distance_transform_edt(region), region)
        out[ndimage.distance_transform_edt(~region) <= strength * 1.0 * scale] = c
    return out


def holes(mask, strength, rng, n_classes=None):
    """Cut up to five balls (radius up to half the class scale) out of the classes."""
    if strength <= 0:
        return mask.copy()
    out = mask.copy()
    for c in _classes(mask):
        region = mask == c
        if region.all():
            continue
        distance, index = _inside_distance(region)
        radius = (0.15 + 0.35 * strength) * _scale(distance, region)
        points = np.argwhere(region)
        cut = np.zeros(mask.shape, bool)
        for _ in range(1 + int(round(4 * strength))):
            cut |= _ball(mask.shape, points[rng.integers(len(points))], radius)
        out = _give_to_nearest_other(out, c, cut & region, index)
    return out


def blobs(mask, strength, rng, n_classes=None):
    """Add up to five spurious balls of random classes 1..K anywhere."""
    if strength <= 0:
        return mask.copy()
    k = max(1, int(n_classes or mask.max()))
    out = mask.copy()
    radius = (0.15 + 0.35 * strength) * _foreground_scale(mask)
    for _ in range(1 + int(round(4 * strength))):
        centre = [int(rng.integers(s)) for s in mask.shape]
        out[_ball(mask.shape, centre, max(radius, 1.0))] = int(rng.integers(1, k + 1))
    return out


def boundary(mask, strength, rng, n_classes=None):
    """Move every boundary by smooth noise: each pixel takes the label of largest signed distance + noise."""
    if strength <= 0:
        return mask.copy()
    labels = [int(c) for c in np.unique(mask)]
    if len(labels) < 2:
        return mask.copy()
    scale = _foreground_scale(mask)
    sigma = max(1.0, 0.3 * scale)
    score = []
    for c in labels:
        region = mask == c
        signed = ndimage.distance_transform_edt(region) - ndimage.distance_transform_edt(~region)
        noise = ndimage.gaussian_filter(rng.standard_normal(mask.shape), sigma)
        noise /= max(float(noise.std()), 1e-12)
        score.append(signed + strength * 0.6 * scale * noise)
    return np.asarray(labels, dtype=mask.dtype)[np.argmax(np.stack(score), axis=0)]


def shift(mask, strength, rng, n_classes=None):
    """Translate the mask by up to its foreground scale in a random direction (background enters)."""
    direction = rng.standard_normal(mask.ndim)
    direction /= max(float(np.linalg.norm(direction)), 1e-12)
    offset = direction * strength * _foreground_scale(mask)
    return ndimage.shift(mask, offset, order=0, mode="constant", cval=0).astype(mask.dtype)


def swap(mask, strength, rng, n_classes=None):
    """Inside a ball of radius up to the foreground scale, class ``c`` becomes ``c mod K + 1`` (K = 1: lost)."""
    fg = mask > 0
    if strength <= 0 or not fg.any():
        return mask.copy()
    k = max(1, int(n_classes or mask.max()))
    centre = np.argwhere(fg)[rng.integers(int(fg.sum()))]
    region = _ball(mask.shape, centre, strength * _foreground_scale(mask)) & fg
    out = mask.copy()
    out[region] = 0 if k == 1 else (mask[region].astype(np.int64) % k + 1).astype(mask.dtype)
    return out


#: Degradations by name: ``f(mask, strength, rng, n_classes) -> mask``.
DEGRADATIONS: dict[str, Callable] = {"erode": erode, "dilate": dilate, "holes": holes, "blobs": blobs,
                                     "boundary": boundary, "shift": shift, "swap": swap}


def _check_mask(mask, name: str = "mask") -> np.ndarray:
    from hitlseg.validate import check_label_mask

    return check_label_mask(mask, name)


def degrade(mask, kind: str, strength: float, rng: np.random.Generator | int = 0, n_classes: int | None = None
            ) -> np.ndarray:
    """One degradation of ``mask``.

    Parameters
    ----------
    mask : ndarray of int, shape (H, W) or (D, H, W)
        Labels 0 (background) .. K.
    kind : str
        One of :data:`DEGRADATIONS` (see the module docstring).
    strength : float in [0, 1]
        0: unchanged; 1: the most severe.
    rng : numpy.random.Generator or int
        Random choices (an int seeds a new generator).
    n_classes : int, optional
        K, the classes spurious blobs and swaps may use (default: the largest label in ``mask``).

    Returns
    -------
    ndarray
        The degraded mask, same shape and dtype.

    Examples
    --------
    >>> mask = np.zeros((32, 32), np.uint8); mask[8:24, 8:24] = 1
    >>> int(degrade(mask, "erode", 0.5).sum()) < int(mask.sum())
    True
    """
    mask = _check_mask(mask)
    if kind not in DEGRADATIONS:
        raise InputError(f"kind: unknown degradation {kind!r} (use one of {', '.join(DEGRADATIONS)})")
    if isinstance(strength, bool) or not isinstance(strength, (int, float, np.floating, np.integer)) \
            or not 0 <= strength <= 1:
        raise InputError(f"strength: must be a number in [0, 1], got {strength!r}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return DEGRADATIONS[kind](mask, float(strength), rng, n_classes).astype(mask.dtype, copy=False)


def random_degradation(mask, rng: np.random.Generator | int = 0, n_classes: int | None = None,
                       kinds=None, max_steps: int = MAX_STEPS, clean: float = 0.05) -> tuple[np.ndarray, list]:
    """A random composition of 1..``max_steps`` degradations of random kinds and strengths.

    With probability ``clean`` the mask is returned unchanged (the top of the quality range).
    Strengths are drawn as ``u ** 0.7`` for uniform ``u``, slightly favouring severe ones, since
    several mild steps already cover high Dice.

    Returns
    -------
    mask : ndarray
    steps : list of (kind, strength)
    """
    mask = _check_mask(mask)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    names = list(kinds or DEGRADATIONS)
    unknown = [k for k in names if k not in DEGRADATIONS]
    if unknown:
        raise InputError(f"kinds: unknown degradation {unknown[0]!r} (use some of {', '.join(DEGRADATIONS)})")
    if rng.random() < clean:
        return mask.copy(), []
    steps = []
    out = mask
    for _ in range(int(rng.integers(1, max_steps + 1))):
        kind = names[int(rng.integers(len(names)))]
        strength = float(rng.random() ** 0.7)
        out = DEGRADATIONS[kind](out, strength, rng, n_classes).astype(mask.dtype, copy=False)
        steps.append((kind, round(strength, 4)))
    return out, steps
