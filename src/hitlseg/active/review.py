"""Reviewing a prediction: correct it with strokes until satisfied, and accept the result as the label.

What a Cellpose 2.0 user does with a prediction (Pachitariu and Stringer, Nature Methods 2022),
with the graph-cut refinement of interactive segmentation (Boykov and Jolly 2001; DeepIGeoS,
Wang et al., TPAMI 2019): the person's corrective strokes are hard constraints of a graph cut
over the model's probabilities (:func:`hitlseg.refine.graphcut.graphcut_refine`,
contrast-sensitive Potts), which also snaps the prediction to image edges where the model is
unsure (a confidently wrong region stays wrong unless strokes cover it: ``-log p`` outweighs
the few edges a stroke adds). The person looks at the refined mask and corrects again, up to
``passes`` times. The mask they leave is the image's accepted label: the correction loop trains
on it (strokes weighted as the person's, the rest as machine labels) instead of on the strokes
and the model's own pseudo-labels.

Measured on 12 demo images with a 2-round demo loop's model (3 review passes of the robot's
3 largest error regions each): prediction Dice 0.909; with strokes along the errors, the strokes
over the prediction 0.942, the graph cut 0.958 (3.2% of pixels marked); with the errors painted
(``Robot(correction_fill=True)``), 0.992 either way, the graph cut with 5.8% of pixels marked
instead of 7.1%.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from hitlseg.errors import InputError

#: Pairwise weight of the review's graph cut against ``-log p`` (the refiner's default).
REVIEW_SMOOTHNESS = 1.0


def reviewed_mask(image: np.ndarray, probabilities: np.ndarray, markers: np.ndarray,
                  smoothness: float = REVIEW_SMOOTHNESS) -> np.ndarray:
    """The model's probabilities cut with the person's strokes as hard constraints.

    Parameters
    ----------
    image : ndarray (C, *spatial)
    probabilities : ndarray (K + 1, *spatial)
        The model's class probabilities on the image.
    markers : ndarray of uint8 (*spatial)
        Every stroke on the image (0 unmarked, ``c + 1`` for class ``c``).
    smoothness : float

    Returns
    -------
    ndarray of uint8 (*spatial)
        Labels 0..K; every stroke pixel carries its stroke's class.

    References
    ----------
    Boykov and Jolly, ICCV 2001; Wang et al., "DeepIGeoS", TPAMI 2019.
    """
    from hitlseg.refine.graphcut import graphcut_refine

    markers = np.asarray(markers)
    if markers.shape != np.shape(probabilities)[1:]:
        raise InputError(f"markers: shape {markers.shape} does not match the probabilities {np.shape(probabilities)[1:]}")
    labels = graphcut_refine(np.asarray(image, dtype=np.float32), np.asarray(probabilities, dtype=np.float32),
                             markers if markers.any() else None, smoothness=smoothness)
    return np.where(markers > 0, markers.astype(np.int64) - 1, labels).astype(np.uint8)


def review(correct: Callable[[np.ndarray, np.ndarray], np.ndarray], image: np.ndarray, probabilities: np.ndarray,
           markers: np.ndarray, passes: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Correct a prediction up to ``passes`` times, each time on the mask the last strokes gave.

    Parameters
    ----------
    correct : callable
        ``correct(shown_labels, markers_so_far) -> markers`` (every stroke, old and new): the
        person, or a :class:`~hitlseg.active.RobotAnnotator` bound to the image.
    image, probabilities : ndarray
        The image and the model's probabilities on it.
    markers : ndarray of uint8
        The image's strokes before this review.
    passes : int
        Most corrections; the review stops early when a pass adds no stroke.

    Returns
    -------
    markers : ndarray of uint8
        Every stroke after the review.
    accepted : ndarray of uint8
        The accepted label (:func:`reviewed_mask` of the final strokes).
    passes : int
        Corrections that added strokes.
    """
    if isinstance(passes, bool) or not isinstance(passes, (int, np.integer)) or passes < 1:
        raise InputError(f"passes: must be a positive integer, got {passes!r}")
    markers = np.asarray(markers, dtype=np.uint8)
    shown = np.argmax(np.asarray(probabilities), 0).astype(np.uint8)
    used = 0
    for _ in range(int(passes)):
        new = np.asarray(correct(shown, markers), dtype=np.uint8)
        if new.shape != markers.shape:
            raise InputError(f"review: the annotator returned markers of shape {new.shape}, expected {markers.shape}")
        if np.array_equal(new, markers):
            break
        markers, used = new, used + 1
        shown = reviewed_mask(image, probabilities, markers)
    if used == 0 and markers.any():
        shown = reviewed_mask(image, probabilities, markers)
    return markers, shown, used
