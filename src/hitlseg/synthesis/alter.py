"""Alterations of a label mask, the input of the mask-conditioned generator.

Mahapatra et al. (MICCAI 2018, "Efficient active learning for image classification and
segmentation using a sample selection and conditional generative adversarial network") make new
training samples by altering the masks of annotated images and generating images for them. The
alterations here work on 2D ``(H, W)`` and 3D ``(D, H, W)`` integer masks (0 background, 1..K
classes); every one resamples by nearest neighbour, so the output is a label map of the same
shape, dtype and label set as the input (an alteration that would lose a label is retried with
a smaller magnitude, and in the end returns the mask unchanged).

An *object* of class ``c`` is a connected component of ``c`` together with what it encloses
(its holes filled), so a white-blood-cell nucleus moves, is copied or removed with its
cytoplasm. Its *surround* is the label most common just outside it (0 for a cell, the cytoplasm
for a nucleus): an object is pasted only onto its surround and a removed object becomes it,
which keeps nested classes nested.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage as ndi

from hitlseg.errors import InputError

#: Names of the alterations :func:`random_alteration` chooses from.
ALTERATIONS = ("elastic", "scale", "rotate", "translate", "add", "remove", "grow", "shrink")
_RETRIES = 4


def check_mask(mask, name: str = "mask") -> np.ndarray:
    """``mask`` as an integer array of 2 or 3 dimensions (:func:`hitlseg.validate.check_label_mask`)."""
    from hitlseg.validate import check_label_mask

    return check_label_mask(mask, name, allow_empty=True)


def _rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise InputError(f"rng: need a numpy Generator or an integer seed, got {type(rng).__name__}")


def _fill_value(mask: np.ndarray) -> int:
    """The most common label on the border of ``mask``: what lies outside the field of view."""
    border = np.concatenate([np.moveaxis(mask, a, 0)[[0, -1]].ravel() for a in range(mask.ndim)])
    return int(np.bincount(border.astype(np.int64)).argmax())


def _same_labels(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(np.unique(a), np.unique(b))


def _warp(mask: np.ndarray, coordinates: np.ndarray) -> np.ndarray:
    """``mask`` sampled by nearest neighbour at ``coordinates`` ``(ndim, *shape)``; outside: the border label."""
    out = ndi.map_coordinates(mask, coordinates, order=0, mode="constant", cval=_fill_value(mask), prefilter=False)
    return out.astype(mask.dtype, copy=False)


def _retry(mask: np.ndarray, attempt: Callable[[float], np.ndarray]) -> np.ndarray:
    """``attempt(scale)`` at scale 1, 1/2, 1/4 ... until the label set is kept; else the mask unchanged."""
    scale = 1.0
    for _ in range(_RETRIES):
        out = attempt(scale)
        if _same_labels(out, mask):
            return out
        scale /= 2
    return mask.copy()


def _grid(shape) -> np.ndarray:
    return np.indices(shape, dtype=np.float64)


def _centre(mask: np.ndarray) -> np.ndarray:
    """Centroid of the foreground (the image centre when there is none)."""
    fg = mask != _fill_value(mask)
    if not fg.any():
        return (np.asarray(mask.shape, dtype=np.float64) - 1) / 2
    return np.asarray(ndi.center_of_mass(fg), dtype=np.float64)


def _affine(mask: np.ndarray, matrix: np.ndarray, centre: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Output pixel ``y`` takes input pixel ``matrix @ (y - centre - shift) + centre``."""
    grid = _grid(mask.shape).reshape(mask.ndim, -1)
    source = matrix @ (grid - (centre + shift)[:, None]) + centre[:, None]
    return _warp(mask, source.reshape((mask.ndim,) + mask.shape))


# --------------------------------------------------------------------------------------------- geometry


