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
from skimage.filters import threshold_otsu

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


def _otsu(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0 or values.max() <= values.min():
        return float(values.max()) if values.size else 0.0
    return float(threshold_otsu(values))


def weight_rule(features: torch.Tensor) -> torch.Tensor:
    """Per-map weights (+1 foreground, -1 background, 0 ignored) of the ``weights`` rule.

    ``features`` is (C, *spatial), already min-max normalised per map.
    """
    flat = features.flatten(1)
    active = flat.amax(1) > 0
    means = flat.mean(1).cpu().numpy()
    if active.sum() < 2:
        return active.float()
    threshold = _otsu(means[active.cpu().numpy()])
    spread = float(means[active.cpu().numpy()].var())
    low = threshold - spread if threshold > 0.1 else threshold
    high = threshold + spread
    weights = torch.zeros(len(flat), device=features.device)
    for c in range(len(flat)):
        if not active[c]:
            continue
        band = flat[c]
        band_threshold = _otsu(band.cpu().numpy())
        proportion = float((band > band_threshold).float().mean())
        if means[c] >= high and proportion > 0.2:
            weights[c] = -1
        elif means[c] <= low and proportion < 0.1:
            weights[c] = 1
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
    above = np.stack([s > _otsu(s) if s.max() > s.min() else np.zeros(s.shape, bool) for s in saliency])
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
