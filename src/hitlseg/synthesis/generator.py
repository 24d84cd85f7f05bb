"""Training the mask-conditioned generator, and the trained :class:`Synthesizer`.

Mahapatra et al. (MICCAI 2018) generate realistic images from altered masks of annotated images
with a conditional GAN. This trains the pix2pix-style pair of :mod:`hitlseg.synthesis.networks`
(Isola et al., CVPR 2017) on random crops of (image, mask) pairs: least-squares adversarial loss
(Mao et al., ICCV 2017) plus L1 to the real image, optionally plus an L1 between the frozen FLIM
encoder's features of the generated and the real image (a perceptual loss, Johnson et al.,
ECCV 2016). Both networks are fully convolutional: the synthesizer generates full-size images.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hitlseg.errors import InputError
from hitlseg.flim.fit import resolve_device
from hitlseg.progress import Progress, report
from hitlseg.synthesis.alter import check_mask
from hitlseg.synthesis.networks import (PatchDiscriminator, UNetGenerator, class_statistics, conditioning,
                                        pad_to_multiple)

FORMAT = "hitlseg-synthesizer"


@dataclass
class GeneratorConfig:
    """Settings of :func:`train_generator`.

    Attributes
    ----------
    steps : int
        Optimisation steps (each: one discriminator and one generator update on a batch).
    batch_size : int
        Crops per step.
    crop : int
        Crop side per spatial axis (images smaller than it are used whole; clipped to the
        smallest training image).
    lr : float
        Adam learning rate of both networks (betas 0.5, 0.999 as in pix2pix).
    l1_weight, adversarial_weight, perceptual_weight : float
        Loss weights: L1 to the real image (100 in pix2pix), least-squares adversarial, and L1
        on FLIM encoder features (used only when an encoder is given).
    width, depth : int
        Channels of the first layer and number of downsamplings of the generator.
    seed : int
        Seed of the initialisation, crops and flips.
    device : str or None
        ``None``: CUDA when present, else CPU.
    """

    steps: int = 600
    batch_size: int = 4
    crop: int = 64
    lr: float = 2e-4
    l1_weight: float = 100.0
    adversarial_weight: float = 1.0
    perceptual_weight: float = 10.0
    width: int = 32
    depth: int = 3
    seed: int = 0
    device: str | None = None

    def __post_init__(self):
        for name in ("steps", "batch_size", "crop", "width", "depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"{name}: must be a positive integer, got {value!r}")
        if self.crop < 2 ** self.depth:
            raise InputError(f"crop: must be at least 2**depth = {2 ** self.depth}, got {self.crop}")
        for name in ("lr", "l1_weight", "adversarial_weight", "perceptual_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise InputError(f"{name}: must be a non-negative number, got {value!r}")
        if not self.lr > 0:
            raise InputError(f"lr: must be positive, got {self.lr!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GeneratorConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def check_pairs(pairs, name: str = "pairs", n_classes: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, mask) pairs as float32 ``(C, *spatial)`` images and integer masks of the same spatial shape.

    All images must share channels and dimensions; raises :class:`InputError` naming the pair.
    """
    pairs = list(pairs)
    if not pairs:
        raise InputError(f"{name}: empty, need at least one (image, mask) pair")
    checked = []
    for index, pair in enumerate(pairs):
        where = f"{name}[{index}]"
        try:
            image, mask = pair[0], pair[1]
        except (TypeError, IndexError, KeyError):
            raise InputError(f"{where}: expected an (image, mask) pair") from None
        image = np.asarray(image, dtype=np.float32)
        mask = check_mask(mask, f"{where} mask")
        if image.ndim != mask.ndim + 1:
            raise InputError(f"{where}: image must be (C, *spatial) with the mask's {mask.ndim} spatial axes, "
                             f"got image shape {image.shape} and mask shape {mask.shape}")
        if image.shape[1:] != mask.shape:
            raise InputError(f"{where}: mask shape {mask.shape} differs from image shape {image.shape[1:]}")
        if not np.isfinite(image).all():
            raise InputError(f"{where}: image holds NaN or infinite values")
        if checked and (image.shape[0], image.ndim) != (checked[0][0].shape[0], checked[0][0].ndim):
            raise InputError(f"{where}: a {image.shape[0]}-channel {mask.ndim}D image among "
                             f"{checked[0][0].shape[0]}-channel {checked[0][1].ndim}D images")
        if n_classes is not None and mask.size and int(mask.max()) > n_classes:
            raise InputError(f"{where}: mask label {int(mask.max())} exceeds the {n_classes} classes")
        checked.append((image, mask))
    return checked


