"""What a quality model was trained on, and whether new data looks like it (a domain-shift check).

A quality model learns what good masks of *its* images look like; on other images (another
stain, another modality) its scores mean little. Its fingerprint records the dimensions, the
channels, the classes and per-channel intensity statistics of the training images;
:func:`compare` sets a new dataset's fingerprint against it.

Rules (:data:`INTENSITY_TOLERANCE`, :data:`STD_RATIO`): another dimensionality or channel count
cannot be scored at all (:class:`~hitlseg.errors.InputError`); masks with classes beyond the
model's neither. Fewer classes, a channel mean further than ``INTENSITY_TOLERANCE`` training
standard deviations from the training mean, or a channel standard deviation more than
``STD_RATIO`` times larger or smaller give a :class:`~hitlseg.errors.DataWarning`: the scores are
computed but may not be trusted.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from hitlseg.errors import DataWarning, InputError

#: A channel mean this many training standard deviations from the training mean warns.
INTENSITY_TOLERANCE = 0.5
#: A channel standard deviation this many times larger or smaller than the training one warns.
STD_RATIO = 2.0


def fingerprint(images: Sequence[np.ndarray], n_classes: int | None = None) -> dict:
    """Dimensions, channels, classes and per-channel pixel mean and standard deviation of ``images``.

    Parameters
    ----------
    images : sequence of ndarray (C, *spatial)
    n_classes : int, optional
        Object classes K of the masks (recorded as given).
    """
    images = list(images)
    if not images:
        raise InputError("images: need at least one image for a fingerprint")
    first = np.asarray(images[0])
    count = 0
    total = np.zeros(first.shape[0])
    squares = np.zeros(first.shape[0])
    for image in images:
        x = np.asarray(image, dtype=np.float64).reshape(image.shape[0], -1)
        total += x.sum(1)
        squares += (x**2).sum(1)
        count += x.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return {"ndim": int(first.ndim - 1), "channels": int(first.shape[0]),
            "n_classes": None if n_classes is None else int(n_classes), "images": len(images),
            "intensity_mean": [float(v) for v in mean], "intensity_std": [float(v) for v in std]}


def compare(trained: dict, seen: dict, source: str = "images") -> list[str]:
    """Problems of scoring ``seen`` data with a model of fingerprint ``trained``: the warnings' texts.

    Raises :class:`InputError` for what cannot be scored at all (another dimensionality or channel
    count, or masks with classes beyond the model's).
    """
    if seen["ndim"] != trained["ndim"]:
        raise InputError(f"{source}: are {seen['ndim']}D, but the quality model was trained on {trained['ndim']}D images")
    if seen["channels"] != trained["channels"]:
        raise InputError(f"{source}: have {seen['channels']} channels, but the quality model was trained on "
                         f"{trained['channels']}-channel images")
    problems = []
    k_model, k_seen = trained.get("n_classes"), seen.get("n_classes")
    if k_model is not None and k_seen is not None:
        if k_seen > k_model:
            raise InputError(f"{source}: masks have classes up to {k_seen}, but the quality model knows classes "
                             f"1..{k_model}")
        if k_seen < k_model:
            problems.append(f"masks have {k_seen} classes, the quality model was trained on {k_model}")
    for c, (m0, s0, m1, s1) in enumerate(zip(trained["intensity_mean"], trained["intensity_std"],
                                             seen["intensity_mean"], seen["intensity_std"])):
        spread = max(s0, 1e-6)
        if abs(m1 - m0) > INTENSITY_TOLERANCE * spread:
            problems.append(f"channel {c} mean {m1:.3g} is {abs(m1 - m0) / spread:.1f} training standard deviations "
                            f"from the training mean {m0:.3g} (tolerance {INTENSITY_TOLERANCE})")
        if max(s1, 1e-6) > STD_RATIO * spread or max(s1, 1e-6) * STD_RATIO < spread:
            problems.append(f"channel {c} standard deviation {s1:.3g} differs from the training {s0:.3g} by more "
                            f"than a factor {STD_RATIO:g}")
    return problems


def check_domain(trained: dict, seen: dict, source: str = "images") -> list[str]:
    """:func:`compare`, issuing one :class:`DataWarning` that lists the problems (returned too)."""
    problems = compare(trained, seen, source)
    if problems:
        warnings.warn(f"{source}: differ from the quality model's training data, so its scores may not hold: "
                      + "; ".join(problems), DataWarning, stacklevel=2)
    return problems
