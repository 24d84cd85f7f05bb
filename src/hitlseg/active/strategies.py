"""Active-learning strategies: which unannotated images the person should correct next.

Every strategy is a :class:`hitlseg.selection.Selector`: ``query(context, n)`` on an
:class:`ActiveContext` returns distinct unannotated pool ids, best first (the cost-sensitive
knapsack may return fewer, to fit its time budget). After a query, ``scores`` maps each
candidate to the number it was ranked by and ``criterion`` says what that number is, so a front
end can show why an image was proposed.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.distance import cdist

from hitlseg.active.context import ActiveContext
from hitlseg.active.uncertainty import MEASURES, REDUCTIONS, pixel_uncertainty, reduce, top_patch_value
from hitlseg.errors import InputError
from hitlseg.selection.selectors import Selector, _check_n

__all__ = [
    "ActiveStrategy",
    "BALDStrategy",
    "ConsistencyStrategy",
    "CoreSetStrategy",
    "DASLStrategy",
    "EnsembleStrategy",
    "ForegroundRandomStrategy",
    "KnapsackStrategy",
    "RandomStrategy",
    "STRATEGIES",
    "SuggestiveStrategy",
    "UncertaintyStrategy",
    "make_strategy",
]


def _check_choice(value, name: str, choices) -> str:
    if value not in choices:
        raise InputError(f"{name}: unknown {value!r} (use one of {', '.join(choices)})")
    return value


def _check_positive(value, name: str, integer: bool = False):
    ok = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.integer, np.floating))
    if isinstance(value, bool) or not ok or not math.isfinite(value) or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise InputError(f"{name}: must be {kind}, got {value!r}")
    return int(value) if integer else float(value)


def _check_unit(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not 0 <= value <= 1:
        raise InputError(f"{name}: must be in [0, 1], got {value!r}")
    return float(value)


class ActiveStrategy(Selector):
    """Base class: checks the context, ranks the unannotated images by :meth:`score` (high first).

    Subclasses set ``name`` and ``criterion`` and implement :meth:`score` (one number per
    free image, higher = asked first) or override :meth:`_query`.
    """

    name = ""
    criterion = ""
    variable_size = False

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.scores: dict[str, float] = {}

    def query(self, context: ActiveContext, n: int = 1) -> list[str]:
        n = _check_n(n)
        if not isinstance(context, ActiveContext):
            raise InputError(f"strategy {self.name!r}: needs an ActiveContext (the model's view of the pool), "
                             f"got {type(context).__name__}")
        if not context.pool:
            raise InputError("pool: no image to select from")
        context.selected_rows()
        free = context.unselected()
        if not free:
            raise InputError(f"strategy {self.name!r}: every pool image is already annotated; nothing left to choose")
        if n > len(free):
            raise InputError(f"n: asked for {n} images but only {len(free)} unannotated image(s) remain")
        self.scores = {}
        chosen = [str(i) for i in self._query(context, free, n)]
        if len(set(chosen)) != len(chosen) or set(chosen) & set(context.selected) or not set(chosen) <= set(free):
            raise AssertionError(f"strategy {self.name!r} returned invalid ids {chosen}")
        if not chosen or len(chosen) > n or (len(chosen) < n and not self.variable_size):
            raise AssertionError(f"strategy {self.name!r} returned {len(chosen)} ids for n={n}")
        return chosen

    def score(self, context: ActiveContext, free: list[str]) -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError

    def _query(self, context, free, n):
        self.scores = self.score(context, free)
        order = sorted(range(len(free)), key=lambda j: (-self.scores[free[j]], j))  # ties: pool order
        return [free[j] for j in order[:n]]


class RandomStrategy(ActiveStrategy):
    """Uniformly random unannotated images (seeded by ``(seed, round, annotated count)``)."""

    name = "random"
    criterion = "random draw"

    def _query(self, context, free, n):
        rng = np.random.default_rng([self.seed, context.round, len(context.selected)])
        return [free[int(i)] for i in rng.choice(len(free), size=n, replace=False)]


class ForegroundRandomStrategy(ActiveStrategy):
    """Foreground-aware random sampling, the baseline of nnActive.

    Lüth et al., "nnActive: A Framework for Evaluation of Active Learning in 3D Biomedical
    Segmentation" (TMLR 2025): random queries biased towards foreground beat most active
    learning methods. Without ground truth the foreground is the model's: images are drawn
    without replacement with probability ``share * f_i / sum(f) + (1 - share) / N``, ``f_i``
    the predicted foreground fraction of image ``i``.
    """

    name = "fg_random"
    criterion = "predicted foreground fraction (random draw weighted by it)"

    def __init__(self, share: float = 0.67, seed: int = 0):
        super().__init__(seed)
        self.share = _check_unit(share, "share")

    def _query(self, context, free, n):
        fg = np.array([float(1.0 - context.probability(i)[0].mean()) for i in free])
        self.scores = dict(zip(free, fg.tolist()))
        total = fg.sum()
        p = (1 - self.share) / len(free) + (self.share * fg / total if total > 0 else self.share / len(free))
        rng = np.random.default_rng([self.seed, context.round, len(context.selected)])
        return [free[int(i)] for i in rng.choice(len(free), size=n, replace=False, p=p / p.sum())]


class UncertaintyStrategy(ActiveStrategy):
    """Pixel uncertainty reduced to an image score; the most uncertain images first.

    Settles, "Active Learning Literature Survey" (2009): least confidence, margin and entropy
    sampling; the per-pixel measure becomes an image score by ``reduction`` (``mean``, ``sum``,
    ``max`` or ``topk``: the mean of the ``top_fraction`` most uncertain pixels).
    """

    name = "uncertainty"

    def __init__(self, measure: str = "entropy", reduction: str = "mean", top_fraction: float = 0.05, seed: int = 0):
        super().__init__(seed)
        self.measure = _check_choice(measure, "measure", MEASURES)
        self.reduction = _check_choice(reduction, "reduction", REDUCTIONS)
        self.top_fraction = float(top_fraction)
        reduce(np.zeros(1), self.reduction, self.top_fraction)  # validates top_fraction
        self.criterion = f"{self.reduction} pixel {self.measure.replace('_', ' ')}"

    def score(self, context, free):
        return {i: reduce(pixel_uncertainty(context.probability(i), self.measure), self.reduction, self.top_fraction)
                for i in free}


class _MemberStrategy(ActiveStrategy):
    source = ""

    def __init__(self, reduction: str = "mean", top_fraction: float = 0.05, seed: int = 0):
        super().__init__(seed)
        self.reduction = _check_choice(reduction, "reduction", REDUCTIONS)
        self.top_fraction = float(top_fraction)
        reduce(np.zeros(1), self.reduction, self.top_fraction)

    def _maps(self, context, attribute: str = "disagreement"):
        what = "MC-dropout passes (score the pool with mc_passes >= 2)" if self.source == "mc_dropout" else \
            "an ensemble of at least 2 models (score the pool with ensemble=[...])"
        if context.member_source is None or getattr(context, attribute) is None:
            raise InputError(f"strategy {self.name!r}: needs {what}; the context has a single model")
        if self.source and context.member_source != self.source:
            raise InputError(f"strategy {self.name!r}: needs {what}; the context's members come from "
                             f"{context.member_source}")
        if context.members < 2:
            raise InputError(f"strategy {self.name!r}: needs {what}; the context has {context.members} member(s)")
        return getattr(context, attribute)

    def score(self, context, free):
        maps = self._maps(context)
        missing = [i for i in free if i not in maps]
        if missing:
            raise InputError(f"strategy {self.name!r}: no member disagreement for image {missing[0]!r}")
        return {i: reduce(np.asarray(maps[i], np.float32), self.reduction, self.top_fraction) for i in free}


class BALDStrategy(_MemberStrategy):
    """MC-dropout BALD: mutual information between label and weights, reduced per image.

    Gal, Islam and Ghahramani, "Deep Bayesian Active Learning with Image Data" (ICML 2017);
    Houlsby et al. 2011. The passes come from :func:`score_pool` with ``mc_passes``.
    """

    name = "bald"
    criterion = "mean MC-dropout mutual information (BALD)"
    source = "mc_dropout"


class EnsembleStrategy(_MemberStrategy):
    """Ensemble disagreement: Jensen-Shannon divergence over members, reduced per image.

    Kuo et al., "Cost-Sensitive Active Learning for Intracranial Hemorrhage Detection" (MICCAI
    2018) score images by the JS divergence of an ensemble's predictions.
    """

    name = "ensemble"
    criterion = "mean ensemble Jensen-Shannon divergence"
    source = "ensemble"


class ConsistencyStrategy(ActiveStrategy):
    """HISE local consistency, lowest first: the images whose object pixels the model trusts least.

    Zhang et al., "Hierarchical self-ensembling ... (HISE)", Sci China Inf Sci 2020; the score
    is ``-tau_l`` at ``beta`` (:func:`hitlseg.pseudo.local_consistency`).
    """

    name = "consistency"
    criterion = "local consistency tau_l (lowest first)"

    def __init__(self, beta: float = 0.95, seed: int = 0):
        from hitlseg.pseudo.labels import _check_unit as unit

        super().__init__(seed)
        self.beta = unit(beta, "beta", high_open=False)

    def score(self, context, free):
        from hitlseg.pseudo import local_consistency

        return {i: -local_consistency(context.probability(i), self.beta) for i in free}


def _rows(context: ActiveContext, ids) -> np.ndarray:
    index = {image_id: r for r, image_id in enumerate(context.pool)}
    return np.asarray([index[i] for i in ids], dtype=np.int64)


class SuggestiveStrategy(_MemberStrategy):
    """Suggestive annotation: uncertain candidates, then the subset that best represents the pool.

    Yang et al., "Suggestive Annotation: A Deep Active Learning Framework for Biomedical Image
    Segmentation" (MICCAI 2017): the ``candidates * n`` images of highest member variance
    (a bootstrap ensemble there; MC-dropout passes or an ensemble here), then greedily the
    ``n`` of them maximising ``F(S) = sum_x max_{s in S} cos(s, x)`` over every unannotated
    image ``x`` (cosine similarity of pooled encoder features).
    """

    name = "suggestive"
    criterion = "coverage gain among the most uncertain (member variance)"
    source = ""

    def __init__(self, candidates: int = 2, seed: int = 0):
        super().__init__("mean", 0.05, seed)
        self.candidates = _check_positive(candidates, "candidates", integer=True)

    def _query(self, context, free, n):
        variance = self._maps(context, "variance")
        unc = {i: float(np.asarray(variance[i], np.float32).mean()) for i in free}
        k = min(len(free), self.candidates * n)
        order = sorted(range(len(free)), key=lambda j: (-unc[free[j]], j))
        pool_candidates = [free[j] for j in order[:k]]
        x = context.feature_matrix()
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norm > 0, norm, 1.0)
        similarity = x[_rows(context, pool_candidates)] @ x[_rows(context, free)].T  # (k, free)
        covered = np.full(len(free), -np.inf)
        chosen: list[int] = []
        for _ in range(n):
            gains = np.maximum(similarity, covered[None]).sum(1) - np.where(np.isfinite(covered), covered, 0).sum()
            gains[chosen] = -np.inf
            best = int(np.argmax(gains))  # first candidate (most uncertain) on ties
            self.scores[pool_candidates[best]] = float(gains[best])
            chosen.append(best)
            covered = np.maximum(covered, similarity[best])
        return [pool_candidates[c] for c in chosen]


class CoreSetStrategy(ActiveStrategy):
    """Core-set: greedy k-center on pooled encoder features (the annotated images are the first centres).

    Sener and Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set
    Approach" (ICLR 2018).
    """

    name = "coreset"
    criterion = "distance to the nearest annotated image (encoder features)"

    def _query(self, context, free, n):
        x = context.feature_matrix()
        free_rows = _rows(context, free)
        centres = context.selected_rows()
        dist = cdist(x[free_rows], x[centres]).min(1) if len(centres) else np.full(len(free), np.inf)
        chosen: list[int] = []
        for _ in range(n):
            best = int(np.argmax(dist))
            self.scores[free[best]] = float(dist[best])
            chosen.append(best)
            dist = np.minimum(dist, cdist(x[free_rows], x[free_rows[best]][None])[:, 0])
            dist[chosen] = -1.0
        return [free[c] for c in chosen]


class KnapsackStrategy(ActiveStrategy):
    """Cost-sensitive selection: the most valuable set of images within a time budget.

    Kuo et al. (MICCAI 2018): value ``V_i`` = sum of the uncertainty (pixel entropy) of the
    ``k`` most uncertain ``patch``-sized patches, cost ``T_i`` = predicted annotation seconds
    (``context.costs``, from :class:`hitlseg.active.CostModel`), and the optimal set under
    ``budget`` seconds by 0-1 knapsack dynamic programming. At most ``n`` images; fewer when
    the budget is spent.
    """

    name = "knapsack"
    criterion = "top-patch uncertainty within the time budget"
    variable_size = True

    def __init__(self, budget: float = 120.0, patch: int = 16, k: int = 8, resolution: float = 1.0, seed: int = 0):
        super().__init__(seed)
        self.budget = _check_positive(budget, "budget")
        self.patch = _check_positive(patch, "patch", integer=True)
        self.k = _check_positive(k, "k", integer=True)
        self.resolution = _check_positive(resolution, "resolution")

    def _query(self, context, free, n):
        from hitlseg.active.cost import knapsack

        if context.costs is None:
            raise InputError("strategy 'knapsack': needs predicted annotation costs per image (context.costs)")
        missing = [i for i in free if i not in context.costs]
        if missing:
            raise InputError(f"strategy 'knapsack': no predicted cost for image {missing[0]!r}")
        values = [top_patch_value(pixel_uncertainty(context.probability(i), "entropy"), self.patch, self.k) for i in free]
        costs = [float(context.costs[i]) for i in free]
        picked = knapsack(values, costs, self.budget, resolution=self.resolution, max_items=n)
        if not picked:  # nothing has value: the cheapest image, so the round is not empty
            picked = [int(np.argmin(costs))]
        self.scores = {free[j]: values[j] / costs[j] for j in picked}
        return sorted((free[j] for j in picked), key=lambda i: -self.scores[i])


class DASLStrategy(UncertaintyStrategy):
    """Deep active self-paced learning: uncertain images to the person, confident easy ones to pseudo-labels.

    Wang et al., "Deep Active Self-paced Learning for Accurate Pulmonary Nodule Segmentation"
    (MICCAI 2018): :meth:`query` asks the person for the most uncertain images (mean pixel
    entropy); :meth:`pseudo_pool` hands the most confident ``pace_t`` share of the remaining
    pool to self-training, with ``pace_t = min(1, pace0 + pace_step * round)`` (self-paced: easy
    images first, harder ones as the model improves).
    """

    name = "dasl"

    def __init__(self, pace0: float = 0.2, pace_step: float = 0.2, seed: int = 0):
        super().__init__("entropy", "mean", 0.05, seed)
        self.pace0 = _check_unit(pace0, "pace0")
        self.pace_step = _check_unit(pace_step, "pace_step")
        self.criterion = "mean pixel entropy (the most confident go to pseudo-labels)"

    def pace(self, round_index: int) -> float:
        return min(1.0, self.pace0 + self.pace_step * max(0, int(round_index)))

    def pseudo_pool(self, context: ActiveContext, exclude=()) -> list[str]:
        """The confident, easy unannotated images self-training may use this round, most confident first."""
        free = [i for i in context.unselected() if i not in set(exclude)]
        if not free:
            return []
        scores = self.score(context, free)
        count = math.ceil(self.pace(context.round) * len(free) - 1e-9)
        return sorted(free, key=lambda i: (scores[i], free.index(i)))[:count]


STRATEGIES: dict[str, type[ActiveStrategy]] = {
    "random": RandomStrategy,
    "fg_random": ForegroundRandomStrategy,
    "uncertainty": UncertaintyStrategy,
    "bald": BALDStrategy,
    "ensemble": EnsembleStrategy,
    "consistency": ConsistencyStrategy,
    "suggestive": SuggestiveStrategy,
    "coreset": CoreSetStrategy,
    "knapsack": KnapsackStrategy,
    "dasl": DASLStrategy,
}

from hitlseg.active.quality_strategy import QualityStrategy  # noqa: E402  (subclasses ActiveStrategy, defined above)

STRATEGIES["quality"] = QualityStrategy

#: Short names for uncertainty measures: ``entropy`` is ``uncertainty`` with ``measure="entropy"``.
ALIASES = {measure: ("uncertainty", {"measure": measure}) for measure in MEASURES}


def make_strategy(name: str, **options) -> ActiveStrategy:
    """A strategy by name (one of :data:`STRATEGIES` or an uncertainty measure); ``options`` go to its constructor."""
    from hitlseg.selection.selectors import construct

    if name in ALIASES:
        name, preset = ALIASES[name]
        options = {**preset, **options}
    if name not in STRATEGIES:
        raise InputError(f"strategy: unknown name {name!r} (use one of {', '.join([*STRATEGIES, *ALIASES])})")
    return construct("strategy", name, STRATEGIES[name], options)


def needs(name: str) -> set[str]:
    """What :func:`score_pool` must compute for strategy ``name``: subset of {"mc_dropout", "ensemble", "features", "costs"}."""
    base = ALIASES.get(name, (name,))[0]
    return {"bald": {"mc_dropout"}, "ensemble": {"ensemble"}, "suggestive": {"mc_dropout", "features"},
            "coreset": {"features"}, "knapsack": {"costs"}}.get(base, set())
