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
``gauss``
    Per pixel, the activations of object kernels and of background kernels over a small
    neighbourhood are each summarised by a Gaussian (mean, variance); an object kernel counts where
    its own activation is likelier under the object Gaussian, a background kernel subtracts where
    its activation is likelier under the background one (decoder 2 of Soares et al., "FLIM-based
    salient object detection networks with adaptive decoders", arXiv 2504.20872, 2025; ``mean`` is
    their decoder 3).

``labels``, ``mean`` and ``gauss`` give one map per object class (a class against all other
markers) and need kernels of at least two classes. Masks come from Otsu thresholds of the saliency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hitlseg.errors import InputError

from hitlseg.defaults import DECODER_CHOICES, DECODERS, DEFAULT_DECODER  # noqa: F401  (re-exported)


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


def _local_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over the maps ``x`` (N, *spatial) and a 3-pixel (voxel) neighbourhood: (*spatial)."""
    pool = F.avg_pool2d if x.dim() == 3 else F.avg_pool3d
    return pool(x.mean(0, keepdim=True)[None], 3, 1, 1, count_include_pad=False)[0, 0]


def _likelihood(x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Gaussian likelihood of each activation in ``x`` (N, *spatial) under the local statistics of ``maps``."""
    mean = _local_mean(maps)
    variance = _local_mean(maps * maps) - mean * mean
    variance = torch.where(variance < 1e-7, torch.ones_like(variance), variance)
    return torch.exp(-(x - mean) ** 2 / (2 * variance))


def _contrast(normalized: torch.Tensor, positive: torch.Tensor, rule: str) -> torch.Tensor:
    """Saliency of the kernels in ``positive`` against all others, by the ``labels``, ``mean`` or ``gauss`` rule."""
    negative = ~positive
    if not positive.any():
        return torch.zeros_like(normalized[0])
    objects, backgrounds = normalized[positive], normalized[negative]
    if rule == "labels" or not negative.any():
        combined = objects.sum(0) - backgrounds.sum(0)
    elif rule == "mean":
        object_mean, background_mean = _local_mean(objects), _local_mean(backgrounds)
        combined = (objects.sum(0) * (object_mean > background_mean)
                    - backgrounds.sum(0) * (object_mean < background_mean))
    else:
        # Per kernel and pixel: is its activation likelier under the object or the background Gaussian?
        wins = _likelihood(objects, objects) > _likelihood(objects, backgrounds)
        loses = _likelihood(backgrounds, objects) < _likelihood(backgrounds, backgrounds)
        combined = (objects * wins).sum(0) - (backgrounds * loses).sum(0)
    return torch.relu(combined)


def saliency_maps(features: torch.Tensor, kernel_classes: torch.Tensor | None, rule: str = "labels",
                  n_classes: int | None = None, foreground: bool = False) -> torch.Tensor:
    """Saliency maps (K, *spatial) in [0, 1] of one image's features (C, *spatial) at feature resolution.

    With ``foreground=True`` the ``labels``/``mean`` rules give one map: all object classes against
    the background.
    """
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
    if foreground:
        maps = [_contrast(normalized, kernel_classes > 0, rule)]
    else:
        maps = [_contrast(normalized, kernel_classes == cls, rule) for cls in objects]
    stacked = torch.stack(maps)
    return _minmax(stacked, tuple(range(1, stacked.dim())))


