"""Training losses for full and partial labels, and regularisers of the unlabelled pixels.

Partial labels: target pixels below 0 carry no label (:data:`IGNORE_TARGET`; training masks
on disk use :data:`hitlseg.pseudo.IGNORE`, 255, which :func:`hitlseg.nets.train.train` maps to
it). The cross-entropy and the soft Dice are computed over labelled pixels only, so an
unlabelled pixel gets no gradient from them.

Regularisers (Tang et al.) act on every pixel through a pairwise affinity
``W_ij = exp(-|x_i - x_j|^2 / 2 sigma_xy^2 - |I_i - I_j|^2 / 2 sigma_color^2)`` (``i != j``):

- dense-CRF loss (Tang et al., "On Regularized Losses for Weakly-supervised CNN
  Segmentation", ECCV 2018): ``sum_k S_k^T W (1 - S_k)``, a relaxed Potts model;
- normalized-cut loss (Tang et al., "Normalized Cut Loss for Weakly-supervised CNN
  Segmentation", CVPR 2018): ``sum_k S_k^T W (1 - S_k) / d^T S_k`` with ``d = W 1``.

Approximation (documented and measured, see ``tests/test_losses.py``): the exact dense kernel
couples every pair of pixels (``N^2`` terms; Tang uses a permutohedral lattice, a compiled
library with no wheel here). We evaluate it (a) on the image and softmax downsampled by
``scale`` (average pooling; ``sigma_xy`` is given in pixels of the full-resolution image and
scaled with it), and (b) with the Gaussian in space truncated to a window of half-width
``ceil(truncate * sigma_xy)`` (3 sigma by default: the square window keeps 99.5% of the 2D
spatial mass). Both are plain tensor shifts, so autograd gives exact gradients of the
approximate loss, on CPU and GPU, in 2D and 3D. With a window covering the whole image and
``scale=1`` the result equals the brute-force ``N^2`` computation (tested). Measured on a
32x32 test image with an edge (sigma_xy 5): the default (3 sigma, 2x downsampling) is within
0.7% of the exact dense-CRF loss and 0.6% of the exact normalized cut.
The affinity is divided by the sum of the spatial Gaussian over its window (degrees at most 1)
and the dense-CRF loss by the number of pixels of the (downsampled) image, so that its weight
does not depend on the image size or the bandwidths; the normalized cut is scale-free anyway.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from hitlseg.errors import InputError

#: Target value of an unlabelled pixel inside training (any negative value is ignored).
IGNORE_TARGET = -1


def partial_segmentation_loss(logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None,
                              smooth: float = 1.0, pixel_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of (weighted) cross-entropy and soft Dice over labelled pixels.

    Parameters
    ----------
    logits : Tensor, shape (N, K + 1, *spatial)
    target : Tensor of int64, shape (N, *spatial)
        Labels 0..K; negative values carry no label and give no gradient.
    class_weights : Tensor, shape (K + 1,), optional
        Weight of each class in the cross-entropy (a weighted mean over labelled pixels).
    smooth : float
        Added to the Dice numerator and denominator.
    pixel_weights : Tensor, shape (N, *spatial), optional
        Extra cross-entropy weight per pixel (e.g. a person's labels over machine labels).

    Returns
    -------
    Tensor
        Scalar ``(CE + (1 - mean soft Dice over classes 1..K)) / 2``, Dice over the batch's
        labelled pixels. Zero (with a graph) when no pixel is labelled.
    """
    n_outputs = logits.shape[1]
    valid = target >= 0
    labels = target.clamp_min(0)
    if not bool(valid.any()):
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits, labels, reduction="none")
    if class_weights is not None:
        pixel_weight = class_weights.to(logits.dtype)[labels] * valid
    else:
        pixel_weight = valid.to(logits.dtype)
    if pixel_weights is not None:
        pixel_weight = pixel_weight * pixel_weights.to(logits.dtype)
    ce = (ce * pixel_weight).sum() / pixel_weight.sum().clamp_min(1e-12)
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(labels, n_outputs).movedim(-1, 1).to(probs.dtype)
    weight = valid.unsqueeze(1).to(probs.dtype)
    dims = [0] + list(range(2, logits.dim()))
    intersection = (probs * onehot * weight).sum(dims)
    denominator = (probs * weight).sum(dims) + (onehot * weight).sum(dims)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    foreground = dice[1:] if n_outputs > 1 else dice
    return 0.5 * (ce + (1.0 - foreground.mean()))


