"""The correction loop: train, predict the pool, ask a strategy, correct, retrain (warm-started).

Round 0 is the strokes on the first images (e.g. the ground-truth-free selection's), learned by
:func:`hitlseg.pseudo.learn_from_strokes` with self-training on the pool. Every later round:

1. the current model scores the pool once (:func:`score_pool`);
2. the strategy picks ``per_round`` unannotated images;
3. the annotator corrects each prediction with strokes (the robot's :meth:`Robot.correct` on
   the prediction's largest error regions, or a person in the web app); effort is counted
   from the new strokes with a :class:`TimeModel`. With ``review_passes`` > 0 the annotator
   reviews the prediction instead (:mod:`hitlseg.active.review`): each pass of strokes is
   refined by a graph cut over the model's probabilities, the annotator corrects the result
   again, and the final mask is the image's accepted label from then on;
4. the model is trained further on every stroke so far, then self-trained on the pool; with
   ``synthetic`` > 0 the training also gets synthetic images generated for altered versions of
   the annotated images' accepted masks (Mahapatra et al., MICCAI 2018; :mod:`hitlseg.synthesis`).

An annotator is the only thing that may hold ground truth. With ``folder`` the loop writes the
model, the strokes and the record after every round (atomically) and resumes from there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from hitlseg.active.context import build_context, score_pool
from hitlseg.active.cost import CostModel, TimeModel, mask_features
from hitlseg.active.strategies import DASLStrategy, make_strategy, needs
from hitlseg.errors import InputError
from hitlseg.progress import Progress, report

STATE = "active.json"
SYNTHESIZER = "synthesizer.pt"
WARM_MODEL = "model_warm.pt"  # the warm-started model a refresh replaced
ANNOTATOR_MODES = ("correct", "mark")


@dataclass
class ActiveConfig:
    """Settings of the correction loop.

    Attributes
    ----------
    strategy : str
        A name of :data:`hitlseg.active.STRATEGIES` or an uncertainty measure (``entropy``...).
    strategy_options : dict
        Constructor options of the strategy (e.g. ``{"budget": 60}`` for ``knapsack``).
    rounds : int
        Correction rounds after round 0.
    per_round : int
        Images queried per round.
    mc_passes, dropout : int, float
        MC-dropout passes for strategies that need them (``bald``, ``suggestive``).
    ensemble : int
        Members for ``ensemble``: the model and ``ensemble - 1`` copies fine-tuned for
        ``ensemble_epochs`` on bootstrap resamples of the annotated images.
    ensemble_epochs : int
    initial_self_training : int
        Self-training iterations of round 0 (the strokes learner's default schedule).
    epochs : int
        Warm-started epochs on the strokes alone per round, when the round has no self-training
        (with self-training the round trains on strokes + pseudo-labels directly).
    self_training : int
        Self-training iterations per round, on the final schedule (every chosen pool image
        machine-annotated).
    self_training_epochs : int
    pool_limit : int or None
        Pool images self-training may pseudo-label per round (a seeded random subset; DASL
        hands its confident images instead). ``None``: all.
    person_weight : float
        Cross-entropy weight of the person's strokes against pseudo-labels in correction rounds
        (:attr:`hitlseg.nets.TrainConfig.person_weight`): corrections are a few hundred pixels
        among hundreds of thousands of machine labels, and without weight they barely count.
        Chosen on wbc1's validation images (split 0, entropy, 4 rounds): mean Dice 0.854 ->
        0.865 at weight 1, 0.871 at 10, 0.875 at 50.
    synthetic : int
        Synthetic samples per annotated image added to each correction round's training
        (Mahapatra et al., MICCAI 2018). Each round the annotated images' accepted masks (the
        model's prediction under the person's strokes) are altered, a mask-conditioned generator
        (trained on those images and masks, continued from the previous round's) makes images for
        them, and the ``synthetic`` most uncertain realistic ones per image (MC dropout) join the
        round's training with their masks. 0: off. The person's effort is the same either way.
    synthetic_candidates : int
        Candidates generated per kept synthetic sample.
    generator_steps, generator_refresh_steps : int
        Generator training steps in the first synthesis round and in every later one.
    review_passes : int
        0: a queried image gets one pass of corrective strokes and trains on its strokes and
        pseudo-labels. ``n`` > 0: the annotator reviews the prediction with up to ``n`` passes
        of strokes, each refined by a graph cut (:func:`hitlseg.active.review.review`), and
        the image trains on the accepted mask (Cellpose 2.0's human-in-the-loop; DeepIGeoS).
    time_model : TimeModel
    seed : int
    """

    strategy: str = "entropy"
    strategy_options: dict = field(default_factory=dict)
    rounds: int = 10
    per_round: int = 1
    mc_passes: int = 5
    dropout: float = 0.2
    ensemble: int = 3
    ensemble_epochs: int = 5
    initial_self_training: int = 5
    epochs: int = 5
    self_training: int = 1
    self_training_epochs: int = 15
    pool_limit: int | None = 60
    person_weight: float = 50.0
    synthetic: int = 0
    synthetic_candidates: int = 3
    generator_steps: int = 400
    generator_refresh_steps: int = 100
    review_passes: int = 0
    time_model: TimeModel = field(default_factory=TimeModel)
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.time_model, dict):
            self.time_model = TimeModel(**self.time_model)
        for name, minimum in (("rounds", 0), ("per_round", 1), ("ensemble", 2), ("ensemble_epochs", 1),
                              ("initial_self_training", 0), ("epochs", 1), ("self_training", 0),
                              ("self_training_epochs", 1), ("synthetic", 0), ("synthetic_candidates", 1),
                              ("generator_steps", 1), ("generator_refresh_steps", 1), ("review_passes", 0),
                              ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise InputError(f"{name}: must be an integer >= {minimum}, got {value!r}")
        if self.pool_limit is not None and (isinstance(self.pool_limit, bool) or not isinstance(self.pool_limit, int)
                                            or self.pool_limit < 1):
            raise InputError(f"pool_limit: must be a positive integer or None, got {self.pool_limit!r}")
        if not isinstance(self.strategy_options, dict):
            raise InputError("strategy_options: must be a dict of constructor options")
        make_strategy(self.strategy, **self.strategy_options, seed=self.seed)  # validates name and options
        if "mc_dropout" in needs(self.strategy):
            from hitlseg.active.context import _check_passes

            if _check_passes(self.mc_passes, "mc_passes") == 0:
                raise InputError(f"mc_passes: strategy {self.strategy!r} needs at least 2 MC-dropout passes")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["time_model"] = self.time_model.to_dict()
        return data


class RobotAnnotator:
    """The simulated person: the only holder of ground truth in a study.

    ``mode="correct"`` draws :meth:`Robot.correct` strokes on the prediction's largest error
    regions (on top of the image's strokes so far); ``"mark"`` gives an image without strokes
    the robot's first strokes (:meth:`Robot.mark`) instead. ``reads`` lists every mask read.
    """

    def __init__(self, robot, masks: Mapping[str, np.ndarray], mode: str = "correct"):
        if mode not in ANNOTATOR_MODES:
            raise InputError(f"mode: unknown {mode!r} (use one of {', '.join(ANNOTATOR_MODES)})")
        self.robot, self.masks, self.mode = robot, masks, mode
        self.reads: list[str] = []

    def _mask(self, image_id: str) -> np.ndarray:
        if image_id not in self.masks:
            raise InputError(f"annotator: no ground-truth mask for image {image_id!r}")
        self.reads.append(image_id)
        return np.asarray(self.masks[image_id])

    def first(self, image_id: str) -> np.ndarray:
        """First strokes on an image (round 0)."""
        return self.robot.mark(self._mask(image_id), key=image_id)

    def __call__(self, image_id: str, prediction: np.ndarray, markers: np.ndarray, round_index: int) -> np.ndarray:
        mask = self._mask(image_id)
        if self.mode == "mark" and not markers.any():
            new = self.robot.mark(mask, key=image_id)
        else:
            new = self.robot.correct(mask, prediction, key=(image_id, round_index))
        return np.where(new > 0, new, markers).astype(np.uint8)


def _bootstrap_members(model, images, markers, config: ActiveConfig, round_index: int):
    """The model and ``ensemble - 1`` copies fine-tuned on bootstrap resamples of the annotated images."""
    import copy

    from hitlseg.nets import train
    from hitlseg.pseudo import default_strokes_config, markers_to_target

    members = [model]
    ids = list(markers)
    for m in range(config.ensemble - 1):
        rng = np.random.default_rng([config.seed, round_index, m])
        sample = [ids[int(i)] for i in rng.integers(0, len(ids), len(ids))]
        member = copy.deepcopy(model, memo={id(model.net.encoder): model.net.encoder})  # the frozen encoder is shared
        pairs = [(images[i], markers_to_target(markers[i])) for i in sample if markers[i].any()]
        cfg = default_strokes_config(model.ndim, epochs=config.ensemble_epochs, seed=config.seed + 1000 * (m + 1) + round_index)
        train(member, pairs, [], cfg)
        members.append(member)
    return members


class ActiveLoop:
    """Correction rounds with a strategy, an annotator and the strokes learner.

    Parameters
    ----------
    images : mapping id -> ndarray (C, *spatial)
        Every image of the pool (the loop never needs masks).
    pool : sequence of str
        Ids the strategy may query and self-training may pseudo-label.
    annotator : callable
        ``annotator(id, predicted_labels, markers_so_far, round) -> markers``; a
        :class:`RobotAnnotator` in studies. Round 0 calls ``annotator.first(id)`` unless
        ``first_markers`` are given.
    config : ActiveConfig
    n_classes : int
        Object classes of the segmentation.
    folder : path, optional
        Where the loop keeps its state (model, strokes, record) and resumes from.
    evaluate : callable, optional
        ``evaluate(model) -> dict`` after every round (test Dice in a study), recorded.
    initial_model : SegModel, optional
        The round-0 model, when several loops share it (a protocol trains it once).
    executor : hitlseg.parallel.Executor, optional
        Where each round scores the pool (:func:`~hitlseg.active.context.score_pool`): in tasks
        of a few images, in-process or on a Dask cluster; default one call in this process.
    """

    def __init__(self, images: Mapping[str, np.ndarray], pool: Sequence[str], annotator: Callable, config: ActiveConfig,
                 *, n_classes: int, folder: str | Path | None = None, evaluate: Callable | None = None,
                 preprocessing: dict | None = None, initial_model=None, executor=None):
        self.images = images
        self.pool = [str(i) for i in pool]
        if len(set(self.pool)) != len(self.pool):
            raise InputError("pool: ids must be unique")
        missing = [i for i in self.pool if i not in images]
        if missing:
            raise InputError(f"pool: {len(missing)} id(s) without an image, e.g. {missing[0]!r}")
        self.annotator = annotator
        self.executor = executor
        self.config = config
        self.n_classes = int(n_classes)
        self.folder = Path(folder) if folder is not None else None
        self.evaluate = evaluate
        self.preprocessing = preprocessing
        self.model = initial_model
        self.markers: dict[str, np.ndarray] = {}
        self.accepted: dict[str, np.ndarray] = {}  # reviewed images' accepted masks (review_passes > 0)
        self.rounds: list[dict] = []
        self.cost_records: list[tuple[list[float], float]] = []
        self.synthesizer = None  # the generator of synthetic samples, continued round after round
        self.refreshed: dict | None = None  # the record of the last retraining from scratch (:meth:`refresh`)
        self.strategy = make_strategy(config.strategy, **config.strategy_options, seed=config.seed)
        if self.folder is not None:
            self._load()

    # -- state ------------------------------------------------------------------------------------
    @property
    def annotated(self) -> list[str]:
        return list(self.markers)

    def _load(self) -> None:
        from hitlseg.nets import SegModel

        path = self.folder / STATE
        if not path.is_file():
            return
        try:
            state = json.loads(path.read_text())
            # settings added since a loop was saved take their defaults
            stored = {**ActiveConfig().to_dict(), **state.get("config", {})} if isinstance(state, dict) else {}
            if stored != self.config.to_dict():
                changed = sorted(k for k in self.config.to_dict() if stored.get(k) != self.config.to_dict()[k])
                raise InputError(f"{self.folder}: holds a loop with other settings ({', '.join(changed)} differ); "
                                 "use another folder")
            data = np.load(self.folder / "markers.npz", allow_pickle=False)
            self.markers = {i: data[f"m{k}"] for k, i in enumerate(state["annotated"])}
            reviewed = state.get("accepted", [])
            if reviewed:
                data = np.load(self.folder / "accepted.npz", allow_pickle=False)
                self.accepted = {i: data[f"a{k}"] for k, i in enumerate(reviewed)}
            self.refreshed = state.get("refreshed")
            # a refresh interrupted after saving its model but before its record: the warm model stands
            warm = self.folder / WARM_MODEL
            interrupted = self.refreshed is None and warm.is_file()
            self.model = SegModel.load(warm if interrupted else self.folder / "model.pt")
            if (self.folder / SYNTHESIZER).is_file():
                from hitlseg.synthesis import Synthesizer

                self.synthesizer = Synthesizer.load(self.folder / SYNTHESIZER)
        except InputError:
            raise
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"{self.folder}: damaged loop state ({type(exc).__name__}: {exc})") from None
        self.rounds = state["rounds"]
        self.cost_records = [(list(f), float(s)) for f, s in state.get("cost_records", [])]

    def _save(self) -> None:
        from hitlseg.project.files import atomic_write

        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.model.save(self.folder / "model.pt")
        if self.synthesizer is not None:
            self.synthesizer.save(self.folder / SYNTHESIZER)
        ids = list(self.markers)
        atomic_write(self.folder / "markers.npz",
                     lambda h: np.savez_compressed(h, **{f"m{k}": self.markers[i] for k, i in enumerate(ids)}))
        reviewed = list(self.accepted)
        if reviewed:
            atomic_write(self.folder / "accepted.npz",
                         lambda h: np.savez_compressed(h, **{f"a{k}": self.accepted[i] for k, i in enumerate(reviewed)}))
        state = {"config": self.config.to_dict(), "annotated": ids, "accepted": reviewed, "rounds": self.rounds,
                 "cost_records": self.cost_records, "refreshed": self.refreshed}
        atomic_write(self.folder / STATE, lambda h: h.write(json.dumps(state).encode()))

    # -- effort -----------------------------------------------------------------------------------
    def _effort(self, new: dict, before: dict) -> dict:
        tm = self.config.time_model
        parts = {i: tm.effort(new[i], before.get(i)) for i in new}
        return {"images": len(parts), "strokes": sum(p["strokes"] for p in parts.values()),
                "pixels": sum(p["pixels"] for p in parts.values()),
                "seconds": float(sum(p["seconds"] for p in parts.values())), "per_image": parts}

    def totals(self) -> dict:
        """Effort of every round so far, and the share of the pool's pixels marked."""
        pixels = sum(r["effort"]["pixels"] for r in self.rounds)
        pool_pixels = sum(int(np.prod(np.shape(self.images[i])[1:])) for i in self.pool)
        return {"strokes": sum(r["effort"]["strokes"] for r in self.rounds), "pixels": pixels,
                "seconds": float(sum(r["effort"]["seconds"] for r in self.rounds)),
                "images": len(self.markers), "marked_fraction": pixels / pool_pixels if pool_pixels else 0.0}

    # -- training ---------------------------------------------------------------------------------
    def _train(self, round_index: int, pseudo_ids: Sequence[str], progress: Progress, extra: Sequence = (),
               fresh: bool = False):
        from hitlseg.pseudo import Schedule, SelfTrainingConfig, default_strokes_config, learn_from_strokes

        ids = list(self.markers)
        images = [self.images[i] for i in ids]
        ndim = images[0].ndim - 1
        pool = [self.images[i] for i in pseudo_ids]
        if fresh or (round_index == 0 and self.model is None):
            config = default_strokes_config(ndim, seed=self.config.seed)
            st = SelfTrainingConfig(iterations=self.config.initial_self_training if pool else 0)
        else:
            config = default_strokes_config(ndim, epochs=self.config.epochs, seed=self.config.seed + round_index,
                                            person_weight=self.config.person_weight)
            st = SelfTrainingConfig(iterations=self.config.self_training if pool else 0,
                                    epochs=self.config.self_training_epochs,
                                    schedule=Schedule(beta0=0.75, gamma0=1.0))
        warm = not fresh and self.model is not None and st.iterations > 0  # straight to self-training
        result = learn_from_strokes(images, [self.markers[i] for i in ids], pool, model=None if fresh else self.model,
                                    n_classes=self.n_classes, config=config, self_training=st,
                                    preprocessing=self.preprocessing, names=ids, pool_names=list(pseudo_ids),
                                    seed=self.config.seed, strokes_stage=not warm, extra=extra,
                                    expand=False if fresh else None,
                                    accepted=[self.accepted.get(i) for i in ids], progress=progress)
        self.model = result.model
        return result

    def accepted_masks(self, context) -> dict[str, np.ndarray]:
        """Each annotated image's accepted segmentation: the scored prediction, the person's strokes over it."""
        from hitlseg.synthesis import accepted_mask

        masks = {}
        for i, markers in self.markers.items():
            if i in self.accepted:  # reviewed: the mask the person left
                masks[i] = self.accepted[i]
                continue
            try:
                labels = np.argmax(context.probability(i), 0)
            except InputError:  # an annotated image outside the scored pool
                labels = self.model.predict(self.images[i], postprocess="none").labels
            masks[i] = accepted_mask(labels, markers)
        return masks

    def _synthesize(self, context, round_index: int, progress: Progress) -> tuple[list, dict]:
        """This round's synthetic (image, mask) pairs and their record (Mahapatra et al., MICCAI 2018)."""
        from hitlseg.synthesis import synthesize_from_annotations

        masks = self.accepted_masks(context)
        steps = self.config.generator_steps if self.synthesizer is None else self.config.generator_refresh_steps
        samples, record, self.synthesizer = synthesize_from_annotations(
            self.model, [(self.images[i], masks[i]) for i in masks], self.config.synthetic,
            synthesizer=self.synthesizer, steps=steps, candidates=self.config.synthetic_candidates,
            dropout=self.config.dropout, seed=self.config.seed + round_index, progress=progress)
        return samples, record

    def _pseudo_pool(self, context, queried: Sequence[str], round_index: int) -> list[str]:
        free = [i for i in self.pool if i not in self.markers and i not in set(queried)]
        limit = self.config.pool_limit
        if isinstance(self.strategy, DASLStrategy) and context is not None:  # its most confident images, at its pace
            return self.strategy.pseudo_pool(context, exclude=queried)[:limit]
        if limit is None or len(free) <= limit:
            return free
        rng = np.random.default_rng([self.config.seed, round_index, 7])
        return [free[int(i)] for i in sorted(rng.choice(len(free), size=limit, replace=False))]

    # -- rounds -----------------------------------------------------------------------------------
    def start(self, first: Sequence[str], first_markers: Mapping[str, np.ndarray] | None = None,
              progress: Progress = None) -> dict:
        """Round 0: strokes on ``first`` (the annotator's first strokes unless given) and the first model."""
        if self.rounds:
            return self.rounds[0]
        first = [str(i) for i in first]
        unknown = [i for i in first if i not in self.images]
        if unknown:
            raise InputError(f"first: image {unknown[0]!r} is not in the loop's images")
        if not first:
            raise InputError("first: name at least one image to mark")
        started = time.perf_counter()
        new = {}
        for i in first:
            given = None if first_markers is None else first_markers.get(i)
            new[i] = np.asarray(given if given is not None else self.annotator.first(i)).astype(np.uint8)
            if new[i].shape != np.shape(self.images[i])[1:]:
                raise InputError(f"{i}: markers of shape {new[i].shape} do not match the image {np.shape(self.images[i])[1:]}")
        self.markers = dict(new)
        effort = self._effort(new, {})
        if self.model is None:
            result = self._train(0, self._pseudo_pool(None, (), 0), progress)
            train_seconds, history = result.seconds, len(result.history) - 1
        else:
            train_seconds, history = 0.0, None
        for i in first:  # cost records: the prediction's features after round 0, the seconds spent
            labels = self.model.predict(self.images[i]).labels
            self.cost_records.append((mask_features(labels).tolist(), effort["per_image"][i]["seconds"]))
        record = {"round": 0, "queried": first, "effort": {k: v for k, v in effort.items() if k != "per_image"},
                  "train_seconds": train_seconds, "self_training_iterations": history,
                  "seconds": time.perf_counter() - started}
        if self.evaluate is not None:
            record["evaluation"] = self.evaluate(self.model)
        self.rounds = [record]
        record["totals"] = self.totals()
        self._save()
        return record

    def _costs(self, context, free):
        records = self.cost_records
        model = CostModel()
        if len(records) >= CostModel.MIN_RECORDS:
            model.fit([f for f, _ in records], [s for _, s in records])
            feats = np.array([mask_features(np.argmax(context.probability(i), 0).astype(np.uint8)) for i in free])
            return dict(zip(free, model.predict(feats).tolist())), model.to_dict()
        mean = float(np.mean([s for _, s in records])) if records else self.config.time_model.per_image
        return {i: mean for i in free}, {"constant": mean}

    def step(self, progress: Progress = None) -> dict:
        """One correction round; returns its record."""
        if not self.rounds:
            raise InputError("loop: run start() (round 0) first")
        round_index = len(self.rounds)
        free = [i for i in self.pool if i not in self.markers]
        n = min(self.config.per_round, len(free))
        if n == 0:
            raise InputError("loop: every pool image is annotated; nothing left to query")
        started = time.perf_counter()
        want = needs(self.config.strategy)
        ensemble = _bootstrap_members(self.model, self.images, self.markers, self.config, round_index) \
            if "ensemble" in want else None
        scored = score_pool(self.model, self.images, self.pool,
                            mc_passes=self.config.mc_passes if "mc_dropout" in want else 0, dropout=self.config.dropout,
                            ensemble=ensemble, features="features" in want, seed=self.config.seed + round_index,
                            executor=self.executor, progress=progress)
        context = build_context(self.pool, self.annotated, scored, images=self.images, round_index=round_index)
        cost_info = None
        if "costs" in want:
            context.costs, cost_info = self._costs(context, free)
        query_started = time.perf_counter()
        queried = self.strategy.query(context, n)
        query_seconds = time.perf_counter() - query_started
        before = {i: self.markers[i] for i in queried if i in self.markers}
        new, accepted, passes = {}, {}, {}
        for i in queried:
            prediction = np.argmax(context.probability(i), 0).astype(np.uint8)
            current = self.markers.get(i, np.zeros(prediction.shape, np.uint8))
            if self.config.review_passes:
                from hitlseg.active.review import review

                new[i], accepted[i], passes[i] = review(
                    lambda shown, so_far, i=i: self.annotator(i, shown, so_far, round_index), self.images[i],
                    context.probability(i), current, self.config.review_passes)
                continue
            new[i] = np.asarray(self.annotator(i, prediction, current, round_index)).astype(np.uint8)
            if new[i].shape != prediction.shape:
                raise InputError(f"{i}: the annotator returned markers of shape {new[i].shape}, expected {prediction.shape}")
        effort = self._effort(new, before)
        self.accepted.update(accepted)
        for i in queried:
            self.cost_records.append((mask_features(np.argmax(context.probability(i), 0).astype(np.uint8)).tolist(),
                                      effort["per_image"][i]["seconds"]))
        self.markers.update(new)  # an image whose prediction needed no stroke was still looked at and accepted
        pseudo_ids = self._pseudo_pool(context, queried, round_index)
        synthetic, synthesis = self._synthesize(context, round_index, progress) if self.config.synthetic else ([], None)
        train_started = time.perf_counter()
        result = self._train(round_index, pseudo_ids, progress, extra=synthetic)
        record = {"round": round_index, "queried": queried,
                  "scores": {i: self.strategy.scores.get(i) for i in queried}, "criterion": self.strategy.criterion,
                  "effort": {k: v for k, v in effort.items() if k != "per_image"},
                  "scoring_seconds": scored["seconds"], "query_seconds": query_seconds,
                  "train_seconds": time.perf_counter() - train_started, "pseudo_pool": len(pseudo_ids),
                  "stopped": result.stopped, "seconds": time.perf_counter() - started}
        if passes:
            record["review_passes"] = passes
        if synthesis is not None:
            record["synthesis"] = synthesis
        if cost_info is not None:
            record["cost_model"] = cost_info
            record["predicted_seconds"] = {i: context.costs[i] for i in queried}
        if self.evaluate is not None:
            record["evaluation"] = self.evaluate(self.model)
        self.rounds.append(record)
        record["totals"] = self.totals()
        self._save()
        return record

    def refresh(self, progress: Progress = None) -> dict:
        """Retrain from scratch on every label so far: the round-0 recipe over all annotated images.

        Correction rounds warm-start the model for a quick turn-around (one self-training
        iteration each); after the last round a fresh sU-Net on the same labels (strokes, the
        reviewed images' accepted masks, ``initial_self_training`` iterations over
        ``pool_limit`` unannotated images, strokes expansion off) repairs rounds that drifted and
        costs a little where they did not: on wbc1's validation images (fill corrections, 3
        review passes, 10 rounds, 3 splits of 30 images) mean Dice warm -> fresh 0.908 -> 0.925
        with random picks, 0.927 -> 0.915 with entropy, 0.925 -> 0.916 with foreground-aware
        random (averaging the two models' probabilities: 0.927 over the last two,
        ``benchmarks/active_average.py``). The person's effort is unchanged; it costs about one
        round-0 training (5-9 min on one core for 300 wbc1 images).
        The warm model is kept in ``model_warm.pt``. Returns the record (also :attr:`refreshed`), ``before`` and
        ``evaluation`` holding ``evaluate`` of the warm and the new model; a second call
        without a new round returns the same record.
        """
        if not self.rounds:
            raise InputError("loop: run start() (round 0) first")
        after = len(self.rounds) - 1
        if self.refreshed is not None and self.refreshed["after_round"] == after:
            return self.refreshed
        started = time.perf_counter()
        record = {"after_round": after}
        if self.evaluate is not None:
            record["before"] = self.evaluate(self.model)
        if self.folder is not None:
            self.model.save(self.folder / WARM_MODEL)
        pseudo_ids = self._pseudo_pool(None, (), after + 1)
        result = self._train(after + 1, pseudo_ids, progress, fresh=True)
        record.update({"train_seconds": result.seconds, "pseudo_pool": len(pseudo_ids),
                       "self_training_iterations": len(result.history) - 1,
                       "seconds": time.perf_counter() - started})
        if self.evaluate is not None:
            record["evaluation"] = self.evaluate(self.model)
        self.refreshed = record
        self._save()
        return record

    def run(self, progress: Progress = None, log: Callable[[str], None] | None = None) -> list[dict]:
        """Every remaining round (resumes after the last saved one); returns all records."""
        if not self.rounds:
            raise InputError("loop: run start() (round 0) first")
        while len(self.rounds) <= self.config.rounds and any(i not in self.markers for i in self.pool):
            report(progress, len(self.rounds) - 1, self.config.rounds, f"round {len(self.rounds)}")
            record = self.step(progress=None)
            if log:
                log(f"round {record['round']}: queried {', '.join(record['queried'])}, "
                    f"{record['effort']['seconds']:.0f} s of effort, {record['seconds']:.0f} s")
        report(progress, self.config.rounds, self.config.rounds, "done")
        return self.rounds
