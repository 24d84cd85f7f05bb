"""Training a segmentation network by backpropagation.

Loss: the mean of cross-entropy and soft Dice (foreground classes, over the batch), computed on
labelled pixels only: masks may carry :data:`IGNORE` (255) where a pixel has no label (strokes,
pseudo-labels), optionally with class weights and the dense-CRF / normalized-cut regularisers of
:mod:`hitlseg.nets.losses` on every pixel. Adam with a
linearly decaying learning rate; validation Dice (mean over classes 1..K) after every epoch,
keeping the best weights. Random crops (biased towards foreground) for images larger than the
crop size, random flips. Seeded: epoch ``e`` draws from ``numpy.random.default_rng([seed, e])``,
so a run resumed from a checkpoint gives the same weights as an uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from hitlseg.errors import InputError
from hitlseg.flim.fit import resolve_device
from hitlseg.nets.infer import predict
from hitlseg.nets.losses import (IGNORE_TARGET, affinity_products, balanced_class_weights, crf_from_products,
                                 ncut_from_products, partial_segmentation_loss)
from hitlseg.progress import Progress, report
from hitlseg.pseudo.labels import IGNORE  # the mask value of a pixel without a label

CHECKPOINT_FORMAT = "hitlseg-train-checkpoint"
DEFAULT_CROP = {2: 256, 3: 96}
#: Target of padding pixels inside a batch (no label and not part of the image).
PAD_TARGET = -2
#: Added to the target of a pixel a person labelled (inside :func:`train` only).
PERSON_FLAG = 1 << 16


@dataclass
class TrainConfig:
    """Training settings.

    Attributes
    ----------
    epochs : int
        Passes over the training set (100 in the paper).
    batch_size : int
        Images per step (1 in the paper).
    lr : float
        Initial learning rate of Adam (2.5e-3 in the paper).
    lr_decay : {"linear", "none"}
        Linear decay to 0 over all steps, or constant.
    weight_decay : float
        Adam's L2 penalty.
    crop_size : int, tuple or None
        Training crop per spatial axis for images larger than it; None: 256 (2D) or 96 (3D).
        Inference (validation, and the trained :class:`SegModel`'s ``window``) slides a window
        of the larger of the crop and that default.
    foreground_crops : float
        Probability that a crop is centred on a random foreground pixel.
    flip : bool
        Random flips along each spatial axis.
    seed : int
        Seed of every random choice (sample order, crops, flips).
    device : str or None
        ``None``/``"auto"``: CUDA when present, else CPU.
    overlap : float
        Sliding-window overlap used for validation of large images.
    class_weights : None, "balanced" or sequence of float
        Cross-entropy weight per class (background first). ``"balanced"``: from the labelled
        pixel counts of the training set (:func:`hitlseg.nets.losses.balanced_class_weights`).
    crf_weight, ncut_weight : float
        Weights of the dense-CRF and normalized-cut losses (:mod:`hitlseg.nets.losses`) added to
        the partial loss; 0 turns a regulariser off.
    sigma_xy, sigma_color, regularizer_scale : float
        Spatial bandwidth (pixels), colour/intensity bandwidth (image units) and downsampling
        factor of the regularisers' affinity.
    person_weight : float
        Cross-entropy weight of pixels a person labelled (the third item of an
        ``(image, mask, person)`` training sample) relative to machine labels (pseudo-labels).
    """

    epochs: int = 100
    batch_size: int = 1
    lr: float = 2.5e-3
    lr_decay: str = "linear"
    weight_decay: float = 0.0
    crop_size: int | tuple | None = None
    foreground_crops: float = 0.33
    flip: bool = True
    seed: int = 0
    device: str | None = None
    overlap: float = 0.5
    class_weights: str | tuple | None = None
    crf_weight: float = 0.0
    ncut_weight: float = 0.0
    sigma_xy: float = 5.0
    sigma_color: float = 0.1
    regularizer_scale: float = 0.5
    person_weight: float = 1.0

    def __post_init__(self):
        if isinstance(self.person_weight, bool) or not isinstance(self.person_weight, (int, float)) \
                or not np.isfinite(self.person_weight) or self.person_weight <= 0:
            raise InputError(f"person_weight: must be a positive number, got {self.person_weight!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name}: must be a positive integer, got {value!r}")
        if not (isinstance(self.lr, (int, float, np.floating)) and np.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"lr: must be a positive finite number, got {self.lr!r}")
        if self.lr_decay not in ("linear", "none"):
            raise InputError(f"lr_decay: use 'linear' or 'none', got {self.lr_decay!r}")
        if not 0.0 <= self.foreground_crops <= 1.0:
            raise InputError(f"foreground_crops: must be in [0, 1], got {self.foreground_crops}")
        if isinstance(self.crop_size, list):
            self.crop_size = tuple(self.crop_size)
        if isinstance(self.class_weights, list):
            self.class_weights = tuple(self.class_weights)
        if isinstance(self.class_weights, str) and self.class_weights != "balanced":
            raise InputError(f"class_weights: use 'balanced', a list of weights or None, got {self.class_weights!r}")
        if isinstance(self.class_weights, tuple) and not all(float(w) >= 0 for w in self.class_weights):
            raise InputError(f"class_weights: weights must be non-negative, got {self.class_weights}")
        for name in ("crf_weight", "ncut_weight", "weight_decay"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
                raise InputError(f"{name}: must be a non-negative number, got {value!r}")
        for name in ("sigma_xy", "sigma_color"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                raise InputError(f"{name}: must be a positive finite number, got {value!r}")
        if not 0 < self.regularizer_scale <= 1:
            raise InputError(f"regularizer_scale: must be in (0, 1], got {self.regularizer_scale!r}")

    def window(self, ndim: int) -> tuple[int, ...]:
        """Crop size per spatial axis for ``ndim``-D images."""
        crop = self.crop_size if self.crop_size is not None else DEFAULT_CROP[ndim]
        crop = (int(crop),) * ndim if np.isscalar(crop) else tuple(int(c) for c in crop)
        if len(crop) != ndim or min(crop) < 8:
            raise InputError(f"crop_size: need {ndim} sizes of at least 8, got {crop}")
        return crop

    def inference_window(self, ndim: int) -> tuple[int, ...]:
        """Sliding-window size for validation and prediction: the crop, at least the default crop.

        Inference keeps no gradients, so it affords larger windows than training; whole-image
        prediction of images up to this size also avoids per-window normalisation statistics.
        """
        return tuple(max(c, DEFAULT_CROP[ndim]) for c in self.window(ndim))

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("crop_size", "class_weights"):
            if isinstance(data[key], tuple):
                data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class TrainResult:
    """What a training run did: per-epoch history, the best epoch and its validation Dice."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_dice: float | None = None
    seconds: float = 0.0
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"history": self.history, "best_epoch": self.best_epoch, "best_val_dice": self.best_val_dice,
                "seconds": self.seconds, "config": self.config}


