"""Training a quality model on degraded masks (and, optionally, real predictions).

Galdran et al. (MICCAI 2018): every training mask is degraded ``samples_per_image`` times by
:func:`hitlseg.quality.degrade.random_degradation`; the network learns each degraded mask's
Dice and NMI against its truth from the image and the degraded mask. Real predictions with
their truth (``extra``) join the same bank. A seeded tenth of the source images (at least one,
when there are five or more) is held out; the weights of the epoch with the lowest validation
loss are kept, and the validation Pearson correlation of predicted and true Dice is recorded.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from hitlseg.errors import InputError
from hitlseg.progress import Progress, nested, report
from hitlseg.quality.degrade import random_degradation
from hitlseg.quality.fingerprint import fingerprint
from hitlseg.quality.measures import MEASURES, similarity
from hitlseg.quality.model import QualityModel, one_hot, resize

#: Validation share of the source images (held out when there are at least :data:`MIN_VALIDATION_IMAGES`).
VALIDATION_SHARE = 0.1
MIN_VALIDATION_IMAGES = 5


def _check_training(images, masks, n_classes):
    images, masks = list(images), list(masks)
    if not images:
        raise InputError("training set: empty, no image with a mask to degrade")
    if len(images) != len(masks):
        raise InputError(f"masks: {len(masks)} masks for {len(images)} images")
    first = np.asarray(images[0])
    if first.ndim not in (3, 4):
        raise InputError(f"image 0: must be (C, H, W) or (C, D, H, W), got shape {first.shape}")
    for i, (image, mask) in enumerate(zip(images, masks)):
        image, mask = np.asarray(image), np.asarray(mask)
        if image.ndim != first.ndim or image.shape[0] != first.shape[0]:
            raise InputError(f"image {i}: shape {image.shape} does not match image 0's {first.shape} "
                             f"(same dimensions and channels needed)")
        if tuple(mask.shape) != tuple(image.shape[1:]):
            raise InputError(f"mask {i}: shape {mask.shape} differs from its image's {image.shape[1:]}")
    k = max(int(np.max(m)) for m in masks) if n_classes is None else int(n_classes)
    if k < 1:
        raise InputError("masks: no foreground in any mask (need labels 1..K to learn what a good mask is)")
    return images, masks, k


def train_quality(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], *, n_classes: int | None = None,
                  extra: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]] = (), epochs: int = 20,
                  samples_per_image: int = 8, size: int | None = None, batch_size: int = 32, lr: float = 2e-3,
                  preprocessing: dict | None = None, seed: int = 0, device=None,
                  progress: Progress = None) -> QualityModel:
    """Train a quality model on ``images`` and degraded versions of their ``masks``.

    Parameters
    ----------
    images : sequence of ndarray (C, *spatial)
    masks : sequence of ndarray (*spatial)
        True (or accepted) masks, labels 0..K.
    n_classes : int, optional
        K (default: the largest label in ``masks``).
    extra : sequence of (image, prediction, truth)
        Real predictions with their truth, added to the degraded samples.
    epochs, batch_size, lr : training (Adam, learning rate decayed linearly to 0).
    samples_per_image : int
        Degraded masks per training mask.
    size : int, optional
        Input size per axis (default 64 in 2D, 32 in 3D).
    preprocessing : dict, optional
        How the images were read, stored with the model.
    seed : int
        Seeds the degradations, the validation images, the initialisation and the batches.
    device : str, optional
        ``None``: CUDA when present, else CPU.

    Returns
    -------
    QualityModel
        ``info["history"]``: per epoch ``loss`` and ``val_loss``; ``info["val_pearson_dice"]``.
    """
    from hitlseg.flim.fit import resolve_device

    for name, value in (("epochs", epochs), ("samples_per_image", samples_per_image), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name}: must be a positive integer, got {value!r}")
    images, masks, k = _check_training(images, masks, n_classes)
    extra = list(extra)
    started = time.perf_counter()
    dev = resolve_device(device)
    fp = fingerprint(images, k)
    ndim = images[0].ndim - 1
    model = QualityModel.new(images[0].shape[0], k, ndim, fp, size=size, preprocessing=preprocessing, seed=seed)
    n_val = int(round(VALIDATION_SHARE * len(images))) if len(images) >= MIN_VALIDATION_IMAGES else 0
    val_sources = set(np.random.default_rng([seed, 1]).permutation(len(images))[:max(n_val, 0)].tolist())

    building = nested(progress, 0.0, 0.3, "degrading masks")
    x_image, x_mask, y, source, is_val = [], [], [], [], []
    count = len(images) + len(extra)
    for i, (image, mask) in enumerate(zip(images, masks)):
        report(building, i, count, f"image {i + 1}/{len(images)}")
        image, mask = model.check_pair(image, mask, f"training image {i}")
        x_image.append(model.inputs(image, np.zeros_like(mask))[: model.in_channels])
        rng = np.random.default_rng([seed, 2, i])
        for _ in range(samples_per_image):
            degraded, _ = random_degradation(mask, rng, k)
            x_mask.append(resize(one_hot(degraded, k)[None], model.size)[0].half())
            target = similarity(degraded, mask, k)
            y.append([target[m] for m in MEASURES])
            source.append(i)
            is_val.append(i in val_sources)
    for j, (image, prediction, truth) in enumerate(extra):
        report(building, len(images) + j, count, f"prediction {j + 1}/{len(extra)}")
        image, prediction = model.check_pair(image, prediction, f"training prediction {j}")
        _, truth = model.check_pair(image, truth, f"truth of training prediction {j}")
        x_image.append(model.inputs(image, prediction)[: model.in_channels])
        x_mask.append(resize(one_hot(prediction, k)[None], model.size)[0].half())
        target = similarity(prediction, truth, k)
        y.append([target[m] for m in MEASURES])
        source.append(len(images) + j)
        is_val.append(False)
    bank_images = torch.stack(x_image)
    bank_masks = torch.stack(x_mask)
    targets = torch.tensor(y, dtype=torch.float32)
    source_t = torch.tensor(source)
    is_val = np.asarray(is_val)
    train_rows, val_rows = np.flatnonzero(~is_val), np.flatnonzero(is_val)

    def batch(rows, flip_rng=None):
        x = torch.cat([bank_images[source_t[rows]], bank_masks[rows].float()], 1)
        if flip_rng is not None:
            for axis in range(ndim):
                if flip_rng.random() < 0.5:
                    x = x.flip(2 + axis)
        return x.to(dev), targets[rows].to(dev)

    net = model.net.to(dev)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        optimiser = torch.optim.Adam(net.parameters(), lr=lr)
        steps = epochs * max(1, int(np.ceil(len(train_rows) / batch_size)))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: max(0.0, 1.0 - step / steps))
        history, best, best_state = [], np.inf, None
        training = nested(progress, 0.3, 1.0, "training")
        for epoch in range(epochs):
            rng = np.random.default_rng([seed, 3, epoch])
            order = train_rows[rng.permutation(len(train_rows))]
            net.train()
            losses = []
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                if len(rows) < 2:  # batch norm needs two samples
                    continue
                x, t = batch(rows, rng)
                loss = torch.nn.functional.mse_loss(net(x), t)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                losses.append(float(loss.detach()))
            record = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan")}
            if len(val_rows):
                predicted = _predict_rows(net, batch, val_rows, batch_size)
                record["val_loss"] = float(((predicted - targets[val_rows].numpy()) ** 2).mean())
                record["val_pearson_dice"] = _pearson(predicted[:, 0], targets[val_rows, 0].numpy())
                if record["val_loss"] < best:
                    best = record["val_loss"]
                    best_state = {n: v.detach().clone() for n, v in net.state_dict().items()}
            history.append(record)
            report(training, epoch + 1, epochs, f"epoch {epoch + 1}/{epochs}, loss {record['loss']:.4f}"
                   + (f", validation {record['val_loss']:.4f}" if "val_loss" in record else ""))
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    best_epoch = min(history, key=lambda r: r.get("val_loss", np.inf)) if len(val_rows) else history[-1]
    model.info = {"history": history, "epochs": epochs, "best_epoch": best_epoch["epoch"], "seed": seed,
                  "training_images": len(images) - len(val_sources), "validation_images": len(val_sources),
                  "degraded_samples": len(images) * samples_per_image, "real_predictions": len(extra),
                  "samples_per_image": samples_per_image, "val_pearson_dice": best_epoch.get("val_pearson_dice"),
                  "seconds": time.perf_counter() - started}
    return model


def _predict_rows(net, batch, rows, batch_size) -> np.ndarray:
    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            x, _ = batch(rows[start:start + batch_size])
            out.append(net(x).cpu().numpy())
    return np.concatenate(out)


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])