def upsample(maps: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Resize (K, *spatial) maps to ``shape`` with (bi/tri)linear interpolation."""
    if tuple(maps.shape[1:]) == tuple(shape):
        return maps
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return F.interpolate(maps[None], size=tuple(shape), mode=mode, align_corners=False)[0].clamp(0, 1)


def foreground_from_saliency(saliency: np.ndarray) -> np.ndarray:
    """Boolean foreground of one saliency map (*spatial) by Otsu's threshold (empty when flat)."""
    saliency = np.asarray(saliency)
    if saliency.max() <= saliency.min():
        return np.zeros(saliency.shape, dtype=bool)
    threshold = float(otsu_thresholds(torch.from_numpy(saliency.reshape(1, -1)))[0])
    return saliency > threshold


def masks_from_saliency(saliency: np.ndarray, foreground: np.ndarray | None = None,
                        class_scores: np.ndarray | None = None) -> np.ndarray:
    """Label mask from (K, *spatial) class saliency.

    Foreground is ``foreground`` when given (e.g. from an all-objects map), else where any class map
    is above its Otsu threshold; each foreground pixel takes the class of highest ``class_scores``
    (default: of highest saliency).
    """
    saliency = np.asarray(saliency)
    if foreground is None:
        above = np.stack([foreground_from_saliency(s) for s in saliency])
        scored = np.where(above, saliency, -1.0)
        foreground = above.any(0)
    else:
        scored = saliency if class_scores is None else class_scores
    return np.where(foreground, scored.argmax(0) + 1, 0).astype(np.uint8)


def class_activation(features: torch.Tensor, kernel_classes: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Mean (max-normalised) activation of the kernels of each object class 1..n_classes: (K, *spatial)."""
    normalized = _by_max(features, tuple(range(1, features.dim())))
    return torch.stack([normalized[kernel_classes == c].mean(0) if (kernel_classes == c).any()
                        else torch.zeros_like(normalized[0]) for c in range(1, n_classes + 1)])


def decode(features: torch.Tensor, kernel_classes: torch.Tensor | None, shape: tuple[int, ...], rule: str = "labels",
           n_classes: int | None = None) -> Decoded:
    """Saliency and mask at image resolution ``shape`` from one image's features (C, *spatial).

    With several object classes the foreground comes from the all-objects map and each foreground
    pixel takes the class whose kernels respond most there (:func:`class_activation`).
    """
    with torch.no_grad():
        maps = upsample(saliency_maps(features, kernel_classes, rule, n_classes), shape)
        foreground = scores = None
        if len(maps) > 1:
            merged = upsample(saliency_maps(features, kernel_classes, rule, n_classes, foreground=True), shape)
            foreground = foreground_from_saliency(merged[0].cpu().numpy())
            scores = upsample(class_activation(features, kernel_classes, len(maps)), shape).cpu().numpy()
    saliency = maps.cpu().numpy().astype(np.float32)
    return Decoded(saliency, masks_from_saliency(saliency, foreground, scores))


def marker_recall(masks, markers) -> float:
    """Mean over marker classes of the share of marker pixels a label mask gives their class.

    ``masks`` and ``markers`` are sequences of label maps of equal shapes; marker value ``c + 1``
    asks for class ``c`` (1: background). Pixels are pooled over all images per class first, so
    a class marked on one image only still counts once.
    """
    hits: dict[int, int] = {}
    totals: dict[int, int] = {}
    for mask, marker in zip(masks, markers):
        marker = np.asarray(marker)
        for value in np.unique(marker[marker > 0]):
            inside = marker == value
            hits[int(value)] = hits.get(int(value), 0) + int((np.asarray(mask)[inside] == value - 1).sum())
            totals[int(value)] = totals.get(int(value), 0) + int(inside.sum())
    if not totals:
        raise InputError("decoder choice: the markers hold no marked pixel")
    return float(np.mean([hits[v] / totals[v] for v in totals]))


def choose_rule(features, kernel_classes: torch.Tensor, markers, n_classes: int) -> tuple[str, dict[str, float]]:
    """The decoder rule that best labels the marker pixels of the images the model was fitted on.

    Parameters
    ----------
    features : sequence of torch.Tensor
        Features (C, *spatial') of each marked image at the decoder layer.
    kernel_classes : torch.Tensor
        Class of each kernel of that layer (0: background).
    markers : sequence of array_like
        Marker label maps at image resolution (0 unmarked, 1 background, c + 1 class c).
    n_classes : int
        Object classes of the model; ``weights`` (one foreground map) competes only when 1.

    Returns
    -------
    (str, dict)
        The chosen rule and the :func:`marker_recall` of every rule tried (ties go to the rule
        listed first in :data:`DECODERS`). Needs no ground truth: the rules of Soares et al.
        (arXiv 2504.20872) differ most where the markers say which side a pixel is on.

    Notes
    -----
    Volumes keep ``labels``: on hippocampus (``benchmarks/decoders.py``, 3 draws of 3 robot-marked
    volumes, 40 held out) it gave the best held-out Dice in every draw, while the marker recall
    preferred ``gauss`` in one draw (Dice 0.28 against 0.34).
    """
    volumes = features[0].dim() == 4 if len(features) else False
    rules = ["labels"] if volumes else [r for r in DECODERS if r != "weights" or n_classes == 1]

    def score(rule: str) -> float:
        masks = [decode(f, kernel_classes, tuple(np.shape(m)), rule, None if rule == "weights" else n_classes).mask
                 for f, m in zip(features, markers)]
        return round(marker_recall(masks, markers), 6)

    scores: dict[str, float] = {}
    for rule in rules:
        try:
            scores[rule] = score(rule)
        except InputError:
            continue  # no kernel from background (or object) markers: only 'weights' applies
    if not scores:
        scores["weights"] = score("weights")
    best = max(scores, key=lambda r: (scores[r], -DECODERS.index(r)))
    return best, scores
