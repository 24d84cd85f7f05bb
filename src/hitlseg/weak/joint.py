"""Joint classification and segmentation from image-level labels and an oracle (Belharbi et al., WACV 2021).

Belharbi, Ben Ayed, McCaffrey, Granger, "Deep Active Learning for Joint Classification &
Segmentation with Weak Annotator", WACV 2021. One network: a shared encoder, a pooled linear
classification head (its class activation maps, :mod:`hitlseg.weak.cam`) and the U-Net decoder
of :mod:`hitlseg.nets`. Every training image has an image-level label; in rounds an oracle
annotates ``per_round`` images (chosen at random, the paper's recommendation, or by pixel
uncertainty), simulated from the ground truth as full masks or as robot strokes
(:class:`hitlseg.robot.Robot`). The loss of an image is

``CE(class) + seg_weight * L(oracle annotation) + pseudo_weight * L(pseudo-labels)``

with ``L`` the partial cross-entropy + Dice of :func:`hitlseg.nets.losses.partial_segmentation_loss`
(unmarked stroke pixels and uncertain pseudo-label pixels carry no label). The pseudo-labels of
the images the oracle has not annotated come from their oracle neighbours with the CAM as a
prior (:mod:`hitlseg.weak.neighbours`), refreshed each round. Masks are read for the oracle's
images only (and, for evaluation, for the held-out images, which are never trained on).

:func:`cam_only` is the baseline in the same API: the same classifier without the oracle, its
thresholded CAM taken as the mask. ``WeakConfig(pseudo=False)`` is standard active learning
without pseudo-labels.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hitlseg.errors import InputError
from hitlseg.flim.fit import resolve_device
from hitlseg.nets.losses import partial_segmentation_loss
from hitlseg.nets.model import SegModel
from hitlseg.nets.unet import make_arch
from hitlseg.progress import Progress, report
from hitlseg.pseudo.labels import IGNORE, markers_to_target
from hitlseg.weak.cam import METHODS, CamClassifier, activation_maps, shape_batches, train_classifier
from hitlseg.weak.neighbours import nearest_oracle, neighbour_pseudo_labels, pooled_descriptor

ORACLES = ("masks", "strokes")
STRATEGIES = ("random", "uncertainty")
ENCODERS = ("backprop", "flim")
FORMAT_KEY = "weak"


@dataclass
class WeakConfig:
    """Settings of :func:`weak_train` and :func:`cam_only`.

    Attributes
    ----------
    rounds, per_round : int
        Oracle rounds and images annotated per round.
    oracle : {"masks", "strokes"}
        What the simulated oracle gives: the full mask, or robot strokes drawn from it.
    strategy : {"random", "uncertainty"}
        How the oracle's images are chosen after the first (random) round: at random, or the
        highest mean pixel entropy of the current segmentation (:mod:`hitlseg.active.uncertainty`).
    encoder : {"backprop", "flim"}
        A trained encoder, or a frozen FLIM encoder fitted on robot strokes of the first round's images.
    widths : tuple of int
        Encoder layer widths (:func:`hitlseg.nets.make_arch`), backprop encoder only.
    norm : {"instance", "none", "batch"}
        Normalisation of the network: instance by default, the package's default (:mod:`hitlseg.nets`).
        No validation split was used to choose it; the GlaS figures of the issue's closing note
        (with and without it) were measured on the test parts and only reported. On the synthetic
        test of a bright square on noise it does worse: the CAM peaked inside the square for 8 of
        12 images against 12 of 12 without (it removes the per-image contrast the pooled head
        classifies on), so the CAM tests use ``none``.
    warmup_epochs, epochs : int
        Classifier-only epochs before the first round; joint epochs per round.
    lr, batch_size : float, int
        Adam's learning rate; images per step. One by default, as :func:`hitlseg.nets.train`: on the
        demo data (18 images, 2 x 2 oracle masks, 15 epochs per round) batches of 4 left the
        segmentation at Dice 0.0 (all background), batches of 1 reached 0.84.
    k, delta, prior_weight, temperature : int, float, float, float
        Neighbour pseudo-labels (:func:`hitlseg.weak.neighbours.neighbour_pseudo_labels`).
    cam_method : {"cam", "gradcam", "gradcam++"}
        The prior of the pseudo-labels and the CAM-only masks.
    cam_threshold : float
        CAM value above which a pixel is object in the CAM-only baseline.
    cam_crf : bool
        Also evaluate the CAM refined by the dense CRF of :mod:`hitlseg.refine` (the CAM as the
        object probability, 5 mean-field updates, default kernels): ``cam_crf_dice``.
    seg_weight, pseudo_weight : float
        Weights of the oracle and pseudo-label segmentation losses.
    pseudo : bool
        Train on pseudo-labels (False: standard active learning, oracle images only).
    seed : int
        Every random choice (oracle images, robot strokes, initialisation, batches).
    device : str or None
        CUDA when present by default.
    """

    rounds: int = 2
    per_round: int = 2
    oracle: str = "masks"
    strategy: str = "random"
    encoder: str = "backprop"
    widths: tuple = (16, 32, 64)
    norm: str = "instance"
    warmup_epochs: int = 10
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 1
    k: int = 3
    delta: float = 0.7
    prior_weight: float = 0.5
    temperature: float = 0.01
    cam_method: str = "cam"
    cam_threshold: float = 0.5
    cam_crf: bool = False
    seg_weight: float = 1.0
    pseudo_weight: float = 0.5
    pseudo: bool = True
    seed: int = 0
    device: str | None = None

    def __post_init__(self):
        for name, choices in (("oracle", ORACLES), ("strategy", STRATEGIES), ("encoder", ENCODERS),
                              ("cam_method", METHODS), ("norm", ("instance", "none", "batch"))):
            if getattr(self, name) not in choices:
                raise InputError(f"{name}: unknown {getattr(self, name)!r} (use one of {', '.join(choices)})")
        for name in ("rounds", "per_round", "epochs", "batch_size", "k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"{name}: must be a positive integer, got {value!r}")
        if isinstance(self.warmup_epochs, bool) or not isinstance(self.warmup_epochs, (int, np.integer)) or self.warmup_epochs < 0:
            raise InputError(f"warmup_epochs: must be a non-negative integer, got {self.warmup_epochs!r}")
        self.widths = tuple(int(w) for w in self.widths)
        for name in ("delta", "cam_threshold"):
            if not 0 < float(getattr(self, name)) < 1:
                raise InputError(f"{name}: must be in (0, 1), got {getattr(self, name)!r}")
        if not 0 <= float(self.prior_weight) <= 1:
            raise InputError(f"prior_weight: must be in [0, 1], got {self.prior_weight!r}")
        for name in ("lr", "temperature"):
            if not float(getattr(self, name)) > 0:
                raise InputError(f"{name}: must be positive, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        """Plain values (stored with the model); ``WeakConfig(**d)`` gives the config back."""
        data = asdict(self)
        data["widths"] = list(self.widths)
        return data


class JointNet(nn.Module):
    """A :class:`hitlseg.nets.SegNet` and a pooled linear classification head on its encoder's last layer.

    ``forward(x)`` returns ``(class logits (N, n_labels), segmentation logits (N, K + 1, *spatial))``;
    :meth:`features` and :meth:`classify` make it usable by :func:`hitlseg.weak.cam.activation_maps`.
    """

    def __init__(self, seg: nn.Module, n_labels: int):
        super().__init__()
        if int(n_labels) < 2:
            raise InputError(f"n_labels: a classifier needs at least 2 image classes, got {n_labels}")
        self.seg = seg
        self.head = nn.Linear(seg.encoder.out_channels[-1], int(n_labels))

    @property
    def ndim(self) -> int:
        return self.seg.ndim

    @property
    def n_labels(self) -> int:
        return self.head.out_features

    @property
    def frozen(self) -> bool:
        return self.seg.frozen

    def train(self, mode: bool = True) -> "JointNet":
        super().train(mode)
        self.seg.train(mode)  # keeps a frozen encoder in eval mode
        return self

    features = CamClassifier.features
    classify = CamClassifier.classify

    @property
    def encoder(self) -> nn.Module:
        return self.seg.encoder

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x)
        return self.classify(features[-1]), self.seg.decoder(x, features)


@dataclass
class WeakResult:
    """What :func:`weak_train` did: the model, its image classes, the oracle's images and per-round figures."""

    model: SegModel
    net: JointNet
    classes: tuple[str, ...]
    oracle_ids: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Classes, oracle ids and history as plain values."""
        return {"classes": list(self.classes), "oracle_ids": list(self.oracle_ids), "history": self.history}


def _load_images(dataset, ids: Sequence[str]) -> dict[str, np.ndarray]:
    return {i: dataset.image(i)[0] for i in ids}


def _check_ids(dataset, labels, train_ids, eval_ids) -> tuple[list[str], dict[str, list[str]] | list[str]]:
    """Validated training ids and evaluation ids (a list, or named groups ``{name: ids}``)."""
    train_ids = list(dataset.ids if train_ids is None else train_ids)
    groups = {k: list(v) for k, v in eval_ids.items()} if isinstance(eval_ids, dict) else None
    flat = [i for ids in groups.values() for i in ids] if groups is not None else list(eval_ids or [])
    overlap = sorted(set(train_ids) & set(flat))
    if overlap:
        raise InputError(f"eval_ids: {len(overlap)} images are also training images ({', '.join(overlap[:3])})")
    for i in train_ids + flat:
        dataset.sample(i)
    for i in train_ids:
        labels[i]
    if len(set(labels.of(train_ids).tolist())) < 2:
        raise InputError("labels: the training images hold one image class only; a classifier needs two")
    return train_ids, (groups if groups is not None else flat)


def _evaluate_groups(net, dataset, eval_ids, labels, n_classes: int, config) -> dict:
    """:func:`evaluate` on a list of ids (its figures), or on each named group (``{name: figures}``)."""
    if isinstance(eval_ids, dict):
        return {name: evaluate(net, dataset, ids, labels, n_classes, config) for name, ids in eval_ids.items()}
    return evaluate(net, dataset, eval_ids, labels, n_classes, config)


def _annotate(dataset, sample_id: str, shape, config: WeakConfig, robot) -> np.ndarray:
    """The oracle's target for one image: its mask, or the robot's strokes as a target with IGNORE."""
    mask = dataset.mask(sample_id, shape)
    if mask is None:
        raise InputError(f"{sample_id}: the oracle needs the image's mask to simulate an annotation")
    if config.oracle == "masks":
        return mask.astype(np.uint8)
    return markers_to_target(robot.mark(mask, key=sample_id))


def _build_net(config: WeakConfig, images: dict, targets: dict, n_classes: int, n_labels: int, preprocessing: dict,
               robot=None):
    first = next(iter(images.values()))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if config.encoder == "flim":
            from hitlseg.flim import fit_encoder

            ids = list(targets)
            # strokes: FLIM fits kernels on marked patches; from a full mask the robot draws strokes first
            markers = [robot.mark(targets[i], key=i) if config.oracle == "masks"
                       else np.where(targets[i] == IGNORE, 0, targets[i].astype(np.int64) + 1).astype(np.uint8) for i in ids]
            encoder = fit_encoder([images[i] for i in ids], markers, seed=config.seed, device=config.device, names=ids)
            model = SegModel.sunet(encoder, n_classes, preprocessing=preprocessing, norm=config.norm, seed=config.seed)
        else:
            model = SegModel.unet(first.shape[0], n_classes, first.ndim - 1, arch=make_arch(config.widths),
                                  preprocessing=preprocessing, norm=config.norm, seed=config.seed)
        net = JointNet(model.net, n_labels)
    return model, net


def _pixel_features(net: JointNet, images: torch.Tensor) -> torch.Tensor:
    """Encoder features of every layer, resampled to the last layer's grid and concatenated."""
    with torch.no_grad():
        features = net.encoder.features(images)
        size = features[-1].shape[2:]
        mode = "bilinear" if len(size) == 2 else "trilinear"
        return torch.cat([f if f.shape[2:] == size else F.interpolate(f, size=size, mode=mode, align_corners=False)
                          for f in features], 1)


