"""The robot: a simulated annotator that stands in for a person in experiments.

It draws markers the way a careful person would: strokes along the skeleton of each object,
kept away from class boundaries, and background strokes in a ring around the objects and
elsewhere in the background. It corrects a prediction with strokes inside its largest error
regions, and it chooses the next image to annotate from recommendation lists.

Conventions
-----------
Masks are integer label arrays of shape (H, W) or (D, H, W): 0 background, 1..K classes.
Markers are uint8 arrays of the same shape: 0 unmarked, ``c + 1`` for class ``c`` (so 1 marks
background, 2 class 1, ...).

Guarantee: every marked pixel ``p`` satisfies ``markers[p] == mask[p] + 1``; the robot never
marks a pixel with a wrong class. :func:`markers_from_mask` marks every class present in the mask
(background included) with at least one pixel, even when that exceeds the pixel budget.

Every random choice takes ``rng``: ``None``, an int seed or a :class:`numpy.random.Generator`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, dijkstra
from scipy.spatial import cKDTree
from skimage.morphology import skeletonize

from hitlseg.defaults import DEFAULT_POLICY
from hitlseg.errors import InputError

__all__ = [
    "POLICIES",
    "Robot",
    "choose",
    "corrective_markers",
    "markers_from_mask",
]

#: Image-choice policies understood by :func:`choose`.
POLICIES: tuple[str, ...] = ("most_distant", "closest", "alternate", "random")

# Fraction of an object's skeleton path that a stroke covers is drawn uniformly from this range.
_COVERAGE = (0.6, 1.0)


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def _as_labels(arr, name: str) -> np.ndarray:
    """Validate an integer label array (bool converted) of 2 or 3 dimensions."""
    a = np.asarray(arr)
    if a.dtype == bool:
        a = a.astype(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"{name}: expected an integer label array, got dtype {a.dtype}")
    if a.ndim not in (2, 3):
        raise InputError(f"{name}: expected a 2D (H, W) or 3D (D, H, W) array, got shape {a.shape}")
    if a.size == 0:
        raise InputError(f"{name}: array is empty (shape {a.shape})")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0:
        raise InputError(f"{name}: labels must be non-negative, found {lo}")
    if hi > 254:
        raise InputError(f"{name}: labels must be at most 254 (markers are uint8), found {hi}")
    if a.dtype.kind == "u" and a.dtype.itemsize == 8:
        a = a.astype(np.int64)  # np.bincount cannot take uint64
    return a


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name}: expected an integer, got {value!r}")
    if value < minimum:
        raise InputError(f"{name}: must be >= {minimum}, got {value}")
    return int(value)


def _check_float(value, name: str, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name}: expected a number, got {value!r}")
    if not np.isfinite(value) or value < minimum:
        raise InputError(f"{name}: must be a finite number >= {minimum}, got {value}")
    return float(value)


def _check_ring(ring) -> tuple[float, float] | None:
    if ring is None:
        return None
    try:
        r1, r2 = ring
    except (TypeError, ValueError):
        raise InputError(f"ring: expected (r1, r2) or None, got {ring!r}") from None
    r1 = _check_float(r1, "ring", 0.0)
    r2 = _check_float(r2, "ring", 0.0)
    if r2 <= r1:
        raise InputError(f"ring: expected r1 < r2, got ({r1}, {r2})")
    return r1, r2


def _budget(size: int, max_marked, max_marked_fraction) -> int | None:
    """Pixel budget from an absolute cap and a fraction of the image size (None: no cap)."""
    caps = []
    if max_marked is not None:
        caps.append(_check_int(max_marked, "max_marked", 1))
    if max_marked_fraction is not None:
        f = _check_float(max_marked_fraction, "max_marked_fraction", 0.0)
        if not 0.0 < f <= 1.0:
            raise InputError(f"max_marked_fraction: must be in (0, 1], got {f}")
        caps.append(int(np.floor(f * size)))
    return min(caps) if caps else None


def _generator(rng) -> np.random.Generator:
    if isinstance(rng, (bool, np.bool_)):
        raise InputError(f"rng: expected None, an int seed or a numpy Generator, got {rng!r}")
    try:
        return np.random.default_rng(rng)
    except (TypeError, ValueError) as exc:
        raise InputError(f"rng: expected None, an int seed or a numpy Generator ({exc})") from None


# --------------------------------------------------------------------------------------------
# strokes
# --------------------------------------------------------------------------------------------


@dataclass
class _Stroke:
    """Pixels of one thick stroke (global coordinates) with their position along the path."""

    label: int  # marker value (class + 1)
    coords: np.ndarray  # (N, ndim) int
    arc: np.ndarray  # (N,) index of the nearest path pixel along the path
    length: int  # number of path pixels
    mandatory: bool = False

    def priority(self) -> np.ndarray:
        """0 at the middle of the path, 1 at its ends; -1 for a mandatory stroke's middle pixel."""
        mid = (self.length - 1) // 2
        left, right = max(mid, 1), max(self.length - 1 - mid, 1)
        p = np.where(self.arc < mid, (mid - self.arc) / left, (self.arc - mid) / right)
        if self.mandatory:
            # path pixels come first in coords, so the first pixel at arc mid is on the path
            p[int(np.flatnonzero(self.arc == mid)[0])] = -1.0
        return p


