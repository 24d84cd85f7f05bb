"""Colour conversion as in the FLIM literature: RGB to CIELAB scaled to [0, 1] per channel."""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2lab

# Ranges of L*, a*, b* over the sRGB gamut, used to scale each channel to [0, 1].
LAB_MIN = np.array([0.0, -86.183, -107.857], dtype=np.float32)
LAB_MAX = np.array([100.0, 98.233, 94.478], dtype=np.float32)


def rgb_to_normalized_lab(rgb: np.ndarray) -> np.ndarray:
    """Convert an RGB image in [0, 1] of shape (3, H, W) to CIELAB scaled to [0, 1].

    Parameters
    ----------
    rgb : ndarray, shape (3, H, W)
        Red, green and blue in [0, 1].

    Returns
    -------
    ndarray, float32, shape (3, H, W)
        L*, a*, b* each mapped linearly from its sRGB-gamut range to [0, 1].
    """
    lab = rgb2lab(np.moveaxis(rgb, 0, -1)).astype(np.float32)
    lab = (lab - LAB_MIN) / (LAB_MAX - LAB_MIN)
    return np.clip(np.moveaxis(lab, -1, 0), 0.0, 1.0)


def normalized_lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_normalized_lab`: ``(3, *spatial)`` in [0, 1] -> RGB ``(*spatial, 3)`` in [0, 1]."""
    from skimage.color import lab2rgb

    shape = (-1,) + (1,) * (lab.ndim - 1)
    values = np.asarray(lab, dtype=np.float64) * (LAB_MAX - LAB_MIN).reshape(shape) + LAB_MIN.reshape(shape)
    return np.clip(lab2rgb(np.moveaxis(values, 0, -1), channel_axis=-1), 0.0, 1.0)
