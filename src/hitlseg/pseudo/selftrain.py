"""Learning a segmentation network from strokes: partial labels, pool pseudo-labels, self-training.

The one learner every front end calls (the web app's Model view, ``hitlseg train --labels
markers``, the experiments and benchmarks):

1. a FLIM encoder is fitted on the marked images (unless one is given) and frozen; an sU-Net
   decoder is trained on the strokes only (marker ``c + 1`` -> class ``c``, unmarked pixels
   carry no label) with the partial loss and the regularisers of :class:`TrainConfig`;
2. self-training (HISE, Zhang et al., Sci China Inf Sci 2020): at iteration ``t`` the model
   predicts the marked images and the unlabelled pool; confident pixels (``max_j p_j > delta``)
   become labels, the rest is never trusted (:func:`tripartition`); pool images are ranked by
   local consistency ``tau_l`` at ``beta_t`` and the top ``gamma_t`` fraction is
   machine-annotated (:class:`Schedule`); the person's strokes always override machine labels;
   the network is trained further (warm start) on strokes + pseudo-labels. It stops after the
   scheduled iterations or when the pseudo-labels stop changing.

Ground truth never enters training: ``truth`` (optional, for studies) is only compared with the
pseudo-labels and the model after each iteration, for the record.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from hitlseg.errors import InputError
from hitlseg.progress import Progress, report
from hitlseg.pseudo.labels import (IGNORE, Schedule, agreement, check_ignore, choose_images, local_consistency,
                                   markers_to_target, merge_strokes, tripartition)


@dataclass
class SelfTrainingConfig:
    """Self-training settings.

    Attributes
    ----------
    iterations : int
        Largest number of pseudo-label iterations (0: strokes only). Five let the schedule reach
        ``gamma = 1`` (every pool image machine-annotated). On wbc1 validation images (seed-0
        split, 5 robot-marked images; never test) the model's mean Dice per iteration was 0.748,
        0.814, 0.828, 0.836, 0.845, 0.851, and went on rising to 0.863 after 8; but on the
        benchmark's three splits 8 iterations gave a lower test Dice than 5 (0.824 against 0.829):
        two of the three splits peak after 1-3 iterations and then drift. Five stays the default.
    epochs : int
        Training epochs per iteration (warm-started).
    schedule : Schedule
        ``delta`` and the progressive ``beta_t``, ``gamma_t``.
    min_change : float
        Stop when fewer than this share of the pool's pixels changed pseudo-label since the
        previous iteration.
    pseudo_marked : bool
        Also pseudo-label the unmarked pixels of the marked images (their strokes still win).
    flips : bool
        Confidence from the mean prediction over the image and its flips along each spatial
        axis (test-time augmentation), which is less over-confident than one pass: on wbc1
        validation images it raised pseudo-label accuracy from 0.91 to 0.93 and the model's Dice
        from 0.842 to 0.858 after three iterations.
    """

    iterations: int = 5
    epochs: int = 15
    schedule: Schedule = field(default_factory=Schedule)
    min_change: float = 0.002
    pseudo_marked: bool = True
    flips: bool = True

    def __post_init__(self):
        for name, minimum in (("iterations", 0), ("epochs", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise InputError(f"{name}: must be an integer >= {minimum}, got {value!r}")
        if isinstance(self.schedule, dict):
            self.schedule = Schedule(**self.schedule)
        if not 0 <= self.min_change < 1:
            raise InputError(f"min_change: must be in [0, 1), got {self.min_change!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def default_strokes_config(ndim: int = 2, **overrides):
    """The :class:`hitlseg.nets.TrainConfig` used to learn from strokes.

    50 epochs on the strokes, class weights off, normalized cut 0.1 and dense CRF 0.5. Chosen on
    wbc1's validation images (never test), 5 robot-marked images, mean Dice: partial CE 0.722,
    + normalized cut 0.746, + both 0.769 (balanced class weights lowered it to 0.687); after
    three self-training iterations 0.816 with the normalized cut alone, 0.858 with both. During
    self-training the person's strokes weigh 10x a machine label (``person_weight``; wbc1
    validation Dice after 5 iterations 0.851 at 1x, 0.855 at 10x; after 8, 0.863 and 0.867).
    For volumes (``ndim=3``) the regularisers' spatial bandwidth is 3 voxels instead of 5: the
    3D window has ``(2r + 1)^3`` offsets, and at 5 one training step of a 35x51x35 hippocampus
    volume spent 1.1 s in the affinity, at 3 0.2 s. ``overrides`` replace any field.
    """
    from hitlseg.nets import TrainConfig

    if ndim not in (2, 3):
        raise InputError(f"ndim: must be 2 or 3, got {ndim!r}")
    settings = {"epochs": 50, "ncut_weight": 0.1, "crf_weight": 0.5, "sigma_xy": 5.0 if ndim == 2 else 3.0,
                "person_weight": 10.0}
    settings.update(overrides)
    return TrainConfig(**settings)


@dataclass
class StrokesResult:
    """What :func:`learn_from_strokes` produced: the model and one record per iteration."""

    model: object
    history: list[dict]
    marked_fraction: float
    seconds: float
    stopped: str

    def to_dict(self) -> dict:
        return {"history": self.history, "marked_fraction": self.marked_fraction, "seconds": self.seconds,
                "stopped": self.stopped}


def _check_inputs(images, markers, names):
    if len(images) != len(markers):
        raise InputError(f"markers: got {len(markers)} marker arrays for {len(images)} images")
    if not images:
        raise InputError("images: no marked image to learn from")
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    images = [np.asarray(image, dtype=np.float32) for image in images]
    markers = [np.asarray(m) for m in markers]
    for name, image, mark in zip(names, images, markers):
        if mark.shape != image.shape[1:]:
            raise InputError(f"{name}: markers of shape {mark.shape} do not match the image {image.shape[1:]}")
        if not np.issubdtype(mark.dtype, np.integer) or (mark.size and (mark.min() < 0)):
            raise InputError(f"{name}: markers must be non-negative integer labels")
    classes = set()
    for mark in markers:
        classes.update(int(v) for v in np.unique(mark) if v > 0)
    if 1 not in classes or len(classes) < 2:
        found = ", ".join(str(c - 1) for c in sorted(classes)) or "none"
        raise InputError(f"markers: need strokes of the background (class 0) and at least one object class; "
                         f"found classes {found}")
    return images, markers, names


def pool_probabilities(model, image: np.ndarray, *, flips: bool = True, name: str = "image") -> np.ndarray:
    """Class probabilities of ``image``, averaged over its flips along each spatial axis when ``flips``."""
    probs = model.predict(image, name=name).probabilities
    if not flips:
        return probs
    for axis in range(1, image.ndim):
        flipped = np.ascontiguousarray(np.flip(image, axis))
        probs = probs + np.flip(model.predict(flipped, name=name).probabilities, axis)
    return probs / image.ndim


def _probabilities(model, images, names, flips, progress, message):
    out = []
    for index, image in enumerate(images):
        report(progress, index, len(images), message)
        out.append(pool_probabilities(model, image, flips=flips, name=names[index]))
    return out


def _model_metrics(model, pool, truth) -> dict:
    """Dice per class and salient-object metrics of the model on pool images with ground truth."""
    from hitlseg.metrics import dice_per_class, saliency_metrics

    labels = list(range(1, model.n_classes + 1))
    dice, saliency = [], []
    for image, mask in zip(pool, truth):
        if mask is None:
            continue
        probs = model.predict(image).probabilities
        dice.append(dice_per_class(np.argmax(probs, 0), mask, labels=labels))
        saliency.append(saliency_metrics(1.0 - probs[0], (np.asarray(mask) > 0).astype(np.float64)))
    if not dice:
        return {}
    per_class = {str(c): float(np.mean([d[c] for d in dice])) for c in labels}
    return {"dice": per_class, "mean_dice": float(np.mean(list(per_class.values()))),
            "saliency": {k: float(np.nanmean([s[k] for s in saliency])) for k in saliency[0]}, "images": len(dice)}


def _pseudo_metrics(pseudo: dict[int, np.ndarray], truth) -> dict:
    """Agreement of the chosen images' pseudo-labels with ground truth (HISE Fig. 1b)."""
    found = [agreement(pseudo[i], truth[i]) for i in pseudo if truth[i] is not None]
    if not found:
        return {}
    keys = {k for f in found for k in f.get("dice", {})}
    return {"accuracy": float(np.mean([f["accuracy"] for f in found])),
            "dice": {str(k): float(np.mean([f["dice"][k] for f in found if k in f["dice"]])) for k in sorted(keys)},
            "iou": {str(k): float(np.mean([f["iou"][k] for f in found if k in f["iou"]])) for k in sorted(keys)},
            "images": len(found)}


