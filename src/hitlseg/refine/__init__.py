"""Refinement of predictions and live segmentation from strokes: graph cut, dense CRF, level sets,
shape models, corrective learning.

One entry point, :func:`refine`, over the refiners in :data:`REFINERS`:

``"graphcut"``
    Boykov-Jolly graph cut (:mod:`hitlseg.refine.graphcut`): unary ``-log p`` of the prediction,
    contrast-sensitive Potts smoothing, alpha-expansion for 3+ classes, marked pixels as hard
    constraints. Without probabilities it is *live* segmentation from the strokes alone
    (per-class colour models of the marked pixels; :class:`~hitlseg.refine.graphcut.LiveGraphCut`).
``"crf"``
    Dense CRF mean-field inference (Krähenbühl and Koltun; :mod:`hitlseg.refine.crf`).
``"levelset"``
    Morphological Chan-Vese or geodesic active contours (scikit-image;
    :mod:`hitlseg.refine.levelset`), per class or per object.
``"shape"``
    An active shape model (Cootes et al.; :mod:`hitlseg.refine.shape`) fitted to each object of
    one class, 2D; needs ``model=ShapeModel.fit(masks, class_index)``.
``"corrective"``
    Corrective learning (Wang et al.; :mod:`hitlseg.refine.corrective`): a classifier trained on
    the host's errors; needs ``model=CorrectiveModel.fit(...)``.

Shapes follow the project's conventions: images ``(C, *spatial)`` float, probabilities
``(K+1, *spatial)`` summing to one, markers ``(*spatial)`` with 0 unmarked and ``c + 1`` for
class ``c``; the result is a label array ``(*spatial)`` with values 0..K (uint8).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from hitlseg.errors import InputError
from hitlseg.refine._checks import SUM_TOLERANCE, check_image, check_markers, check_probabilities
from hitlseg.refine.crf import CRFParams, crf_refine, dense_crf
from hitlseg.refine.graphcut import LiveGraphCut, graphcut, graphcut_refine, live_graphcut, potts_energy
from hitlseg.refine.corrective import CorrectiveModel, corrective_refine
from hitlseg.refine.levelset import levelset_refine
from hitlseg.refine.shape import ShapeModel, shape_refine

__all__ = [
    "CRFParams",
    "CorrectiveModel",
    "LiveGraphCut",
    "REFINERS",
    "SUM_TOLERANCE",
    "ShapeModel",
    "TRAINED_REFINERS",
    "corrective_refine",
    "crf_refine",
    "dense_crf",
    "graphcut",
    "graphcut_refine",
    "levelset_refine",
    "live_graphcut",
    "load_refiner_model",
    "potts_energy",
    "refine",
    "shape_refine",
]


def _graphcut(image, probabilities, markers=None, **options):
    if probabilities is None:
        if markers is None:
            raise InputError("markers: live graph cut (no probabilities) needs strokes of at least two classes")
        return live_graphcut(image, markers, **options)
    return graphcut_refine(image, probabilities, markers, **options)


#: Refiners by name: ``f(image, probabilities, markers=None, **options) -> labels``.
REFINERS: dict[str, Callable[..., np.ndarray]] = {
    "graphcut": _graphcut,
    "crf": crf_refine,
    "levelset": levelset_refine,
    "shape": shape_refine,
    "corrective": corrective_refine,
}


#: Refiners that need a trained ``model=`` (a file from :func:`load_refiner_model`).
TRAINED_REFINERS = ("shape", "corrective")


def load_refiner_model(path) -> "ShapeModel | CorrectiveModel":
    """Read a shape or corrective model file (``.npz`` written by their ``save``), telling them apart.

    Raises
    ------
    InputError
        A missing file, or one that is neither model (naming ``path``).
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: refiner model file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            found = str(data["format"]) if "format" in data.files else None
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: cannot read refiner model file: not an .npz written by hitlseg "
                         f"({type(exc).__name__}: {exc})") from None
    from hitlseg.refine import corrective, shape

    kinds = {shape.FORMAT: ShapeModel, corrective.FORMAT: CorrectiveModel}
    if found not in kinds:
        raise InputError(f"{path}: not a hitlseg shape or corrective model (format {found!r})")
    return kinds[found].load(path)


def refine(image, probabilities, method: str, markers=None, **options) -> np.ndarray:
    """Refine a prediction (or, for ``"graphcut"`` without one, segment live from strokes).

    Parameters
    ----------
    image : array, shape (C, H, W) or (C, D, H, W)
        The image, float, channel first.
    probabilities : array, shape (K+1, *spatial), or None
        A model's class probabilities, summing to one at every pixel (tolerance
        :data:`SUM_TOLERANCE`). None only with ``"graphcut"``: live segmentation from ``markers``.
    method : str
        One of :data:`REFINERS`: ``"graphcut"``, ``"crf"``, ``"levelset"``, ``"shape"``,
        ``"corrective"`` (the last two need a trained ``model=``).
    markers : array of int, shape (*spatial), optional
        0 unmarked, ``c + 1`` for class ``c``. Marked pixels keep their class (hard constraints
        of the graph cut; set after the CRF and the level sets).
    **options
        Passed to the refiner: :func:`~hitlseg.refine.graphcut.graphcut_refine` (or
        :class:`~hitlseg.refine.graphcut.LiveGraphCut` when live),
        :func:`~hitlseg.refine.crf.dense_crf`, :func:`~hitlseg.refine.levelset.levelset_refine`,
        :func:`~hitlseg.refine.shape.shape_refine`,
        :func:`~hitlseg.refine.corrective.corrective_refine`.

    Returns
    -------
    numpy.ndarray of uint8, shape (*spatial)
        Labels 0..K.

    Raises
    ------
    InputError
        Unknown method or option; image, probabilities and markers whose shapes disagree;
        probabilities outside [0, 1] or not summing to one; live graph cut with strokes of one
        class only.

    References
    ----------
    Boykov and Jolly, ICCV 2001; Krähenbühl and Koltun, NIPS 2011; Chan and Vese, IEEE TIP 2001;
    Cootes et al., CVIU 1995; Wang et al., NeuroImage 2011 (see the modules).

    Examples
    --------
    >>> labels = refine(image, model.predict(image).probabilities, "crf")        # doctest: +SKIP
    >>> overlay = refine(image, None, "graphcut", markers=markers)               # doctest: +SKIP
    """
    if not isinstance(method, str) or method not in REFINERS:
        raise InputError(f"method: unknown refiner {method!r}; valid: {', '.join(REFINERS)}")
    image = check_image(image)
    spatial = image.shape[1:]
    if probabilities is None:
        if method != "graphcut":
            raise InputError(f"probabilities: method {method!r} refines a prediction and needs probabilities "
                             f"(only 'graphcut' segments from markers alone)")
        n_labels = options.get("n_labels")
    else:
        probabilities = check_probabilities(probabilities, spatial)
        n_labels = probabilities.shape[0]
    if markers is not None:
        markers = check_markers(markers, spatial, n_labels)
    try:
        labels = REFINERS[method](image, probabilities, markers, **options)
    except TypeError as exc:  # an option the refiner does not take
        if "argument" not in str(exc):
            raise
        raise InputError(f"options: {method}: {exc}") from None
    return np.asarray(labels).astype(np.uint8 if int(np.max(labels, initial=0)) < 256 else np.int64)