def elastic(mask, rng=None, *, alpha: float | None = None, sigma: float | None = None) -> np.ndarray:
    """Elastic deformation: a random displacement field, Gaussian-smoothed (Simard et al., ICDAR 2003).

    Parameters
    ----------
    mask : ndarray of int, (H, W) or (D, H, W)
    rng : numpy.random.Generator or int, optional
    alpha : float, optional
        Largest displacement in pixels (default: 4 % of the smallest side, at least 2).
    sigma : float, optional
        Smoothness of the field in pixels (default: 10 % of the smallest side, at least 3).

    Returns
    -------
    ndarray
        The deformed mask (same shape, dtype and label set).
    """
    mask, rng = check_mask(mask), _rng(rng)
    side = min(mask.shape)
    alpha = max(2.0, 0.04 * side) if alpha is None else float(alpha)
    sigma = max(3.0, 0.1 * side) if sigma is None else float(sigma)
    if not (alpha >= 0 and sigma > 0):
        raise InputError(f"elastic: alpha must be >= 0 and sigma > 0, got {alpha}, {sigma}")
    field = np.stack([ndi.gaussian_filter(rng.uniform(-1, 1, mask.shape), sigma, mode="reflect")
                      for _ in range(mask.ndim)])
    field /= max(np.abs(field).max(), 1e-12)
    grid = _grid(mask.shape)
    return _retry(mask, lambda s: _warp(mask, grid + s * alpha * field))


def scale(mask, rng=None, *, factor: float | None = None, low: float = 0.8, high: float = 1.25) -> np.ndarray:
    """Zoom about the foreground centroid by ``factor`` (default: drawn log-uniformly in [low, high]).

    Returns the scaled mask; a factor that pushes a class out of the field of view is halved
    (in log scale) until every label stays.
    """
    mask, rng = check_mask(mask), _rng(rng)
    if factor is None:
        if not 0 < low <= high:
            raise InputError(f"scale: need 0 < low <= high, got {low}, {high}")
        factor = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    if not factor > 0:
        raise InputError(f"scale: factor must be positive, got {factor}")
    centre, zero = _centre(mask), np.zeros(mask.ndim)
    eye = np.eye(mask.ndim)
    return _retry(mask, lambda s: _affine(mask, eye / factor ** s, centre, zero))


def _rotation(ndim: int, angle: float, axes: tuple[int, int]) -> np.ndarray:
    matrix = np.eye(ndim)
    a, b = axes
    c, s = np.cos(angle), np.sin(angle)
    matrix[a, a], matrix[a, b], matrix[b, a], matrix[b, b] = c, -s, s, c
    return matrix


def rotate(mask, rng=None, *, degrees: float | None = None, max_degrees: float = 30.0,
           axes: tuple[int, int] = (-2, -1)) -> np.ndarray:
    """Rotation about the foreground centroid in the plane ``axes`` (the last two: (H, W)).

    ``degrees`` defaults to a uniform draw in ``[-max_degrees, max_degrees]``.
    """
    mask, rng = check_mask(mask), _rng(rng)
    axes = tuple(int(a) % mask.ndim for a in axes)
    if len(set(axes)) != 2:
        raise InputError(f"rotate: axes must name two different axes of a {mask.ndim}D mask, got {axes}")
    if degrees is None:
        degrees = float(rng.uniform(-max_degrees, max_degrees))
    centre, zero = _centre(mask), np.zeros(mask.ndim)
    return _retry(mask, lambda s: _affine(mask, _rotation(mask.ndim, np.deg2rad(degrees * s), axes), centre, zero))


def translate(mask, rng=None, *, shift=None, max_fraction: float = 0.15) -> np.ndarray:
    """Shift the mask by ``shift`` pixels per axis (default: uniform, up to ``max_fraction`` of each side,
    limited so that the foreground stays in view). The uncovered border takes the border's label."""
    mask, rng = check_mask(mask), _rng(rng)
    if shift is None:
        fg = np.argwhere(mask != _fill_value(mask))
        shift = []
        for axis, size in enumerate(mask.shape):
            low, high = -max_fraction * size, max_fraction * size
            if len(fg):
                low, high = max(low, -fg[:, axis].min()), min(high, size - 1 - fg[:, axis].max())
            shift.append(rng.uniform(low, high) if high > low else 0.0)
    shift = np.round(np.asarray(shift, dtype=np.float64))
    if shift.shape != (mask.ndim,):
        raise InputError(f"translate: shift needs {mask.ndim} values, got {shift.tolist()}")
    eye = np.eye(mask.ndim)
    return _retry(mask, lambda s: _affine(mask, eye, np.zeros(mask.ndim), np.round(shift * s)))


# --------------------------------------------------------------------------------------------- objects


