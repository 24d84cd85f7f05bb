"""Pixel pseudo-labels of unlabelled images from their oracle-annotated neighbours.

The self-learning step of Belharbi et al., "Deep Active Learning for Joint Classification &
Segmentation with Weak Annotator" (WACV 2021): an image without a pixel annotation takes a
pseudo-segmentation from the ``k`` oracle-annotated images nearest to it in the encoder's
feature space, with its class activation map as a prior, and only its confident pixels are
trained on.

How the neighbours vote here (our formulation of that step, pure numpy):

1. **Neighbours.** Each image is described by its pooled encoder features (per channel, the
   spatial mean); the ``k`` nearest oracle images in L2 distance are its neighbours
   (scikit-learn's nearest neighbours).
2. **Vote.** Each neighbour ``n`` gives one prototype per segmentation class: the mean
   (L2-normalised) pixel feature over the pixels its annotation (mask or strokes) gives that
   class. A pixel ``x`` of the unlabelled image gets from ``n`` the distribution
   ``softmax_c(cos(f_x, p_nc) / T)`` over the classes ``n`` annotates; the neighbours' votes are
   averaged.
3. **CAM prior.** With the image's class activation map ``M`` (in [0, 1]) and weight ``w``,
   the prior of object is ``pi = (1 - w) / 2 + w M``: object classes are multiplied by ``pi``,
   background by ``1 - pi``, and the result renormalised.
4. **Confident pixels only.** :func:`hitlseg.pseudo.tripartition`: the arg-max class where its
   probability exceeds ``delta``, :data:`hitlseg.pseudo.IGNORE` (255) elsewhere, which the
   partial losses of :mod:`hitlseg.nets` ignore.

Only the annotations passed in are read: the caller hands over the oracle images' targets,
never the masks of the images being pseudo-labelled.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hitlseg.errors import InputError
from hitlseg.pseudo.labels import IGNORE, tripartition


def pooled_descriptor(features: np.ndarray) -> np.ndarray:
    """The image descriptor of a feature map ``(C, *spatial)``: the spatial mean per channel (float32 ``(C,)``)."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim < 2:
        raise InputError(f"features: need (C, *spatial), got shape {features.shape}")
    return features.reshape(features.shape[0], -1).mean(1)


