"""Inference: whole image, or sliding window with overlap and Gaussian or uniform blending.

Works on any :class:`torch.nn.Module` mapping ``(1, C, *spatial)`` to logits
``(1, K + 1, *spatial)``; returns softmax probabilities ``(K + 1, *spatial)`` and labels.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from hitlseg.errors import InputError

BLENDS = ("gaussian", "uniform")


@dataclass
class Prediction:
    """Probabilities ``(K + 1, *spatial)`` float32 (class 0 is background) and labels ``(*spatial)`` uint8."""

    probabilities: np.ndarray
    labels: np.ndarray


def _as_window(window, ndim: int, name: str = "window") -> tuple[int, ...] | None:
    if window is None:
        return None
    if np.isscalar(window):
        window = (int(window),) * ndim
    window = tuple(int(w) for w in window)
    if len(window) != ndim or min(window) < 1:
        raise InputError(f"{name}: need {ndim} positive sizes, got {window}")
    return window


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start offsets of windows of ``window`` covering ``0..size`` with at least ``overlap`` fraction overlap."""
    if window >= size:
        return [0]
    step = max(1, int(window * (1.0 - overlap)))
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def gaussian_weights(window: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """Separable Gaussian importance map centred in the window (sigma = ``sigma_scale`` x size), max 1."""
    weights = np.ones((), dtype=np.float64)
    for size in window:
        centre = (size - 1) / 2.0
        sigma = max(size * sigma_scale, 1e-3)
        axis = np.exp(-0.5 * ((np.arange(size) - centre) / sigma) ** 2)
        weights = np.multiply.outer(weights, axis)
    weights = weights / weights.max()
    return np.maximum(weights, 1e-3).astype(np.float32)  # never zero: every pixel gets some weight


def _device_of(net: nn.Module) -> torch.device:
    for tensor in itertools.chain(net.parameters(), net.buffers()):
        return tensor.device
    return torch.device("cpu")


def _probabilities(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(net(x), dim=1)[0]


def predict_probabilities(net: nn.Module, image: np.ndarray, *, window=None, overlap: float = 0.5,
                          blend: str = "gaussian") -> np.ndarray:
    """Class probabilities of one image.

    Parameters
    ----------
    net : torch.nn.Module
        Maps ``(1, C, *spatial)`` to logits ``(1, K + 1, *spatial)``; run in eval mode here.
    image : ndarray, float32, shape (C, *spatial)
    window : int or sequence of int, optional
        Sliding-window size per spatial axis; ``None`` (or a window as large as the image) runs
        the whole image at once.
    overlap : float in [0, 1)
        Fraction of the window shared by neighbouring windows.
    blend : {"gaussian", "uniform"}
        Weighting of overlapping windows: a Gaussian centred in each window (favouring the
        centres, which see the most context) or equal weights.

    Returns
    -------
    ndarray, float32, shape (K + 1, *spatial)
        Probabilities summing to 1 over the first axis.
    """
    image = np.asarray(image, dtype=np.float32)
    ndim = image.ndim - 1
    if ndim not in (2, 3):
        raise InputError(f"image: need (C, H, W) or (C, D, H, W), got shape {image.shape}")
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap: must be in [0, 1), got {overlap}")
    if blend not in BLENDS:
        raise InputError(f"blend: unknown rule {blend!r} (use one of {', '.join(BLENDS)})")
    window = _as_window(window, ndim)
    spatial = image.shape[1:]
    was_training = net.training
    net.eval()
    device = _device_of(net)
    try:
        with torch.no_grad():
            x = torch.from_numpy(image).to(device)[None]
            if window is None or all(w >= s for w, s in zip(window, spatial)):
                return _probabilities(net, x).cpu().numpy().astype(np.float32)
            window = tuple(min(w, s) for w, s in zip(window, spatial))
            weights = torch.from_numpy(gaussian_weights(window) if blend == "gaussian" else np.ones(window, np.float32)).to(device)
            total = None
            norm = torch.zeros(spatial, device=device)
            for starts in itertools.product(*(window_starts(s, w, overlap) for s, w in zip(spatial, window))):
                region = tuple(slice(a, a + w) for a, w in zip(starts, window))
                probs = _probabilities(net, x[(slice(None), slice(None)) + region])
                if total is None:
                    total = torch.zeros((probs.shape[0],) + tuple(spatial), device=device)
                total[(slice(None),) + region] += probs * weights
                norm[region] += weights
            return (total / norm).cpu().numpy().astype(np.float32)
    finally:
        net.train(was_training)


def labels_from_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Arg-max labels (uint8 up to 255 classes, else int64)."""
    labels = np.argmax(probabilities, axis=0)
    return labels.astype(np.uint8 if probabilities.shape[0] <= 256 else np.int64)


def predict(net: nn.Module, image: np.ndarray, *, window=None, overlap: float = 0.5, blend: str = "gaussian") -> Prediction:
    """:func:`predict_probabilities` and the arg-max labels."""
    probabilities = predict_probabilities(net, image, window=window, overlap=overlap, blend=blend)
    return Prediction(probabilities, labels_from_probabilities(probabilities))