def pseudo_labels(net: JointNet, images: dict, oracle_targets: dict, image_labels: dict, n_classes: int,
                  config: WeakConfig) -> dict[str, np.ndarray]:
    """Neighbour pseudo-labels of every image of ``images`` not in ``oracle_targets`` (only those targets are read)."""
    device = next(net.parameters()).device
    net.eval()

    def tensor(i):
        return torch.as_tensor(images[i], device=device)[None]

    oracle = list(oracle_targets)
    others = [i for i in images if i not in oracle_targets]
    if not oracle or not others:
        return {}
    oracle_features = {i: _pixel_features(net, tensor(i))[0].cpu().numpy() for i in oracle}
    oracle_descriptors = np.stack([pooled_descriptor(oracle_features[i]) for i in oracle])
    out = {}
    for i in others:
        feats = _pixel_features(net, tensor(i))[0].cpu().numpy()
        indices, _ = nearest_oracle(pooled_descriptor(feats)[None], oracle_descriptors, config.k)
        cam, _ = activation_maps(net, tensor(i), [image_labels[i]], config.cam_method)
        neighbours = [(oracle_features[oracle[j]], oracle_targets[oracle[j]]) for j in indices[0]]
        out[i] = neighbour_pseudo_labels(feats, neighbours, n_classes, cam=cam[0].cpu().numpy(),
                                         prior_weight=config.prior_weight, delta=config.delta,
                                         temperature=config.temperature)
    return out