def nearest_oracle(descriptors: np.ndarray, oracle_descriptors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest oracle images of each image (L2 distance between descriptors).

    Parameters
    ----------
    descriptors : ndarray, shape (N, D)
    oracle_descriptors : ndarray, shape (M, D)
    k : int
        Neighbours per image (at most ``M`` are returned).

    Returns
    -------
    indices : ndarray of int, shape (N, min(k, M))
        Rows of ``oracle_descriptors``, nearest first.
    distances : ndarray of float, shape (N, min(k, M))
    """
    from sklearn.neighbors import NearestNeighbors

    descriptors = np.atleast_2d(np.asarray(descriptors, dtype=np.float64))
    oracle_descriptors = np.atleast_2d(np.asarray(oracle_descriptors, dtype=np.float64))
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k: must be a positive integer, got {k!r}")
    if not len(oracle_descriptors):
        raise InputError("oracle: no oracle-annotated image to take neighbours from")
    if descriptors.shape[1] != oracle_descriptors.shape[1]:
        raise InputError(f"descriptors: {descriptors.shape[1]} values each, oracle descriptors {oracle_descriptors.shape[1]}")
    index = NearestNeighbors(n_neighbors=min(int(k), len(oracle_descriptors))).fit(oracle_descriptors)
    distances, indices = index.kneighbors(descriptors)
    return indices, distances


def _unit(features: np.ndarray) -> np.ndarray:
    """Pixel features ``(C, P)`` scaled to unit L2 norm per pixel."""
    return features / np.maximum(np.linalg.norm(features, axis=0, keepdims=True), 1e-12)


def class_prototypes(features: np.ndarray, target: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean unit pixel feature of each class ``0..K`` that ``target`` labels; NaN rows for the others.

    Parameters
    ----------
    features : ndarray, shape (C, *spatial)
    target : ndarray of int, shape (*spatial)
        Labels 0..K, :data:`IGNORE` where unlabelled (strokes).
    n_classes : int
        ``K``, the object classes.

    Returns
    -------
    ndarray of float32, shape (K + 1, C)
    """
    features = np.asarray(features, dtype=np.float32)
    target = np.asarray(target)
    if tuple(target.shape) != tuple(features.shape[1:]):
        raise InputError(f"target: shape {target.shape} differs from the features' spatial shape {features.shape[1:]}")
    flat = _unit(features.reshape(features.shape[0], -1))
    labels = target.reshape(-1)
    out = np.full((n_classes + 1, features.shape[0]), np.nan, dtype=np.float32)
    for c in range(n_classes + 1):
        chosen = labels == c
        if chosen.any():
            out[c] = flat[:, chosen].mean(1)
    return out


def neighbour_vote(features: np.ndarray, prototypes: Sequence[np.ndarray], *, temperature: float = 0.01) -> np.ndarray:
    """Class probabilities ``(K + 1, *spatial)`` of an image's pixels from its neighbours' prototypes.

    Parameters
    ----------
    features : ndarray, shape (C, *spatial)
        The unlabelled image's pixel features.
    prototypes : sequence of ndarray, shape (K + 1, C)
        One per neighbour (:func:`class_prototypes`); a NaN row (a class the neighbour does not
        annotate) takes no part in that neighbour's vote.
    temperature : float
        Of the softmax over cosine similarities.

    Returns
    -------
    ndarray of float32, shape (K + 1, *spatial)
        The mean of the neighbours' votes (each a distribution over the classes).
    """
    features = np.asarray(features, dtype=np.float32)
    if not len(prototypes):
        raise InputError("prototypes: need at least one neighbour")
    if not (np.isfinite(temperature) and temperature > 0):
        raise InputError(f"temperature: must be a positive number, got {temperature!r}")
    flat = _unit(features.reshape(features.shape[0], -1))
    votes = np.zeros((prototypes[0].shape[0], flat.shape[1]), dtype=np.float64)
    voters = 0
    for proto in prototypes:
        proto = np.asarray(proto, dtype=np.float32)
        if proto.shape[1] != features.shape[0]:
            raise InputError(f"prototypes: {proto.shape[1]} channels, the features {features.shape[0]}")
        present = np.isfinite(proto).all(1)
        if present.sum() < 1:
            continue
        logits = np.full(votes.shape, -np.inf)
        logits[present] = (proto[present] @ flat) / temperature
        logits -= logits.max(0, keepdims=True)
        weights = np.exp(logits)
        votes += weights / weights.sum(0, keepdims=True)
        voters += 1
    if not voters:
        raise InputError("prototypes: no neighbour annotates any class")
    return (votes / voters).reshape(votes.shape[0], *features.shape[1:]).astype(np.float32)


def apply_prior(probabilities: np.ndarray, cam: np.ndarray | None, weight: float = 0.5) -> np.ndarray:
    """Combine class probabilities ``(K + 1, *spatial)`` with a CAM prior of object (see the module docstring)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if cam is None or weight == 0:
        return p.astype(np.float32)
    if not 0 <= weight <= 1:
        raise InputError(f"prior_weight: must be in [0, 1], got {weight!r}")
    cam = np.asarray(cam, dtype=np.float64)
    if tuple(cam.shape) != tuple(p.shape[1:]):
        raise InputError(f"cam: shape {cam.shape} differs from the probabilities' {p.shape[1:]}")
    prior = (1 - weight) / 2 + weight * np.clip(cam, 0, 1)
    scaled = p.copy()
    scaled[0] *= 1 - prior
    scaled[1:] *= prior
    total = scaled.sum(0, keepdims=True)
    uniform = np.full_like(scaled, 1.0 / len(scaled))
    return np.where(total > 0, scaled / np.where(total > 0, total, 1), uniform).astype(np.float32)


def _resize(array: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    from scipy import ndimage

    if tuple(array.shape[-len(shape):]) == tuple(shape):
        return array
    factors = [1.0] * (array.ndim - len(shape)) + [t / s for t, s in zip(shape, array.shape[-len(shape):])]
    out = ndimage.zoom(array, factors, order=order, mode="nearest", grid_mode=True)
    return out


def resize_target(target: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A label mask (with :data:`IGNORE`) resampled to ``shape`` by nearest neighbour."""
    return _resize(np.asarray(target), tuple(shape), 0)


def neighbour_pseudo_labels(features: np.ndarray, neighbours: Sequence[tuple[np.ndarray, np.ndarray]], n_classes: int, *,
                            cam: np.ndarray | None = None, prior_weight: float = 0.5, delta: float = 0.7,
                            temperature: float = 0.01, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The pseudo-label mask of one unlabelled image from its oracle-annotated neighbours.

    Parameters
    ----------
    features : ndarray, shape (C, *fspatial)
        The unlabelled image's pixel features (any resolution, e.g. the encoder's).
    neighbours : sequence of (features, target)
        Each neighbour's pixel features ``(C, *spatial)`` and its annotation ``(*spatial)`` (labels
        0..K, :data:`IGNORE` unlabelled), at any resolution (resampled to its features).
    n_classes : int
        ``K``.
    cam : ndarray, shape (*spatial), optional
        The image's class activation map in [0, 1], the prior of object; at the output resolution.
    prior_weight : float in [0, 1]
        0 ignores the CAM; 1 makes it the full prior.
    delta : float in (0, 1)
        Confidence a pixel must exceed to be labelled (:func:`hitlseg.pseudo.tripartition`).
    temperature : float
        Of the vote's softmax. Cosine similarities of ReLU features are all positive and close
        together, hence the low default: on the demo data (48 px, 4 oracle masks, a trained
        encoder) the vote's arg-max was right on 84% of the pixels whatever the temperature; at
        ``temperature=0.01, delta=0.7`` 47% of the pixels were kept, 95% of them right (at 0.1
        and 0.8 none was kept; standardising the channels first made them surer but wrong more
        often, 73% right among those kept).
    shape : tuple of int, optional
        Output resolution: the CAM's shape, else the features'.

    Returns
    -------
    ndarray of uint8, shape (*shape)
        Classes 0..K on confident pixels, :data:`IGNORE` elsewhere.

    References
    ----------
    Belharbi, Ben Ayed, McCaffrey, Granger, "Deep Active Learning for Joint Classification &
    Segmentation with Weak Annotator", WACV 2021.
    """
    features = np.asarray(features, dtype=np.float32)
    if int(n_classes) < 1 or int(n_classes) >= IGNORE:
        raise InputError(f"n_classes: must be in 1..{IGNORE - 1}, got {n_classes}")
    prototypes = []
    for f, target in neighbours:
        f = np.asarray(f, dtype=np.float32)
        target = resize_target(target, f.shape[1:])
        if target.size and int(np.max(np.where(target == IGNORE, 0, target))) > n_classes:
            raise InputError(f"neighbours: an annotation holds a label above the {n_classes} classes")
        prototypes.append(class_prototypes(f, target, int(n_classes)))
    votes = neighbour_vote(features, prototypes, temperature=temperature)
    if shape is None:
        shape = tuple(cam.shape) if cam is not None else tuple(features.shape[1:])
    votes = np.clip(_resize(votes, tuple(shape), 1), 0, None)
    votes = votes / np.maximum(votes.sum(0, keepdims=True), 1e-12)
    return tripartition(apply_prior(votes, cam, prior_weight), delta)