def balanced_class_weights(counts, power: float = 0.5, limit: float = 10.0) -> torch.Tensor:
    """Class weights ``(total / count_k) ** power``, normalised to a labelled-pixel mean of 1, clipped.

    ``power=1`` is inverse frequency; the default square root keeps a rare class (the thin
    WBC cytoplasm ring) from being drowned without letting a handful of pixels dominate.
    Classes with no labelled pixel get weight 1.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.dim() != 1 or bool((counts < 0).any()):
        raise InputError("counts: need one non-negative pixel count per class")
    present = counts > 0
    if not bool(present.any()):
        return torch.ones_like(counts, dtype=torch.float32)
    weights = torch.ones_like(counts)
    weights[present] = (counts[present].sum() / counts[present]) ** power
    weights[present] /= (weights[present] * counts[present]).sum() / counts[present].sum()
    return weights.clamp(1.0 / limit, limit).to(torch.float32)


# ------------------------------------------------------------------------------------ affinities


def _downsample(x: torch.Tensor, scale: float) -> torch.Tensor:
    if scale >= 1.0:
        return x
    ndim = x.dim() - 2
    size = [max(1, int(round(s * scale))) for s in x.shape[2:]]
    return F.adaptive_avg_pool2d(x, size) if ndim == 2 else F.adaptive_avg_pool3d(x, size)


def _check_regulariser_args(probs: torch.Tensor, image: torch.Tensor, sigma_xy: float, sigma_color: float,
                            scale: float, truncate: float) -> None:
    if probs.dim() not in (4, 5) or image.dim() != probs.dim():
        raise InputError(f"probs, image: need (N, K, *spatial) and (N, C, *spatial) 2D or 3D tensors, got shapes "
                         f"{tuple(probs.shape)} and {tuple(image.shape)}")
    if probs.shape[0] != image.shape[0] or probs.shape[2:] != image.shape[2:]:
        raise InputError(f"probs, image: batch and spatial sizes differ: {tuple(probs.shape)} vs {tuple(image.shape)}")
    for name, value in (("sigma_xy", sigma_xy), ("sigma_color", sigma_color), ("truncate", truncate)):
        if not value > 0:
            raise InputError(f"{name}: must be positive, got {value}")
    if not 0 < scale <= 1:
        raise InputError(f"scale: must be in (0, 1], got {scale}")


def affinity_products(probs: torch.Tensor, image: torch.Tensor, *, sigma_xy: float = 5.0, sigma_color: float = 0.1,
                      scale: float = 0.5, truncate: float = 3.0, valid: torch.Tensor | None = None,
                      normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``W S`` and the degrees ``d = W 1`` under the truncated, downsampled bilateral affinity.

    Parameters
    ----------
    probs : Tensor, shape (N, K, *spatial)
        Soft segmentation (softmax).
    image : Tensor, shape (N, C, *spatial)
        The image the affinity is computed from.
    sigma_xy : float
        Spatial bandwidth in full-resolution pixels.
    sigma_color : float
        Bandwidth in image units (hitlseg images are scaled to about [0, 1]).
    scale : float in (0, 1]
        Downsampling factor applied before the affinity.
    truncate : float
        Window half-width in spatial sigmas.
    valid : Tensor of bool, shape (N, *spatial), optional
        Pixels that exist (padding excluded); invalid pixels have no affinity.
    normalize : bool
        Divide ``W`` by the sum of the spatial Gaussian over the window, so that every degree is
        at most 1 and a loss weight means the same whatever ``sigma_xy`` and ``scale`` are.

    Returns
    -------
    (S, WS, d) : Tensors
        The downsampled probabilities ``(N, K, *spatial')``, ``W S`` of the same shape, and
        the degrees ``(N, 1, *spatial')``.
    """
    _check_regulariser_args(probs, image, sigma_xy, sigma_color, scale, truncate)
    if valid is None:
        valid = torch.ones((image.shape[0],) + tuple(image.shape[2:]), dtype=torch.bool, device=image.device)
    v = _downsample(valid.unsqueeze(1).to(probs.dtype), scale)
    s = _downsample(probs, scale)
    img = _downsample(image.to(probs.dtype), scale)
    v = (v > 0.5).to(probs.dtype)
    sigma = sigma_xy * scale
    spatial = tuple(s.shape[2:])
    radius = [min(int(math.ceil(truncate * sigma)), n - 1) for n in spatial]
    pads = []
    for r in reversed(radius):
        pads += [r, r]
    # one shifted slice per offset, small tensors that stay in cache: measured 10x faster than
    # stacking all offsets into one large tensor (0.02 s against 0.21 s forward + backward for a
    # 60x60 image and 288 offsets on 2 cores)
    s_pad, img_pad, v_pad = (F.pad(t, pads) for t in (s, img, v))
    offsets = [o for o in itertools.product(*(range(-r, r + 1) for r in radius)) if any(o)]
    spatial_weights = [math.exp(-sum(o * o for o in offset) / (2 * sigma * sigma)) for offset in offsets]
    total = sum(spatial_weights) if normalize else 1.0
    ws = torch.zeros_like(s)
    degree = torch.zeros_like(v)
    for offset, spatial_weight in zip(offsets, spatial_weights):
        region = (slice(None), slice(None)) + tuple(slice(r + o, r + o + n) for r, o, n in zip(radius, offset, spatial))
        w = torch.exp(-((img - img_pad[region]) ** 2).sum(1, keepdim=True) / (2 * sigma_color**2))
        w = w * (spatial_weight / total) * v * v_pad[region]
        ws = ws + w * s_pad[region]
        degree = degree + w
    return s * v, ws, degree