def _as_target(mask: np.ndarray | None, shape) -> torch.Tensor:
    if mask is None:
        return torch.full(tuple(shape), -1, dtype=torch.long)
    target = torch.as_tensor(mask.astype(np.int64))
    return torch.where(target == IGNORE, torch.full_like(target, -1), target)


def _train_joint(net: JointNet, images: dict, image_labels: dict, oracle: dict, pseudo: dict, config: WeakConfig,
                 seed_key: int) -> dict:
    device = next(net.parameters()).device
    ids = list(images)
    optimiser = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=config.lr)
    net.train()
    history = []
    for epoch in range(config.epochs):
        rng = np.random.default_rng([config.seed, seed_key, epoch])
        sums = {"loss": 0.0, "class": 0.0, "oracle": 0.0, "pseudo": 0.0}
        steps = 0
        for batch in shape_batches([images[i].shape for i in ids], config.batch_size, rng):
            names = [ids[b] for b in batch]
            x = torch.stack([torch.as_tensor(images[i]) for i in names]).to(device)
            shape = x.shape[2:]
            t_oracle = torch.stack([_as_target(oracle.get(i), shape) for i in names]).to(device)
            t_pseudo = torch.stack([_as_target(pseudo.get(i), shape) for i in names]).to(device)
            for axis in range(2, x.ndim):
                if rng.random() < 0.5:
                    x, t_oracle, t_pseudo = x.flip(axis), t_oracle.flip(axis - 1), t_pseudo.flip(axis - 1)
            y = torch.as_tensor([image_labels[i] for i in names], device=device)
            class_logits, seg_logits = net(x)
            parts = {"class": F.cross_entropy(class_logits, y),
                     "oracle": partial_segmentation_loss(seg_logits, t_oracle),
                     "pseudo": partial_segmentation_loss(seg_logits, t_pseudo)}
            loss = parts["class"] + config.seg_weight * parts["oracle"] + config.pseudo_weight * parts["pseudo"]
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            sums["loss"] += float(loss.detach())
            for key, value in parts.items():
                sums[key] += float(value.detach())
            steps += 1
        history.append({key: value / max(steps, 1) for key, value in sums.items()})
    net.eval()
    return {"last_epoch": history[-1] if history else {}}


