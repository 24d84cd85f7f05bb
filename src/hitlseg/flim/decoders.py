"""Adaptive decoders: saliency and masks from FLIM features, with no parameter learned by backprop.

Three rules combine the feature maps of one image into a saliency map in [0, 1]:

``weights``
    Each map is judged by its activation: maps that are sparse and weakly active (mean below the
    Otsu threshold of all maps' means, few pixels above their own Otsu threshold) are foreground
    (+1); widespread, strongly active maps are background (-1); the rest are ignored. Needs no
    kernel classes and gives one foreground map.
``labels``
    +1 for kernels learned from markers of the object class, -1 for the others (background).
``mean``
    Per pixel, the mean activation of object kernels is compared with that of background kernels
    over a small neighbourhood; object kernels count where the object mean wins, background
    kernels subtract where the background mean wins.

``labels`` and ``mean`` give one map per object class (a class against all other markers) and need
kernels of at least two classes. Masks come from Otsu thresholds of the saliency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hitlseg.errors import InputError

DECODERS = ("weights", "labels", "mean")


@dataclass
class Decoded:
    """Saliency ``(K, *spatial)`` in [0, 1] (one map per object class) and a label mask ``(*spatial)``."""

    saliency: np.ndarray
    mask: np.ndarray


def _minmax(x: torch.Tensor, dims) -> torch.Tensor:
    low = x.amin(dim=dims, keepdim=True)
    high = x.amax(dim=dims, keepdim=True)
    span = high - low
    return torch.where(span > 0, (x - low) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(x))


def _by_max(x: torch.Tensor, dims) -> torch.Tensor:
    high = x.amax(dim=dims, keepdim=True)
    return torch.where(high > 0, x / torch.where(high > 0, high, torch.ones_like(high)), torch.zeros_like(x))


def otsu_thresholds(values: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Otsu threshold of each row of ``values`` (R, N), from a ``bins``-bin histogram per row.

    Rows without spread get their single value as threshold.
    """
    low = values.amin(1, keepdim=True)
    high = values.amax(1, keepdim=True)
    span = (high - low).clamp(min=1e-12)
    index = ((values - low) / span * (bins - 1)).round().long().clamp(0, bins - 1)
    offsets = torch.arange(len(values), device=values.device)[:, None] * bins
    hist = torch.bincount((index + offsets).ravel(), minlength=len(values) * bins).reshape(len(values), bins).double()
    centers = torch.arange(bins, device=values.device, dtype=torch.float64)
    weight0 = hist.cumsum(1)
    weight1 = weight0[:, -1:] - weight0
    sum0 = (hist * centers).cumsum(1)
    mean0 = sum0 / weight0.clamp(min=1e-12)
    mean1 = (sum0[:, -1:] - sum0) / weight1.clamp(min=1e-12)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    best = between[:, :-1].argmax(1).double() + 0.5  # threshold between bins best and best + 1
    thresholds = low[:, 0].double() + best * (span[:, 0].double() / (bins - 1))
    flat = (high - low)[:, 0] <= 0
    return torch.where(flat, low[:, 0].double(), thresholds).to(values.dtype)


def weight_rule(features: torch.Tensor) -> torch.Tensor:
    """Per-map weights (+1 foreground, -1 background, 0 ignored) of the ``weights`` rule.

    ``features`` is (C, *spatial), already min-max normalised per map.
    """
    flat = features.flatten(1)
    active = flat.amax(1) > 0
    weights = torch.zeros(len(flat), device=features.device)
    if active.sum() < 2:
        return active.float()
    means = flat.mean(1)
    active_means = means[active]
    threshold = float(otsu_thresholds(active_means[None])[0])
    spread = float(active_means.var(unbiased=False))
    low = threshold - spread if threshold > 0.1 else threshold
    high = threshold + spread
    proportion = (flat > otsu_thresholds(flat)[:, None]).float().mean(1)
    weights[active & (means >= high) & (proportion > 0.2)] = -1
    weights[active & (means <= low) & (proportion < 0.1)] = 1
    return weights