def _crop(image, mask, crop, rng):
    starts = [int(rng.integers(0, s - c + 1)) for s, c in zip(mask.shape, crop)]
    region = tuple(slice(a, a + c) for a, c in zip(starts, crop))
    image, mask = image[(slice(None),) + region], mask[region]
    for axis in range(mask.ndim):
        if rng.random() < 0.5:
            image, mask = np.flip(image, axis + 1), np.flip(mask, axis)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def _perceptual(encoder, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        targets = encoder.features(real)
    return sum(torch.nn.functional.l1_loss(f, t) for f, t in zip(encoder.features(fake), targets)) / len(targets)


def train_generator(pairs: Sequence, config: GeneratorConfig | None = None, *, encoder=None,
                    n_classes: int | None = None, start: "Synthesizer | None" = None,
                    progress: Progress = None) -> "Synthesizer":
    """Train a mask-conditioned generator on (image, mask) pairs (Mahapatra et al., MICCAI 2018).

    Parameters
    ----------
    pairs : sequence of (ndarray, ndarray)
        Images ``(C, *spatial)`` float32 and integer masks ``(*spatial)`` (0 background, 1..K).
    config : GeneratorConfig, optional
    encoder : hitlseg.flim.FLIMEncoder, optional
        A frozen FLIM encoder of these images; adds the perceptual L1 on its features.
    n_classes : int, optional
        Object classes K (default: the largest label of the masks).
    start : Synthesizer, optional
        Continue training this synthesizer's networks (e.g. on the pairs of a later active-learning
        round) instead of fresh ones; its classes, channels and dimension must match the pairs.
        Its networks are trained in place; the widths of ``config`` are not used.
    progress : callable, optional
        ``progress(step, steps, message)``.

    Returns
    -------
    Synthesizer
        The trained generator and discriminator; ``history`` holds the mean losses per 10 % of the
        steps (after ``start``'s own history, when given).
    """
    config = config or GeneratorConfig()
    pairs = check_pairs(pairs, n_classes=n_classes)
    if start is not None and n_classes is None:
        n_classes = start.n_classes
    n_classes = int(max(int(m.max()) for _, m in pairs)) if n_classes is None else int(n_classes)
    if n_classes < 1:
        raise InputError("pairs: the masks hold no object class (every pixel is 0)")
    channels, ndim = pairs[0][0].shape[0], pairs[0][1].ndim
    if encoder is not None and (encoder.in_channels, encoder.ndim) != (channels, ndim):
        raise InputError(f"encoder: takes {encoder.in_channels}-channel {encoder.ndim}D images, the pairs are "
                         f"{channels}-channel {ndim}D")
    device = resolve_device(config.device)
    smallest = [min(m.shape[a] for _, m in pairs) for a in range(ndim)]
    crop = tuple(min(config.crop, s) for s in smallest)
    stats = [class_statistics(image, mask, n_classes) for image, mask in pairs]
    if start is not None:
        if (start.n_classes, start.channels, start.ndim) != (n_classes, channels, ndim):
            raise InputError(f"start: the synthesizer makes {start.channels}-channel {start.ndim}D images of "
                             f"{start.n_classes} classes, the pairs are {channels}-channel {ndim}D with {n_classes}")
        generator, discriminator = start.generator.to(device).train(), start.discriminator.to(device).train()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            generator = UNetGenerator(n_classes + 1, channels, ndim, config.width, config.depth).to(device)
            discriminator = PatchDiscriminator(n_classes + 1, channels, ndim, config.width).to(device)
    if encoder is not None:
        encoder = encoder.to(device).eval()
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=(0.5, 0.999))
    rng = np.random.default_rng(config.seed)
    history, window, started = [], [], time.perf_counter()
    every = max(1, config.steps // 10)
    for step in range(config.steps):
        conds, reals = [], []
        for index in rng.integers(0, len(pairs), config.batch_size):
            image, mask = _crop(*pairs[index], crop, rng)
            conds.append(conditioning(mask, stats[index]))
            reals.append(image)
        x = torch.from_numpy(np.stack(conds)).to(device)
        real = torch.from_numpy(np.stack(reals)).to(device)
        x, region = pad_to_multiple(x, generator.multiple)
        fake = generator(x)[(slice(None), slice(None)) + region]
        one_hot = x[(slice(None), slice(0, n_classes + 1)) + region]
        # discriminator: real pairs towards 1, generated towards 0 (least squares)
        d_loss = 0.5 * (((discriminator(real, one_hot) - 1) ** 2).mean() + (discriminator(fake.detach(), one_hot) ** 2).mean())
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        adversarial = ((discriminator(fake, one_hot) - 1) ** 2).mean()
        l1 = torch.nn.functional.l1_loss(fake, real)
        g_loss = config.adversarial_weight * adversarial + config.l1_weight * l1
        perceptual = torch.zeros(())
        if encoder is not None and config.perceptual_weight > 0:
            perceptual = _perceptual(encoder, fake, real)
            g_loss = g_loss + config.perceptual_weight * perceptual
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        losses = tuple(float(v.detach()) for v in (l1, adversarial, d_loss, perceptual))
        window.append(losses)
        if (step + 1) % every == 0 or step + 1 == config.steps:
            l1_mean, adv_mean, d_mean, perc_mean = np.mean(window, axis=0)
            history.append({"step": step + 1, "l1": float(l1_mean), "adversarial": float(adv_mean),
                            "discriminator": float(d_mean), "perceptual": float(perc_mean),
                            "seconds": time.perf_counter() - started})
            window = []
        report(progress, step + 1, config.steps, f"generator step {step + 1}/{config.steps} L1 {losses[0]:.4f}")
    generator.eval()
    discriminator.eval()
    low = float(min(i.min() for i, _ in pairs))
    high = float(max(i.max() for i, _ in pairs))
    seconds = time.perf_counter() - started
    if start is not None:
        low, high = min(low, start.value_range[0]), max(high, start.value_range[1])
        done = start.history[-1]["step"] if start.history else 0
        history = start.history + [{**h, "step": h["step"] + done, "seconds": h["seconds"] + start.seconds}
                                   for h in history]
        seconds += start.seconds
        config = replace(config, steps=start.config.steps + config.steps, width=start.config.width,
                         depth=start.config.depth)  # the widths rebuild the networks on load
    return Synthesizer(generator, discriminator, config, n_classes, (low, high), history, seconds)


class Synthesizer:
    """A trained mask-conditioned generator: new images for (altered) masks in a source image's style.

    Attributes
    ----------
    generator, discriminator : torch.nn.Module
    config : GeneratorConfig
    n_classes : int
        Object classes K the masks may hold.
    value_range : (float, float)
        Range of the training images; generated images are clipped to it.
    history : list of dict
        Loss means during training (see :func:`train_generator`).
    seconds : float
        Training time.
    """

    def __init__(self, generator: UNetGenerator, discriminator: PatchDiscriminator, config: GeneratorConfig,
                 n_classes: int, value_range: tuple[float, float], history: list | None = None, seconds: float = 0.0):
        self.generator, self.discriminator, self.config = generator, discriminator, config
        self.n_classes, self.value_range = int(n_classes), (float(value_range[0]), float(value_range[1]))
        self.history, self.seconds = list(history or []), float(seconds)

    @property
    def channels(self) -> int:
        return self.generator.channels

    @property
    def ndim(self) -> int:
        return self.generator.ndim

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def _check(self, mask, image=None, what: str = "mask"):
        mask = check_mask(mask, what)
        if mask.ndim != self.ndim:
            raise InputError(f"{what}: the generator is {self.ndim}D, got a {mask.ndim}D mask of shape {mask.shape}")
        if mask.size and int(mask.max()) > self.n_classes:
            raise InputError(f"{what}: label {int(mask.max())} exceeds the generator's {self.n_classes} classes")
        if image is not None:
            image = np.asarray(image, dtype=np.float32)
            if image.ndim != self.ndim + 1 or image.shape[0] != self.channels:
                raise InputError(f"source_image: need a {self.channels}-channel {self.ndim}D image "
                                 f"(C, *spatial), got shape {image.shape}")
        return mask, image

    def generate(self, mask, source_image, source_mask=None) -> np.ndarray:
        """A new image ``(C, *spatial)`` for ``mask``, with the appearance of ``source_image``.

        Parameters
        ----------
        mask : ndarray of int, (*spatial)
            The (altered) mask the image is generated for; any size (fully convolutional).
        source_image : ndarray, (C, *spatial_source)
            The image whose per-class colours the new image takes.
        source_mask : ndarray of int, (*spatial_source), optional
            The source image's own mask (default ``mask``, which must then have its shape).

        Returns
        -------
        ndarray, float32, (C, *spatial)
        """
        mask, source_image = self._check(mask, source_image)
        source_mask = mask if source_mask is None else self._check(source_mask, what="source_mask")[0]
        if source_mask.shape != source_image.shape[1:]:
            raise InputError(f"source_mask: shape {source_mask.shape} differs from source image shape "
                             f"{source_image.shape[1:]}")
        stats = class_statistics(source_image, source_mask, self.n_classes)
        x = torch.from_numpy(conditioning(mask, stats))[None].to(self.device)
        x, region = pad_to_multiple(x, self.generator.multiple)
        with torch.no_grad():
            y = self.generator(x)[(0, slice(None)) + region]
        return np.clip(y.cpu().numpy(), *self.value_range).astype(np.float32)

    def realism(self, image, mask) -> float:
        """Mean PatchGAN score of ``(image, mask)``: near 1 for pairs the discriminator takes as real, near 0 for fakes."""
        mask, image = self._check(mask, image)
        if image.shape[1:] != mask.shape:
            raise InputError(f"image: shape {image.shape[1:]} differs from mask shape {mask.shape}")
        one_hot = (np.arange(self.n_classes + 1).reshape((-1,) + (1,) * mask.ndim) == mask[None]).astype(np.float32)
        with torch.no_grad():
            score = self.discriminator(torch.from_numpy(image)[None].to(self.device),
                                       torch.from_numpy(one_hot)[None].to(self.device))
        return float(score.mean())

    # -- persistence ------------------------------------------------------------------------------
    def to_state(self) -> dict:
        """Plain dictionary: format, config, classes, channels, range, history and both state dicts."""
        return {"format": FORMAT, "config": self.config.to_dict(), "n_classes": self.n_classes,
                "channels": self.channels, "ndim": self.ndim, "value_range": list(self.value_range),
                "history": self.history, "seconds": self.seconds,
                "generator": {k: v.detach().cpu() for k, v in self.generator.state_dict().items()},
                "discriminator": {k: v.detach().cpu() for k, v in self.discriminator.state_dict().items()}}

    def save(self, path: str | Path) -> Path:
        """Write the synthesizer to a ``.pt`` file, atomically (a few MB with the default widths)."""
        from hitlseg.flim.model import save_state

        return save_state(self.to_state(), path)

    @classmethod
    def load(cls, path: str | Path, device=None) -> "Synthesizer":
        """Read a file written by :meth:`save`; another file raises :class:`InputError` naming it."""
        from hitlseg.flim.model import load_state

        state = load_state(path)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise InputError(f"{path}: not a hitlseg synthesizer file")
        try:
            config = GeneratorConfig.from_dict(state["config"])
            n_classes, channels, ndim = int(state["n_classes"]), int(state["channels"]), int(state["ndim"])
            generator = UNetGenerator(n_classes + 1, channels, ndim, config.width, config.depth)
            discriminator = PatchDiscriminator(n_classes + 1, channels, ndim, config.width)
            generator.load_state_dict(state["generator"])
            discriminator.load_state_dict(state["discriminator"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"{path}: corrupt synthesizer file ({type(exc).__name__}: {str(exc)[:200]})") from None
        device = resolve_device(device)
        out = cls(generator.to(device).eval(), discriminator.to(device).eval(), config, n_classes,
                  tuple(state["value_range"]), state.get("history"), state.get("seconds", 0.0))
        return out