def evaluate(net, dataset, eval_ids: Sequence[str], labels, n_classes: int, config: WeakConfig, images=None) -> dict:
    """Held-out figures: mean Dice (classes 1..K), per-class Dice (``dice_per_class``, ``{"1": ..}``, means
    over images) and foreground Dice of the segmentation, foreground Dice of the thresholded CAM (of the
    predicted class), classification accuracy. Reads the masks of ``eval_ids``."""
    from hitlseg.metrics import dice_per_class, dice_score

    if not eval_ids:
        return {}
    device = next(net.parameters()).device
    net.eval()
    seg, fg, cam_fg, cam_crf, correct, counted = [], [], [], [], 0, 0
    per_class: dict[int, list[float]] = {}
    for i in eval_ids:
        image = images[i] if images is not None else dataset.image(i)[0]
        x = torch.as_tensor(image, device=device)[None]
        maps, logits = activation_maps(net, x, None, config.cam_method)
        correct += int(int(logits.argmax(1)) == labels[i])
        mask = dataset.mask(i, image.shape[1:])
        if mask is None:
            continue
        counted += 1
        cam = maps[0].cpu().numpy()
        cam_fg.append(dice_score(cam > config.cam_threshold, mask > 0))
        if config.cam_crf:
            from hitlseg.refine import crf_refine

            p = np.clip(cam.astype(np.float32), 1e-4, 1 - 1e-4)
            cam_crf.append(dice_score(crf_refine(image, np.stack([1 - p, p])) > 0, mask > 0))
        if isinstance(net, JointNet):
            with torch.no_grad():
                pred = net(x)[1].argmax(1)[0].cpu().numpy()
            scores = dice_per_class(pred, mask, range(1, n_classes + 1))
            for c, value in scores.items():
                per_class.setdefault(int(c), []).append(float(value))
            seg.append(float(np.mean(list(scores.values()))))
            fg.append(dice_score(pred > 0, mask > 0))
    out = {"accuracy": correct / len(eval_ids), "cam_dice": float(np.mean(cam_fg)) if cam_fg else None,
           "evaluated": counted}
    if cam_crf:
        out["cam_crf_dice"] = float(np.mean(cam_crf))
    if isinstance(net, JointNet):
        out.update(dice=float(np.mean(seg)) if seg else None, foreground_dice=float(np.mean(fg)) if fg else None,
                   dice_per_class={str(c): float(np.mean(v)) for c, v in sorted(per_class.items())})
    return out