# --------------------------------------------------------------------------------------------- loss


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean of cross-entropy and soft-Dice loss over labelled pixels (negative targets are ignored).

    See :func:`hitlseg.nets.losses.partial_segmentation_loss` (this is it without class weights).
    """
    return partial_segmentation_loss(logits, target, None, smooth)


def training_loss(logits: torch.Tensor, target: torch.Tensor, images: torch.Tensor, config: "TrainConfig",
                  class_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """The loss a training step minimises: partial CE + Dice, plus the weighted regularisers.

    Returns the scalar and its parts (floats) for the history. Targets at or above
    :data:`PERSON_FLAG` mark pixels a person labelled (class ``target - PERSON_FLAG``), weighted
    by ``config.person_weight`` in the cross-entropy.
    """
    person = target >= PERSON_FLAG
    pixel_weights = None
    if bool(person.any()):
        target = torch.where(person, target - PERSON_FLAG, target)
        if config.person_weight != 1.0:
            pixel_weights = 1.0 + (config.person_weight - 1.0) * person.to(logits.dtype)
    loss = partial_segmentation_loss(logits, target, class_weights, pixel_weights=pixel_weights)
    parts = {"partial": float(loss.detach())}
    if config.crf_weight > 0 or config.ncut_weight > 0:
        # one affinity computation serves both regularisers
        products = affinity_products(torch.softmax(logits, dim=1), images, sigma_xy=config.sigma_xy,
                                     sigma_color=config.sigma_color, scale=config.regularizer_scale,
                                     valid=target != PAD_TARGET)
        if config.crf_weight > 0:
            crf = crf_from_products(*products, counted=True)
            parts["crf"] = float(crf.detach())
            loss = loss + config.crf_weight * crf
        if config.ncut_weight > 0:
            ncut = ncut_from_products(*products)
            parts["ncut"] = float(ncut.detach())
            loss = loss + config.ncut_weight * ncut
    return loss, parts


# --------------------------------------------------------------------------------------------- data


def _check_samples(samples, net_ndim: int, in_channels: int, n_classes: int, role: str, names=None):
    checked = []
    for index, pair in enumerate(samples):
        name = names[index] if names is not None else f"{role} sample {index}"
        person = None
        try:
            if len(pair) == 3:
                image, mask, person = pair
            else:
                image, mask = pair
        except (TypeError, ValueError):
            raise InputError(f"{name}: expected an (image, mask) pair or an (image, mask, person) triple") from None
        image = np.asarray(image, dtype=np.float32)
        if mask is None:
            raise InputError(f"{name}: has no mask; every {role} image needs one")
        mask = np.asarray(mask)
        if image.ndim != net_ndim + 1:
            raise InputError(f"{name}: the network is {net_ndim}D and needs (C, *spatial) images, got shape {image.shape}")
        if image.shape[0] != in_channels:
            raise InputError(f"{name}: has {image.shape[0]} channels, the network takes {in_channels}")
        if mask.shape != image.shape[1:]:
            raise InputError(f"{name}: mask shape {mask.shape} differs from image shape {image.shape[1:]}")
        if not np.issubdtype(mask.dtype, np.integer) and not np.issubdtype(mask.dtype, np.bool_):
            raise InputError(f"{name}: mask must hold integer labels, got {mask.dtype}")
        mask = mask.astype(np.int64)
        labelled = mask != IGNORE
        if mask.size and labelled.any() and (mask[labelled].min() < 0 or mask[labelled].max() > n_classes):
            raise InputError(f"{name}: mask labels must be in 0..{n_classes} (or {IGNORE}: no label) for a "
                             f"{n_classes}-class network, got {int(mask[labelled].min())}..{int(mask[labelled].max())}")
        if not labelled.any():
            raise InputError(f"{name}: no pixel has a label (every pixel is {IGNORE})")
        target = np.where(labelled, mask, IGNORE_TARGET)
        if person is not None and role == "training":
            person = np.asarray(person, dtype=bool)
            if person.shape != mask.shape:
                raise InputError(f"{name}: person-label mask shape {person.shape} differs from the mask's {mask.shape}")
            target = np.where(person & labelled, target + PERSON_FLAG, target)
        checked.append((image, target))
    return checked


def label_counts(samples, n_classes: int) -> np.ndarray:
    """Labelled pixels per class 0..K over (image, mask) pairs whose unlabelled pixels are negative."""
    counts = np.zeros(n_classes + 1, dtype=np.int64)
    for _, mask in samples:
        values = mask[mask >= 0]
        values = np.where(values >= PERSON_FLAG, values - PERSON_FLAG, values)
        counts += np.bincount(values.ravel(), minlength=n_classes + 1)[: n_classes + 1]
    return counts


def random_crop(image: np.ndarray, mask: np.ndarray, crop: Sequence[int], rng: np.random.Generator,
                foreground: float = 0.33) -> tuple[np.ndarray, np.ndarray]:
    """A random crop of at most ``crop`` per axis; with probability ``foreground`` centred on a foreground pixel."""
    spatial = mask.shape
    if all(s <= c for s, c in zip(spatial, crop)):
        return image, mask
    centre = None
    if foreground > 0 and rng.random() < foreground:
        coords = np.flatnonzero(mask > 0)
        if coords.size:
            centre = np.unravel_index(int(coords[rng.integers(coords.size)]), spatial)
    starts = []
    for axis, (s, c) in enumerate(zip(spatial, crop)):
        if s <= c:
            starts.append(0)
        elif centre is not None:
            starts.append(int(np.clip(centre[axis] - c // 2, 0, s - c)))
        else:
            starts.append(int(rng.integers(0, s - c + 1)))
    region = tuple(slice(a, a + min(s, c)) for a, s, c in zip(starts, spatial, crop))
    return image[(slice(None),) + region], mask[region]


def random_flip(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Flip each spatial axis with probability 1/2."""
    for axis in range(mask.ndim):
        if rng.random() < 0.5:
            image, mask = np.flip(image, axis + 1), np.flip(mask, axis)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def pad_to(image: np.ndarray, mask: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Pad ``image`` (reflecting) and ``mask`` (with :data:`PAD_TARGET`, ignored by the loss) at the end of each axis up to ``shape``."""
    widths = [(0, max(0, t - s)) for s, t in zip(mask.shape, shape)]
    if not any(w for _, w in widths):
        return image, mask
    mode = "reflect" if all(s > 1 for s in mask.shape) else "edge"
    return (np.pad(image, [(0, 0)] + widths, mode=mode),
            np.pad(mask, widths, mode="constant", constant_values=PAD_TARGET))


def _batch(pairs: list[tuple[np.ndarray, np.ndarray]], device) -> tuple[torch.Tensor, torch.Tensor]:
    shape = tuple(max(p[1].shape[a] for p in pairs) for a in range(pairs[0][1].ndim))
    images = np.zeros((len(pairs), pairs[0][0].shape[0]) + shape, dtype=np.float32)
    masks = np.full((len(pairs),) + shape, PAD_TARGET, dtype=np.int64)
    for index, (image, mask) in enumerate(pairs):
        region = tuple(slice(0, s) for s in mask.shape)
        images[(index, slice(None)) + region] = image
        masks[(index,) + region] = mask
    return torch.from_numpy(images).to(device), torch.from_numpy(masks).to(device)


# --------------------------------------------------------------------------------------------- training


def validation_dice(net: nn.Module, samples, n_classes: int, window=None, overlap: float = 0.5) -> float:
    """Mean over images of the mean Dice over classes 1..K (a class absent from both masks scores 1)."""
    from hitlseg.metrics import mean_dice

    scores = [mean_dice(predict(net, image, window=window, overlap=overlap).labels, mask, labels=range(1, n_classes + 1))
              for image, mask in samples]
    return float(np.mean(scores)) if scores else float("nan")


def _save_checkpoint(path: Path, payload: dict) -> None:
    from hitlseg.flim.model import save_state

    save_state(payload, path)


def _load_checkpoint(path: Path, net: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig) -> dict:
    from hitlseg.flim.model import load_state

    state = load_state(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a hitlseg training checkpoint")
    if int(state["seed"]) != config.seed:
        raise InputError(f"{path}: the checkpoint was written with seed {state['seed']}, this run uses seed {config.seed}")
    try:
        net.load_trainable_state(state["weights"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: the checkpoint was written for a different network ({exc})") from None
    return state


def _class_weights(config: TrainConfig, samples, n_classes: int, device) -> torch.Tensor | None:
    if config.class_weights is None:
        return None
    if config.class_weights == "balanced":
        return balanced_class_weights(label_counts(samples, n_classes)).to(device)
    weights = torch.tensor([float(w) for w in config.class_weights], dtype=torch.float32)
    if weights.numel() != n_classes + 1:
        raise InputError(f"class_weights: need {n_classes + 1} weights (background and {n_classes} classes), "
                         f"got {weights.numel()}")
    return weights.to(device)


def train(model, train_samples, val_samples=(), config: TrainConfig | None = None, progress: Progress = None,
          checkpoint: str | Path | None = None, names: dict | None = None) -> TrainResult:
    """Train ``model`` on (image, mask) pairs, keeping the weights of the best validation epoch.

    Parameters
    ----------
    model : SegModel or SegNet
        The network (a :class:`hitlseg.nets.SegModel` is trained through its ``net``, and its
        ``window`` set to the inference window used for validation). A frozen encoder (sU-Net)
        is left untouched.
    train_samples, val_samples : sequence of (ndarray, ndarray)
        Images ``(C, *spatial)`` float32 and integer masks ``(*spatial)`` with labels 0..K, or
        :data:`IGNORE` (255) where a training pixel has no label. A training sample may carry a
        third item, a boolean mask of the pixels a person labelled (weighted by
        ``config.person_weight``; the others are machine labels). Images may differ in size: each is padded (reflecting; the padding is ignored by the loss)
        to the size of the largest one, cropped to the crop size. Without validation samples the
        last epoch is kept.
    config : TrainConfig, optional
        Epochs, learning rate, crops, seed, device; defaults as in the paper.
    progress : callable, optional
        ``progress(step, total_steps, "epoch e/E loss .. val dice ..")`` after every step.
    checkpoint : path, optional
        Written atomically after every epoch; if it exists when training starts, training
        resumes from it (same seed required) and gives the same result as an uninterrupted run.
    names : dict, optional
        ``{"train": [...], "val": [...]}`` sample names for error messages.

    Returns
    -------
    TrainResult
        ``history`` holds per epoch: ``epoch``, ``loss`` (mean over steps), ``val_dice``, ``lr``, ``seconds``
        and ``loss_parts`` (mean partial loss and regularisers, unweighted).
    """
    config = config or TrainConfig()
    net = getattr(model, "net", model)
    names = names or {}
    train_samples = list(train_samples)
    if not train_samples:
        raise InputError("train_samples: the training set is empty")
    train_samples = _check_samples(train_samples, net.ndim, net.in_channels, net.n_classes, "training", names.get("train"))
    val_samples = _check_samples(list(val_samples), net.ndim, net.in_channels, net.n_classes, "validation", names.get("val"))
    window = config.window(net.ndim)
    inference_window = config.inference_window(net.ndim)
    # every step sees one input shape: the largest training image, cropped to the window. CPU
    # convolution backends plan per shape, so varying shapes would cost several times more.
    train_shape = tuple(min(w, max(m.shape[a] for _, m in train_samples)) for a, w in enumerate(window))
    device = resolve_device(config.device)
    net.to(device)
    parameters = net.trainable_parameters()
    if not parameters:
        raise InputError("model: has no trainable parameter")
    optimizer = torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(train_samples) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs

    start_epoch, step = 0, 0
    history: list[dict] = []
    best_state, best_epoch, best_dice = None, 0, None
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    class_weights = _class_weights(config, train_samples, net.n_classes, device)
    if checkpoint is not None and checkpoint.exists():
        state = _load_checkpoint(checkpoint, net, optimizer, config)
        start_epoch, step = int(state["epoch"]), int(state["step"])
        history = list(state["history"])
        best_state, best_epoch, best_dice = state["best_state"], int(state["best_epoch"]), state["best_dice"]
        if start_epoch >= config.epochs:
            start_epoch = config.epochs

    started = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        epoch_start = time.perf_counter()
        rng = np.random.default_rng([config.seed, epoch])
        net.train()
        order = rng.permutation(len(train_samples))
        losses, part_sums = [], {}
        for first in range(0, len(order), config.batch_size):
            pairs = []
            for index in order[first : first + config.batch_size]:
                image, mask = train_samples[index]
                image, mask = random_crop(image, mask, window, rng, config.foreground_crops)
                if config.flip:
                    image, mask = random_flip(image, mask, rng)
                pairs.append(pad_to(image, mask, train_shape))
            x, y = _batch(pairs, device)
            lr = config.lr * (1.0 - step / total_steps) if config.lr_decay == "linear" else config.lr
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, parts = training_loss(net(x), y, x, config, class_weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            losses.append(float(loss.detach()))
            for name, value in parts.items():
                part_sums[name] = part_sums.get(name, 0.0) + value
            report(progress, step, total_steps, f"epoch {epoch + 1}/{config.epochs} loss {np.mean(losses):.4f}"
                   + (f" val dice {history[-1]['val_dice']:.4f}" if history and history[-1]["val_dice"] is not None else ""))
        dice = validation_dice(net, val_samples, net.n_classes, inference_window, config.overlap) if val_samples else None
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_dice": dice, "lr": lr,
                        "loss_parts": {name: total / len(losses) for name, total in part_sums.items()},
                        "seconds": time.perf_counter() - epoch_start})
        if dice is None:  # no validation: the last epoch is the one kept
            best_state, best_epoch = None, epoch + 1
        elif best_dice is None or dice > best_dice:
            best_state = {k: v.detach().cpu().clone() for k, v in net.trainable_state().items()}
            best_epoch, best_dice = epoch + 1, dice
        report(progress, step, total_steps, f"epoch {epoch + 1}/{config.epochs} loss {history[-1]['loss']:.4f}"
               + (f" val dice {dice:.4f}" if dice is not None else ""))
        if checkpoint is not None:
            _save_checkpoint(checkpoint, {
                "format": CHECKPOINT_FORMAT, "seed": config.seed, "epoch": epoch + 1, "step": step,
                "weights": {k: v.detach().cpu() for k, v in net.trainable_state().items()},
                "optimizer": optimizer.state_dict(), "history": history, "best_state": best_state,
                "best_epoch": best_epoch, "best_dice": best_dice, "config": config.to_dict(),
            })
    if best_state is not None:
        net.load_trainable_state({k: v.to(device) for k, v in best_state.items()})
    net.eval()
    if hasattr(model, "window"):  # a SegModel predicts as validation did
        model.window = inference_window
    return TrainResult(history, best_epoch, best_dice, time.perf_counter() - started, config.to_dict())