def objects(mask) -> list[dict]:
    """The objects of ``mask``: for each class and connected component, its region and surround.

    Returns
    -------
    list of dict
        ``label``, ``region`` (boolean: the component with its holes filled, so nested classes
        inside it belong to it), ``component`` (boolean: the pixels of ``label``) and
        ``surround`` (the most common label just outside the region).
    """
    mask = check_mask(mask)
    found = []
    for label in np.unique(mask):
        if label == 0:
            continue
        components, count = ndi.label(mask == label)
        for index in range(1, count + 1):
            component = components == index
            region = ndi.binary_fill_holes(component)
            ring = ndi.binary_dilation(region) & ~region
            surround = int(np.bincount(mask[ring].astype(np.int64)).argmax()) if ring.any() else 0
            found.append({"label": int(label), "region": region, "component": component, "surround": surround})
    return found


def _removable(mask: np.ndarray, found: list[dict]) -> list[int]:
    """Indices of objects whose removal keeps every label (another component of each label they hold remains)."""
    out = []
    for index, obj in enumerate(found):
        held = np.unique(mask[obj["region"]])
        removed = mask.copy()
        removed[obj["region"]] = obj["surround"]
        if set(held) <= set(np.unique(removed)):
            out.append(index)
    return out


def remove_object(mask, rng=None, *, label: int | None = None) -> np.ndarray:
    """Remove one object (of class ``label``, default any) and what it encloses; it becomes its surround.

    Raises
    ------
    InputError
        When no object can go without a label disappearing (each class has one component).
    """
    mask, rng = check_mask(mask), _rng(rng)
    found = [o for o in objects(mask) if label is None or o["label"] == label]
    candidates = _removable(mask, found)
    if not candidates:
        what = f"class {label}" if label is not None else "any class"
        raise InputError(f"remove_object: no object of {what} can be removed without a label disappearing "
                         f"(it needs a second component of the class)")
    obj = found[candidates[int(rng.integers(len(candidates)))]]
    out = mask.copy()
    out[obj["region"]] = obj["surround"]
    return out


def add_object(mask, rng=None, *, label: int | None = None, attempts: int = 60, margin: int = 1) -> np.ndarray:
    """Copy one object (of class ``label``, default any) to a random place that lies on its surround.

    The copy, with what it encloses, lands where every pixel (and a ``margin``-pixel ring) has
    the object's surround label, so it overlaps nothing and a nucleus lands inside cytoplasm.

    Raises
    ------
    InputError
        When no object fits anywhere after ``attempts`` random placements per object.
    """
    mask, rng = check_mask(mask), _rng(rng)
    found = [o for o in objects(mask) if label is None or o["label"] == label]
    if not found:
        raise InputError(f"add_object: the mask has no object{'' if label is None else f' of class {label}'} to copy")
    for index in rng.permutation(len(found)):
        obj = found[index]
        box = ndi.find_objects(obj["region"].astype(np.uint8))[0]
        region = obj["region"][box]
        patch = np.where(region, mask[box], 0)
        if rng.random() < 0.5:  # a mirrored copy looks less like a duplicate
            axis = int(rng.integers(mask.ndim))
            region, patch = np.flip(region, axis), np.flip(patch, axis)
        guard = ndi.binary_dilation(np.pad(region, margin), iterations=margin) if margin > 0 else region
        free = mask == obj["surround"]
        limits = [s - g + 1 for s, g in zip(mask.shape, guard.shape)]
        if min(limits) < 1:
            continue
        for _ in range(attempts):
            start = [int(rng.integers(0, lim)) for lim in limits]
            window = tuple(slice(a, a + g) for a, g in zip(start, guard.shape))
            if free[window][guard].all():
                out = mask.copy()
                inner = tuple(slice(a + margin, a + margin + r) for a, r in zip(start, region.shape))
                out[inner][region] = patch[region]
                return out
    raise InputError("add_object: no free place on the objects' surround fits a copy (the mask is too full)")


def _resize_object(mask: np.ndarray, obj: dict, radius: int, grow: bool) -> np.ndarray:
    out = mask.copy()
    structure = ndi.generate_binary_structure(mask.ndim, 1)
    region = obj["region"]
    if grow:
        # new pixels come from the surround only, keeping a 1-pixel ring of it when the surround
        # is itself an object (a nucleus grows inside its cytoplasm, never through it)
        allowed = mask == obj["surround"]
        if obj["surround"] != 0:
            allowed &= ndi.binary_erosion(allowed | region, structure, border_value=1)
        grown = ndi.binary_dilation(region, structure, iterations=radius) & allowed
        out[grown & ~region] = obj["label"]
        return out
    shrunk = ndi.binary_erosion(region, structure, iterations=radius)
    out[region & ~shrunk] = obj["surround"]
    # nested labels now on the new boundary become the object's own label, so they stay enclosed
    edge = shrunk & ~ndi.binary_erosion(shrunk, structure, border_value=1)
    nested = edge & (mask != obj["label"])
    out[nested] = obj["label"]
    return out


