"""Heatmaps of filter attention: where the chosen feature maps fire, over the image.

The activation map is the mean of the chosen maps (or a decoder saliency map), min-max normalised
per image to [0, 1] and resized to the image grid (bi/trilinear). It is coloured with a matplotlib
colormap (``jet`` by default: high activation red, low blue) and alpha-blended with the image shown
as RGB: 3-channel images are normalised CIELAB (hitlseg's default reading) converted back with
:func:`hitlseg.io.color.normalized_lab_to_rgb`; other
images are shown in grey from their first channel. For 3D images one slice along ``axis`` is shown.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hitlseg.errors import InputError
from hitlseg.io.color import normalized_lab_to_rgb

COLORS = ("auto", "lab", "rgb", "grey")

__all__ = ["activation_map", "display_rgb", "overlay", "png_bytes", "resolve_slice", "save_png", "take_slice"]


def activation_map(features, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Mean of ``features`` (M, *spatial) over maps, min-max normalised to [0, 1], resized to ``shape``.

    A constant map gives zeros.
    """
    f = torch.as_tensor(features).float()
    if f.dim() not in (3, 4):
        raise InputError(f"features: expected (M, H, W) or (M, D, H, W), got shape {tuple(f.shape)}")
    mean = f.mean(0)
    if shape is not None and tuple(shape) != tuple(mean.shape):
        if len(shape) != mean.dim():
            raise InputError(f"shape: {len(shape)}D target for {mean.dim()}D features")
        mode = "bilinear" if mean.dim() == 2 else "trilinear"
        mean = F.interpolate(mean[None, None], size=tuple(shape), mode=mode, align_corners=False)[0, 0]
    low, high = mean.min(), mean.max()
    out = (mean - low) / (high - low) if high > low else torch.zeros_like(mean)
    return out.cpu().numpy().astype(np.float32)


def display_rgb(image, color: str = "auto") -> np.ndarray:
    """An image ``(C, *spatial)`` as displayable RGB ``(*spatial, 3)`` in [0, 1].

    ``color``: ``"lab"`` (normalised CIELAB, 3 channels), ``"rgb"`` (3 channels in [0, 1]),
    ``"grey"`` (first channel, min-max), ``"auto"`` (``lab`` for 3 channels, else ``grey``).
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim not in (3, 4):
        raise InputError(f"image: expected (C, H, W) or (C, D, H, W), got shape {image.shape}")
    if color not in COLORS:
        raise InputError(f"color: unknown choice {color!r} (use one of {', '.join(COLORS)})")
    if color == "auto":
        color = "lab" if image.shape[0] == 3 else "grey"
    if color in ("lab", "rgb") and image.shape[0] != 3:
        raise InputError(f"color {color!r}: needs a 3-channel image, got {image.shape[0]} channels")
    if color == "lab":
        rgb = normalized_lab_to_rgb(image)
    elif color == "rgb":
        rgb = np.moveaxis(image, 0, -1)
    else:
        grey = image[0]
        low, high = float(grey.min()), float(grey.max())
        grey = (grey - low) / (high - low) if high > low else np.zeros_like(grey)
        rgb = np.repeat(grey[..., None], 3, axis=-1)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def resolve_slice(shape: tuple[int, ...], slice_index: int | None, axis: int) -> tuple[int, int]:
    """Validated ``(slice_index, axis)`` for a 3D spatial ``shape``; the middle slice by default."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not 0 <= axis < 3:
        raise InputError(f"axis: must be 0, 1 or 2 for a 3D image, got {axis!r}")
    size = shape[axis]
    if slice_index is None:
        slice_index = size // 2
    if isinstance(slice_index, bool) or not isinstance(slice_index, (int, np.integer)) or not 0 <= slice_index < size:
        raise InputError(f"slice: index {slice_index!r} out of range 0..{size - 1} along axis {axis}")
    return int(slice_index), int(axis)


def take_slice(volume: np.ndarray, slice_index: int | None, axis: int, spatial_ndim: int) -> np.ndarray:
    """Slice ``slice_index`` (default: the middle) along spatial ``axis`` of a 3D array; 2D passes through.

    ``volume`` has ``spatial_ndim`` leading spatial axes (trailing axes, e.g. RGB, are kept).
    """
    if spatial_ndim == 2:
        return volume
    slice_index, axis = resolve_slice(volume.shape[:3], slice_index, axis)
    return np.take(volume, slice_index, axis=axis)


def overlay(image, activation, alpha: float = 0.5, cmap: str = "jet", color: str = "auto",
            slice_index: int | None = None, axis: int = 0) -> np.ndarray:
    """Blend a colour-mapped activation with the image.

    Parameters
    ----------
    image : ndarray (C, *spatial)
    activation : ndarray (*spatial), values in [0, 1]
        E.g. from :func:`activation_map`.
    alpha : float
        Weight of the colour map (0: image only, 1: heatmap only).
    cmap : str
        Matplotlib colormap name (``jet``: high red, low blue).
    color : str
        How the image is shown (see :func:`display_rgb`).
    slice_index, axis : int
        For 3D images: the slice shown (default the middle one) and the axis it is taken along.

    Returns
    -------
    ndarray of uint8, shape (H, W, 3)
        For 3D images, the chosen slice.
    """
    import matplotlib

    image = np.asarray(image)
    activation = np.asarray(activation, dtype=np.float32)
    if activation.shape != image.shape[1:]:
        raise InputError(f"activation: shape {activation.shape} differs from the image's {image.shape[1:]}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise InputError(f"alpha: must be a number in [0, 1], got {alpha!r}")
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise InputError(f"cmap: unknown matplotlib colormap {cmap!r}") from None
    ndim = activation.ndim
    rgb = take_slice(display_rgb(image, color), slice_index, axis, ndim)
    act = take_slice(activation, slice_index, axis, ndim)
    heat = colormap(np.clip(act, 0.0, 1.0))[..., :3]
    blended = (1 - alpha) * rgb + alpha * heat
    return np.clip(np.round(blended * 255), 0, 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """PNG encoding of an (H, W), (H, W, 3) or (H, W, 4) uint8 array (fast compression)."""
    from PIL import Image

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim not in (2, 3):
        raise InputError(f"rgb: expected a uint8 (H, W[, 3|4]) array, got {rgb.dtype} {rgb.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write :func:`png_bytes` of ``rgb`` to ``path`` atomically (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = png_bytes(rgb)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
