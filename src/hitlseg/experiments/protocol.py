"""Comparing image-selection methods over data splits (the protocol of the GT-free selection paper).

For each split (60/10/30, seeded) and each method, from the same random first image: the robot
marks each selected image, the method picks the next one until the image budget is spent, a
multi-layer FLIM encoder is learned from the marked images, and the segmentation is scored with
(a) the adaptive decoder (no ground truth at all) and (b) an sU-Net decoder trained by backprop
on the training split. An all-backprop U-Net on the training split is the baseline.

What each model learned from (the report's column "masks used", :data:`MASKS_USED`): the sU-Net
decoder is trained on **every training mask**; only its frozen encoder comes from the marked
images, so its Dice measures the selected images' filters under full supervision of the decoder,
not what a person marking those images alone would get. The adaptive decoder and the ``strokes``
model (``strokes=True``) use no mask: only the robot's strokes on the selected images. The
baseline uses every training mask.

Refinement (``refine``, :mod:`hitlseg.refine`): each model of a method that gives class
probabilities (the sU-Net decoder and the ``strokes`` model) is also scored with its probabilities
refined by each named refiner, default settings, as model ``"MODEL+REFINER"`` (e.g.
``"sunet+crf"``): the same prediction of the same validation and test images, so the columns are
a paired comparison. The adaptive decoder gives saliency, not class probabilities, and the baseline
is not a method's model: both stay unrefined.

Every finished part (one split x one method, a baseline, the first-image analysis) is written to
``OUT/parts/`` as JSON and is not recomputed when the run is started again. Progress reaches the
callback at the level of selection rounds and training epochs, with an estimate of the time left
(:class:`hitlseg.progress.PartsProgress`).
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from hitlseg.dataset import Dataset, make_split, task_classes
from hitlseg.defaults import DEFAULT_DECODER, DEFAULT_POLICY
from hitlseg.errors import InputError
from hitlseg.experiments.scoring import average, is_brats, score
from hitlseg.progress import Progress, PartsProgress, nested, report
from hitlseg.project.files import write_json

METHODS = ("gtfree", "random", "labeled", "kcenter")

#: What each model of the report learned from, by model name.
MASKS_USED = {
    "adaptive": "none (strokes)",
    "strokes": "none (strokes)",
    "sunet": "all training masks",
    "unet": "all training masks",
}


def refined_names(refine) -> tuple[str, ...]:
    """Checked refiner names for experiments: those of :data:`hitlseg.refine.REFINERS` that need no
    trained model, without repeats, in the given order (a string: comma-separated names).

    Raises
    ------
    InputError
        An unknown name (naming the valid ones), or ``shape``/``corrective`` (they need a trained
        model, which an experiment does not have).
    """
    if isinstance(refine, str):
        refine = refine.split(",")
    refine = tuple(dict.fromkeys(str(r).strip() for r in refine if str(r).strip()))
    if not refine:
        return refine
    from hitlseg.refine import REFINERS, TRAINED_REFINERS

    usable = ", ".join(r for r in REFINERS if r not in TRAINED_REFINERS)
    trained = [r for r in refine if r in TRAINED_REFINERS]
    if trained:
        raise InputError(f"refine: {', '.join(trained)} need{'s' if len(trained) == 1 else ''} a trained model "
                         f"('hitlseg refiner') and {'is' if len(trained) == 1 else 'are'} not available in experiments "
                         f"(use {usable})")
    unknown = [r for r in refine if r not in REFINERS]
    if unknown:
        raise InputError(f"refine: unknown refiner {', '.join(unknown)} (use {usable})")
    return refine


@dataclass
class ProtocolConfig:
    """Settings of a selection experiment.

    Attributes
    ----------
    splits : int
        Data splits (each ``make_split(ids, fractions, seed=seed + s)``).
    images : int
        Images each method selects (the first one included).
    methods : tuple of str
        Selectors from :data:`hitlseg.selection.SELECTORS`.
    policy : str
        Policy of ``gtfree`` (``most_distant``, ``closest`` or ``alternate``).
    decoder : str
        Adaptive decoder rule.
    stride, fill : int, str
        Descriptor of the selection sessions (:class:`hitlseg.selection.SelectionSession`):
        activations every ``stride`` pixels, profiles brought to the pool's superpixel count by
        ``fill``.
    sunet, baseline : bool
        Train the sU-Net decoder per method (on every training mask: only its frozen encoder
        comes from the marked images), and the all-backprop U-Net per split.
    strokes : bool
        Also train, per method, the model a person without ground truth gets: the strokes
        learner (:func:`hitlseg.pseudo.learn_from_strokes`) on the robot's strokes of the
        selected images, self-training on the other training images (model ``strokes``).
    self_training : int
        Self-training iterations of the ``strokes`` model.
    epochs : int
        Training epochs of the sU-Net decoder and of the baseline.
    eval_limit : int or None
        Score at most this many validation and test images (None: all).
    refine : tuple of str
        Refiners (``graphcut``, ``crf``, ``levelset``; :func:`refined_names`) applied, with default
        settings, to the probabilities of the sU-Net decoder and of the ``strokes`` model, scored
        as extra models ``"sunet+crf"``... on the same images (the adaptive decoder gives no
        probabilities and is not refined). Empty: none.
    seed : int
    fractions : tuple of float
        Train, validation and test fractions.
    quality_model : str, optional
        A quality model file (``hitlseg quality train``): every trained network's test predictions
        are also scored by it, without ground truth, beside their true Dice (``test.quality``).
    """

    splits: int = 3
    images: int = 5
    methods: tuple[str, ...] = METHODS
    policy: str = DEFAULT_POLICY
    decoder: str = DEFAULT_DECODER
    stride: int = 2
    fill: str = "zero"
    sunet: bool = True
    baseline: bool = True
    strokes: bool = False
    self_training: int = 3
    epochs: int = 10
    eval_limit: int | None = None
    refine: tuple[str, ...] = ()
    seed: int = 0
    fractions: tuple[float, float, float] = (0.6, 0.1, 0.3)
    quality_model: str | None = None

    def __post_init__(self):
        from hitlseg.selection import SELECTORS

        self.methods = tuple(self.methods)
        unknown = [m for m in self.methods if m not in SELECTORS]
        if unknown:
            raise InputError(f"methods: unknown {', '.join(unknown)} (use {', '.join(SELECTORS)})")
        if not self.methods:
            raise InputError("methods: name at least one selection method")
        from hitlseg.selection.descriptors import FILLS

        if self.fill not in FILLS:
            raise InputError(f"fill: unknown rule {self.fill!r} (use one of {', '.join(FILLS)})")
        for name in ("splits", "images", "epochs", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name}: must be a positive integer, got {value!r}")
        self.fractions = tuple(float(f) for f in self.fractions)
        self.refine = refined_names(self.refine)
        if self.quality_model is not None:
            self.quality_model = str(self.quality_model)
            if not Path(self.quality_model).is_file():
                raise InputError(f"quality_model: {self.quality_model} is not a file")
        if self.refine and not (self.sunet or self.strokes):
            raise InputError("refine: refines the probabilities of the sU-Net decoders or of the strokes models; "
                             "with neither trained there is nothing to refine")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["methods"], data["fractions"] = list(self.methods), list(self.fractions)
        if self.refine:
            data["refine"] = list(self.refine)
        else:  # left out, so that folders of runs from before ``refine`` still resume
            del data["refine"]
        if self.quality_model is None:  # likewise
            del data["quality_model"]
        return data


@dataclass
class SplitData:
    """Arrays of one split, loaded once and shared by every method."""

    index: int
    train: list[str]
    val: list[str]
    test: list[str]
    images: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    first: str
    classes: list[int]
    brats: bool
    superpixels: object = field(default=None)

    def pairs(self, ids) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(self.images[i], self.masks[i]) for i in ids]


class PartStore:
    """Finished parts of a run as JSON files under ``OUT/parts``, written atomically."""

    def __init__(self, out: Path):
        self.folder = Path(out) / "parts"
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def get(self, name: str) -> dict | None:
        path = self.path(name)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError:
            return None  # a damaged part is recomputed

    def put(self, name: str, data: dict) -> dict:
        write_json(self.path(name), data, indent=None)
        return data


def run_part(store: PartStore, tracker: PartsProgress, name: str, compute: Callable[[Progress], dict],
             started: float) -> dict:
    """Part ``name`` from ``store``, else ``compute(progress)`` reporting to ``tracker``, then stored.

    Either way one line goes to the tracker's log: ``"NAME: done (S s elapsed, about T left)"``,
    or ``"NAME: done in an earlier run"``.
    """
    part = store.get(name)
    if part is not None:
        tracker.skip()
        tracker.log(f"{name}: done in an earlier run")
        return part
    with tracker.part(name) as stage:
        part = store.put(name, compute(stage))
    tracker.log(f"{name}: done ({time.perf_counter() - started:.0f} s elapsed, {tracker.time_left()})")
    return part


def _load_split(dataset: Dataset, index: int, config: ProtocolConfig, cache: dict, superpixels) -> SplitData:
    """Arrays of split ``index``; ``cache`` (id -> (image, mask)) and ``superpixels`` are shared by all splits."""
    ids = dataset.with_masks()
    if len(ids) < 3:
        raise InputError(f"{dataset.root}: the protocol needs at least 3 images with masks, found {len(ids)}")
    split = make_split(ids, config.fractions, seed=config.seed + index)
    if len(split.train) < config.images:
        raise InputError(f"images: the training split has {len(split.train)} images, fewer than the budget {config.images}")
    for sample_id in split.train + split.val + split.test:
        if sample_id not in cache:
            loaded = dataset.load(sample_id)
            cache[sample_id] = (loaded.image, loaded.mask.astype(np.int64))
    images = {i: cache[i][0] for i in ids}
    masks = {i: cache[i][1] for i in ids}
    classes = list(range(1, task_classes({i: np.unique(masks[i]) for i in ids}) + 1))
    first = str(np.random.default_rng([config.seed, index]).choice(split.train))
    limit = config.eval_limit
    return SplitData(index, split.train, split.val[:limit] if limit else split.val, split.test[:limit] if limit else split.test,
                     images, masks, first, classes, is_brats(classes), superpixels)


def _flim_scores(data: SplitData, marked: list[str], markers: dict, decoder: str, ids: list[str], seed: int):
    from hitlseg.flim import FLIMModel

    model = FLIMModel.fit([data.images[i] for i in marked], [markers[i] for i in marked], seed=seed, decoder=decoder,
                          names=marked)
    scores = [score(model.predict(data.images[i]).mask, data.masks[i], data.classes, data.brats) for i in ids]
    return model, scores


@functools.lru_cache(maxsize=4)
def _quality_model(path: str):
    from hitlseg.quality import QualityModel

    return QualityModel.load(path)


def quality_summary(predicted: list[float], true: list[float]) -> dict:
    """Mean predicted and true Dice of the test predictions, and their Pearson r over images (None below 3)."""
    p, t = np.asarray(predicted, dtype=float), np.asarray(true, dtype=float)
    r = float(np.corrcoef(p, t)[0, 1]) if len(p) >= 3 and p.std() > 0 and t.std() > 0 else None
    return {"predicted": float(p.mean()), "true": float(t.mean()), "pearson": r, "n": int(len(p))}


def _evaluate(model, data: SplitData, refine: tuple[str, ...] = (), quality: str | None = None) -> tuple[dict, dict]:
    """Validation and test scores of ``model``, and of its probabilities refined by each of ``refine``.

    Returns ``({"val": .., "test": ..}, {refiner: {"val": .., "test": .., "refine_seconds": ..}})``;
    each image is predicted once, and its refined labels come from that same prediction's
    probabilities (:func:`hitlseg.refine.refine`, default settings). With a ``quality`` model
    file, ``test`` also holds :func:`quality_summary` of the plain test predictions.
    """
    from hitlseg.refine import refine as refine_labels

    plain = {}
    refined = {name: {"refine_seconds": 0.0} for name in refine}
    for subset, ids in (("val", data.val), ("test", data.test)):
        scores = {name: [] for name in (None, *refine)}
        predicted = []
        for i in ids:
            prediction = model.predict(data.images[i])
            scores[None].append(score(prediction.labels, data.masks[i], data.classes, data.brats))
            if quality is not None and subset == "test":
                predicted.append(_quality_model(quality).score(data.images[i], prediction.labels, i)["dice"])
            for name in refine:
                started = time.perf_counter()
                labels = refine_labels(data.images[i], prediction.probabilities, name)
                refined[name]["refine_seconds"] += time.perf_counter() - started
                scores[name].append(score(labels, data.masks[i], data.classes, data.brats))
        plain[subset] = average(scores[None])
        if predicted:
            plain[subset]["quality"] = quality_summary(predicted, [c["mean"] for c in scores[None]])
        for name in refine:
            refined[name][subset] = average(scores[name])
    return plain, refined


def _add_model(result: dict, name: str, scored: tuple[dict, dict]) -> None:
    """Put ``scored`` (a part of a model and its refined scores) in ``result`` as ``name`` and ``name+REFINER``."""
    result[name], refined = scored
    result.update({f"{name}+{refiner}": scores for refiner, scores in refined.items()})


def _train_net(model, data: SplitData, config: ProtocolConfig, progress: Progress = None,
               refine: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """Train ``model`` on the training split; its scores and refined scores (:func:`_evaluate`)."""
    from hitlseg.nets import TrainConfig, train

    result = train(model, data.pairs(data.train), data.pairs(data.val), TrainConfig(epochs=config.epochs, seed=config.seed),
                   progress=progress)
    scores, refined = _evaluate(model, data, refine, config.quality_model)
    return {**scores, "train_seconds": result.seconds, "best_epoch": result.best_epoch}, refined


def _strokes_net(encoder, marked: list[str], markers: dict, data: SplitData, config: ProtocolConfig,
                 progress: Progress = None) -> tuple[dict, dict]:
    """The strokes learner on the selected images' robot strokes, pool = the other training images;
    its scores and refined scores (:func:`_evaluate`)."""
    from hitlseg.pseudo import SelfTrainingConfig, learn_from_strokes

    pool = [i for i in data.train if i not in set(marked)]
    result = learn_from_strokes([data.images[i] for i in marked], [markers[i] for i in marked],
                                [data.images[i] for i in pool] if config.self_training else [], encoder=encoder,
                                n_classes=max(data.classes), self_training=SelfTrainingConfig(iterations=config.self_training),
                                names=marked, pool_names=pool if config.self_training else None, seed=config.seed,
                                progress=progress)
    scores, refined = _evaluate(result.model, data, config.refine, config.quality_model)
    return {**scores, "train_seconds": result.seconds, "iterations": len(result.history) - 1,
            "stopped": result.stopped}, refined


def round_record(step) -> dict:
    """The selection log's entry for one round (a :class:`~hitlseg.selection.RoundResult`).

    Keys: ``image`` (marked in this round), ``n_maps`` (descriptor maps), ``coverage_radius`` (raw,
    in this round's descriptor units, which grow with the descriptor: not comparable across
    rounds), ``diameter`` (the pool's, same units), ``normalized_radius`` (``coverage_radius /
    diameter`` in [0, 1], comparable across rounds and descriptor lengths, see
    :mod:`hitlseg.selection.stopping`), ``relative_change`` (of the normalised radius since the
    previous round, positive when it fell; None in the first round), ``suggestion`` (``"stop"`` or
    ``"continue"``), ``reason`` (why, in words) and ``seconds`` (the round's time).
    """
    stopping = step.stopping
    return {"image": step.image_id, "n_maps": step.n_maps, "coverage_radius": stopping.radius,
            "diameter": stopping.diameter, "normalized_radius": stopping.normalized_radius,
            "relative_change": stopping.relative_change, "suggestion": stopping.suggestion,
            "reason": stopping.reason, "seconds": step.timings["total"]}


def run_method(data: SplitData, method: str, config: ProtocolConfig, robot, progress: Progress = None,
               executor=None, store=None) -> dict:
    """Selection with ``method`` up to the budget, then the scores of its FLIM encoder.

    With a distributed ``executor`` the selection session streams its descriptors on the Dask
    workers (zarr stores under ``store``; :class:`hitlseg.selection.SelectionSession`).

    ``rounds`` in the result is the selection log, one :func:`round_record` per marked image;
    with ``config.refine``, ``"sunet+REFINER"`` and ``"strokes+REFINER"`` hold the refined scores.
    ``progress`` receives each selection round, then each training step of the sU-Net decoder
    and of the strokes learner, as shares of the whole part (equal shares per stage).
    """
    from hitlseg.nets import SegModel
    from hitlseg.selection import SelectionSession, make_selector

    options = {"policy": config.policy} if method == "gtfree" else {}
    selector = make_selector(method, seed=config.seed + data.index, **options)
    pool = {i: data.images[i] for i in data.train}
    session = SelectionSession(pool, superpixel_cache=data.superpixels, seed=config.seed, projection="pca", k=5,
                               stride=config.stride, fill=config.fill, executor=executor, store=store)
    stages = ["selection"] + ["sunet"] * config.sunet + ["strokes"] * config.strokes
    share = lambda name, label: nested(progress, stages.index(name) / len(stages), (stages.index(name) + 1) / len(stages),
                                       label)
    selecting = share("selection", "selection")
    markers: dict[str, np.ndarray] = {}
    curve, rounds = [], []
    current = data.first
    started = time.perf_counter()
    while True:
        markers[current] = robot.mark(data.masks[current], key=current)
        step = session.step(current, markers[current])
        model, val_scores = _flim_scores(data, session.selected, markers, config.decoder, data.val, config.seed)
        curve.append(average(val_scores)["mean"])
        rounds.append(round_record(step))
        report(selecting, len(session.selected), config.images,
               f"round {len(session.selected)}/{config.images} marked {current}, validation Dice {curve[-1]:.3f}")
        if len(session.selected) >= config.images:
            break
        context = session.context(masks={i: data.masks[i] for i in data.train} if method == "labeled" else None)
        current = selector.query(context, 1)[0]
    selection_seconds = time.perf_counter() - started
    # the last round's encoder and validation scores are the final ones (all marked images)
    test_scores = [score(model.predict(data.images[i]).mask, data.masks[i], data.classes, data.brats) for i in data.test]
    result = {
        "method": method,
        "split": data.index,
        "selected": list(session.selected),
        "marked_pixels": int(sum(int((m > 0).sum()) for m in markers.values())),
        "rounds": rounds,
        "curve_val_dice": curve,
        "selection_seconds": selection_seconds,
        "adaptive": {"val": average(val_scores), "test": average(test_scores)},
    }
    if config.sunet:
        net = SegModel.sunet(model.encoder, max(data.classes), preprocessing=model.preprocessing, seed=config.seed)
        _add_model(result, "sunet", _train_net(net, data, config, share("sunet", "sU-Net decoder (all training masks)"),
                                               config.refine))
    if config.strokes:
        _add_model(result, "strokes", _strokes_net(model.encoder, list(session.selected), markers, data, config,
                                                   share("strokes", "strokes learner")))
    return result


def run_baseline(data: SplitData, config: ProtocolConfig, progress: Progress = None) -> dict:
    """The all-backprop U-Net trained on the whole training split (``progress``: every training step)."""
    from hitlseg.nets import SegModel

    image = data.images[data.train[0]]
    net = SegModel.unet(image.shape[0], max(data.classes), image.ndim - 1, seed=config.seed)
    return {"split": data.index, **_train_net(net, data, config, nested(progress, label="U-Net"))[0]}


def first_image_analysis(data: SplitData, config: ProtocolConfig, robot, executor=None, store=None) -> dict:
    """Per training image: descriptor distance to the first marked image, 2D layout, and Dice
    under the filters learned from the first image alone (Figures 7 and 9); ``executor`` and
    ``store`` as in :func:`run_method`."""
    from hitlseg.selection import SelectionSession, project

    pool = {i: data.images[i] for i in data.train}
    session = SelectionSession(pool, superpixel_cache=data.superpixels, seed=config.seed, projection="pca",
                               stride=config.stride, fill=config.fill, executor=executor, store=store)
    markers = {data.first: robot.mark(data.masks[data.first], key=data.first)}
    session.step(data.first, markers[data.first])
    descriptors = session.descriptors
    row = session.ids.index(data.first)
    distance = np.linalg.norm(descriptors - descriptors[row], axis=1)
    layout = project(descriptors, "tsne", seed=config.seed)
    _, scores = _flim_scores(data, [data.first], markers, config.decoder, session.ids, config.seed)
    return {
        "split": data.index,
        "first": data.first,
        "ids": list(session.ids),
        "distance": distance.tolist(),
        "coords": np.asarray(layout.coords).tolist(),
        "dice": [s["mean"] for s in scores],
    }


def _check_resumable(out: Path, config, mutable=("splits",)) -> None:
    """Record the settings in ``OUT/config.json``; refuse to mix parts of runs with other settings.

    Only the settings named in ``mutable`` may change between runs (more splits extend a
    finished run).
    """
    path = out / "config.json"
    settings = config.to_dict()
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except ValueError:
            previous = None
        if previous is not None:
            try:  # settings added since the folder was written take their defaults
                defaults = type(config)().to_dict()
            except (TypeError, InputError):  # a config without defaults compares as stored
                defaults = {}
            previous = {**{k: v for k, v in defaults.items() if k not in previous}, **previous}
            changed = sorted(k for k in set(settings) | set(previous) if k not in mutable and settings.get(k) != previous.get(k))
            if changed:
                raise InputError(f"{out}: holds a run with other settings ({', '.join(changed)} differ); "
                                 "use another output folder")
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, settings)


def finish(out: Path, results: dict, started: float, progress: Progress, total: int) -> dict:
    """Report completion, stamp this run's wall time and write ``OUT/results.json`` atomically."""
    report(progress, total, total, "done")
    results["wall_seconds_this_run"] = time.perf_counter() - started
    write_json(out / "results.json", results)
    return results


def _timed(compute: Callable[[], dict]) -> dict:
    started = time.perf_counter()
    part = compute()
    part["part_seconds"] = time.perf_counter() - started
    return part


def compute_seconds(results: dict) -> float:
    """Seconds spent computing every part of ``results``, over all (resumed) runs."""
    total = 0.0
    for split in results["splits"]:
        parts = [split.get("first_image"), split.get("baseline"), *split["methods"].values()]
        total += sum(p.get("part_seconds", 0.0) for p in parts if p)
    return total


def run_protocol(dataset: Dataset, out: str | Path, config: ProtocolConfig | None = None, *, progress: Progress = None,
                 log: Callable[[str], None] | None = None, log_every: float = 60.0, executor=None) -> dict:
    """Run (or resume) the protocol and return every number, also written to ``OUT/results.json``.

    Parameters
    ----------
    dataset : Dataset
        Images with masks (the robot draws markers from them).
    out : path
        Output folder: ``parts/`` (resumable pieces) and ``results.json``.
    config : ProtocolConfig
    progress : callable, optional
        ``progress(parts done, parts, message)`` at every selection round and training step of
        every part; the message names the part, the stage (e.g. ``"split0-gtfree: sU-Net decoder
        (all training masks): epoch 3/10 loss 0.3120 · part 3/12 · about 14 min left"``) and the
        time left estimated from the parts done so far (:class:`hitlseg.progress.PartsProgress`).
    log : callable, optional
        Receives one line per finished part (with the time left), and the progress message at
        most every ``log_every`` seconds.
    log_every : float
        Seconds between two progress lines sent to ``log``.
    executor : hitlseg.parallel.Executor, optional
        A distributed executor runs the selection sessions' superpixels and descriptors on Dask
        workers (stores in ``OUT/pool/splitN``, reused by every method of the split); the
        figures equal the in-process run's up to float32 rounding of the descriptors.
    """
    from hitlseg.robot import Robot

    config = config or ProtocolConfig()
    out = Path(out)
    _check_resumable(out, config)
    store = PartStore(out)
    robot = Robot(seed=config.seed)
    per_split = len(config.methods) + 1 + int(config.baseline)
    total = config.splits * per_split
    tracker = PartsProgress(progress, total, log=log, log_every=log_every)
    from hitlseg.selection import SuperpixelCache

    cache: dict = {}
    superpixels = SuperpixelCache()
    started = time.perf_counter()
    results = {"config": config.to_dict(), "dataset": str(dataset.root), "splits": []}
    for index in range(config.splits):
        data = _load_split(dataset, index, config, cache, superpixels)
        split_result = {"index": index, "first": data.first, "classes": data.classes, "brats": data.brats,
                        "sizes": {"train": len(data.train), "val": len(data.val), "test": len(data.test)}, "methods": {}}
        pool = {"executor": executor, "store": out / "pool" / f"split{index}"} if executor is not None else {}
        jobs = [(f"split{index}-first", lambda stage: first_image_analysis(data, config, robot, **pool), "figures")]
        jobs += [(f"split{index}-{m}", (lambda stage, m=m: run_method(data, m, config, robot, stage, **pool)), m)
                 for m in config.methods]
        if config.baseline:
            jobs.append((f"split{index}-baseline", lambda stage: run_baseline(data, config, stage), "baseline"))
        for name, compute, key in jobs:
            part = run_part(store, tracker, name, lambda stage, compute=compute: _timed(lambda: compute(stage)), started)
            if key == "figures":
                split_result["first_image"] = part
            elif key == "baseline":
                split_result["baseline"] = part
            else:
                split_result["methods"][key] = part
        results["splits"].append(split_result)
    return finish(out, results, started, progress, total)