def _grow_or_shrink(mask, rng, label, radius, grow: bool) -> np.ndarray:
    mask, rng = check_mask(mask), _rng(rng)
    found = [o for o in objects(mask) if label is None or o["label"] == label]
    if not found:
        raise InputError(f"{'grow' if grow else 'shrink'}: the mask has no object"
                         f"{'' if label is None else f' of class {label}'}")
    if radius is None:
        radius = int(rng.integers(1, max(2, int(0.03 * min(mask.shape))) + 1))
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 1:
        raise InputError(f"radius: must be a positive integer, got {radius!r}")
    obj = found[int(rng.integers(len(found)))]
    return _retry(mask, lambda s: _resize_object(mask, obj, max(1, int(round(radius * s))), grow))


def grow(mask, rng=None, *, label: int | None = None, radius: int | None = None) -> np.ndarray:
    """Dilate one object (of class ``label``, default any) by ``radius`` pixels into its surround."""
    return _grow_or_shrink(mask, rng, label, radius, True)


def shrink(mask, rng=None, *, label: int | None = None, radius: int | None = None) -> np.ndarray:
    """Erode one object by ``radius`` pixels; freed pixels take its surround, nested classes stay inside it."""
    return _grow_or_shrink(mask, rng, label, radius, False)


# --------------------------------------------------------------------------------------------- compositions

_FUNCTIONS = {"elastic": elastic, "scale": scale, "rotate": rotate, "translate": translate, "add": add_object,
              "remove": remove_object, "grow": grow, "shrink": shrink}


def apply_alteration(mask, name: str, rng=None, **options) -> np.ndarray:
    """Apply the alteration ``name`` of :data:`ALTERATIONS` with ``options``."""
    if name not in _FUNCTIONS:
        raise InputError(f"alteration: unknown {name!r} (use one of {', '.join(ALTERATIONS)})")
    return _FUNCTIONS[name](mask, rng, **options)


def random_alteration(mask, rng=None, *, n: int | None = None, names=ALTERATIONS) -> tuple[np.ndarray, list[str]]:
    """A composition of ``n`` (default 2 or 3) alterations drawn from ``names``, skipping inapplicable ones.

    Mahapatra et al. (MICCAI 2018) alter the masks of annotated images to condition the
    generator on new shapes; this draws, in a random order, distinct alterations and applies
    those that fit the mask (``add`` needs room, ``remove`` a second component).

    Parameters
    ----------
    mask : ndarray of int, (H, W) or (D, H, W)
    rng : numpy.random.Generator or int, optional
    n : int, optional
        Alterations to compose (at most ``len(names)``).
    names : sequence of str
        Alterations to draw from.

    Returns
    -------
    (ndarray, list of str)
        The altered mask (same shape, dtype and label set) and the names applied, in order.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((32, 32), np.uint8); mask[8:20, 8:20] = 1; mask[11:15, 11:15] = 2
    >>> out, applied = random_alteration(mask, np.random.default_rng(0))
    >>> out.shape, out.dtype, sorted(np.unique(out).tolist())
    ((32, 32), dtype('uint8'), [0, 1, 2])
    """
    mask, rng = check_mask(mask), _rng(rng)
    names = list(names)
    unknown = [x for x in names if x not in _FUNCTIONS]
    if unknown or not names:
        raise InputError(f"names: unknown alterations {unknown} (use some of {', '.join(ALTERATIONS)})")
    if n is None:
        n = int(rng.integers(2, 4))
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n: must be a positive integer, got {n!r}")
    out, applied = mask, []
    for name in rng.permutation(names):
        if len(applied) >= n:
            break
        try:
            changed = _FUNCTIONS[str(name)](out, rng)
        except InputError:  # not applicable to this mask (no room, no second component)
            continue
        if _same_labels(changed, mask) and not np.array_equal(changed, out):
            out = changed
            applied.append(str(name))
    return out.astype(mask.dtype, copy=False), applied
