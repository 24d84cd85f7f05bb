"""Recommendations: the unselected images closest to and most distant from the selected ones.

The distance of an unselected image to the selected set is the L2 distance between descriptors,
either to the nearest selected image (``"min"``, the default) or to the last selected image only
(``"last"``). Rankings are stable: equal distances keep pool order.

Near-duplicates
---------------
An unselected image whose descriptor lies closer than ``duplicate_tolerance x diameter`` to a
selected image (the nearest one, whatever ``distance`` ranks by) is a *near-duplicate* of it:
marking it would teach the filters almost nothing new (two adjacent video frames, a file stored
twice). It is left out of both lists and reported instead (:attr:`Recommendation.near_duplicates`).
``duplicate_tolerance=0`` turns the rule off.

The scale is the pool's *diameter* (the largest distance between two pool images in this round's
descriptor space), as for the normalised coverage radius of :mod:`hitlseg.selection.stopping`:

* it is unit-free, so one fraction serves every round although the descriptor grows round by
  round (the raw distances with it);
* it does not depend on how many near-duplicates the pool holds. The median nearest-neighbour
  distance, the other natural scale, collapses exactly when the rule is needed: in a pool of video
  frames most frames have an almost identical neighbour, the median nearest-neighbour distance
  becomes that neighbour's distance, and any fraction of it flags nothing.

Default :data:`DUPLICATE_TOLERANCE` = 0.01, measured with the robot (alternate choices, seed 0;
December 2026): on the 300 wbc1 images (the bundled demo and ``../shared/datasets/wbc1``,
byte-identical copies) exactly one pair falls under it in each of five rounds, images 112 and 139,
which are the same picture stored twice (distance 0); the closest pair of distinct images lies at
0.033 x diameter (262 and 279). On wbc2 (100 images, three rounds) and GlaS (165, two rounds)
nothing falls under it (closest pairs at 0.037 and 0.024 x diameter); 0.01 stays a factor 2.4
below the closest distinct pair seen.

What it catches: among 100 wbc1 images, a copy of one with Gaussian noise of std 0.002 lies at
0.0002-0.006 x diameter from it; with noise of std 0.01, a 2% gain or a 1-pixel shift at
0.03-0.15, as far as distinct images are from each other (the copy's superpixels differ, and
with them the sorted profile; 0.14 when the copy has one superpixel more). The rule therefore
catches repeated and almost pixel-identical images, not every pair of frames a person would call
similar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.distance import cdist, pdist

from hitlseg.errors import InputError

DISTANCES = ("min", "last")

#: Near-duplicate tolerance, a fraction of the pool's descriptor diameter (see the module notes).
DUPLICATE_TOLERANCE = 0.01

__all__ = ["DISTANCES", "DUPLICATE_TOLERANCE", "NearDuplicate", "Recommendation", "check_duplicate_tolerance",
           "descriptor_diameter", "distances_to_selected", "near_duplicates", "recommend", "selected_indices"]


@dataclass(frozen=True)
class NearDuplicate:
    """An unselected image left out of the recommendations: ``distance`` from selected image ``of``."""

    id: str
    of: str
    distance: float

    def to_dict(self) -> dict:
        return {"id": self.id, "of": self.of, "distance": self.distance}

    def __str__(self) -> str:
        return f"{self.id}: near-duplicate of {self.of} (distance {self.distance:.3g})"


@dataclass
class Recommendation:
    """Ranked unselected images with their distances to the selected set.

    Attributes
    ----------
    closest : list of (id, distance)
        The ``k`` nearest unselected images, nearest first.
    most_distant : list of (id, distance)
        The ``k`` farthest unselected images, farthest first.
    distances : dict id -> float
        Distance of every unselected image.
    distance : str
        ``"min"`` or ``"last"``.
    near_duplicates : list of NearDuplicate
        Unselected images left out of both lists, nearest first: each lies closer than
        ``threshold`` to the selected image ``of``.
    duplicate_tolerance : float
        The tolerance as a fraction of the pool's descriptor diameter (0: rule off).
    threshold : float
        The tolerance in descriptor units (``duplicate_tolerance x diameter``).
    """

    closest: list[tuple[str, float]]
    most_distant: list[tuple[str, float]]
    distances: dict[str, float] = field(default_factory=dict)
    distance: str = "min"
    near_duplicates: list[NearDuplicate] = field(default_factory=list)
    duplicate_tolerance: float = DUPLICATE_TOLERANCE
    threshold: float = 0.0

    @property
    def closest_ids(self) -> list[str]:
        return [i for i, _ in self.closest]

    @property
    def most_distant_ids(self) -> list[str]:
        return [i for i, _ in self.most_distant]

    def to_dict(self) -> dict:
        """JSON-ready dictionary (without the full distance table)."""
        return {
            "distance": self.distance,
            "closest": [{"id": i, "distance": d} for i, d in self.closest],
            "most_distant": [{"id": i, "distance": d} for i, d in self.most_distant],
            "near_duplicates": [n.to_dict() for n in self.near_duplicates],
            "duplicate_tolerance": self.duplicate_tolerance,
            "duplicate_threshold": self.threshold,
        }


def selected_indices(pool: Sequence[str], selected: Sequence[str]) -> np.ndarray:
    """Row indices of ``selected`` ids in ``pool`` (InputError naming unknown or repeated ids)."""
    index = {image_id: row for row, image_id in enumerate(pool)}
    if len(index) != len(pool):
        raise InputError("pool: image ids must be unique")
    missing = [s for s in selected if s not in index]
    if missing:
        shown = ", ".join(map(repr, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"selected: {len(missing)} id(s) not in the pool of {len(pool)} images: {shown}")
    if len(set(selected)) != len(selected):
        raise InputError("selected: an image id appears more than once")
    return np.asarray([index[s] for s in selected], dtype=np.int64)


def _check_descriptors(descriptors, n_pool: int) -> np.ndarray:
    d = np.asarray(descriptors, dtype=np.float64)
    if d.ndim != 2 or len(d) != n_pool:
        raise InputError(f"descriptors: expected an array of shape ({n_pool}, n_features), got {d.shape}")
    if not np.all(np.isfinite(d)):
        raise InputError("descriptors: contain NaN or infinite values")
    return d


def distances_to_selected(descriptors, selected_rows, distance: str = "min") -> np.ndarray:
    """Distance of every row of ``descriptors`` to the selected rows (0 for selected rows).

    Parameters
    ----------
    descriptors : ndarray (n, d)
    selected_rows : sequence of int
        Rows of the selected images, in selection order (non-empty).
    distance : {"min", "last"}
        Minimum over the selected rows, or distance to the last one.
    """
    if distance not in DISTANCES:
        raise InputError(f"distance: unknown mode {distance!r} (use one of {', '.join(DISTANCES)})")
    d = np.asarray(descriptors, dtype=np.float64)
    rows = np.asarray(selected_rows, dtype=np.int64)
    if len(rows) == 0:
        raise InputError("selected: no image selected yet; distances need at least one")
    targets = d[rows[-1:]] if distance == "last" else d[rows]
    result = cdist(d, targets).min(axis=1)
    result[rows] = 0.0
    return result


def check_duplicate_tolerance(value, name: str = "duplicate_tolerance") -> float:
    """``value`` as a float in [0, 1), else an InputError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or not 0 <= value < 1:
        raise InputError(f"{name}: must be a fraction of the pool's descriptor diameter in [0, 1) "
                         f"(0 turns the near-duplicate rule off), got {value!r}")
    return float(value)