def crf_from_products(s: torch.Tensor, ws: torch.Tensor, degree: torch.Tensor, counted: bool = False) -> torch.Tensor:
    """Dense-CRF loss from :func:`affinity_products`; ``counted``: divide by the valid pixels, not all."""
    dims = tuple(range(1, s.dim()))
    n = (degree > 0).sum(dims).clamp_min(1) if counted else torch.full((s.shape[0],), s[0, 0].numel(), device=s.device)
    cut = (s * degree).sum(dims) - (s * ws).sum(dims)
    return (cut / n).mean()


def ncut_from_products(s: torch.Tensor, ws: torch.Tensor, degree: torch.Tensor) -> torch.Tensor:
    """Normalized-cut loss from :func:`affinity_products`."""
    spatial = tuple(range(2, s.dim()))
    association = (s * degree).sum(spatial)
    cut = association - (s * ws).sum(spatial)  # (N, K)
    return (cut / association.clamp_min(1e-6)).sum(1).mean()


def dense_crf_loss(probs: torch.Tensor, image: torch.Tensor, *, sigma_xy: float = 5.0, sigma_color: float = 0.1,
                   scale: float = 0.5, truncate: float = 3.0, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Relaxed dense-CRF (Potts) loss ``sum_k S_k^T W (1 - S_k) / n`` (Tang et al., ECCV 2018).

    See :func:`affinity_products` for the parameters and the module docstring for the
    approximation. Averaged over the batch; ``n`` is the number of valid downsampled pixels.
    """
    products = affinity_products(probs, image, sigma_xy=sigma_xy, sigma_color=sigma_color, scale=scale,
                                 truncate=truncate, valid=valid)
    return crf_from_products(*products, counted=valid is not None)


def normalized_cut_loss(probs: torch.Tensor, image: torch.Tensor, *, sigma_xy: float = 5.0, sigma_color: float = 0.1,
                        scale: float = 0.5, truncate: float = 3.0, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Normalized-cut loss ``sum_k S_k^T W (1 - S_k) / d^T S_k`` (Tang et al., CVPR 2018).

    See :func:`affinity_products` for the parameters and the module docstring for the
    approximation. Averaged over the batch; at most ``K`` (the number of classes).
    """
    return ncut_from_products(*affinity_products(probs, image, sigma_xy=sigma_xy, sigma_color=sigma_color, scale=scale,
                                                 truncate=truncate, valid=valid))


def dense_affinity(image: torch.Tensor, *, sigma_xy: float, sigma_color: float) -> torch.Tensor:
    """The exact ``N x N`` affinity of one image ``(C, *spatial)`` (zero diagonal): for tests on tiny images."""
    spatial = image.shape[1:]
    coords = torch.stack(torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in spatial), indexing="ij"), -1)
    coords = coords.reshape(-1, len(spatial))
    colours = image.reshape(image.shape[0], -1).T.to(torch.float64)
    w = torch.exp(-torch.cdist(coords, coords) ** 2 / (2 * sigma_xy**2) - torch.cdist(colours, colours) ** 2 / (2 * sigma_color**2))
    w.fill_diagonal_(0.0)
    return w