def _choose(rng, net, images: dict, annotated: set, n: int, strategy: str, round_index: int) -> list[str]:
    pool = [i for i in images if i not in annotated]
    if not pool:
        return []
    if strategy == "random" or round_index == 0 or net is None:
        return [pool[j] for j in sorted(rng.choice(len(pool), size=min(n, len(pool)), replace=False))]
    from hitlseg.active.uncertainty import pixel_uncertainty, reduce

    device = next(net.parameters()).device
    scores = []
    with torch.no_grad():
        for i in pool:
            p = torch.softmax(net(torch.as_tensor(images[i], device=device)[None])[1], 1)[0].cpu().numpy()
            scores.append(reduce(pixel_uncertainty(p, "entropy"), "mean"))
    order = np.argsort(-np.asarray(scores), kind="stable")
    return [pool[j] for j in order[:n]]


def weak_train(dataset, labels, config: WeakConfig | None = None, *, train_ids: Sequence[str] | None = None,
               eval_ids: Sequence[str] | None = None, n_classes: int | None = None, progress: Progress = None) -> WeakResult:
    """Train the joint model in oracle rounds (see the module docstring).

    Parameters
    ----------
    dataset : Dataset
        Images (all of ``train_ids`` held in memory), masks for the oracle's simulation.
    labels : ImageLabels
        Image-level labels of (at least) the training and evaluation images.
    config : WeakConfig, optional
    train_ids : sequence of str, optional
        The pool the oracle annotates from and the training images; every image by default.
    eval_ids : sequence of str or dict, optional
        Held-out images evaluated after each round (their masks are read for evaluation only);
        a dict ``{name: ids}`` evaluates each group apart (the row holds ``{name: figures}``).
    n_classes : int, optional
        ``K``, the segmentation's object classes; from the first oracle masks by default.
    progress : callable, optional
        ``progress(done, total, message)`` after each round.

    Returns
    -------
    WeakResult
        ``history`` per round: ``round``, ``oracle_images``, ``effort`` (images and labelled
        pixels the oracle gave, cumulative), ``pseudo_images`` and ``pseudo_labelled`` (share of
        their pixels labelled), ``train_seconds`` (choice, annotation, pseudo-labels and training;
        the first round's includes the classifier warm-up), ``seconds`` (with the evaluation) and
        the figures of :func:`evaluate`.
    """
    from hitlseg.robot import Robot

    config = config or WeakConfig()
    train_ids, eval_ids = _check_ids(dataset, labels, train_ids, eval_ids)
    device = resolve_device(config.device)
    images = _load_images(dataset, train_ids)
    image_labels = {i: labels[i] for i in train_ids}
    robot = Robot(seed=config.seed)
    rng = np.random.default_rng([config.seed, 17])
    oracle: dict[str, np.ndarray] = {}
    model = net = None
    history: list[dict] = []
    effort_pixels = 0
    preprocessing = {"color": dataset.color, "normalize": dataset.normalize, "max_side": dataset.max_side}
    for r in range(config.rounds):
        start = time.perf_counter()
        chosen = _choose(rng, net, images, set(oracle), config.per_round, config.strategy, r)
        for i in chosen:
            oracle[i] = _annotate(dataset, i, images[i].shape[1:], config, robot)
            effort_pixels += int((oracle[i] != IGNORE).sum())
        if net is None:
            if not oracle:
                raise InputError("train_ids: no image for the oracle to annotate")
            found = max(int(np.max(np.where(t == IGNORE, 0, t))) for t in oracle.values())
            k = int(n_classes) if n_classes is not None else max(found, 1)
            model, net = _build_net(config, images, oracle, k, labels.n_classes, preprocessing, robot)
            net.to(device)
            if config.warmup_epochs:
                classifier = _ClassifierView(net)
                train_classifier(classifier, [images[i] for i in train_ids], [image_labels[i] for i in train_ids],
                                 epochs=config.warmup_epochs, lr=config.lr, batch_size=config.batch_size,
                                 seed=config.seed, device=device)
        pseudo = pseudo_labels(net, images, oracle, image_labels, model.n_classes, config) if config.pseudo else {}
        net.to(device)
        _train_joint(net, images, image_labels, oracle, pseudo, config, seed_key=r)
        labelled = [float((p != IGNORE).mean()) for p in pseudo.values()]
        row = {"round": r + 1, "oracle_images": len(oracle), "new_oracle_ids": chosen,
               "effort": {"images": len(oracle), "labelled_pixels": effort_pixels, "kind": config.oracle},
               "pseudo_images": len(pseudo), "pseudo_labelled": float(np.mean(labelled)) if labelled else 0.0}
        row["train_seconds"] = time.perf_counter() - start  # choice, annotation, pseudo-labels, training
        row.update(_evaluate_groups(net, dataset, eval_ids, labels, model.n_classes, config))
        row["seconds"] = time.perf_counter() - start
        history.append(row)
        report(progress, r + 1, config.rounds, f"round {r + 1}")
    model.info[FORMAT_KEY] = {"classes": list(labels.classes), "head_weight": net.head.weight.detach().cpu().tolist(),
                              "head_bias": net.head.bias.detach().cpu().tolist(), "config": config.to_dict(),
                              "oracle_ids": sorted(oracle), "history": history}
    model.net.eval()
    return WeakResult(model, net, tuple(labels.classes), sorted(oracle), history)