def _full_structure(ndim: int) -> np.ndarray:
    return np.ones((3,) * ndim, dtype=bool)


def _thicken(path: np.ndarray, allowed: np.ndarray, width: int, offset, label: int) -> _Stroke:
    """Thicken ``path`` (coordinates in ``allowed``'s frame) to ``width``, clipped to ``allowed``.

    ``allowed`` must contain every path pixel; the result lies inside ``allowed``.
    """
    radius = (width - 1) / 2.0
    pad = int(np.ceil(radius))
    lo = np.maximum(path.min(axis=0) - pad, 0)
    hi = np.minimum(path.max(axis=0) + pad + 1, allowed.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    local = path - lo
    arcmap = np.full(hi - lo, -1, dtype=np.int64)
    arcmap[tuple(local.T)] = np.arange(len(path))
    if pad == 0:
        thick = arcmap >= 0
        arcs_img = arcmap
    else:
        dist, inds = ndimage.distance_transform_edt(arcmap < 0, return_indices=True)
        thick = dist <= radius + 1e-9
        arcs_img = arcmap[tuple(inds)]
    thick &= allowed[box]
    pts = np.argwhere(thick)
    arcs = arcs_img[thick]
    # put the path pixels first so that the middle path pixel is easy to find
    on_path = arcmap[thick] >= 0
    order = np.argsort(~on_path, kind="stable")
    pts, arcs = pts[order], arcs[order]
    coords = pts + lo + np.asarray(offset, dtype=np.int64)
    return _Stroke(label=label, coords=coords, arc=arcs, length=len(path))


def _graph(pts: np.ndarray):
    """Sparse graph of pixels ``pts`` (M, ndim) joined to their 8/26-neighbours."""
    m, ndim = pts.shape
    lo = pts.min(axis=0)
    shape = pts.max(axis=0) - lo + 3
    index = np.full(shape, -1, dtype=np.int64)
    local = pts - lo + 1
    index[tuple(local.T)] = np.arange(m)
    rows, cols, weights = [], [], []
    for off in np.ndindex(*(3,) * ndim):
        off = np.asarray(off) - 1
        # half of the neighbourhood: the first non-zero component is positive
        nz = np.flatnonzero(off)
        if len(nz) == 0 or off[nz[0]] < 0:
            continue
        j = index[tuple((local + off).T)]
        ok = j >= 0
        rows.append(np.flatnonzero(ok))
        cols.append(j[ok])
        weights.append(np.full(int(ok.sum()), float(np.sqrt((off**2).sum()))))
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    w = np.concatenate(weights)
    return coo_matrix((w, (r, c)), shape=(m, m)).tocsr()


def _farthest(graph, start: int):
    dist, pred = dijkstra(graph, directed=False, indices=start, return_predecessors=True)
    far = int(np.argmax(np.where(np.isfinite(dist), dist, -1.0)))
    return far, pred


def _longest_path(graph, start: int) -> np.ndarray:
    """Approximate longest geodesic path (double sweep) in the component holding ``start``."""
    a, _ = _farthest(graph, start)
    b, pred = _farthest(graph, a)
    path = [b]
    while path[-1] != a:
        path.append(int(pred[path[-1]]))
    return np.asarray(path[::-1], dtype=np.int64)


def _skeleton_paths(pts: np.ndarray, n_paths: int, min_length: int, gap: float, rng) -> list:
    """Up to ``n_paths`` long paths along skeleton pixels ``pts``, the first the longest."""
    paths = []
    remaining = np.arange(len(pts))
    for k in range(n_paths):
        if len(remaining) == 0:
            break
        sub = pts[remaining]
        graph = _graph(sub)
        _, comp = connected_components(graph, directed=False)
        counts = np.bincount(comp)
        nodes = np.flatnonzero(comp == int(np.argmax(counts)))
        start = int(nodes[rng.integers(len(nodes))])
        path = _longest_path(graph, start)
        if k > 0 and len(path) < min_length:
            break
        paths.append(sub[path])
        dist, _ = cKDTree(sub[path]).query(sub, distance_upper_bound=gap + 1e-9)
        remaining = remaining[~np.isfinite(dist)]
    return paths


def _trim(path: np.ndarray, rng) -> np.ndarray:
    """A random contiguous part of ``path`` covering a fraction in ``_COVERAGE`` of it."""
    n = len(path)
    k = max(1, int(round(rng.uniform(*_COVERAGE) * n)))
    start = int(rng.integers(0, n - k + 1))
    return path[start : start + k]


def _run_through(pts: np.ndarray, centre: int, allowed: np.ndarray) -> np.ndarray:
    """The contiguous run of ``pts`` around index ``centre`` that lies inside ``allowed``."""
    inside = np.all((pts >= 0) & (pts < allowed.shape), axis=1)
    ok = inside.copy()
    ok[inside] = allowed[tuple(pts[inside].T)]
    bad = np.flatnonzero(~ok)
    a = bad[bad < centre].max() + 1 if np.any(bad < centre) else 0
    b = bad[bad > centre].min() if np.any(bad > centre) else len(pts)
    return pts[a:b]


def _line(centre: np.ndarray, direction: np.ndarray, half: float) -> tuple[np.ndarray, int]:
    """Rasterised segment ``centre +- half * direction`` and the index of ``centre`` in it."""
    t = np.concatenate([-np.arange(0.5, half + 1e-9, 0.5)[::-1], np.arange(0.0, half + 1e-9, 0.5)])
    pts = np.rint(centre + t[:, None] * direction).astype(np.int64)
    keep = np.ones(len(pts), dtype=bool)
    keep[1:] = np.any(pts[1:] != pts[:-1], axis=1)
    centre_index = int(np.count_nonzero(keep[: int(np.flatnonzero(t == 0.0)[0]) + 1]) - 1)
    return pts[keep], centre_index


def _axis_path(core: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Straight path through the deepest pixel of ``core`` along its major axis."""
    pts = np.argwhere(core)
    centre = np.argwhere(depth == depth[core].max())[0]
    if len(pts) < 2:
        return centre[None]
    cov = np.cov((pts - pts.mean(axis=0)).T)
    _, vecs = np.linalg.eigh(cov)
    direction = vecs[:, -1]
    line, c = _line(centre, direction, float(max(core.shape)))
    return _run_through(line, c, core)


def _region_strokes(
    region: np.ndarray,
    offset,
    label: int,
    n_strokes: int,
    width: int,
    erosion: float,
    rng,
) -> list[_Stroke]:
    """Strokes along the skeleton of ``region`` (a padded bool box) eroded by ``erosion``.

    Erosion shrinks to at most half the region's depth, so it never empties the region; the
    strokes are clipped to the eroded region.
    """
    depth = ndimage.distance_transform_edt(region)
    dmax = float(depth.max())
    if dmax <= 0:
        return []
    core = depth > min(erosion, dmax / 2.0)
    skel = skeletonize(core)
    pts = np.argwhere(skel & core)
    if len(pts) == 0:
        pts = np.argwhere(depth == dmax)[:1]
    paths = _skeleton_paths(
        pts, n_strokes, min_length=max(3, 2 * width), gap=float(width + 1), rng=rng
    )
    # the skeleton of a round blob is nearly a point: draw along its major axis instead
    axis = _axis_path(core, depth)
    if paths and len(axis) > len(paths[0]):
        paths[0] = axis
    return [_thicken(_trim(path, rng), core, width, offset, label) for path in paths]


def _region_fill(region: np.ndarray, offset, label: int, erosion: float) -> list[_Stroke]:
    """``region`` (a padded bool box) eroded by ``erosion``, at most half its depth, as one stroke."""
    depth = ndimage.distance_transform_edt(region)
    dmax = float(depth.max())
    if dmax <= 0:
        return []
    core = np.argwhere(depth > min(erosion, dmax / 2.0)) if dmax > 1 else np.argwhere(region)
    coords = core + np.asarray(offset, dtype=np.int64)
    return [_Stroke(label=label, coords=coords, arc=np.zeros(len(coords), np.int64), length=1)]


def _component_boxes(binary: np.ndarray):
    """Connected components (8/26-connectivity) of ``binary``, largest first.

    Yields (padded bool box of the component, offset of the box in the image).
    """
    labels, n = ndimage.label(binary, structure=_full_structure(binary.ndim))
    if n == 0:
        return
    sizes = np.bincount(labels.ravel())[1:]
    slices = ndimage.find_objects(labels)
    for i in np.argsort(-sizes, kind="stable"):
        sl = slices[i]
        box = np.pad(labels[sl] == i + 1, 1)
        offset = np.array([s.start - 1 for s in sl], dtype=np.int64)
        yield box, offset


def _segment_stroke(
    allowed: np.ndarray, length: float, width: int, label: int, rng, seed_pixel=None
):
    """A straight stroke through a random pixel of ``allowed``, cut where it leaves ``allowed``."""
    if seed_pixel is None:
        flat = np.flatnonzero(allowed)
        if len(flat) == 0:
            return None
        seed_pixel = np.array(np.unravel_index(flat[rng.integers(len(flat))], allowed.shape))
    direction = rng.normal(size=allowed.ndim)
    direction /= max(float(np.linalg.norm(direction)), 1e-12)
    line, c = _line(np.asarray(seed_pixel), direction, max(length / 2.0, 0.0))
    path = _run_through(line, c, allowed)
    return _thicken(path, allowed, width, np.zeros(allowed.ndim, np.int64), label)


def _paint(strokes: list[_Stroke], shape, budget: int | None, rng) -> np.ndarray:
    """Paint strokes into a marker array, shortening them all alike to fit ``budget`` pixels.

    Strokes shrink towards their middles (they stay contiguous); the middle pixel of each
    mandatory stroke is always kept.
    """
    markers = np.zeros(shape, dtype=np.uint8)
    strokes = [s for s in strokes if len(s.coords)]
    if not strokes:
        return markers
    flat = np.concatenate([np.ravel_multi_index(tuple(s.coords.T), shape) for s in strokes])
    labels = np.concatenate([np.full(len(s.coords), s.label, dtype=np.uint8) for s in strokes])
    if budget is not None:
        prio = np.concatenate([s.priority() for s in strokes])
        # stroke ranks: mandatory strokes first, the others in a seeded random order
        mand = np.array([s.mandatory for s in strokes])
        rank_of = np.empty(len(strokes), dtype=np.int64)
        order_s = np.concatenate(
            [np.flatnonzero(mand), rng.permutation(np.flatnonzero(~mand))]
        ).astype(np.int64)
        rank_of[order_s] = np.arange(len(strokes))
        rank = np.concatenate([np.full(len(s.coords), rank_of[i]) for i, s in enumerate(strokes)])
        within = np.concatenate([np.arange(len(s.coords)) for s in strokes])
        order = np.lexsort((within, rank, prio))
        fs = flat[order]
        _, first = np.unique(fs, return_index=True)
        new = np.zeros(len(fs), dtype=bool)
        new[first] = True
        count = np.cumsum(new)
        n_take = int(np.searchsorted(count, budget, side="right"))
        n_take = max(n_take, int((prio < 0).sum()))
        take = order[:n_take]
        flat, labels = flat[take], labels[take]
    markers.ravel()[flat] = labels
    return markers


def _enforce(markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Belt and braces for the guarantee ``markers == mask + 1`` wherever marked."""
    wrong = (markers > 0) & (markers.astype(np.int64) != mask.astype(np.int64) + 1)
    markers[wrong] = 0
    return markers


# --------------------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------------------


def markers_from_mask(
    mask,
    *,
    n_object_strokes: int = 1,
    n_background_strokes: int = 2,
    stroke_width: int = 3,
    erosion: float = 2.0,
    ring: tuple[float, float] | None = (3.0, 8.0),
    stroke_length: float = 0.25,
    max_marked_fraction: float | None = 0.05,
    max_marked: int | None = None,
    rng=None,
) -> np.ndarray:
    """Markers a careful person would draw on ``mask``.

    Each connected component of each class 1..K gets strokes along the skeleton of the
    component eroded by ``erosion`` (less when the object is small; a pixel object is marked
    itself). The background gets one stroke in the ring between distances ``ring[0]`` and
    ``ring[1]`` around each group of objects and ``n_background_strokes`` straight strokes
    elsewhere in the background. Every marked pixel ``p`` has ``markers[p] == mask[p] + 1``.

    Parameters
    ----------
    mask : array of int, shape (H, W) or (D, H, W)
        Labels, 0 background, 1..K classes (bool allowed).
    n_object_strokes : int
        Strokes per connected component of each object class (the first along the longest
        skeleton path, the others along remaining skeleton branches).
    n_background_strokes : int
        Straight strokes in the background away from the objects (beyond ``ring[1]``).
    stroke_width : int
        Stroke width in pixels (1: one pixel wide), clipped to the eroded region.
    erosion : float
        Distance in pixels that object strokes keep from class boundaries.
    ring : (float, float) or None
        Distances from the objects bounding the band of ring strokes; None: no ring strokes.
    stroke_length : float
        Length of background strokes as a fraction of the largest image side.
    max_marked_fraction, max_marked : float or None, int or None
        Pixel budget (fraction of the image, absolute count; the smaller applies). Strokes are
        shortened alike towards their middles to fit; every present class still keeps at
        least one pixel.
    rng : None, int or numpy.random.Generator
        Seed for the random choices (stroke extent, background strokes).

    Returns
    -------
    numpy.ndarray of uint8, same shape as ``mask``
        0 unmarked, ``c + 1`` for class ``c``.
    """
    mask = _as_labels(mask, "mask")
    n_object_strokes = _check_int(n_object_strokes, "n_object_strokes", 0)
    n_background_strokes = _check_int(n_background_strokes, "n_background_strokes", 0)
    stroke_width = _check_int(stroke_width, "stroke_width", 1)
    erosion = _check_float(erosion, "erosion", 0.0)
    ring = _check_ring(ring)
    stroke_length = _check_float(stroke_length, "stroke_length", 0.0)
    budget = _budget(mask.size, max_marked, max_marked_fraction)
    rng = _generator(rng)

    strokes: list[_Stroke] = []
    present = np.flatnonzero(np.bincount(mask.ravel()))
    for k in present[present > 0]:
        first = True
        for box, offset in _component_boxes(mask == k):
            n = max(n_object_strokes, 1) if first else n_object_strokes
            if n == 0:
                continue
            found = _region_strokes(box, offset, int(k) + 1, n, stroke_width, erosion, rng)
            if first and found:
                found[0].mandatory = True
                first = False
            strokes.extend(found)

    background = mask == 0
    if background.any():
        bg_strokes: list[_Stroke] = []
        has_objects = not background.all()
        if has_objects:
            dist = ndimage.distance_transform_edt(background)
        else:
            dist = np.full(mask.shape, np.inf)
        if ring is not None and has_objects:
            band = background & (dist > ring[0]) & (dist <= ring[1])
            for box, offset in _component_boxes(band):
                bg_strokes.extend(_region_strokes(box, offset, 1, 1, stroke_width, 0.0, rng))
        margin = ring[1] if ring is not None else max(erosion, 1.0)
        far = background & (dist > margin)
        if not far.any():
            far = background & (dist > min(margin, erosion))
        if not far.any():
            far = background
        length = stroke_length * max(mask.shape)
        for _ in range(n_background_strokes):
            s = _segment_stroke(far, length, stroke_width, 1, rng)
            if s is not None:
                bg_strokes.append(s)
        if not bg_strokes:
            deepest = np.unravel_index(int(np.argmax(np.where(far, dist, -1))), mask.shape)
            deepest = np.array(deepest)
            bg_strokes.append(_segment_stroke(far, length, stroke_width, 1, rng, deepest))
        bg_strokes[0].mandatory = True
        strokes = strokes + bg_strokes

    return _enforce(_paint(strokes, mask.shape, budget, rng), mask)


def corrective_markers(
    mask,
    prediction,
    *,
    n_regions: int = 3,
    n_strokes: int = 1,
    stroke_width: int = 3,
    erosion: float = 1.0,
    min_region_size: int = 1,
    max_marked_fraction: float | None = None,
    max_marked: int | None = None,
    fill: bool = False,
    rng=None,
) -> np.ndarray:
    """Corrective strokes on the largest error regions of ``prediction``.

    Error regions are the connected components of ``prediction != mask`` within each true
    class; the ``n_regions`` largest get strokes along the skeleton of the eroded region,
    labelled with the true class (``mask + 1``), or with ``fill`` the whole eroded region (a
    person painting over the error with a brush, as Cellpose 2.0 users redraw a wrong mask).
    All zeros when the prediction is perfect.

    Parameters
    ----------
    mask : array of int, shape (H, W) or (D, H, W)
        True labels, 0 background, 1..K classes.
    prediction : array of int, same shape
        Predicted labels.
    n_regions : int
        Number of error regions to correct, largest first.
    n_strokes : int
        Strokes per error region.
    stroke_width : int
        Stroke width in pixels, clipped to the eroded region.
    erosion : float
        Distance strokes keep from the error region's boundary (less for thin regions).
    min_region_size : int
        Error regions with fewer pixels are ignored.
    max_marked_fraction, max_marked : float or None, int or None
        Pixel budget; strokes shrink alike to fit, the largest region keeps a pixel.
    fill : bool
        Paint each chosen region, eroded by ``erosion`` (at most half its depth), instead of
        drawing strokes along it; ``n_strokes`` and ``stroke_width`` do not apply.
    rng : None, int or numpy.random.Generator
        Seed for the random choices.

    Returns
    -------
    numpy.ndarray of uint8, same shape as ``mask``
    """
    mask = _as_labels(mask, "mask")
    prediction = _as_labels(prediction, "prediction")
    if prediction.shape != mask.shape:
        raise InputError(
            f"prediction: shape {prediction.shape} does not match mask shape {mask.shape}"
        )
    n_regions = _check_int(n_regions, "n_regions", 0)
    n_strokes = _check_int(n_strokes, "n_strokes", 1)
    stroke_width = _check_int(stroke_width, "stroke_width", 1)
    erosion = _check_float(erosion, "erosion", 0.0)
    min_region_size = _check_int(min_region_size, "min_region_size", 1)
    budget = _budget(mask.size, max_marked, max_marked_fraction)
    rng = _generator(rng)

    error = prediction.astype(np.int64) != mask.astype(np.int64)
    markers = np.zeros(mask.shape, dtype=np.uint8)
    if not error.any() or n_regions == 0:
        return markers
    regions = []  # (size, class, box, offset)
    for k in np.unique(mask[error]):
        for box, offset in _component_boxes(error & (mask == k)):
            size = int(box.sum())
            if size >= min_region_size:
                regions.append((size, int(k), box, offset))
    regions.sort(key=lambda r: (-r[0], r[1]))
    strokes: list[_Stroke] = []
    for size, k, box, offset in regions[:n_regions]:
        found = _region_fill(box, offset, k + 1, erosion) if fill else \
            _region_strokes(box, offset, k + 1, n_strokes, stroke_width, erosion, rng)
        if found and not strokes:
            found[0].mandatory = True
        strokes.extend(found)
    return _enforce(_paint(strokes, mask.shape, budget, rng), mask)


def choose(
    closest: Sequence[Hashable],
    most_distant: Sequence[Hashable],
    policy: str,
    *,
    round_index: int = 0,
    exclude: Collection[Hashable] = (),
    rng=None,
) -> Hashable:
    """Choose the next image id to annotate from recommendation lists.

    Parameters
    ----------
    closest : sequence of ids
        Images closest to those already annotated, best first.
    most_distant : sequence of ids
        Images most distant from those already annotated, best first.
    policy : str
        ``"most_distant"``: first of ``most_distant``; ``"closest"``: first of ``closest``;
        ``"alternate"``: most distant on even rounds, closest on odd rounds; ``"random"``:
        uniform among the union of both lists (seeded by ``rng``).
    round_index : int
        Round number (0-based), used by ``"alternate"``.
    exclude : collection of ids
        Ids never chosen (e.g. images already annotated); they are skipped in the lists.
    rng : None, int or numpy.random.Generator
        Seed for ``"random"``.

    Returns
    -------
    The chosen id.
    """
    if policy not in POLICIES:
        raise InputError(f"policy: unknown policy {policy!r}; valid: {', '.join(POLICIES)}")
    round_index = _check_int(round_index, "round_index", 0)
    lists = {}
    for name, seq in (("closest", closest), ("most_distant", most_distant)):
        if isinstance(seq, (str, bytes)) or not isinstance(seq, (Sequence, np.ndarray)):
            raise InputError(f"{name}: expected a sequence of image ids, got {type(seq).__name__}")
        lists[name] = [x for x in seq if x not in exclude]
    if policy == "alternate":
        policy = "most_distant" if round_index % 2 == 0 else "closest"
    if policy == "random":
        union = list(dict.fromkeys(lists["closest"] + lists["most_distant"]))
        if not union:
            raise InputError("closest, most_distant: both lists are empty (after exclusions)")
        return union[int(_generator(rng).integers(len(union)))]
    if not lists[policy]:
        raise InputError(f"{policy}: list is empty (after exclusions); cannot choose an image")
    return lists[policy][0]


# --------------------------------------------------------------------------------------------
# the robot object
# --------------------------------------------------------------------------------------------

_PURPOSES = {"mark": 1, "correct": 2, "choose": 3}


def _key_words(key) -> list[int]:
    """Stable 64-bit words from an int, str or tuple key (never Python's salted hash)."""
    parts = key if isinstance(key, tuple) else (key,)
    words = []
    for part in parts:
        if isinstance(part, (bool, np.bool_)) or not isinstance(part, (int, np.integer, str)):
            raise InputError(f"key: expected an int, a str or a tuple of them, got {key!r}")
        text = f"{type(part).__name__ if isinstance(part, str) else 'int'}:{part}"
        words.append(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little"))
    return words


@dataclass(frozen=True)
class Robot:
    """A simulated annotator with fixed drawing parameters and a seed.

    Every call derives its own generator from ``(seed, purpose, key)``, so marking image ``i``
    gives the same markers whatever was marked before.

    Parameters
    ----------
    seed : int
        Non-negative seed.
    n_object_strokes, n_background_strokes, stroke_width, erosion, ring, stroke_length,
    max_marked_fraction, max_marked
        Passed to :func:`markers_from_mask`.
    n_regions, correction_erosion, correction_max_marked, correction_fill
        Passed to :func:`corrective_markers` (``n_regions``, ``erosion``, ``max_marked``, ``fill``).
    policy : str
        Image-choice policy for :meth:`choose` (one of :data:`POLICIES`).
    """

    seed: int = 0
    n_object_strokes: int = 1
    n_background_strokes: int = 2
    stroke_width: int = 3
    erosion: float = 2.0
    ring: tuple[float, float] | None = (3.0, 8.0)
    stroke_length: float = 0.25
    max_marked_fraction: float | None = 0.05
    max_marked: int | None = None
    n_regions: int = 3
    correction_erosion: float = 1.0
    correction_max_marked: int | None = None
    correction_fill: bool = False
    policy: str = DEFAULT_POLICY

    def __post_init__(self):
        _check_int(self.seed, "seed", 0)
        for name in ("n_object_strokes", "n_background_strokes", "n_regions"):
            _check_int(getattr(self, name), name, 0)
        _check_int(self.stroke_width, "stroke_width", 1)
        _check_float(self.erosion, "erosion", 0.0)
        _check_float(self.correction_erosion, "correction_erosion", 0.0)
        _check_float(self.stroke_length, "stroke_length", 0.0)
        _check_ring(self.ring)
        _budget(1, self.max_marked, self.max_marked_fraction)
        if self.correction_max_marked is not None:
            _check_int(self.correction_max_marked, "correction_max_marked", 1)
        if self.policy not in POLICIES:
            valid = ", ".join(POLICIES)
            raise InputError(f"policy: unknown policy {self.policy!r}; valid: {valid}")

    def rng(self, purpose: str, key=0) -> np.random.Generator:
        """The generator for one call: a function of ``(seed, purpose, key)`` only."""
        if purpose not in _PURPOSES:
            raise InputError(f"purpose: expected one of {', '.join(_PURPOSES)}, got {purpose!r}")
        return np.random.default_rng([int(self.seed), _PURPOSES[purpose], *_key_words(key)])

    def mark(self, mask, key=0) -> np.ndarray:
        """Markers for ``mask`` (see :func:`markers_from_mask`); ``key`` identifies the image."""
        return markers_from_mask(
            mask,
            n_object_strokes=self.n_object_strokes,
            n_background_strokes=self.n_background_strokes,
            stroke_width=self.stroke_width,
            erosion=self.erosion,
            ring=self.ring,
            stroke_length=self.stroke_length,
            max_marked_fraction=self.max_marked_fraction,
            max_marked=self.max_marked,
            rng=self.rng("mark", key),
        )

    def correct(self, mask, prediction, key=0) -> np.ndarray:
        """Corrective markers (see :func:`corrective_markers`); ``key`` e.g. ``(image, round)``."""
        return corrective_markers(
            mask,
            prediction,
            n_regions=self.n_regions,
            stroke_width=self.stroke_width,
            erosion=self.correction_erosion,
            max_marked=self.correction_max_marked,
            fill=bool(self.correction_fill),
            rng=self.rng("correct", key),
        )

    def choose(self, closest, most_distant, round_index: int = 0, exclude=()):
        """Next image id under ``self.policy`` (see :func:`choose`)."""
        return choose(
            closest,
            most_distant,
            self.policy,
            round_index=round_index,
            exclude=exclude,
            rng=self.rng("choose", round_index),
        )
