"""Level-set refinement: morphological Chan-Vese and geodesic active contours (scikit-image).

Each object class (and, with ``per_object=True``, each connected object of each class, within
its bounding box grown by ``margin`` pixels) is evolved from the prediction's region of that
class by scikit-image's morphological snakes:

- ``"chan_vese"`` (:func:`skimage.segmentation.morphological_chan_vese`): the region-based
  two-phase model without edges (Chan and Vese 2001): the contour moves so that the inside and
  the outside are each close to their mean intensity; per object, the means are local to the
  object's box, which suits objects of different contrast in one image;
- ``"geodesic"`` (:func:`skimage.segmentation.morphological_geodesic_active_contour`): the
  edge-based geodesic active contour (Caselles, Kimmel and Sapiro 1997) on
  :func:`skimage.segmentation.inverse_gaussian_gradient` of the image, with an optional balloon
  force (negative shrinks, positive inflates).

Both run in 2D and 3D on one intensity channel. A colour (multi-channel) image is projected
onto the direction between the mean colours inside and outside the initial region (per class
or per object), the single channel along which the two phases differ most in mean (the
vector-valued Chan-Vese model of Chan, Sandberg and Vese 2000 sums the channels' squared
errors; the projection keeps its dominant term). Give ``channel`` to use one channel instead.

The curvature step (``smoothing``) shrinks small objects: measured on noisy 3D balls, one step
takes radius 6 voxels from Dice 0.96 to 0.92 (radius 10: 0.98 to 0.96); use ``smoothing=0`` for
objects a few voxels across.

Classes are combined in order of their label; a pixel claimed by several classes takes the one
with the highest probability; a pixel no class keeps becomes background. Marked pixels, if
given, keep their class.

References
----------
T. F. Chan and L. A. Vese, "Active contours without edges", IEEE TIP 10(2), 2001.
V. Caselles, R. Kimmel and G. Sapiro, "Geodesic active contours", IJCV 22(1), 1997.
P. Márquez-Neila, L. Baumela and L. Álvarez, "A morphological approach to curvature-based
evolution of curves and surfaces", IEEE TPAMI 36(1), 2014.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from hitlseg.errors import InputError
from hitlseg.refine._checks import check_count, check_image, check_markers, check_positive, check_probabilities

__all__ = ["VARIANTS", "levelset_refine", "levelset_mask"]

#: Level-set variants understood by :func:`levelset_refine`.
VARIANTS: tuple[str, ...] = ("chan_vese", "geodesic")


def _intensity(image: np.ndarray, init: np.ndarray, channel: int | None) -> np.ndarray:
    """One float64 channel of ``image`` (C, *spatial): ``channel``, or the inside/outside mean-difference projection."""
    if channel is not None:
        return image[channel].astype(np.float64)
    if image.shape[0] == 1:
        return image[0].astype(np.float64)
    x = image.reshape(image.shape[0], -1).astype(np.float64)
    inside = init.ravel()
    if inside.all() or not inside.any():
        return x.mean(0).reshape(image.shape[1:])
    direction = x[:, inside].mean(1) - x[:, ~inside].mean(1)
    norm = np.linalg.norm(direction)
    if norm == 0:
        return x.mean(0).reshape(image.shape[1:])
    return (direction / norm @ x).reshape(image.shape[1:])


def levelset_mask(image, init, *, variant: str = "chan_vese", iterations: int = 50, smoothing: int = 1,
                  lambda1: float = 1.0, lambda2: float = 1.0, balloon: float = 0.0, alpha: float = 100.0,
                  sigma: float = 2.0, threshold="auto", channel: int | None = None) -> np.ndarray:
    """Evolve one binary region ``init`` on ``image`` (C, *spatial) by a morphological level set.

    Parameters
    ----------
    image : array, shape (C, H, W) or (C, D, H, W)
    init : array of bool, shape (*spatial)
        The initial region.
    variant : {"chan_vese", "geodesic"}
    iterations : int
        Iterations of the morphological snake.
    smoothing : int
        Curvature smoothing steps per iteration.
    lambda1, lambda2 : float
        Chan-Vese weights of the inside and outside fit.
    balloon : float
        Geodesic balloon force (< 0 shrinks, > 0 inflates, 0 none).
    alpha, sigma : float
        :func:`skimage.segmentation.inverse_gaussian_gradient` steepness and smoothing (geodesic).
    threshold : float or "auto"
        Geodesic stopping threshold on the edge image.
    channel : int, optional
        Channel to use (default: the projection described in the module docstring).

    Returns
    -------
    numpy.ndarray of bool, shape (*spatial)
    """
    from skimage.segmentation import (inverse_gaussian_gradient, morphological_chan_vese,
                                      morphological_geodesic_active_contour)

    init = np.asarray(init, dtype=bool)
    gray = _intensity(image, init, channel)
    if variant == "chan_vese":
        out = morphological_chan_vese(gray, iterations, init_level_set=init.astype(np.int8), smoothing=smoothing,
                                      lambda1=lambda1, lambda2=lambda2)
    elif variant == "geodesic":
        edges = inverse_gaussian_gradient(gray, alpha=alpha, sigma=sigma)
        out = morphological_geodesic_active_contour(edges, iterations, init_level_set=init.astype(np.int8),
                                                    smoothing=smoothing, threshold=threshold, balloon=balloon)
    else:
        raise InputError(f"variant: unknown level set {variant!r}; valid: {', '.join(VARIANTS)}")
    return np.asarray(out, dtype=bool)


def _boxes(region: np.ndarray, margin: int, min_size: int):
    """Connected components of ``region`` of at least ``min_size`` pixels as (component mask, box grown by ``margin``)."""
    structure = ndimage.generate_binary_structure(region.ndim, region.ndim)
    components, n = ndimage.label(region, structure)
    sizes = np.bincount(components.ravel(), minlength=n + 1)
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None or sizes[index] < min_size:
            continue
        grown = tuple(slice(max(0, s.start - margin), min(n, s.stop + margin)) for s, n in zip(box, region.shape))
        yield components[grown] == index, grown


def levelset_refine(image, probabilities, markers=None, *, variant: str = "chan_vese", per_object: bool = False,
                    margin: int = 10, min_size: int = 10, iterations: int = 50, smoothing: int = 1,
                    lambda1: float = 1.0, lambda2: float = 1.0, balloon: float = 0.0, alpha: float = 100.0, sigma: float = 2.0,
                    threshold="auto", channel: int | None = None) -> np.ndarray:
    """Refine a prediction by morphological level sets, per class (and per object when asked).

    Parameters
    ----------
    image : array, shape (C, H, W) or (C, D, H, W)
    probabilities : array, shape (K+1, *spatial)
        The prediction (summing to one); its argmax regions initialise the contours.
    markers : array of int, shape (*spatial), optional
        Marked pixels keep their class (0 unmarked, ``c + 1`` for class ``c``).
    variant : {"chan_vese", "geodesic"}
        See the module docstring.
    per_object : bool
        Evolve each connected object of each class separately, in its box grown by ``margin``.
    margin : int
        Box growth in pixels (``per_object``).
    min_size : int
        With ``per_object``, components smaller than this (pixels) are dropped as noise before
        evolving.
    iterations, smoothing, lambda1, lambda2, balloon, alpha, sigma, threshold, channel
        See :func:`levelset_mask`.

    Returns
    -------
    numpy.ndarray of int64, shape (*spatial)
        Labels 0..K.

    References
    ----------
    Chan and Vese, IEEE TIP 2001; Caselles, Kimmel and Sapiro, IJCV 1997; Márquez-Neila et al.,
    IEEE TPAMI 2014 (see the module docstring).

    Examples
    --------
    >>> labels = levelset_refine(image, probabilities, variant="chan_vese", per_object=True)  # doctest: +SKIP
    """
    image = check_image(image)
    spatial = image.shape[1:]
    p = check_probabilities(probabilities, spatial)
    if variant not in VARIANTS:
        raise InputError(f"variant: unknown level set {variant!r}; valid: {', '.join(VARIANTS)}")
    iterations = check_count(iterations, "iterations")
    smoothing = check_count(smoothing, "smoothing", 0)
    margin = check_count(margin, "margin", 0)
    min_size = check_count(min_size, "min_size", 1)
    for name, value in (("lambda1", lambda1), ("lambda2", lambda2), ("alpha", alpha), ("sigma", sigma)):
        check_positive(value, name)
    if channel is not None:
        channel = check_count(channel, "channel", 0)
        if channel >= image.shape[0]:
            raise InputError(f"channel: image has {image.shape[0]} channel(s), got channel {channel}")
    if threshold != "auto":
        check_positive(threshold, "threshold")
    seeds = None if markers is None else check_markers(markers, spatial, p.shape[0])
    options = dict(variant=variant, iterations=iterations, smoothing=smoothing, lambda1=lambda1, lambda2=lambda2,
                   balloon=float(balloon), alpha=alpha, sigma=sigma, threshold=threshold, channel=channel)

    initial = np.argmax(p, 0)
    best = np.full(spatial, -1.0)  # probability of the class that holds each pixel so far (-1: none)
    labels = np.zeros(spatial, dtype=np.int64)
    for c in range(1, p.shape[0]):
        region = initial == c
        if not region.any():
            continue
        if per_object:
            grown = np.zeros(spatial, dtype=bool)
            for component, box in _boxes(region, margin, min_size):
                crop = image[(slice(None),) + box]
                grown[box] |= levelset_mask(crop, component, **options)
        else:
            grown = levelset_mask(image, region, **options)
        take = grown & (p[c] > best)
        labels[take] = c
        best[take] = p[c][take]
    if seeds is not None:
        labels[seeds > 0] = seeds[seeds > 0] - 1
    return labels
