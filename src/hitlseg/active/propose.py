"""What a front end asks between rounds: the next images to correct, and where the model is unsure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hitlseg.active.context import build_context, score_pool
from hitlseg.active.cost import CostModel, mask_features
from hitlseg.active.strategies import make_strategy, needs
from hitlseg.active.uncertainty import pixel_uncertainty
from hitlseg.errors import InputError
from hitlseg.progress import Progress


def propose(model, images: Mapping[str, np.ndarray], annotated: Sequence[str], *, strategy: str = "entropy", n: int = 1,
            options: dict | None = None, mc_passes: int = 5, cost_records: Sequence[tuple] = (), seed: int = 0,
            executor=None, progress: Progress = None) -> dict:
    """Score the pool with ``model`` and ask ``strategy`` for the next ``n`` images to correct.

    Parameters
    ----------
    model : SegModel
    images : mapping id -> ndarray (C, *spatial)
        The pool (annotated images included: the core-set needs them as centres).
    annotated : sequence of str
        Images already marked or corrected.
    strategy : str
        A strategy name (:func:`hitlseg.active.make_strategy`); ``ensemble`` is not offered here
        (it needs several trained models).
    options : dict, optional
        Constructor options of the strategy.
    cost_records : sequence of (features, seconds)
        Recorded annotation effort (``mask_features`` of the prediction, seconds) for ``knapsack``.
    executor : hitlseg.parallel.Executor, optional
        Score the pool in tasks on it (:func:`score_pool`).

    Returns
    -------
    dict
        ``proposals``: ``[{"image_id", "score", "rank"}]`` best first; ``criterion`` (what the
        score is), ``strategy``, ``scoring_seconds``, and ``free`` (unannotated images left).
    """
    want = needs(strategy)
    if "ensemble" in want:
        raise InputError("strategy 'ensemble': needs an ensemble of at least 2 models; propose scores one model "
                         "(use bald for disagreement from MC-dropout passes)")
    pool = list(images)
    annotated = [i for i in annotated if i in images]
    chooser = make_strategy(strategy, **(options or {}), seed=seed)
    scored = score_pool(model, images, pool, mc_passes=mc_passes if "mc_dropout" in want else 0,
                        features="features" in want, seed=seed, executor=executor, progress=progress)
    context = build_context(pool, annotated, scored, images=images, round_index=len(annotated))
    free = context.unselected()
    if "costs" in want:
        if len(cost_records) >= CostModel.MIN_RECORDS:
            costs = CostModel().fit([f for f, _ in cost_records], [s for _, s in cost_records])
            feats = np.array([mask_features(np.argmax(context.probability(i), 0).astype(np.uint8)) for i in free])
            context.costs = dict(zip(free, costs.predict(feats).tolist()))
        else:
            raise InputError(f"strategy 'knapsack': needs at least {CostModel.MIN_RECORDS} recorded annotation times "
                             f"to predict costs, has {len(cost_records)}")
    chosen = chooser.query(context, min(int(n), len(free)) if free else int(n))
    return {"proposals": [{"image_id": i, "score": chooser.scores.get(i), "rank": r + 1} for r, i in enumerate(chosen)],
            "criterion": chooser.criterion, "strategy": strategy, "scoring_seconds": scored["seconds"], "free": len(free)}


def uncertainty_map(model, image: np.ndarray, measure: str = "entropy") -> np.ndarray:
    """Per-pixel uncertainty of ``model`` on ``image`` (float32 in [0, 1], spatial shape)."""
    return pixel_uncertainty(model.predict(image).probabilities, measure)