def _check_extra(extra, like: np.ndarray, n_classes: int) -> list:
    """``extra`` as a list of (float32 image, uint8 mask) pairs shaped like ``like``, or a clear error."""
    pairs = []
    for k, pair in enumerate(extra):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InputError(f"extra[{k}]: need an (image, mask) pair")
        image, mask = np.asarray(pair[0], dtype=np.float32), np.asarray(pair[1])
        if image.ndim != like.ndim or image.shape[0] != like.shape[0]:
            raise InputError(f"extra[{k}]: image of shape {image.shape}; the marked images are {like.shape[0]}-channel "
                             f"{like.ndim - 1}D")
        if mask.shape != image.shape[1:]:
            raise InputError(f"extra[{k}]: mask of shape {mask.shape} does not match its image {image.shape[1:]}")
        if mask.dtype.kind not in "iub":
            raise InputError(f"extra[{k}]: the mask must hold integer class indices, got {mask.dtype}")
        labels = mask[mask != IGNORE]
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) > n_classes):
            raise InputError(f"extra[{k}]: mask labels must be 0..{n_classes} (or {IGNORE}), got "
                             f"{int(labels.min())}..{int(labels.max())}")
        pairs.append((image, mask.astype(np.uint8)))
    return pairs


def _check_accepted(accepted, images, n_classes: int, names) -> list:
    """``accepted`` as one uint8 label array or None per marked image, or a clear error."""
    if accepted is None:
        return [None] * len(images)
    accepted = list(accepted)
    if len(accepted) != len(images):
        raise InputError(f"accepted: {len(accepted)} entries for {len(images)} marked images")
    checked = []
    for k, (label, image) in enumerate(zip(accepted, images)):
        if label is None:
            checked.append(None)
            continue
        label = np.asarray(label)
        if label.shape != image.shape[1:] or label.dtype.kind not in "iu":
            raise InputError(f"accepted[{names[k]}]: need integer labels of shape {image.shape[1:]}, got "
                             f"{label.dtype} {label.shape}")
        if label.size and (int(label.min()) < 0 or int(label.max()) > n_classes):
            raise InputError(f"accepted[{names[k]}]: labels must be 0..{n_classes}, got {int(label.min())}..{int(label.max())}")
        checked.append(label.astype(np.uint8))
    return checked


