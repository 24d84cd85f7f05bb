"""Recommendations: the unselected images closest to and most distant from the selected ones.

The distance of an unselected image to the selected set is the L2 distance between descriptors,
either to the nearest selected image (``"min"``, the default) or to the last selected image only
(``"last"``). Rankings are stable: equal distances keep pool order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.distance import cdist

from hitlseg.errors import InputError

DISTANCES = ("min", "last")

__all__ = ["DISTANCES", "Recommendation", "distances_to_selected", "recommend", "selected_indices"]


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
    """

    closest: list[tuple[str, float]]
    most_distant: list[tuple[str, float]]
    distances: dict[str, float] = field(default_factory=dict)
    distance: str = "min"

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


def recommend(descriptors, pool: Sequence[str], selected: Sequence[str], k: int = 5,
              distance: str = "min") -> Recommendation:
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

    Returns
    -------
    Recommendation
    """
    pool = list(pool)
    d = _check_descriptors(descriptors, len(pool))
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k: must be a positive integer, got {k!r}")
    rows = selected_indices(pool, list(selected))
    dist = distances_to_selected(d, rows, distance)
    free = np.setdiff1d(np.arange(len(pool)), rows)
    ascending = free[np.argsort(dist[free], kind="stable")]
    descending = free[np.argsort(-dist[free], kind="stable")]
    pair = lambda r: (pool[int(r)], float(dist[r]))
    return Recommendation(
        closest=[pair(r) for r in ascending[:k]],
        most_distant=[pair(r) for r in descending[:k]],
        distances={pool[int(r)]: float(dist[r]) for r in free},
        distance=distance,
    )
