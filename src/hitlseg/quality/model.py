"""The quality network and the quality model on disk.

Galdran et al., "A no-reference quality metric for retinal vessel tree segmentation" (MICCAI
2018): a small CNN sees the image and a segmentation of it and regresses how similar the
segmentation is to the (unseen) truth. Here the input is the image's channels (standardised by
the training fingerprint) and the one-hot mask (K + 1 channels), both resized to a fixed
``size`` per axis by area averaging, so images of any size are scored and a one-pixel error
stays visible as a fractional value; the outputs are the mean foreground Dice and the
normalised mutual information (:mod:`hitlseg.quality.measures`), through a sigmoid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hitlseg import __version__
from hitlseg.errors import InputError
from hitlseg.plain import to_plain
from hitlseg.progress import Progress, report
from hitlseg.quality.measures import MEASURES

FORMAT = "hitlseg-quality-model"
#: Input size per axis by dimensionality.
DEFAULT_SIZE = {2: 64, 3: 32}
WIDTHS = (16, 32, 64, 64)


class QualityNet(nn.Module):
    """Conv-BN-ReLU blocks (max-pooled between them), global mean and max pooling, a two-layer head."""

    def __init__(self, in_channels: int, ndim: int = 2, widths: Sequence[int] = WIDTHS, outputs: int = len(MEASURES)):
        super().__init__()
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if ndim == 2 else (nn.Conv3d, nn.BatchNorm3d)
        self.pool = nn.MaxPool2d(2) if ndim == 2 else nn.MaxPool3d(2)
        blocks, previous = [], in_channels
        for width in widths:
            blocks.append(nn.Sequential(conv(previous, width, 3, padding=1, bias=False), norm(width), nn.ReLU(inplace=True)))
            previous = width
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.Linear(2 * previous, 64), nn.ReLU(inplace=True), nn.Linear(64, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, block in enumerate(self.blocks):
            if index:
                x = self.pool(x)
            x = block(x)
        flat = x.flatten(2)
        return torch.sigmoid(self.head(torch.cat([flat.mean(2), flat.amax(2)], dim=1)))


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``(N, C, *spatial)`` to ``(N, C, *size)`` by area averaging (nearest replication when enlarging)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="area")


def one_hot(mask: np.ndarray, n_classes: int) -> torch.Tensor:
    """``(K + 1, *spatial)`` float32 indicator of each label 0..K."""
    t = torch.as_tensor(np.asarray(mask, dtype=np.int64))
    return F.one_hot(t, n_classes + 1).movedim(-1, 0).float()


@dataclass
class QualityModel:
    """A trained quality network with what it needs to score new (image, mask) pairs.

    Attributes
    ----------
    net : QualityNet
    n_classes : int
        K: masks hold labels 0..K.
    in_channels, ndim : int
    size : tuple of int
        Input size per axis.
    fingerprint : dict
        The training images' fingerprint (:mod:`hitlseg.quality.fingerprint`).
    preprocessing : dict
        How images were read (``color``, ``normalize``), for :func:`hitlseg.io.read_image`.
    info : dict
        Provenance: training history, sample counts (plain values).
    """

    net: QualityNet
    n_classes: int
    in_channels: int
    ndim: int
    size: tuple[int, ...]
    fingerprint: dict
    preprocessing: dict = field(default_factory=lambda: {"color": "lab", "normalize": "percentile"})
    info: dict = field(default_factory=dict)

    @classmethod
    def new(cls, in_channels: int, n_classes: int, ndim: int, fingerprint: dict, *, size: int | None = None,
            preprocessing: dict | None = None, seed: int = 0) -> "QualityModel":
        """An untrained model (weights initialised with ``seed``)."""
        if ndim not in (2, 3):
            raise InputError(f"ndim: must be 2 or 3, got {ndim!r}")
        side = DEFAULT_SIZE[ndim] if size is None else int(size)
        if side < 2 ** (len(WIDTHS) - 1):
            raise InputError(f"size: must be at least {2 ** (len(WIDTHS) - 1)}, got {size!r}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = QualityNet(in_channels + n_classes + 1, ndim)
        return cls(net, int(n_classes), int(in_channels), int(ndim), (side,) * ndim, dict(fingerprint),
                   dict(preprocessing or {"color": "lab", "normalize": "percentile"}))

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device=None) -> "QualityModel":
        from hitlseg.flim.fit import resolve_device

        self.net.to(resolve_device(device))
        return self

    # -- inputs ----------------------------------------------------------------------------------
    def check_pair(self, image, mask, name: str = "image") -> tuple[np.ndarray, np.ndarray]:
        """``image`` as float32 and ``mask`` as int64, or :class:`InputError` naming ``name``."""
        image = np.asarray(image, dtype=np.float32)
        mask = np.asarray(mask)
        if image.ndim != self.ndim + 1:
            raise InputError(f"{name}: the quality model is {self.ndim}D and needs (C, *spatial) images, "
                             f"got shape {image.shape}")
        if image.shape[0] != self.in_channels:
            raise InputError(f"{name}: has {image.shape[0]} channels, but the quality model was trained on "
                             f"{self.in_channels}-channel images")
        if mask.dtype == bool:
            mask = mask.astype(np.uint8)
        if not np.issubdtype(mask.dtype, np.integer):
            raise InputError(f"{name}: the mask must hold integer labels, got dtype {mask.dtype}")
        if tuple(mask.shape) != tuple(image.shape[1:]):
            raise InputError(f"{name}: mask shape {tuple(mask.shape)} differs from the image's {tuple(image.shape[1:])}")
        low, high = int(mask.min()), int(mask.max())
        if low < 0 or high > self.n_classes:
            raise InputError(f"{name}: the mask has labels {low}..{high}, but the quality model knows 0..{self.n_classes}")
        return image, mask.astype(np.int64)

    def inputs(self, image: np.ndarray, mask: np.ndarray) -> torch.Tensor:
        """The network input ``(C + K + 1, *size)`` of a checked pair (on the CPU)."""
        mean = torch.tensor(self.fingerprint["intensity_mean"], dtype=torch.float32)
        std = torch.tensor(self.fingerprint["intensity_std"], dtype=torch.float32).clamp_min(1e-6)
        shape = (-1,) + (1,) * self.ndim
        x = (torch.as_tensor(image) - mean.view(shape)) / std.view(shape)
        return resize(torch.cat([x, one_hot(mask, self.n_classes)])[None], self.size)[0]

    # -- scoring ---------------------------------------------------------------------------------
    def score_many(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], names: Sequence[str] | None = None,
                   *, batch_size: int = 64, progress: Progress = None) -> list[dict[str, float]]:
        """Predicted ``{"dice", "nmi"}`` of each mask of its image (no ground truth read)."""
        images, masks = list(images), list(masks)
        if len(images) != len(masks):
            raise InputError(f"masks: {len(masks)} masks for {len(images)} images")
        names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
        out: list[dict[str, float]] = []
        was_training = self.net.training
        self.net.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(images), batch_size):
                    report(progress, start, len(images), "scoring")
                    batch = [self.inputs(*self.check_pair(images[i], masks[i], names[i]))
                             for i in range(start, min(start + batch_size, len(images)))]
                    values = self.net(torch.stack(batch).to(self.device)).cpu().numpy().astype(np.float64)
                    out += [dict(zip(MEASURES, (float(v) for v in row))) for row in values]
        finally:
            self.net.train(was_training)
        report(progress, len(images), len(images), "scored")
        return out

    def score(self, image: np.ndarray, mask: np.ndarray, name: str = "image") -> dict[str, float]:
        """Predicted ``{"dice", "nmi"}`` of ``mask`` (``(*spatial)`` labels 0..K) on ``image`` ``(C, *spatial)``."""
        return self.score_many([image], [mask], [name])[0]

    # -- persistence -----------------------------------------------------------------------------
    def to_state(self) -> dict:
        """Plain dictionary of tensors and values (see :meth:`save`)."""
        return {"format": FORMAT, "hitlseg_version": __version__, "n_classes": self.n_classes,
                "in_channels": self.in_channels, "ndim": self.ndim, "size": list(self.size),
                "widths": list(WIDTHS), "measures": list(MEASURES), "fingerprint": to_plain(self.fingerprint),
                "preprocessing": dict(self.preprocessing), "info": to_plain(self.info),
                "weights": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}}

    @classmethod
    def from_state(cls, state: dict, source: str = "quality model") -> "QualityModel":
        """Inverse of :meth:`to_state`; anything else raises :class:`InputError` naming ``source``."""
        from hitlseg.flim.model import brief_error, check_preprocessing, state_int, state_value

        if not isinstance(state, dict) or state.get("format") != FORMAT:
            kind = state.get("format") if isinstance(state, dict) else None
            hint = f" (it is a {kind} file)" if isinstance(kind, str) else ""
            raise InputError(f"{source}: not a hitlseg quality model file{hint}")
        try:
            n_classes, channels = state_int(state, "n_classes", 1), state_int(state, "in_channels", 1)
            ndim = state_int(state, "ndim", 2)
            size = state_value(state, "size", list)
            if ndim not in (2, 3) or len(size) != ndim or not all(isinstance(s, int) and s >= 8 for s in size):
                raise InputError(f"'ndim' {ndim} and 'size' {size!r} do not describe a 2D or 3D input")
            if tuple(state_value(state, "widths", list)) != WIDTHS or tuple(state_value(state, "measures", list)) != MEASURES:
                raise InputError("written by another version of the quality network")
            fp = state_value(state, "fingerprint", dict)
            for key in ("ndim", "channels", "intensity_mean", "intensity_std"):
                if key not in fp:
                    raise InputError(f"'fingerprint' lacks {key!r}")
            model = cls.new(channels, n_classes, ndim, fp, size=size[0],
                            preprocessing=check_preprocessing(state_value(state, "preprocessing", dict)))
            weights = state_value(state, "weights", dict)
            if not all(isinstance(v, torch.Tensor) for v in weights.values()):
                raise InputError("'weights' must map names to tensors")
            model.net.load_state_dict(weights)
            model.info = dict(state_value(state, "info", dict))
        except InputError as exc:
            raise InputError(f"{source}: corrupt quality model file: {exc}") from None
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"{source}: corrupt quality model file ({brief_error(exc)})") from None
        model.net.eval()
        return model

    def save(self, path: str | Path) -> Path:
        """Write the model to one file of plain tensors and values, atomically."""
        from hitlseg.flim.model import save_state

        return save_state(self.to_state(), path)

    @classmethod
    def load(cls, path: str | Path, device=None) -> "QualityModel":
        """Read a model written by :meth:`save` (refuses anything but tensors and plain values)."""
        from hitlseg.flim.model import load_state

        return cls.from_state(load_state(path), str(path)).to(device)