#: Rows up to which the diameter comes from SciPy's pdist; beyond, from float32 matrix products.
PDIST_ROWS = 2000


def descriptor_diameter(descriptors) -> float:
    """The largest L2 distance between two rows (0 for fewer than two).

    Beyond :data:`PDIST_ROWS` rows the farthest pair is searched in float32 matrix products, block
    by block over the upper triangle, and its distance recomputed in float64: on 10,000 synthetic
    96-dimensional descriptors (one thread) this takes a fraction of pdist's 2.4 s (see
    ``benchmarks/selection.py --only pool``); the pair can differ from pdist's only where two
    distances tie within float32 rounding.
    """
    d = np.asarray(descriptors, dtype=np.float64)
    if len(d) < 2:
        return 0.0
    if len(d) <= PDIST_ROWS:
        return float(pdist(d).max())
    x = (d - d.mean(0)).astype(np.float32)
    norms = np.einsum("ij,ij->i", x, x)
    best, pair, block = -np.inf, (0, 1), 1024
    for start in range(0, len(x), block):
        stop = min(start + block, len(x))
        squared = x[start:stop] @ x[start:].T
        squared *= -2
        squared += norms[start:stop, None]
        squared += norms[None, start:]
        flat = int(np.argmax(squared))
        if squared.flat[flat] > best:
            best = float(squared.flat[flat])
            pair = (start + flat // squared.shape[1], start + flat % squared.shape[1])
    return float(np.linalg.norm(d[pair[0]] - d[pair[1]]))


def near_duplicates(descriptors, pool: Sequence[str], selected_rows, candidate_rows, tolerance: float,
                    diameter: float | None = None) -> tuple[list[NearDuplicate], float]:
    """The candidates closer than ``tolerance x diameter`` to a selected row, nearest first.

    Parameters
    ----------
    descriptors : ndarray (n_pool, d)
    pool : sequence of str
        Ids of the rows.
    selected_rows, candidate_rows : sequences of int
    tolerance : float
        Fraction of the diameter in [0, 1); 0 finds nothing.
    diameter : float, optional
        The pool's descriptor diameter when already known (:func:`descriptor_diameter`).

    Returns
    -------
    list of NearDuplicate, float
        The near-duplicates (each with its nearest selected image) and the threshold in
        descriptor units.
    """
    tolerance = check_duplicate_tolerance(tolerance)
    rows = np.asarray(selected_rows, dtype=np.int64)
    candidates = np.asarray(candidate_rows, dtype=np.int64)
    if tolerance == 0 or len(rows) == 0 or len(candidates) == 0:
        return [], 0.0
    d = np.asarray(descriptors, dtype=np.float64)
    threshold = tolerance * (descriptor_diameter(d) if diameter is None else float(diameter))
    between = cdist(d[candidates], d[rows])
    nearest = between.argmin(axis=1)
    gap = between[np.arange(len(candidates)), nearest]
    found = [NearDuplicate(pool[int(candidates[j])], pool[int(rows[nearest[j]])], float(gap[j]))
             for j in np.argsort(gap, kind="stable") if gap[j] < threshold]
    return found, threshold


def recommend(descriptors, pool: Sequence[str], selected: Sequence[str], k: int = 5,
              distance: str = "min", duplicate_tolerance: float = DUPLICATE_TOLERANCE,
              diameter: float | None = None) -> Recommendation:
    """The ``k`` closest and ``k`` most distant unselected images.

    Parameters
    ----------
    descriptors : ndarray (n_pool, d)
        One descriptor per pool image, in the order of ``pool``.
    pool : sequence of str
        Image ids.
    selected : sequence of str
        Selected ids in selection order (at least one).
    k : int
        Length of each list (fewer when fewer images remain).
    distance : {"min", "last"}
        Distance to the selected set (see :func:`distances_to_selected`).
    duplicate_tolerance : float
        Unselected images closer than this fraction of the pool's descriptor diameter to a
        selected image are near-duplicates: left out of both lists and reported (module notes;
        0 turns the rule off).
    diameter : float, optional
        The pool's descriptor diameter when the caller has it (computed otherwise).

    Returns
    -------
    Recommendation
    """
    pool = list(pool)
    d = _check_descriptors(descriptors, len(pool))
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k: must be a positive integer, got {k!r}")
    duplicate_tolerance = check_duplicate_tolerance(duplicate_tolerance)
    rows = selected_indices(pool, list(selected))
    dist = distances_to_selected(d, rows, distance)
    free = np.setdiff1d(np.arange(len(pool)), rows)
    duplicates, threshold = near_duplicates(d, pool, rows, free, duplicate_tolerance, diameter)
    skipped = {n.id for n in duplicates}
    listed = np.asarray([r for r in free if pool[int(r)] not in skipped], dtype=np.int64)
    ascending = listed[np.argsort(dist[listed], kind="stable")]
    descending = listed[np.argsort(-dist[listed], kind="stable")]
    pair = lambda r: (pool[int(r)], float(dist[r]))
    return Recommendation(
        closest=[pair(r) for r in ascending[:k]],
        most_distant=[pair(r) for r in descending[:k]],
        distances={pool[int(r)]: float(dist[r]) for r in free},
        distance=distance,
        near_duplicates=duplicates,
        duplicate_tolerance=duplicate_tolerance,
        threshold=threshold,
    )
