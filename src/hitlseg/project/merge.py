"""Merging two edits of one image's markers (after a save conflict).

When two people (or two tabs) edit the same marker version and one saves first, the other's save
is refused as stale (:class:`hitlseg.errors.ConflictError`). :func:`merge_markers` then joins both
edits as a three-way merge against the version both started from: a pixel that only one side
changed takes that side's value (new strokes and erasures alike); a pixel both changed to the same
value takes it; a pixel both changed to different values is a conflict. Without the common base the
merge is the union of strokes, and a pixel marked with different classes is a conflict. Conflicting
pixels are left unmarked in the merge and returned as a mask, so that the person sees them and
decides: nothing is guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hitlseg.errors import InputError

__all__ = ["MergeResult", "merge_markers"]


@dataclass
class MergeResult:
    """The merged labels (uint8, 0 unmarked) and the pixels where the two edits disagree."""

    markers: np.ndarray
    conflicts: np.ndarray

    @property
    def n_conflicts(self) -> int:
        return int(self.conflicts.sum())


def _labels(array, name: str, shape=None) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind not in "biu":
        raise InputError(f"{name}: expected integer marker labels, got dtype {array.dtype}")
    if shape is not None and array.shape != shape:
        raise InputError(f"{name}: shape {array.shape} differs from {shape}")
    if array.size and (int(array.min()) < 0 or int(array.max()) > 255):
        raise InputError(f"{name}: labels must lie in 0..255, got {int(array.min())}..{int(array.max())}")
    return array.astype(np.uint8, copy=False)


def merge_markers(mine, theirs, base=None) -> MergeResult:
    """Join two edits of one image's markers; conflicting pixels are flagged, never guessed.

    Parameters
    ----------
    mine, theirs : int arrays of one shape
        The two edits (0 unmarked, 1 background, c+1 for class c).
    base : int array, optional
        The version both edits started from (three-way merge). Without it: the union of strokes.

    Returns
    -------
    MergeResult
        ``markers``: the merge, with conflicting pixels unmarked; ``conflicts``: bool mask.

    Examples
    --------
    >>> import numpy as np
    >>> base = np.array([1, 1, 0, 0, 0])
    >>> mine = np.array([0, 1, 2, 2, 0])    # erased pixel 0, drew class 1 on 2 and 3
    >>> theirs = np.array([1, 1, 0, 1, 2])  # drew background on 3 and class 1 on 4
    >>> result = merge_markers(mine, theirs, base)
    >>> result.markers.tolist(), result.conflicts.tolist()
    ([0, 1, 2, 0, 2], [False, False, False, True, False])
    """
    mine = _labels(mine, "mine")
    theirs = _labels(theirs, "theirs", mine.shape)
    if base is None:
        conflicts = (mine > 0) & (theirs > 0) & (mine != theirs)
        merged = np.where(mine > 0, mine, theirs)
    else:
        base = _labels(base, "base", mine.shape)
        mine_changed, theirs_changed = mine != base, theirs != base
        merged = np.where(mine_changed, mine, theirs)
        conflicts = mine_changed & theirs_changed & (mine != theirs)
    merged = np.where(conflicts, 0, merged).astype(np.uint8)
    return MergeResult(merged, conflicts)