def _check_classes(kernel_classes: torch.Tensor, rule: str) -> list[int]:
    classes = sorted(int(c) for c in torch.unique(kernel_classes))
    objects = [c for c in classes if c > 0]
    if 0 not in classes or not objects:
        which = "background" if 0 not in classes else "object"
        raise InputError(
            f"decoder {rule!r}: needs kernels from background and object markers, but no kernel came from "
            f"{which} markers (mark both classes, or use the 'weights' decoder)"
        )
    return objects


def saliency_maps(features: torch.Tensor, kernel_classes: torch.Tensor | None, rule: str = "labels",
                  n_classes: int | None = None) -> torch.Tensor:
    """Saliency maps (K, *spatial) in [0, 1] of one image's features (C, *spatial) at feature resolution."""
    if rule not in DECODERS:
        raise InputError(f"decoder: unknown rule {rule!r} (use one of {', '.join(DECODERS)})")
    dims = tuple(range(1, features.dim()))
    if rule == "weights":
        normalized = _minmax(features, dims)
        weights = weight_rule(normalized).reshape((-1,) + (1,) * (features.dim() - 1))
        return _minmax(torch.relu((normalized * weights).sum(0, keepdim=True)), dims)
    if kernel_classes is None:
        raise InputError(f"decoder {rule!r}: needs the class of each kernel")
    objects = _check_classes(kernel_classes, rule)
    if n_classes is not None:
        objects = list(range(1, n_classes + 1))
    normalized = _by_max(features, dims)
    maps = []
    for cls in objects:
        positive = kernel_classes == cls
        negative = ~positive
        if not positive.any():
            maps.append(torch.zeros_like(features[0]))
            continue
        if rule == "labels":
            combined = normalized[positive].sum(0) - normalized[negative].sum(0)
        else:
            pool = F.avg_pool2d if features.dim() == 3 else F.avg_pool3d
            local = lambda x: pool(x.mean(0, keepdim=True)[None], 3, 1, 1, count_include_pad=False)[0, 0]
            object_mean, background_mean = local(normalized[positive]), local(normalized[negative])
            combined = (normalized[positive].sum(0) * (object_mean > background_mean)
                        - normalized[negative].sum(0) * (object_mean < background_mean))
        maps.append(torch.relu(combined))
    stacked = torch.stack(maps)
    return _minmax(stacked, tuple(range(1, stacked.dim())))


def upsample(maps: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Resize (K, *spatial) maps to ``shape`` with (bi/tri)linear interpolation."""
    if tuple(maps.shape[1:]) == tuple(shape):
        return maps
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return F.interpolate(maps[None], size=tuple(shape), mode=mode, align_corners=False)[0].clamp(0, 1)


def masks_from_saliency(saliency: np.ndarray) -> np.ndarray:
    """Label mask from (K, *spatial) saliency: Otsu per class map, ties to the most salient class."""
    saliency = np.asarray(saliency)
    flat = torch.from_numpy(saliency.reshape(len(saliency), -1))
    thresholds = otsu_thresholds(flat).numpy().reshape((-1,) + (1,) * (saliency.ndim - 1))
    spread = (saliency.reshape(len(saliency), -1).max(1) > saliency.reshape(len(saliency), -1).min(1))
    above = (saliency > thresholds) & spread.reshape(thresholds.shape)
    scored = np.where(above, saliency, -1.0)
    best = scored.argmax(0)
    return np.where(above.any(0), best + 1, 0).astype(np.uint8)


def decode(features: torch.Tensor, kernel_classes: torch.Tensor | None, shape: tuple[int, ...], rule: str = "labels",
           n_classes: int | None = None) -> Decoded:
    """Saliency and mask at image resolution ``shape`` from one image's features (C, *spatial)."""
    with torch.no_grad():
        maps = upsample(saliency_maps(features, kernel_classes, rule, n_classes), shape)
    saliency = maps.cpu().numpy().astype(np.float32)
    return Decoded(saliency, masks_from_saliency(saliency))