class _ClassifierView(nn.Module):
    """The classification path of a :class:`JointNet` as a classifier (``forward`` gives class logits only)."""

    def __init__(self, net: JointNet):
        super().__init__()
        self.net = net

    @property
    def n_labels(self) -> int:
        return self.net.n_labels

    def forward(self, x):
        return self.net.classify(self.net.features(x)[-1])


def cam_only(dataset, labels, config: WeakConfig | None = None, *, train_ids: Sequence[str] | None = None,
             eval_ids: Sequence[str] | None = None, progress: Progress = None) -> dict:
    """Baseline: a :class:`CamClassifier` trained on the image labels only (``warmup_epochs + rounds * epochs``
    epochs, the joint model's classifier budget), its CAM above ``cam_threshold`` taken as the object.

    Reads no mask of a training image. Returns :func:`evaluate`'s figures on ``eval_ids`` (``cam_dice``,
    ``accuracy``) and ``seconds``.
    """
    config = config or WeakConfig()
    train_ids, eval_ids = _check_ids(dataset, labels, train_ids, eval_ids)
    start = time.perf_counter()
    model = train_cam_baseline(dataset, labels, config, train_ids, progress=progress)
    out = _evaluate_groups(model, dataset, eval_ids, labels, 1, config)
    out["seconds"] = time.perf_counter() - start
    return out


def train_cam_baseline(dataset, labels, config: WeakConfig, train_ids: Sequence[str], progress: Progress = None) -> CamClassifier:
    """The classifier of :func:`cam_only`, trained (``warmup_epochs + rounds * epochs`` epochs) and in eval mode.

    For callers that need the model itself (e.g. to draw its CAMs); reads no mask.
    """
    from hitlseg.nets.unet import BackpropEncoder

    images = _load_images(dataset, train_ids)
    first = next(iter(images.values()))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = CamClassifier(BackpropEncoder(make_arch(config.widths), first.shape[0], first.ndim - 1, norm=config.norm),
                              labels.n_classes)
    train_classifier(model, list(images.values()), labels.of(list(train_ids)),
                     epochs=config.warmup_epochs + config.rounds * config.epochs, lr=config.lr,
                     batch_size=config.batch_size, seed=config.seed, device=config.device, progress=progress)
    model.eval()
    return model


def load_weak(path, device=None) -> tuple[SegModel, JointNet, tuple[str, ...]]:
    """A model written by ``WeakResult.model.save``: the segmentation model, the joint network and the image classes."""
    model = SegModel.load(path, device)
    weak = model.info.get(FORMAT_KEY)
    if not isinstance(weak, dict) or "head_weight" not in weak:
        raise InputError(f"{path}: a segmentation model without a classification head (not trained by 'weak train')")
    net = JointNet(model.net, len(weak["classes"]))
    with torch.no_grad():
        net.head.weight.copy_(torch.as_tensor(weak["head_weight"]))
        net.head.bias.copy_(torch.as_tensor(weak["head_bias"]))
    net.to(model.device).eval()
    return model, net, tuple(weak["classes"])