def _flim_rule(model, images, markers, n_classes: int) -> str:
    """The adaptive decoder rule the person's markers choose on the model's frozen FLIM encoder
    (:func:`hitlseg.flim.decoders.choose_rule`), for the ``agree`` post-processing."""
    import torch

    from hitlseg.flim.decoders import choose_rule

    encoder = model.net.encoder
    last = len(encoder.layers) - 1
    with torch.no_grad():
        features = [encoder.features(torch.as_tensor(image, device=model.device)[None], upto=last)[last][0]
                    for image, m in zip(images, markers) if m.any()]
    marked = [m for m in markers if m.any()]
    return choose_rule(features, encoder.layers[last].kernel_classes, marked, n_classes)[0]


def learn_from_strokes(images: Sequence[np.ndarray], markers: Sequence[np.ndarray], pool: Sequence[np.ndarray] = (), *,
                       encoder=None, model=None, n_classes: int | None = None, config=None,
                       self_training: SelfTrainingConfig | None = None, preprocessing: dict | None = None,
                       names: Sequence[str] | None = None, pool_names: Sequence[str] | None = None,
                       truth: Sequence[np.ndarray | None] | None = None,
                       evaluate: Callable[[object], dict] | None = None, seed: int = 0, device=None,
                       strokes_stage: bool = True, expand: bool | None = None, extra: Sequence = (),
                       accepted: Sequence[np.ndarray | None] | None = None,
                       progress: Progress = None) -> StrokesResult:
    """Train an sU-Net from strokes, then refine it by self-training on the unlabelled pool.

    Parameters
    ----------
    images : sequence of ndarray, float32, shape (C, *spatial)
        The marked images.
    markers : sequence of ndarray of uint8, shape (*spatial)
        Their strokes: 0 unmarked, ``c + 1`` for class ``c``.
    pool : sequence of ndarray
        Unlabelled images (no strokes) that self-training may pseudo-label; may be a lazy
        sequence (``len`` and indexing), read once per iteration.
    encoder : FLIMEncoder, optional
        A fitted FLIM encoder; by default one is fitted on ``images`` and ``markers``.
    model : SegModel, optional
        A model to continue training (warm start, e.g. after corrective strokes); its encoder
        and classes are kept.
    n_classes : int, optional
        Object classes; by default the largest marker class.
    config : TrainConfig, optional
        Training of every stage (epochs of the first stage, loss weights, crops, seed);
        :func:`default_strokes_config` by default.
    self_training : SelfTrainingConfig, optional
        Iterations, epochs per iteration and schedule; ``SelfTrainingConfig()`` by default
        (``iterations=0`` trains on the strokes only).
    preprocessing : dict, optional
        How the images were read, stored with the model.
    names, pool_names : sequences of str, optional
        Names for messages and the record.
    truth : sequence of masks or None, optional
        Ground truth of pool images, **only** for recording the pseudo-labels' accuracy and
        the model's metrics per iteration; never used for training.
    evaluate : callable, optional
        ``evaluate(model) -> dict`` after every stage (e.g. test Dice in a study), recorded.
    seed : int
    device : str, optional
    strokes_stage : bool
        Train on the strokes alone first. A warm-started ``model`` (a correction round) may
        skip it and go straight to self-training, whose labels keep what the model learned
        from the pool; training on the strokes alone first would partly unlearn it.
    expand : bool, optional
        After the strokes stage, add to each marked image's strokes the pixels where a graph
        cut from its strokes agrees with the model (:mod:`hitlseg.pseudo.expand`), and train a
        fresh sU-Net on the same encoder from them; they count as the person's in what follows.
        Default :data:`hitlseg.defaults.EXPAND_STROKES` for a fresh learner (no ``model``
        given), off for a correction round.
    extra : sequence of (ndarray, ndarray)
        Further fully labelled pairs, e.g. synthetic samples generated for altered masks
        (:mod:`hitlseg.synthesis`): images like ``images`` and masks of class indices
        ``0..n_classes`` (``IGNORE`` allowed), trained with the strokes in every stage.
    accepted : sequence of (ndarray or None), optional
        Per marked image, a label the person accepted after reviewing a prediction
        (:mod:`hitlseg.active.review`): classes ``0..n_classes`` on every pixel. Such an image
        trains on it in every stage (its strokes weighted as the person's, the rest as machine
        labels) instead of on its strokes and its pseudo-labels.
    progress : callable, optional

    Returns
    -------
    StrokesResult
        ``history[t]`` for stage ``t`` (0: strokes only) holds ``beta``, ``gamma``,
        ``pool_images`` (chosen), ``machine_labelled`` (share of pool pixels given a
        pseudo-label), ``changed`` (share of pool pixels whose pseudo-label changed),
        ``loss``, ``seconds``, and when given, ``pseudo_vs_truth``, ``model_vs_truth``, ``evaluation``.
        A fresh model's ``flim_decoder`` is the adaptive decoder rule the strokes choose, and its
        ``postprocess`` is :data:`hitlseg.defaults.STROKES_POSTPROCESS` (``agree`` for 2D images;
        the per-iteration ``evaluation`` and ``model_vs_truth`` see the raw labels).
    """
    from hitlseg.nets import SegModel, train

    started = time.perf_counter()
    images, markers, names = _check_inputs(list(images), list(markers), names)
    self_training = self_training or SelfTrainingConfig()
    config = config or default_strokes_config(images[0].ndim - 1, seed=seed, device=device)
    pool_names = list(pool_names) if pool_names is not None else [f"pool image {i}" for i in range(len(pool))]
    if len(pool_names) != len(pool):
        raise InputError(f"pool_names: {len(pool_names)} names for {len(pool)} pool images")
    if truth is not None and len(truth) != len(pool):
        raise InputError(f"truth: {len(truth)} masks for {len(pool)} pool images")
    if not strokes_stage and (model is None or self_training.iterations == 0):
        raise InputError("strokes_stage: may be skipped only when continuing a model with self-training iterations")
    largest = max(int(m.max()) for m in markers) - 1
    given_model = model
    if model is not None:
        n_classes = model.n_classes
    n_classes = int(n_classes if n_classes is not None else largest)
    check_ignore(n_classes)
    if largest > n_classes:
        raise InputError(f"markers: hold class {largest}, but the model has {n_classes} object classes")
    extra = _check_extra(extra, images[0], n_classes)
    accepted = _check_accepted(accepted, images, n_classes, names)
    targets = [markers_to_target(m) if m.any() else np.full(m.shape, IGNORE, np.uint8) for m in markers]
    marked_fraction = float(sum((m > 0).sum() for m in markers) / sum(m.size for m in markers))

    def stage(name):
        return lambda done, total, message="": report(progress, done, total, f"{name}: {message}".rstrip(": "))

    if model is None:
        if encoder is None:
            from hitlseg.flim.fit import fit_encoder

            encoder = fit_encoder(images, markers, seed=seed, device=device, names=names,
                                  progress=stage("learning FLIM filters"))
        model = SegModel.sunet(encoder, n_classes, preprocessing=preprocessing, seed=seed)
    def strokes_and_extra(targets):
        """Training pairs of the marked images with a stroke, then ``extra``, and their names."""
        kept = [k for k, target in enumerate(targets) if (target != IGNORE).any() or accepted[k] is not None]
        pairs = [_accepted_pair(k) if accepted[k] is not None else (images[k], targets[k]) for k in kept] + extra
        return pairs, {"train": [names[k] for k in kept] + [f"extra pair {k}" for k in range(len(extra))]}

    def _accepted_pair(k):
        return images[k], accepted[k], person_markers[k] > 0

    person_markers = markers
    stroke_pairs, train_names = strokes_and_extra(targets)
    loss = None
    if expand is None:
        from hitlseg.defaults import EXPAND_STROKES

        expand = given_model is None and strokes_stage and EXPAND_STROKES.get(images[0].ndim - 1, False)
    if expand and not strokes_stage:
        raise InputError("expand: needs the strokes stage (the model trained on the strokes is its second view)")
    if strokes_stage:
        result = train(model, stroke_pairs, [], config, progress=stage("training on strokes"), names=train_names)
        loss = result.history[-1]["loss"]
    expanded_fraction = None
    if expand:
        from hitlseg.pseudo.expand import expand_all

        report(progress, 0, 1, "expanding the strokes by graph cut")
        markers = expand_all(images, markers, lambda image: model.predict(image, postprocess="none").labels, names)
        targets = [markers_to_target(m) for m in markers]
        stroke_pairs, train_names = strokes_and_extra(targets)
        expanded_fraction = float(sum((m > 0).sum() for m in markers) / sum(m.size for m in markers))
        model = SegModel.sunet(model.net.encoder, n_classes, preprocessing=preprocessing, seed=seed)
        result = train(model, stroke_pairs, [], config, progress=stage("training on the expanded strokes"),
                       names=train_names)
        loss = result.history[-1]["loss"]
    record = {"iteration": 0, "beta": None, "gamma": None, "delta": None, "pool_images": 0, "machine_labelled": 0.0,
              "changed": None, "loss": loss, "seconds": round(time.perf_counter() - started, 3)}
    if expanded_fraction is not None:
        record["expanded_fraction"] = expanded_fraction
    history = [record]
    if evaluate is not None:
        record["evaluation"] = evaluate(model)
    if truth is not None:
        record["model_vs_truth"] = _model_metrics(model, pool, truth)

    schedule = self_training.schedule
    previous: list[np.ndarray] | None = None
    stopped = "strokes only" if self_training.iterations == 0 else "schedule"
    pool_pixels = sum(int(np.prod(np.shape(pool[i])[1:])) for i in range(len(pool))) if len(pool) else 0
    for t in range(self_training.iterations):
        beta, gamma = schedule.at(t)
        label = f"self-training {t + 1}/{self_training.iterations}"
        pseudo_all, scores = [], {}
        for index in range(len(pool)):
            report(progress, index, len(pool), f"{label}: pseudo-labelling the pool")
            probs = pool_probabilities(model, pool[index], flips=self_training.flips, name=pool_names[index])
            pseudo_all.append(tripartition(probs, schedule.delta))
            scores[index] = local_consistency(probs, beta)
        changed = None
        if previous is not None and pool_pixels:
            changed = float(sum(int((a != b).sum()) for a, b in zip(pseudo_all, previous)) / pool_pixels)
        previous = pseudo_all
        if changed is not None and changed < self_training.min_change:
            stopped = f"pseudo-labels changed on {changed:.4%} of pool pixels (< {self_training.min_change:.2%})"
            history[-1]["next_change"] = changed
            break
        chosen = choose_images(scores, gamma) if scores else []
        pairs = []
        if self_training.pseudo_marked:
            probs_marked = _probabilities(model, images, names, self_training.flips, stage(label),
                                          "pseudo-labelling the marked images")
            pairs += [_accepted_pair(k) if accepted[k] is not None
                      else (image, merge_strokes(tripartition(p, schedule.delta), m), m > 0)
                      for k, (image, p, m) in enumerate(zip(images, probs_marked, markers))] + extra
        else:
            pairs += stroke_pairs
        chosen_pseudo = {i: pseudo_all[i] for i in chosen if (pseudo_all[i] != IGNORE).any()}
        pairs += [(pool[i], chosen_pseudo[i]) for i in chosen_pseudo]
        round_config = type(config).from_dict({**config.to_dict(), "epochs": self_training.epochs, "seed": config.seed + t + 1})
        result = train(model, pairs, [], round_config, progress=stage(f"{label}: training"), names=None)
        labelled = sum(int((chosen_pseudo[i] != IGNORE).sum()) for i in chosen_pseudo)
        record = {"iteration": t + 1, "beta": beta, "gamma": gamma, "delta": schedule.delta,
                  "pool_images": len(chosen_pseudo), "chosen": [pool_names[i] for i in chosen_pseudo],
                  "machine_labelled": labelled / pool_pixels if pool_pixels else 0.0, "changed": changed,
                  "loss": result.history[-1]["loss"], "seconds": round(time.perf_counter() - started, 3)}
        if truth is not None:
            record["pseudo_vs_truth"] = _pseudo_metrics(chosen_pseudo, truth)
            record["model_vs_truth"] = _model_metrics(model, pool, truth)
        if evaluate is not None:
            record["evaluation"] = evaluate(model)
        history.append(record)
    if model.flim_decoder is None and model.kind == "sunet":
        model.flim_decoder = _flim_rule(model, images, person_markers, n_classes)
    if given_model is None and model.kind == "sunet":  # a continued model keeps the rule it had
        from hitlseg.defaults import STROKES_POSTPROCESS

        model.postprocess = STROKES_POSTPROCESS.get(images[0].ndim - 1, "none")
    report(progress, 1, 1, "done")
    model.info = {**dict(model.info or {}), "labels": "strokes", "marked_fraction": marked_fraction,
                  "train": {"config": config.to_dict(), "self_training": self_training.to_dict()},
                  "self_training": [{k: v for k, v in h.items() if k != "chosen"} for h in history], "stopped": stopped}
    return StrokesResult(model, history, marked_fraction, time.perf_counter() - started, stopped)
