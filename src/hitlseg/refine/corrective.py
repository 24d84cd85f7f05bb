"""Corrective learning: a classifier that learns and undoes a host segmenter's systematic errors.

Wang et al. (2011) wrap any automatic segmentation (the *host*) with a classifier trained, on
images where the truth is known, to predict the true label of a pixel from local image features
and the host's own output; applied to a new image, it relabels the pixels the host tends to get
wrong (a boundary always a few pixels too far out, a tissue always confused with another).

Features (:func:`corrective_features`), per pixel, 2D or 3D alike, for an image with ``C``
channels and a host prediction with ``K + 1`` classes:

- the image's channels, and each smoothed by a Gaussian of every ``sigmas`` (default 1 and 3);
- the gradient magnitude of each channel (Gaussian derivative at the smallest sigma);
- the host's class probabilities, and each smoothed at every ``sigmas``;
- the host's label (argmax), one-hot;
- for every class, the signed distance to the boundary of the host's region of that class
  (positive inside, pixels; clipped to ``+-max_distance``): where the host's systematic boundary
  errors live;
- optionally the pixel's coordinates, each scaled to [0, 1] (for errors tied to a position, as
  in registered brain images; off by default).

Training pixels (:meth:`CorrectiveModel.fit`): every pixel within ``band`` pixels of a boundary
of the host's labels, where its errors concentrate, plus a random ``outside_fraction`` of the
others; at most ``max_samples`` in all (a uniform subsample of each group beyond that). Each
sampled pixel is weighted by the inverse of its group's sampling rate, so that the classifier
learns the true pixel distribution, not the band's. When the truths are corrections given as
markers (``truth_format="markers"``), the marked pixels are the training pixels.

Classifier. Extremely randomised trees (:class:`sklearn.ensemble.ExtraTreesClassifier`, seeded),
the pixel classifier of ilastik, over Wang et al.'s AdaBoost: it is fast to fit on 1e5 pixels
and its trees are plain arrays. After fitting, the trees are kept as those arrays (children,
split feature and threshold, class fractions at the leaves: scikit-learn's public ``tree_``
attributes) and prediction walks them in numpy (vectorised over pixels and trees); this is the
one piece written by hand, so that a saved model is an ``.npz`` of plain arrays, loaded without
pickle (``allow_pickle=False``) and independent of the scikit-learn version. It predicts the
same probabilities as the forest's ``predict_proba`` (up to rounding, 1e-15, measured).

Memory: the features take ``4 * n_features`` bytes per pixel (27 features for a colour image
with 3 classes: about 17 MB for a 400x400 image, 1 GB for a 240x240x155 volume); prediction runs
over chunks of pixels.

References
----------
H. Wang, S. R. Das, J. W. Suh, M. Altinay, J. Pluta, C. Craige, B. Avants and P. A. Yushkevich,
"A learning-based wrapper method to correct systematic errors in automatic image segmentation:
consistently improved performance in hippocampus, cortex and brain segmentation", NeuroImage
55(3), 2011.
P. Geurts, D. Ernst and L. Wehenkel, "Extremely randomized trees", Machine Learning 63(1), 2006.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from hitlseg.errors import InputError
from hitlseg.progress import Progress, report
from hitlseg.refine._checks import check_count, check_image, check_labels, check_markers, check_positive, check_probabilities
from hitlseg.refine.shape import _load_npz

__all__ = ["FORMAT", "CorrectiveModel", "corrective_features", "corrective_refine", "feature_names", "sample_pixels"]

#: ``format`` entry of a saved corrective model (``.npz``).
FORMAT = "hitlseg-corrective-model"
_VERSION = 1
_CHUNK = 32768  # pixels per prediction chunk (bounds the (pixels x trees) traversal arrays)
TRUTH_FORMATS = ("labels", "markers")


# ----------------------------------------------------------------------------- features


def _signed_distance(region: np.ndarray, limit: float) -> np.ndarray:
    """Distance to the boundary of ``region``, positive inside, clipped to ``+-limit``."""
    if not region.any():
        return np.full(region.shape, -limit, dtype=np.float32)
    if region.all():
        return np.full(region.shape, limit, dtype=np.float32)
    inside = ndimage.distance_transform_edt(region)
    outside = ndimage.distance_transform_edt(~region)
    return np.clip(inside - outside, -limit, limit).astype(np.float32)


def feature_names(n_channels: int, n_labels: int, ndim: int, sigmas=(1.0, 3.0), coordinates: bool = False) -> list[str]:
    """Names of the rows of :func:`corrective_features`, in order."""
    names = [f"image[{c}]" for c in range(n_channels)]
    names += [f"image[{c}]*G({s:g})" for s in sigmas for c in range(n_channels)]
    names += [f"|grad image[{c}]|" for c in range(n_channels)]
    names += [f"p[{k}]" for k in range(n_labels)]
    names += [f"p[{k}]*G({s:g})" for s in sigmas for k in range(n_labels)]
    names += [f"host=={k}" for k in range(n_labels)]
    names += [f"distance(host=={k})" for k in range(n_labels)]
    if coordinates:
        names += [f"coordinate[{a}]" for a in range(ndim)]
    return names


def corrective_features(image, probabilities, *, sigmas: Sequence[float] = (1.0, 3.0), max_distance: float = 20.0,
                        coordinates: bool = False) -> np.ndarray:
    """Per-pixel features of an image and a host prediction (see the module docstring).

    Parameters
    ----------
    image : array, shape (C, *spatial)
    probabilities : array, shape (K+1, *spatial)
        The host's prediction.
    sigmas : sequence of float
        Gaussian smoothing scales (pixels); the smallest also gives the gradient.
    max_distance : float
        Clip of the signed distances (pixels).
    coordinates : bool
        Add the normalised pixel coordinates.

    Returns
    -------
    numpy.ndarray of float32, shape (n_features, *spatial)
        Rows named by :func:`feature_names`.
    """
    image = check_image(image)
    p = check_probabilities(probabilities, image.shape[1:])
    spatial = image.shape[1:]
    rows: list[np.ndarray] = [c for c in image.astype(np.float32)]
    rows += [ndimage.gaussian_filter(c, s) for s in sigmas for c in image.astype(np.float32)]
    rows += [ndimage.gaussian_gradient_magnitude(c, min(sigmas)) for c in image.astype(np.float32)]
    rows += [k for k in p.astype(np.float32)]
    rows += [ndimage.gaussian_filter(k, s) for s in sigmas for k in p.astype(np.float32)]
    host = np.argmax(p, 0)
    rows += [(host == k).astype(np.float32) for k in range(p.shape[0])]
    rows += [_signed_distance(host == k, max_distance) for k in range(p.shape[0])]
    if coordinates:
        grids = np.meshgrid(*[np.linspace(0.0, 1.0, n, dtype=np.float32) for n in spatial], indexing="ij")
        rows += list(grids)
    return np.stack([np.asarray(r, dtype=np.float32) for r in rows])


# ----------------------------------------------------------------------------- training pixels


def _host_boundary(host: np.ndarray) -> np.ndarray:
    """Pixels whose label differs from one of their face neighbours."""
    structure = ndimage.generate_binary_structure(host.ndim, 1)
    return ndimage.grey_dilation(host, footprint=structure) != ndimage.grey_erosion(host, footprint=structure)


def sample_pixels(host: np.ndarray, band: float, outside_fraction: float, rng: np.random.Generator,
                  valid: np.ndarray | None = None) -> list[tuple[np.ndarray, float]]:
    """Training pixels of one image as groups ``(flat indices, group size)``.

    The groups are the pixels within ``band`` of a host boundary (all taken) and the others (a
    random ``outside_fraction`` of them); with ``valid`` (marked pixels), only those, in one group.
    """
    if valid is not None:
        index = np.flatnonzero(valid)
        return [(index, float(index.size))] if index.size else []
    boundary = _host_boundary(host)
    near = ndimage.distance_transform_edt(~boundary) <= band if boundary.any() else np.zeros(host.shape, bool)
    groups = []
    inside = np.flatnonzero(near)
    if inside.size:
        groups.append((inside, float(inside.size)))
    others = np.flatnonzero(~near)
    take = int(round(outside_fraction * others.size))
    if take:
        groups.append((np.sort(rng.choice(others, take, replace=False)), float(others.size)))
    return groups


# ----------------------------------------------------------------------------- the forest as arrays


@dataclass(frozen=True, eq=False)
class _Forest:
    """Decision trees as flat arrays; node ``i``'s children are global node indices (-1 at a leaf)."""

    roots: np.ndarray       # (T,) int64
    left: np.ndarray        # (nodes,) int64
    right: np.ndarray       # (nodes,) int64
    feature: np.ndarray     # (nodes,) int64 (0 at leaves)
    threshold: np.ndarray   # (nodes,) float64
    value: np.ndarray       # (nodes, n_classes) float64, class fractions at leaves

    @classmethod
    def from_sklearn(cls, forest) -> "_Forest":
        roots, left, right, feature, threshold, value = [], [], [], [], [], []
        offset = 0
        for estimator in forest.estimators_:
            tree = estimator.tree_  # public attributes (scikit-learn's "Understanding the decision tree structure")
            leaf = tree.children_left < 0
            roots.append(offset)
            left.append(np.where(leaf, -1, tree.children_left + offset))
            right.append(np.where(leaf, -1, tree.children_right + offset))
            feature.append(np.where(leaf, 0, tree.feature))
            threshold.append(tree.threshold)
            v = tree.value[:, 0, :].astype(np.float64)
            value.append(v / np.maximum(v.sum(1, keepdims=True), 1e-300))
            offset += tree.node_count
        return cls(np.array(roots, np.int64), np.concatenate(left).astype(np.int64),
                   np.concatenate(right).astype(np.int64), np.concatenate(feature).astype(np.int64),
                   np.concatenate(threshold).astype(np.float64), np.concatenate(value))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Mean leaf class fractions over the trees for the rows of ``x`` (float32, as scikit-learn's trees see them)."""
        x = np.asarray(x, dtype=np.float32)
        rows = np.arange(len(x))[:, None]
        node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()
        while True:
            inner = self.left[node] >= 0
            if not inner.any():
                break
            go_left = x[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(inner, np.where(go_left, self.left[node], self.right[node]), node)
        return self.value[node].mean(1)

    def arrays(self) -> dict:
        return dict(roots=self.roots, left=self.left, right=self.right, feature=self.feature,
                    threshold=self.threshold, value=self.value)


# ----------------------------------------------------------------------------- the model


def _check_sigmas(sigmas) -> tuple[float, ...]:
    if isinstance(sigmas, numbers.Real):
        sigmas = (sigmas,)
    sigmas = tuple(sigmas)
    if not sigmas:
        raise InputError("sigmas: give at least one smoothing scale")
    return tuple(check_positive(s, "sigmas") for s in sigmas)


def _check_truth(truth, spatial, n_labels: int, truth_format: str, name: str) -> np.ndarray:
    """Ground truth as labels 0..K, or as markers (0 unmarked, c + 1 for class c): the shared checks."""
    if truth_format == "markers":
        return check_markers(truth, spatial, n_labels, name)
    return check_labels(truth, spatial, n_labels, name)


@dataclass(frozen=True, eq=False)
class CorrectiveModel:
    """A corrective classifier for one host (see the module docstring).

    Attributes
    ----------
    n_channels, n_labels, ndim : int
        The images' channels, the host's classes (background included) and spatial dimensions
        it was trained on; prediction requires the same.
    classes : numpy.ndarray of int64
        The true labels seen in training (columns of the forest's class fractions).
    sigmas, max_distance, coordinates
        Feature options (:func:`corrective_features`).
    n_samples : int
        Training pixels.
    """

    forest: _Forest = field(repr=False)
    classes: np.ndarray
    n_channels: int
    n_labels: int
    ndim: int
    sigmas: tuple[float, ...] = (1.0, 3.0)
    max_distance: float = 20.0
    coordinates: bool = False
    n_samples: int = 0

    @property
    def feature_names(self) -> list[str]:
        return feature_names(self.n_channels, self.n_labels, self.ndim, self.sigmas, self.coordinates)

    @classmethod
    def fit(cls, images: Sequence, probabilities_list: Sequence, truths: Sequence, *, truth_format: str = "labels",
            band: float = 3.0, outside_fraction: float = 0.05, max_samples: int = 200_000,
            sigmas: Sequence[float] = (1.0, 3.0), max_distance: float = 20.0, coordinates: bool = False,
            reweight: bool = True, n_estimators: int = 50, max_depth: int | None = 16, min_samples_leaf: int = 5,
            max_features="sqrt", seed=0, n_jobs: int = 1, progress: Progress = None) -> "CorrectiveModel":
        """Train on images where the host's prediction and the truth (or corrections) are known.

        Parameters
        ----------
        images : sequence of arrays (C, *spatial)
        probabilities_list : sequence of arrays (K+1, *spatial)
            The host's predictions of those images.
        truths : sequence of arrays (*spatial) of int
            True labels 0..K (``truth_format="labels"``), or corrections as markers, 0 unmarked
            and ``c + 1`` for class ``c`` (``truth_format="markers"``: only marked pixels train).
        band : float
            Pixels within this distance of a host boundary are all training pixels.
        outside_fraction : float
            Fraction of the other pixels sampled at random.
        max_samples : int
            Most training pixels over all images (each group is subsampled uniformly beyond it).
        sigmas, max_distance, coordinates
            Feature options (:func:`corrective_features`).
        reweight : bool
            Weight each pixel by the inverse of its group's sampling rate.
        n_estimators, max_depth, min_samples_leaf, max_features, n_jobs
            :class:`sklearn.ensemble.ExtraTreesClassifier` options.
        seed : int or numpy.random.Generator
            Seeds the sampling and the trees.
        progress : callable, optional
            ``progress(done, total, message)``.

        Returns
        -------
        CorrectiveModel

        Raises
        ------
        InputError
            Lists of different lengths or empty; shapes, channels, classes or dimensions that
            disagree between images; a truth with classes beyond the probabilities; no training
            pixels (e.g. empty markers).

        Examples
        --------
        >>> model = CorrectiveModel.fit(images, host_probabilities, masks, seed=0)     # doctest: +SKIP
        >>> labels = model.predict(new_image, host.predict(new_image))                 # doctest: +SKIP
        """
        from sklearn.ensemble import ExtraTreesClassifier

        images, probabilities_list, truths = list(images), list(probabilities_list), list(truths)
        if not images:
            raise InputError("images: no training images: corrective learning needs at least one image with its truth")
        if not len(images) == len(probabilities_list) == len(truths):
            raise InputError(f"images, probabilities_list, truths: expected lists of one length, got "
                             f"{len(images)}, {len(probabilities_list)} and {len(truths)}")
        if truth_format not in TRUTH_FORMATS:
            raise InputError(f"truth_format: expected one of {', '.join(TRUTH_FORMATS)}, got {truth_format!r}")
        sigmas = _check_sigmas(sigmas)
        band = check_positive(band, "band", allow_zero=True)
        outside_fraction = check_positive(outside_fraction, "outside_fraction", allow_zero=True)
        if outside_fraction > 1:
            raise InputError(f"outside_fraction: expected a fraction in [0, 1], got {outside_fraction!r}")
        max_samples = check_count(max_samples, "max_samples")
        max_distance = check_positive(max_distance, "max_distance")
        rng = np.random.default_rng(seed)
        tree_seed = int(rng.integers(2**31 - 1))

        layout = None
        features, labels, groups = [], [], []
        for i, (image, p, truth) in enumerate(zip(images, probabilities_list, truths)):
            image = check_image(image, f"images[{i}]")
            p = check_probabilities(p, image.shape[1:], f"probabilities_list[{i}]")
            here = (image.shape[0], p.shape[0], image.ndim - 1)
            if layout is None:
                layout = here
            elif here != layout:
                raise InputError(f"images[{i}]: {here[0]} channel(s), {here[1]} classes and {here[2]}D, but images[0] "
                                 f"has {layout[0]} channel(s), {layout[1]} classes and {layout[2]}D")
            t = _check_truth(truth, image.shape[1:], p.shape[0], truth_format, f"truths[{i}]")
            valid = t > 0 if truth_format == "markers" else None
            y = (t - 1 if truth_format == "markers" else t).ravel()
            x = corrective_features(image, p, sigmas=sigmas, max_distance=max_distance, coordinates=coordinates)
            x = x.reshape(x.shape[0], -1)
            for index, size in sample_pixels(np.argmax(p, 0), band, outside_fraction, rng, valid):
                features.append(x[:, index].T)
                labels.append(y[index])
                groups.append(size)
            report(progress, i + 1, len(images) + 1, f"features of image {i + 1}/{len(images)}")
        total = sum(len(g) for g in labels)
        if total == 0:
            raise InputError("truths: no training pixels (no marked pixels, or images without host boundaries and "
                             "outside_fraction 0)")
        keep = min(1.0, max_samples / total)
        weights = []
        for j, (x, y, size) in enumerate(zip(features, labels, groups)):
            if keep < 1.0:
                chosen = np.sort(rng.choice(len(y), max(1, int(round(keep * len(y)))), replace=False))
                features[j], labels[j] = x[chosen], y[chosen]
            weights.append(np.full(len(labels[j]), size / len(labels[j])))
        x = np.concatenate(features)
        y = np.concatenate(labels)
        w = np.concatenate(weights)
        w = w / w.mean() if reweight else None
        forest = ExtraTreesClassifier(n_estimators=check_count(n_estimators, "n_estimators"), max_depth=max_depth,
                                      min_samples_leaf=check_count(min_samples_leaf, "min_samples_leaf"),
                                      max_features=max_features, random_state=tree_seed, n_jobs=n_jobs)
        forest.fit(x, y, sample_weight=w)
        report(progress, len(images) + 1, len(images) + 1, "trees")
        return cls(_Forest.from_sklearn(forest), np.asarray(forest.classes_, np.int64), layout[0], layout[1], layout[2],
                   sigmas, max_distance, bool(coordinates), int(len(y)))

    # -- prediction

    def predict_proba(self, image, probabilities) -> np.ndarray:
        """Corrected class probabilities, shape ``(K+1, *spatial)`` (float32; classes unseen in training get 0)."""
        image = check_image(image)
        p = check_probabilities(probabilities, image.shape[1:])
        if image.shape[0] != self.n_channels or p.shape[0] != self.n_labels or image.ndim - 1 != self.ndim:
            raise InputError(f"image, probabilities: the corrective model was trained on {self.ndim}D images with "
                             f"{self.n_channels} channel(s) and {self.n_labels} classes, got {image.ndim - 1}D, "
                             f"{image.shape[0]} channel(s) and {p.shape[0]} classes")
        x = corrective_features(image, p, sigmas=self.sigmas, max_distance=self.max_distance,
                                coordinates=self.coordinates)
        x = x.reshape(x.shape[0], -1)
        out = np.zeros((self.n_labels, x.shape[1]), dtype=np.float32)
        for start in range(0, x.shape[1], _CHUNK):
            stop = min(start + _CHUNK, x.shape[1])
            out[self.classes, start:stop] = self.forest.predict_proba(x[:, start:stop].T).T
        return out.reshape((self.n_labels,) + image.shape[1:])

    def predict(self, image, probabilities) -> np.ndarray:
        """Corrected labels ``(*spatial)``, int64 0..K."""
        return np.argmax(self.predict_proba(image, probabilities), 0).astype(np.int64)

    # -- files

    def save(self, path) -> Path:
        """Write the model to an ``.npz`` file of plain arrays (no pickled objects), atomically."""
        from hitlseg.project.files import atomic_write

        arrays = dict(format=np.array(FORMAT), version=np.array(_VERSION), classes=self.classes,
                      layout=np.array([self.n_channels, self.n_labels, self.ndim]), sigmas=np.array(self.sigmas),
                      max_distance=np.array(self.max_distance), coordinates=np.array(self.coordinates),
                      n_samples=np.array(self.n_samples), **self.forest.arrays())
        return atomic_write(Path(path), lambda handle: np.savez(handle, **arrays))

    @classmethod
    def load(cls, path) -> "CorrectiveModel":
        """Read a model written by :meth:`save`; anything else raises :class:`InputError` naming ``path``."""
        data = _load_npz(path, FORMAT, "corrective model")
        try:
            forest = _Forest(*(np.asarray(data[k]).astype(np.int64) for k in ("roots", "left", "right", "feature")),
                             np.asarray(data["threshold"]).astype(np.float64), np.asarray(data["value"]).astype(np.float64))
            n_channels, n_labels, ndim = (int(v) for v in data["layout"])
            classes = data["classes"].astype(np.int64)
            sigmas = tuple(float(s) for s in data["sigmas"])
            model = cls(forest, classes, n_channels, n_labels, ndim, sigmas, float(data["max_distance"]),
                        bool(data["coordinates"]), int(data["n_samples"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: corrupt corrective model file ({type(exc).__name__}: {exc})") from None
        _check_forest(model, path)
        return model


def _check_forest(model: CorrectiveModel, path) -> None:
    """Refuse arrays that would index out of range or loop (a damaged or hand-made file)."""
    f = model.forest
    nodes = len(f.left)
    n_features = len(model.feature_names)
    ok = (f.left.shape == f.right.shape == f.feature.shape == f.threshold.shape == (nodes,)
          and f.value.shape == (nodes, len(model.classes)) and f.roots.ndim == 1 and len(f.roots) > 0 and nodes > 0
          and model.n_channels >= 1 and model.n_labels >= 2 and model.ndim in (2, 3)
          and ((model.classes >= 0) & (model.classes < model.n_labels)).all())
    if ok:
        inner = f.left >= 0
        index = np.arange(nodes)
        ok = (((f.roots >= 0) & (f.roots < nodes)).all()
              and ((f.left[inner] > index[inner]) & (f.right[inner] > index[inner]) & (f.right[inner] < nodes)
                   & (f.left[inner] < nodes)).all()  # children after parents: the walk always ends
              and (f.right[~inner] < 0).all()
              and ((f.feature >= 0) & (f.feature < n_features)).all()
              and np.isfinite(f.value).all())
    if not ok:
        raise InputError(f"{path}: corrupt corrective model file (tree arrays of inconsistent shapes or indices)")


# ----------------------------------------------------------------------------- the refiner


def corrective_refine(image, probabilities, markers=None, *, model: CorrectiveModel | None = None) -> np.ndarray:
    """Relabel a host prediction by a trained corrective model; marked pixels keep their class.

    Parameters
    ----------
    image : array, shape (C, *spatial)
    probabilities : array, shape (K+1, *spatial)
        The host's prediction.
    markers : array of int, shape (*spatial), optional
        0 unmarked, ``c + 1`` for class ``c``.
    model : CorrectiveModel
        Trained on images of this host (:meth:`CorrectiveModel.fit`); required.

    Returns
    -------
    numpy.ndarray of int64, shape (*spatial)
        Labels 0..K.

    Raises
    ------
    InputError
        No model; image or probabilities that do not match the model's.

    References
    ----------
    Wang et al., NeuroImage 2011 (see the module docstring).
    """
    if model is None:
        raise InputError("model: corrective refinement needs a trained CorrectiveModel (CorrectiveModel.fit on images "
                         "with the host's predictions and the truth), got None")
    if not isinstance(model, CorrectiveModel):
        raise InputError(f"model: expected a CorrectiveModel, got {type(model).__name__}")
    labels = model.predict(image, probabilities)
    if markers is not None:
        seeds = check_markers(markers, labels.shape, model.n_labels)
        labels[seeds > 0] = seeds[seeds > 0] - 1
    return labels
