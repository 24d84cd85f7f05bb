"""The networks of the mask-conditioned generator (pix2pix-style, 2D and 3D) and its conditioning input.

Isola et al. (CVPR 2017, "Image-to-image translation with conditional adversarial networks"): a
U-Net generator and a PatchGAN discriminator that judges ``(image, mask)`` pairs patch by patch.
Mahapatra et al. (MICCAI 2018) condition such a generator on an altered mask; here it also
receives an *appearance code*: the source image's mean and standard deviation per class,
painted into the regions of the (altered) mask. A new mask thereby gets the source image's
colours, and the generator adds texture and boundaries; its output is the painted mean plus a
learned residual.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _conv(ndim: int):
    return nn.Conv2d if ndim == 2 else nn.Conv3d


def _norm(ndim: int, channels: int) -> nn.Module:
    return (nn.InstanceNorm2d if ndim == 2 else nn.InstanceNorm3d)(channels, affine=True)


def class_statistics(image: np.ndarray, mask: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean and standard deviation of each channel inside each class 0..K: ``(K + 1, 2, C)``.

    A class absent from ``mask`` gets the whole image's statistics.
    """
    channels = image.reshape(image.shape[0], -1).astype(np.float64)
    labels = mask.reshape(-1)
    stats = np.empty((n_classes + 1, 2, image.shape[0]), dtype=np.float32)
    for label in range(n_classes + 1):
        inside = labels == label
        values = channels[:, inside] if inside.any() else channels
        stats[label, 0], stats[label, 1] = values.mean(1), values.std(1)
    return stats


def conditioning(mask: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """The generator's input for ``mask``: one-hot classes ``(K + 1)``, then the painted means and deviations ``(2C)``."""
    n_labels = stats.shape[0]
    one_hot = (np.arange(n_labels).reshape((-1,) + (1,) * mask.ndim) == mask[None]).astype(np.float32)
    painted = np.moveaxis(stats.reshape(n_labels, -1)[mask], -1, 0)  # (2C, *spatial)
    return np.concatenate([one_hot, painted.astype(np.float32)])


class UNetGenerator(nn.Module):
    """U-Net: ``depth`` stride-2 convolutions down, nearest upsampling and convolutions up, skips at every scale.

    Input: the :func:`conditioning` channels ``(K + 1 + 2C)``; output: an image of ``channels``
    channels, the painted class means plus a residual.
    """

    def __init__(self, n_labels: int, channels: int, ndim: int = 2, width: int = 32, depth: int = 3):
        super().__init__()
        conv = _conv(ndim)
        self.n_labels, self.channels, self.ndim, self.depth = n_labels, channels, ndim, depth
        widths = [width * 2 ** min(i, 2) for i in range(depth + 1)]
        self.stem = nn.Sequential(conv(n_labels + 2 * channels, widths[0], 3, padding=1), nn.LeakyReLU(0.2))
        self.down = nn.ModuleList(nn.Sequential(conv(widths[i], widths[i + 1], 4, stride=2, padding=1),
                                                _norm(ndim, widths[i + 1]), nn.LeakyReLU(0.2)) for i in range(depth))
        self.up = nn.ModuleList(nn.Sequential(conv(widths[i + 1] + widths[i], widths[i], 3, padding=1),
                                              _norm(ndim, widths[i]), nn.ReLU()) for i in reversed(range(depth)))
        self.head = conv(widths[0], channels, 1)
        nn.init.zeros_(self.head.weight)  # training starts from the painted class means
        nn.init.zeros_(self.head.bias)

    @property
    def multiple(self) -> int:
        """Spatial sizes must be multiples of this (the input is padded to one)."""
        return 2 ** self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x[:, self.n_labels:self.n_labels + self.channels]
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        y = skips.pop()
        for block in self.up:
            skip = skips.pop()
            y = nn.functional.interpolate(y, size=skip.shape[2:], mode="nearest")
            y = block(torch.cat([y, skip], dim=1))
        return mean + self.head(y)


class PatchDiscriminator(nn.Module):
    """PatchGAN: a map of real/fake scores, one per overlapping patch, of an ``(image, one-hot mask)`` pair."""

    def __init__(self, n_labels: int, channels: int, ndim: int = 2, width: int = 32):
        super().__init__()
        conv = _conv(ndim)
        self.net = nn.Sequential(
            conv(n_labels + channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            conv(width, 2 * width, 4, stride=2, padding=1), _norm(ndim, 2 * width), nn.LeakyReLU(0.2),
            conv(2 * width, 4 * width, 3, padding=1), _norm(ndim, 4 * width), nn.LeakyReLU(0.2),
            conv(4 * width, 1, 3, padding=1))

    def forward(self, image: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image, one_hot], dim=1))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """``x`` ``(N, C, *spatial)`` padded (edge values) at the end of each axis to a multiple, and the crop back."""
    spatial = x.shape[2:]
    extra = [(-s) % multiple for s in spatial]
    if not any(extra):
        return x, tuple(slice(None) for _ in spatial)
    pads = []
    for e in reversed(extra):
        pads += [0, e]
    return nn.functional.pad(x, pads, mode="replicate"), tuple(slice(0, s) for s in spatial)
