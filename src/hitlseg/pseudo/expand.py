"""Strokes expanded over their image: a graph cut from the strokes, kept where a model trained on the strokes agrees.

A person's strokes cover a few percent of an image. A live graph cut from them
(:class:`hitlseg.refine.LiveGraphCut`: colour mixtures of the strokes, contrast-sensitive Potts
term; Boykov & Jolly, ICCV 2001) labels every pixel, and an sU-Net trained on the strokes alone
labels every pixel another way: where the two agree, the label becomes a training target beside
the strokes (co-training in the sense of Blum & Mitchell, COLT 1998: two views whose agreement
is more often right than either alone). Where they disagree the pixel stays unlabelled.

Chosen on wbc1 validation images only (seed-0..2 splits, 5 gtfree-chosen images with robot
strokes, no self-training): mean val Dice 0.835 / 0.873 / 0.881 from the strokes, 0.901 / 0.835 /
0.876 from the graph cut's labels everywhere, 0.872 / 0.890 / 0.903 from the agreeing pixels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hitlseg.errors import InputError


def expand_strokes(image: np.ndarray, markers: np.ndarray, labels: np.ndarray, *, name: str = "image",
                   **graphcut_options) -> np.ndarray:
    """The strokes of ``image`` plus every pixel where a graph cut from them agrees with ``labels``.

    Parameters
    ----------
    image : ndarray, float32, shape (C, *spatial)
    markers : ndarray of uint8, shape (*spatial)
        Strokes: 0 unmarked, ``c + 1`` for class ``c``; at least two classes marked.
    labels : ndarray of int, shape (*spatial)
        A model's prediction (classes 0..K), e.g. of an sU-Net trained on these strokes.
    name : str
        Used in error messages.
    **graphcut_options
        Passed to :class:`hitlseg.refine.LiveGraphCut`.

    Returns
    -------
    ndarray of uint8, shape (*spatial)
        Marker labels (``c + 1``): the strokes unchanged, the agreeing pixels added.
    """
    from hitlseg.refine.graphcut import live_graphcut

    markers = np.asarray(markers)
    labels = np.asarray(labels)
    if markers.shape != labels.shape or tuple(image.shape[1:]) != markers.shape:
        raise InputError(f"{name}: image {tuple(image.shape[1:])}, markers {markers.shape} and labels "
                         f"{labels.shape} must have one spatial shape")
    if len(np.unique(markers[markers > 0])) < 2:
        return markers.astype(np.uint8, copy=True)  # a graph cut needs two classes of strokes
    cut = live_graphcut(image, markers, **graphcut_options).astype(np.int64)
    out = np.where(cut == labels, cut + 1, 0).astype(np.uint8)
    out[markers > 0] = markers[markers > 0]
    return out


def expand_all(images: Sequence[np.ndarray], markers: Sequence[np.ndarray], predict, names: Sequence[str]):
    """:func:`expand_strokes` for each marked image, ``predict(image) -> labels`` giving the second view."""
    return [expand_strokes(image, marks, predict(image), name=name)
            for image, marks, name in zip(images, markers, names)]
