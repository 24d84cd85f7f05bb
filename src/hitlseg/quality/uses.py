"""Uses of a quality model: rank predictions without ground truth, and choose a threshold per image.

:func:`rank_predictions` is what a front end calls to sort images by predicted quality (worst
first); :func:`choose_threshold` is Galdran et al.'s use (MICCAI 2018): among candidate
thresholds of a soft prediction, keep the mask the quality model rates highest.
:func:`expected_dice` is the model-free estimate of the same quantity from the probabilities
alone, the baseline a learned quality model must beat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hitlseg.errors import InputError
from hitlseg.progress import Progress
from hitlseg.quality.fingerprint import check_domain, fingerprint

#: Candidate thresholds of :func:`choose_threshold`.
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.1, 0.91, 0.05))


def rank_predictions(model, images: Mapping[str, np.ndarray], predictions: Mapping[str, np.ndarray], *,
                     check: bool = True, progress: Progress = None) -> dict:
    """Predicted quality of every prediction, worst first.

    Parameters
    ----------
    model : QualityModel
    images : mapping id -> ndarray (C, *spatial)
    predictions : mapping id -> ndarray (*spatial)
        Label masks 0..K; every id of ``images`` needs one.
    check : bool
        Compare the images with the model's training data first (:func:`hitlseg.quality.fingerprint.check_domain`:
        a :class:`~hitlseg.errors.DataWarning` on a shift, :class:`InputError` on a hard mismatch).

    Returns
    -------
    dict
        ``ranking``: ``[{"id", "dice", "nmi"}]`` by predicted Dice, lowest first (ties in id order);
        ``mean``: ``{"dice", "nmi"}``; ``domain_warnings``: the shift check's findings.
    """
    ids = list(images)
    if not ids:
        raise InputError("images: none to score")
    missing = [i for i in ids if i not in predictions]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"predictions: {len(missing)} image(s) have no prediction: {shown}")
    warnings_found = []
    if check:
        seen = fingerprint([images[i] for i in ids], max(int(np.max(predictions[i])) for i in ids))
        seen["n_classes"] = None  # a prediction may lack a class; labels beyond K are checked per image
        warnings_found = check_domain(model.fingerprint, seen, "images")
    scores = model.score_many([images[i] for i in ids], [predictions[i] for i in ids], ids, progress=progress)
    rows = [{"id": i, **s} for i, s in zip(ids, scores)]
    rows.sort(key=lambda r: (r["dice"], r["id"]))
    mean = {key: float(np.mean([r[key] for r in rows])) for key in ("dice", "nmi")}
    return {"ranking": rows, "mean": mean, "domain_warnings": warnings_found}


def _check_probabilities(probabilities) -> np.ndarray:
    p = np.asarray(probabilities, dtype=np.float32)
    if p.ndim not in (3, 4) or p.shape[0] < 2:
        raise InputError(f"probabilities: need (K + 1, *spatial) class probabilities, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or p.min() < -1e-3 or p.max() > 1 + 1e-3:
        raise InputError("probabilities: values must be finite and in [0, 1]")
    return p


def threshold_labels(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Labels of a soft prediction at ``threshold``: foreground where ``1 - p_0 >= threshold``, class the arg-max of 1..K."""
    p = _check_probabilities(probabilities)
    foreground = (1.0 - p[0]) >= threshold
    return np.where(foreground, np.argmax(p[1:], axis=0) + 1, 0).astype(np.uint8)


def otsu_threshold(probabilities: np.ndarray) -> float:
    """Otsu's threshold of the foreground probability ``1 - p_0`` (0.5 when the map is constant)."""
    from skimage.filters import threshold_otsu

    foreground = 1.0 - _check_probabilities(probabilities)[0]
    if float(foreground.max() - foreground.min()) < 1e-6:
        return 0.5
    return float(threshold_otsu(foreground))


def choose_threshold(model, image: np.ndarray, probabilities: np.ndarray, thresholds: Sequence[float] = THRESHOLDS,
                     name: str = "image") -> dict:
    """The threshold of ``probabilities`` whose mask ``model`` predicts the best Dice for (Galdran et al. 2018).

    Returns
    -------
    dict
        ``threshold``, ``labels`` (its mask), ``predicted_dice`` (per candidate, in order) and
        ``thresholds``. Ties go to the candidate closest to 0.5.
    """
    thresholds = [float(t) for t in thresholds]
    if not thresholds or not all(0 < t < 1 for t in thresholds):
        raise InputError(f"thresholds: need values in (0, 1), got {thresholds!r}")
    masks = [threshold_labels(probabilities, t) for t in thresholds]
    scores = [s["dice"] for s in model.score_many([image] * len(masks), masks, [name] * len(masks))]
    best = max(range(len(thresholds)), key=lambda j: (round(scores[j], 6), -abs(thresholds[j] - 0.5)))
    return {"threshold": thresholds[best], "labels": masks[best], "predicted_dice": scores, "thresholds": thresholds}


def expected_dice(probabilities: np.ndarray) -> float:
    """Model-free quality estimate: the mean over classes 1..K of the soft Dice of ``p_c`` with the arg-max mask.

    ``2 sum(p_c [y = c]) / (sum p_c + sum [y = c])`` with ``y`` the arg-max labels: the Dice the
    prediction would score if the truth followed the model's own probabilities (to first order);
    a class with neither mass nor pixels counts 1. Calibrated, confident models score near 1.
    """
    p = _check_probabilities(probabilities)
    labels = np.argmax(p, axis=0)
    values = []
    for c in range(1, p.shape[0]):
        hard = labels == c
        denominator = float(p[c].sum() + hard.sum())
        values.append(1.0 if denominator < 1e-6 else 2.0 * float(p[c][hard].sum()) / denominator)
    return float(np.mean(values))
