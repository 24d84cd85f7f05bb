"""Image selectors with one contract: ``query(context, n)`` returns ``n`` unselected pool ids.

Modelled on scikit-activeml's query strategies: every selector takes the same
:class:`SelectionContext` (pool ids, ids selected so far, and whatever data the selectors may
use) and returns distinct ids of unselected images, deterministically for its seed. Only
``labeled`` reads ground-truth masks.

``gtfree``
    The ground-truth-free method: rank unselected images by the L2 distance of their FLIM
    descriptors to the selected set; policy ``most_distant``, ``closest`` or ``alternate`` (most
    distant when an odd number of images is selected, i.e. after rounds 1, 3, ..., closest
    otherwise; a batch interleaves the two ends). It never picks a near-duplicate of a selected
    image (nor of an image picked before it in the same batch): one closer than
    ``duplicate_tolerance x`` the pool's descriptor diameter (see :mod:`hitlseg.selection.recommend`),
    unless only near-duplicates remain.
``random``
    Uniform without replacement, seeded by ``(seed, number selected)``.
``labeled``
    The interactive ground-truth-based method it is compared with: decode every unselected image
    with the current filters and adaptive decoder, pick the lowest mean Dice against its mask.
``kcenter``
    Greedy k-center (core-set) on raw-image features (per-channel intensity histograms): the
    image farthest from the selected set, repeatedly. Diversity without filters.

With nothing selected yet (no filters exist), ``gtfree``, ``labeled`` and ``kcenter`` start from
a seeded random image, as ``random`` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.spatial.distance import cdist

from hitlseg.errors import InputError
from hitlseg.selection.recommend import (
    DISTANCES,
    DUPLICATE_TOLERANCE,
    NearDuplicate,
    check_duplicate_tolerance,
    distances_to_selected,
    near_duplicates,
    selected_indices,
)

__all__ = [
    "GTFreeSelector",
    "KCenterSelector",
    "LabeledSelector",
    "RandomSelector",
    "SELECTORS",
    "SelectionContext",
    "Selector",
    "make_selector",
    "raw_features",
]

from hitlseg.defaults import DEFAULT_POLICY, GTFREE_POLICIES  # noqa: E402,F401  (re-exported)


@dataclass
class SelectionContext:
    """What a selector may look at.

    Attributes
    ----------
    pool : list of str
        Every image id, in a fixed order (rows of ``descriptors`` and ``raw_features``).
    selected : list of str
        Ids selected so far, in selection order.
    descriptors : ndarray (n_pool, d), optional
        Ground-truth-free descriptors of the current round (``gtfree``).
    raw_features : ndarray (n_pool, d), optional
        Filter-free image features (``kcenter``; computed from ``images`` when absent).
    images : mapping id -> ndarray (C, *spatial), optional
    masks : mapping id -> ndarray (*spatial), optional
        Ground truth; only ``labeled`` reads it.
    encoder : FLIMEncoder, optional
        Current filters (``labeled``).
    duplicate_tolerance : float
        Near-duplicate tolerance of ``gtfree`` when the selector does not set its own: a fraction
        of the pool's descriptor diameter (0: rule off).
    diameter : float, optional
        The pool's descriptor diameter when known (the session's stopping signal has it);
        computed from ``descriptors`` otherwise.
    """

    pool: list[str]
    selected: list[str] = field(default_factory=list)
    descriptors: np.ndarray | None = None
    raw_features: np.ndarray | None = None
    images: Mapping[str, np.ndarray] | None = None
    masks: Mapping[str, np.ndarray] | None = None
    encoder: object | None = None
    duplicate_tolerance: float = DUPLICATE_TOLERANCE
    diameter: float | None = None

    def selected_rows(self) -> np.ndarray:
        return selected_indices(self.pool, self.selected)

    def unselected(self) -> list[str]:
        """Unselected ids in pool order."""
        chosen = set(self.selected)
        return [i for i in self.pool if i not in chosen]


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n: must be a positive integer, got {n!r}")
    return int(n)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed: must be a non-negative integer, got {seed!r}")
    return int(seed)


class Selector:
    """Base class: validates the context and ``n``, then ranks the unselected images.

    Subclasses set ``name`` and implement :meth:`_query` (which receives the unselected ids in
    pool order and returns ``n`` of them).
    """

    name = ""

    def __init__(self, seed: int = 0):
        self.seed = _check_seed(seed)

    def query(self, context: SelectionContext, n: int = 1) -> list[str]:
        """``n`` distinct unselected pool ids, best first.

        Raises InputError when no unselected image remains or fewer than ``n`` do.
        """
        n = _check_n(n)
        if not isinstance(context, SelectionContext):
            raise InputError(f"context: expected a SelectionContext, got {type(context).__name__}")
        if len(context.pool) == 0:
            raise InputError("pool: no image to select from")
        context.selected_rows()  # validates the selected ids
        free = context.unselected()
        if not free:
            raise InputError(f"selector {self.name!r}: every pool image is already selected; nothing left to choose")
        if n > len(free):
            raise InputError(f"n: asked for {n} images but only {len(free)} unselected image(s) remain")
        if not context.selected:
            return self._random(context, free, n)
        chosen = [str(i) for i in self._query(context, free, n)]
        assert len(set(chosen)) == n and not set(chosen) & set(context.selected)
        return chosen

    def _random(self, context: SelectionContext, free: list[str], n: int) -> list[str]:
        rng = np.random.default_rng([self.seed, len(context.selected)])
        return [free[int(i)] for i in rng.choice(len(free), size=n, replace=False)]

    def _query(self, context: SelectionContext, free: list[str], n: int) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"


class RandomSelector(Selector):
    """Uniformly random unselected images (seeded)."""

    name = "random"

    def _query(self, context, free, n):
        return self._random(context, free, n)


class GTFreeSelector(Selector):
    """The ground-truth-free method: distance of FLIM descriptors to the selected set.

    Parameters
    ----------
    policy : {"most_distant", "closest", "alternate"}
    distance : {"min", "last"}
        Distance to the selected set that ranks the candidates.
    duplicate_tolerance : float, optional
        Candidates closer than this fraction of the pool's descriptor diameter to a selected image
        (or to one picked before them in the same batch) are skipped as near-duplicates (0: rule
        off). None (default) takes the context's (:class:`SelectionContext`, which a session
        fills with its own).
    seed : int

    After each query, :attr:`near_duplicates` lists the unselected images left out (a
    :class:`~hitlseg.selection.recommend.NearDuplicate` each, nearest first: every near-duplicate
    of a selected image, and those of an image picked earlier in the batch that the batch
    skipped) and :attr:`notes` says when only near-duplicates were left to pick from.
    """

    name = "gtfree"

    def __init__(self, policy: str = DEFAULT_POLICY, distance: str = "min", duplicate_tolerance: float | None = None,
                 seed: int = 0):
        super().__init__(seed)
        if policy not in GTFREE_POLICIES:
            raise InputError(f"policy: unknown policy {policy!r} for gtfree (use one of {', '.join(GTFREE_POLICIES)})")
        if distance not in DISTANCES:
            raise InputError(f"distance: unknown mode {distance!r} (use one of {', '.join(DISTANCES)})")
        self.policy = policy
        self.distance = distance
        self.duplicate_tolerance = None if duplicate_tolerance is None else check_duplicate_tolerance(duplicate_tolerance)
        self.near_duplicates: list[NearDuplicate] = []
        self.notes: list[str] = []

    def _query(self, context, free, n):
        if context.descriptors is None:
            raise InputError("selector 'gtfree': needs descriptors (mark an image first)")
        d = np.asarray(context.descriptors, dtype=np.float64)
        if d.ndim != 2 or len(d) != len(context.pool):
            raise InputError(f"descriptors: expected shape ({len(context.pool)}, n_features), got {d.shape}")
        tolerance = self.duplicate_tolerance
        if tolerance is None:
            tolerance = check_duplicate_tolerance(context.duplicate_tolerance, "context.duplicate_tolerance")
        selected_rows = [int(r) for r in context.selected_rows()]
        dist = distances_to_selected(d, selected_rows, self.distance)
        rows = {image_id: r for r, image_id in enumerate(context.pool)}
        free_rows = np.asarray([rows[i] for i in free])
        ascending = [free[j] for j in np.argsort(dist[free_rows], kind="stable")]
        descending = [free[j] for j in np.argsort(-dist[free_rows], kind="stable")]
        if self.policy == "most_distant":
            sources = [descending]
        elif self.policy == "closest":
            sources = [ascending]
        else:  # alternate: a batch interleaves the two ends
            sources = [descending, ascending] if len(context.selected) % 2 == 1 else [ascending, descending]
        # near-duplicates of selected images are out from the start; those of an image picked
        # earlier in the same batch are skipped as the batch is built
        known, threshold = near_duplicates(d, context.pool, selected_rows, free_rows, tolerance, context.diameter)
        skipped: dict[str, NearDuplicate] = {n.id: n for n in known}
        chosen: list[str] = []

        def duplicate_of_chosen(candidate: str) -> NearDuplicate | None:
            if threshold <= 0 or not chosen:
                return None
            gaps = np.linalg.norm(d[[rows[c] for c in chosen]] - d[rows[candidate]], axis=1)
            nearest = int(np.argmin(gaps))
            return NearDuplicate(candidate, chosen[nearest], float(gaps[nearest])) if gaps[nearest] < threshold else None

        turn = 0
        while len(chosen) < n:
            pick = None
            for candidate in sources[turn % len(sources)]:
                if candidate in chosen or candidate in skipped:
                    continue
                found = duplicate_of_chosen(candidate)
                if found is None:
                    pick = candidate
                    break
                skipped[candidate] = found
            if pick is None:  # every source ranks the same candidates: none is left anywhere
                break
            chosen.append(pick)
            turn += 1
        self.notes = []
        if len(chosen) < n:
            rest = [c for c in sources[0] if c not in chosen][: n - len(chosen)]
            self.notes.append(f"only near-duplicates of selected images remained; picked {', '.join(rest)}")
            chosen += rest
        self.near_duplicates = sorted((v for k, v in skipped.items() if k not in chosen), key=lambda v: v.distance)
        return chosen

    def __repr__(self) -> str:
        return (f"GTFreeSelector(policy={self.policy!r}, distance={self.distance!r}, "
                f"duplicate_tolerance={self.duplicate_tolerance!r}, seed={self.seed})")


def raw_features(images: Sequence[np.ndarray], bins: int = 16) -> np.ndarray:
    """Filter-free image features: per-channel histograms of values in [0, 1] (fractions of pixels).

    Shape-independent, so images of different sizes (and 2D or 3D) are comparable.
    """
    rows = []
    for image in images:
        image = np.asarray(image, dtype=np.float32)
        flat = np.clip(image.reshape(image.shape[0], -1), 0.0, 1.0)
        index = np.minimum((flat * bins).astype(np.int64), bins - 1) + np.arange(len(flat))[:, None] * bins
        counts = np.bincount(index.ravel(), minlength=len(flat) * bins).astype(np.float64)
        rows.append(counts / flat.shape[1])
    return np.asarray(rows)


class KCenterSelector(Selector):
    """Greedy k-center (core-set) on raw-image features."""

    name = "kcenter"

    def __init__(self, bins: int = 16, seed: int = 0):
        super().__init__(seed)
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
            raise InputError(f"bins: must be an integer >= 2, got {bins!r}")
        self.bins = int(bins)

    def features(self, context: SelectionContext) -> np.ndarray:
        if context.raw_features is not None:
            x = np.asarray(context.raw_features, dtype=np.float64)
        elif context.images is not None:
            x = raw_features([context.images[i] for i in context.pool], self.bins)
        else:
            raise InputError("selector 'kcenter': needs raw_features or images in the context")
        if x.ndim != 2 or len(x) != len(context.pool):
            raise InputError(f"raw_features: expected shape ({len(context.pool)}, d), got {x.shape}")
        return x

    def _query(self, context, free, n):
        x = self.features(context)
        dist = distances_to_selected(x, context.selected_rows(), "min")
        chosen_rows: list[int] = []
        rows = {image_id: r for r, image_id in enumerate(context.pool)}
        free_rows = np.asarray([rows[i] for i in free])
        for _ in range(n):
            best = int(free_rows[np.argmax(dist[free_rows])])  # first in pool order on ties
            chosen_rows.append(best)
            dist = np.minimum(dist, cdist(x, x[best : best + 1])[:, 0])
            dist[best] = -1.0
        return [context.pool[r] for r in chosen_rows]

    def __repr__(self) -> str:
        return f"KCenterSelector(bins={self.bins}, seed={self.seed})"


class LabeledSelector(Selector):
    """Ground-truth-based: the unselected image the current filters and decoder segment worst."""

    name = "labeled"

    def __init__(self, decoder: str = "labels", seed: int = 0):
        from hitlseg.flim.decoders import DECODERS

        super().__init__(seed)
        if decoder not in DECODERS:
            raise InputError(f"decoder: unknown rule {decoder!r} (use one of {', '.join(DECODERS)})")
        self.decoder = decoder
        self.scores: dict[str, float] = {}

    def dice_scores(self, context: SelectionContext, ids: Sequence[str]) -> dict[str, float]:
        """Mean Dice of the current filters + decoder on each image of ``ids``."""
        from hitlseg.flim.decoders import decode
        from hitlseg.metrics import mean_dice
        from hitlseg.selection.descriptors import shape_batches, stack

        if context.encoder is None or context.images is None or context.masks is None:
            raise InputError("selector 'labeled': needs the current encoder, the images and their ground-truth masks")
        missing = [i for i in ids if context.masks.get(i) is None]
        if missing:
            raise InputError(f"selector 'labeled': no ground-truth mask for {len(missing)} image(s), e.g. {missing[0]!r}")
        encoder = context.encoder
        layer = encoder.layers[0]
        classes = layer.kernel_classes
        present = set(int(c) for c in torch.unique(classes))
        rule = self.decoder if (self.decoder == "weights" or (0 in present and len(present) > 1)) else "weights"
        n_classes = max(1, max(int(np.max(context.masks[i])) for i in ids))
        device = layer.weight.device
        scores: dict[str, float] = {}
        for batch in shape_batches({i: context.images[i] for i in ids}):
            with torch.no_grad():
                features = layer(stack(context.images, batch, device))
            for image_id, f in zip(batch, features):
                mask = np.asarray(context.masks[image_id])
                decoded = decode(f, classes, tuple(mask.shape), rule, None if rule == "weights" else n_classes)
                pred = decoded.mask if rule != "weights" else (decoded.mask > 0).astype(np.uint8)
                truth = mask if rule != "weights" else (mask > 0).astype(np.uint8)
                scores[image_id] = float(mean_dice(pred, truth))
        return scores

    def _query(self, context, free, n):
        scores = self.dice_scores(context, free)
        self.scores = scores
        order = np.argsort([scores[i] for i in free], kind="stable")
        return [free[j] for j in order[:n]]

    def __repr__(self) -> str:
        return f"LabeledSelector(decoder={self.decoder!r}, seed={self.seed})"


SELECTORS: dict[str, type[Selector]] = {
    "gtfree": GTFreeSelector,
    "random": RandomSelector,
    "labeled": LabeledSelector,
    "kcenter": KCenterSelector,
}


def construct(kind: str, name: str, cls, options: dict):
    """``cls(**options)``, refusing options its constructor does not take with an error naming ``kind`` ``name``."""
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise InputError(f"{kind} {name!r}: unknown option(s) {', '.join(unknown)} (accepted: {', '.join(sorted(accepted))})")
    return cls(**options)


def make_selector(name: str, **options) -> Selector:
    """A selector by name; ``options`` go to its constructor (e.g. ``policy``, ``seed``)."""
    if name not in SELECTORS:
        raise InputError(f"selector: unknown name {name!r} (use one of {', '.join(SELECTORS)})")
    return construct("selector", name, SELECTORS[name], options)
