"""Post-processing of predicted label maps from what the person knows of the images.

``"largest"`` keeps the largest connected object and fills its holes: for images that hold one
object each (a white blood cell per crop, one hippocampus per volume), stray blobs are false
positives and holes inside the object are missed pixels. It is a prior the person states, never a
choice made from ground truth, and it is off by default: on wbc1 validation images (seed-0 split,
strokes learner from 5 robot-marked images) it raised mean Dice from 0.867 to 0.884, but on the
test images of three splits it changed Dice by +0.024, -0.018 and +0.010 (mean 0.824 -> 0.829):
where the model splits a cell in pieces, keeping the largest piece loses the rest.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from hitlseg.errors import InputError

POSTPROCESS = ("none", "largest")

__all__ = ["POSTPROCESS", "check_postprocess", "largest_object", "postprocess"]


def check_postprocess(rule) -> str:
    """``rule`` when it names a post-processing rule (None reads as ``"none"``); InputError otherwise."""
    rule = "none" if rule is None else rule
    if rule not in POSTPROCESS:
        raise InputError(f"postprocess: unknown rule {rule!r} (use one of {', '.join(POSTPROCESS)})")
    return rule


def largest_object(labels: np.ndarray) -> np.ndarray:
    """Keep the largest connected object of a label map and fill its holes.

    The object is the largest connected component (full connectivity: diagonal neighbours touch)
    of the foreground ``labels > 0``, classes together; everything outside it becomes background.
    Holes of the object (background pixels it encloses) take the class of the nearest object pixel.

    Parameters
    ----------
    labels : int array (H, W) or (D, H, W)
        Labels 0..K (0 background).

    Returns
    -------
    ndarray
        Same shape and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.array([[1, 1, 1, 0, 2],
    ...                    [1, 0, 1, 0, 0],
    ...                    [1, 1, 1, 0, 0]], dtype=np.uint8)
    >>> largest_object(labels).tolist()
    [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0]]
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise InputError(f"labels: expected a 2D or 3D label map, got shape {labels.shape}")
    if labels.dtype.kind not in "iub":
        raise InputError(f"labels: expected integer labels, got dtype {labels.dtype}")
    foreground = labels > 0
    components, n = ndimage.label(foreground, structure=ndimage.generate_binary_structure(labels.ndim, labels.ndim))
    if n == 0:
        return labels.copy()
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    kept = components == int(sizes.argmax())
    filled = ndimage.binary_fill_holes(kept)
    out = np.where(kept, labels, 0).astype(labels.dtype)
    holes = filled & ~kept
    if holes.any():
        nearest = ndimage.distance_transform_edt(~kept, return_distances=False, return_indices=True)
        out[holes] = labels[tuple(index[holes] for index in nearest)]
    return out


def postprocess(labels: np.ndarray, rule: str | None = "none") -> np.ndarray:
    """Apply the post-processing ``rule`` (:data:`POSTPROCESS`) to a label map."""
    rule = check_postprocess(rule)
    return largest_object(labels) if rule == "largest" else labels
