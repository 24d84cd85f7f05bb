"""Active learning: which image the person should correct next, and the correction loop.

``query(context, n)`` is the contract of :mod:`hitlseg.selection`'s selectors; the
:class:`ActiveContext` adds the model's view of the pool (probabilities, member disagreement,
encoder features, predicted annotation costs), computed once per round by :func:`score_pool`.
"""

from hitlseg.active.context import ActiveContext, build_context, score_pool
from hitlseg.active.cost import CostModel, TimeModel, count_strokes, knapsack, mask_features
from hitlseg.active.loop import ActiveConfig, ActiveLoop, RobotAnnotator
from hitlseg.active.propose import propose, uncertainty_map
from hitlseg.active.review import review, reviewed_mask
from hitlseg.active.strategies import (STRATEGIES, ActiveStrategy, BALDStrategy, ConsistencyStrategy, CoreSetStrategy,
                                       DASLStrategy, EnsembleStrategy, ForegroundRandomStrategy, KnapsackStrategy,
                                       RandomStrategy, SuggestiveStrategy, UncertaintyStrategy, make_strategy, needs)
from hitlseg.active.uncertainty import (MEASURES, REDUCTIONS, member_variance, mutual_information, pixel_uncertainty,
                                        reduce, top_patch_value)

__all__ = [
    "ActiveConfig", "ActiveContext", "ActiveLoop", "ActiveStrategy", "BALDStrategy", "ConsistencyStrategy",
    "CoreSetStrategy", "CostModel", "DASLStrategy", "EnsembleStrategy", "ForegroundRandomStrategy", "KnapsackStrategy",
    "MEASURES", "REDUCTIONS", "RandomStrategy", "RobotAnnotator", "STRATEGIES", "SuggestiveStrategy", "TimeModel",
    "UncertaintyStrategy", "build_context", "count_strokes", "knapsack", "make_strategy", "mask_features",
    "member_variance", "mutual_information", "needs", "pixel_uncertainty", "propose", "reduce", "review", "reviewed_mask",
    "score_pool", "top_patch_value", "uncertainty_map",
]
