"""Choosing the informative synthetic samples: Bayesian uncertainty among the realistic ones.

Mahapatra et al. (MICCAI 2018) generate candidate images from altered masks and add to training
those the current segmentation model is most uncertain about, measured by a Bayesian
uncertainty. hitlseg's networks have no dropout layers, so the uncertainty here is MC dropout
as :func:`hitlseg.active.context.score_pool` does it (Gal et al., ICML 2017): channel dropout on
the encoder features the decoder receives, ``mc_passes`` passes, and the members' mutual
information (BALD, :func:`hitlseg.active.uncertainty.mutual_information`) per pixel, reduced to
one score per image (:func:`hitlseg.active.uncertainty.reduce`). A candidate counts as realistic
when its pooled encoder features lie no farther from the nearest real image than real images lie
from each other (a quantile of their leave-one-out nearest-neighbour distances), and, if asked,
when the generator's discriminator scores it at least ``min_discriminator``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from hitlseg.errors import InputError
from hitlseg.progress import Progress, report
from hitlseg.synthesis.alter import random_alteration
from hitlseg.synthesis.generator import check_pairs

#: ``scorer(images) -> (uncertainty (n,), features (n, d) or None)``
Scorer = Callable[[Sequence[np.ndarray]], tuple[np.ndarray, np.ndarray | None]]


def check_count(value, name: str) -> int:
    """``value`` as an integer >= 0, or :class:`InputError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"{name}: must be an integer >= 0, got {value!r}")
    return int(value)


def mc_dropout_scorer(model, *, mc_passes: int = 8, dropout: float = 0.2, reduction: str = "mean",
                      seed: int = 0) -> Scorer:
    """A scorer of images by ``model``'s MC-dropout mutual information, with its pooled encoder features.

    See :func:`hitlseg.active.context.score_pool` (``mc_passes`` >= 2 passes of channel dropout
    ``dropout`` on the encoder features) and :func:`hitlseg.active.uncertainty.reduce`.
    """
    from hitlseg.active.context import score_pool
    from hitlseg.active.uncertainty import reduce

    def scorer(images):
        named = {f"image{i}": np.asarray(image, dtype=np.float32) for i, image in enumerate(images)}
        if not named:
            return np.zeros(0), np.zeros((0, 0))
        scored = score_pool(model, named, mc_passes=mc_passes, dropout=dropout, seed=seed)
        scores = np.array([reduce(scored["disagreement"][i].astype(np.float32), reduction) for i in named])
        return scores, scored["features"]

    return scorer


def feature_distances(real: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-real distances of candidate features, and the real images' leave-one-out ones.

    Features are standardised with the real images' mean and deviation per dimension first.
    """
    from sklearn.neighbors import NearestNeighbors

    real, candidates = np.asarray(real, np.float64), np.asarray(candidates, np.float64)
    mean, std = real.mean(0), real.std(0) + 1e-8
    real, candidates = (real - mean) / std, (candidates - mean) / std
    index = NearestNeighbors(n_neighbors=min(2, len(real))).fit(real)
    to_real = index.kneighbors(candidates, n_neighbors=1)[0][:, 0]
    among = index.kneighbors(real)[0][:, 1] if len(real) > 1 else np.zeros(0)
    return to_real, among


def select_informative(uncertainty, sources, n_per_source: int, passing=None) -> list[int]:
    """Indices of the ``n_per_source`` most uncertain candidates of each source among those passing.

    Parameters
    ----------
    uncertainty : array of float, (n,)
    sources : array of int, (n,)
        The real image each candidate came from (the budget is per real image).
    n_per_source : int
    passing : array of bool, (n,), optional
        Candidates that passed the realism check (default: all).

    Returns
    -------
    list of int
        Chosen indices, by source, most uncertain first (ties: the earlier candidate).
    """
    n_per_source = check_count(n_per_source, "n_per_source")
    uncertainty, sources = np.asarray(uncertainty, dtype=np.float64), np.asarray(sources)
    passing = np.ones(len(uncertainty), bool) if passing is None else np.asarray(passing, bool)
    if not (len(uncertainty) == len(sources) == len(passing)):
        raise InputError(f"select_informative: {len(uncertainty)} scores, {len(sources)} sources and "
                         f"{len(passing)} realism flags; need one of each per candidate")
    chosen = []
    for source in dict.fromkeys(sources.tolist()):
        members = np.flatnonzero((sources == source) & passing)
        order = members[np.argsort(-uncertainty[members], kind="stable")]
        chosen += order[:n_per_source].tolist()
    return chosen


@dataclass
class SynthesisResult:
    """What :func:`synthesize_for_training` made and kept.

    ``samples`` are the kept (image, mask) pairs; ``records`` describe them (``source``: index
    in the real pairs, ``alterations``, ``uncertainty``, ``feature_distance``,
    ``discriminator``); ``candidates`` describe every generated candidate with ``realistic``
    and ``kept``; ``threshold`` is the feature-distance limit (None: not checked).
    """

    samples: list = field(default_factory=list)
    records: list = field(default_factory=list)
    candidates: list = field(default_factory=list)
    threshold: float | None = None

    def summary(self) -> dict:
        """Counts and mean scores (plain values)."""
        kept = [r["uncertainty"] for r in self.records]
        every = [c["uncertainty"] for c in self.candidates]
        return {"candidates": len(self.candidates), "realistic": sum(c["realistic"] for c in self.candidates),
                "kept": len(self.records), "feature_threshold": self.threshold,
                "mean_uncertainty_kept": float(np.mean(kept)) if kept else None,
                "mean_uncertainty_candidates": float(np.mean(every)) if every else None}


def synthesize_for_training(model, pairs, synthesizer, n_per_image: int, rng=None, *, candidates: int = 3,
                            scorer: Scorer | None = None, mc_passes: int = 8, dropout: float = 0.2,
                            reduction: str = "mean", realism_quantile: float = 0.95,
                            min_discriminator: float | None = None, progress: Progress = None) -> SynthesisResult:
    """Synthetic (image, mask) pairs for training, chosen as in Mahapatra et al. (MICCAI 2018).

    For every real pair, ``candidates x n_per_image`` masks are altered
    (:func:`hitlseg.synthesis.alter.random_alteration`) and images generated for them in the
    source's style; each candidate is scored by the model's uncertainty, checked for realism,
    and the ``n_per_image`` most uncertain realistic ones of each real image are kept.

    Parameters
    ----------
    model : hitlseg.nets.SegModel or None
        The current segmentation model (for the default MC-dropout scorer).
    pairs : sequence of (ndarray, ndarray)
        Real training images ``(C, *spatial)`` and their masks.
    synthesizer : Synthesizer
        A trained generator (:func:`hitlseg.synthesis.train_generator`).
    n_per_image : int
        Synthetic samples kept per real image (0: none, nothing is generated).
    rng : numpy.random.Generator or int, optional
        Draws the alterations.
    candidates : int
        Candidates generated per kept sample (>= 1).
    scorer : callable, optional
        ``scorer(images) -> (uncertainty, features or None)``; default
        :func:`mc_dropout_scorer` of ``model`` with ``mc_passes``, ``dropout``, ``reduction``.
    realism_quantile : float in (0, 1]
        Quantile of the real images' leave-one-out feature distances a candidate's distance to
        the nearest real image may not exceed (1: their largest).
    min_discriminator : float, optional
        Also require this mean discriminator score.
    progress : callable, optional

    Returns
    -------
    SynthesisResult
    """
    n_per_image = check_count(n_per_image, "n_per_image")
    candidates = check_count(candidates, "candidates")
    if candidates < 1:
        raise InputError("candidates: must be at least 1 per kept sample")
    if not 0 < float(realism_quantile) <= 1:
        raise InputError(f"realism_quantile: must be in (0, 1], got {realism_quantile!r}")
    pairs = check_pairs(pairs, n_classes=synthesizer.n_classes)
    if pairs[0][0].shape[0] != synthesizer.channels or pairs[0][1].ndim != synthesizer.ndim:
        raise InputError(f"pairs: {pairs[0][0].shape[0]}-channel {pairs[0][1].ndim}D images, but the synthesizer "
                         f"makes {synthesizer.channels}-channel {synthesizer.ndim}D ones")
    if n_per_image == 0:
        return SynthesisResult()
    if scorer is None:
        if model is None:
            raise InputError("model: needed to score the candidates (or pass a scorer)")
        scorer = mc_dropout_scorer(model, mc_passes=mc_passes, dropout=dropout, reduction=reduction)
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    images, masks, infos = [], [], []
    total = len(pairs) * n_per_image * candidates
    for source, (image, mask) in enumerate(pairs):
        for _ in range(n_per_image * candidates):
            report(progress, len(images), total, "generating candidates")
            altered, applied = random_alteration(mask, rng)
            generated = synthesizer.generate(altered, image, mask)
            images.append(generated)
            masks.append(altered)
            infos.append({"source": source, "alterations": applied,
                          "discriminator": synthesizer.realism(generated, altered)})
    report(progress, total, total, "scoring candidates")
    uncertainty, features = scorer(images)
    uncertainty = np.asarray(uncertainty, dtype=np.float64)
    if uncertainty.shape != (len(images),):
        raise InputError(f"scorer: returned {uncertainty.shape} scores for {len(images)} candidates")
    passing, threshold = np.ones(len(images), bool), None
    distances = np.full(len(images), np.nan)
    if features is not None and len(pairs) > 1:
        real_features = scorer([image for image, _ in pairs])[1]
        distances, among = feature_distances(real_features, features)
        threshold = float(np.quantile(among, realism_quantile))
        passing &= distances <= threshold
    if min_discriminator is not None:
        passing &= np.array([i["discriminator"] >= float(min_discriminator) for i in infos])
    chosen = set(select_informative(uncertainty, [i["source"] for i in infos], n_per_image, passing))
    result = SynthesisResult(threshold=threshold)
    for index, info in enumerate(infos):
        record = {**info, "uncertainty": float(uncertainty[index]),
                  "feature_distance": None if np.isnan(distances[index]) else float(distances[index]),
                  "realistic": bool(passing[index]), "kept": index in chosen}
        result.candidates.append(record)
    for index in sorted(chosen):
        result.samples.append((images[index], masks[index]))
        result.records.append({k: v for k, v in result.candidates[index].items() if k not in ("realistic", "kept")})
    return result

