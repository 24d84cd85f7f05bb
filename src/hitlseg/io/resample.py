"""A working resolution for large images: resample down on reading, and results back to the input's size.

A model trained with ``max_side`` N (stored in its preprocessing) reads every image so that its
longest spatial side is at most N (never enlarged), and writes each prediction back on the
input's own grid, so masks keep the input's size and geometry (NIfTI affine included).

- Images: linear interpolation with Gaussian anti-aliasing (scikit-image ``resize``).
- Masks and predicted labels: nearest neighbour (labels are never blended).
- Markers: every marked pixel is kept, moved to the working pixel that covers it, since
  one-pixel strokes would vanish from a nearest-neighbour sampling; where strokes of two labels
  land on one working pixel the higher label (an object's) wins.
- Probabilities, back to the input's grid: linear interpolation (their class sums stay 1).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hitlseg.errors import InputError

#: The smallest working resolution ``max_side`` accepts (smaller leaves the FLIM filters nothing to see).
MIN_SIDE = 16


def check_max_side(max_side, what: str = "max_side") -> int | None:
    """``max_side`` as an int of at least :data:`MIN_SIDE`, or ``None`` (no resampling)."""
    if max_side is None:
        return None
    if isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)):
        raise InputError(f"{what} must be a whole number of pixels, got {max_side!r}")
    if max_side < MIN_SIDE:
        raise InputError(f"{what} is {max_side}, below the smallest working side {MIN_SIDE}")
    return int(max_side)


def working_shape(shape: Sequence[int], max_side: int | None) -> tuple[int, ...]:
    """The spatial shape an image of ``shape`` is read at: scaled so its longest side is <= ``max_side``.

    The aspect ratio is kept (each side rounded, at least 1); images already small enough keep
    their shape.
    """
    shape = tuple(int(s) for s in shape)
    if max_side is None or max(shape) <= max_side:
        return shape
    scale = max_side / max(shape)
    return tuple(max(1, min(max_side, int(round(s * scale)))) for s in shape)


def _nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """For each output cell, the input cell whose centre is nearest (cell-centred grids)."""
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def resample_image(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """An image ``(C, *spatial)`` resampled to ``(C, *shape)`` (linear, anti-aliased when shrinking), float32."""
    from skimage.transform import resize

    shape = tuple(int(s) for s in shape)
    if tuple(image.shape[1:]) == shape:
        return image
    out = resize(image, (image.shape[0], *shape), order=1, mode="edge", anti_aliasing=True, preserve_range=True)
    return out.astype(np.float32, copy=False)


def resample_labels(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A label array resampled to ``shape`` by nearest neighbour (same dtype)."""
    shape = tuple(int(s) for s in shape)
    if labels.shape == shape:
        return labels
    if labels.ndim != len(shape):
        raise InputError(f"cannot resample a {labels.ndim}D label array to the {len(shape)}D shape {shape}")
    index = np.ix_(*(_nearest_indices(n_in, n_out) for n_in, n_out in zip(labels.shape, shape)))
    return labels[index]


def resample_markers(markers: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Marker labels moved onto a grid of ``shape``, every stroke kept (see the module docstring)."""
    shape = tuple(int(s) for s in shape)
    if markers.shape == shape:
        return markers
    out = np.zeros(shape, dtype=markers.dtype)
    coords = np.nonzero(markers)
    values = markers[coords]
    order = np.argsort(values, kind="stable")  # written last, the highest label wins a shared pixel
    target = tuple(np.minimum((c[order] * n_out) // n_in, n_out - 1)
                   for c, n_in, n_out in zip(coords, markers.shape, shape))
    out[target] = values[order]
    return out


def resample_probabilities(probabilities: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Class probabilities ``(K+1, *spatial)`` interpolated linearly to ``(K+1, *shape)``, float32."""
    import torch
    import torch.nn.functional as F

    shape = tuple(int(s) for s in shape)
    if tuple(probabilities.shape[1:]) == shape:
        return probabilities
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
    tensor = torch.from_numpy(np.ascontiguousarray(probabilities, dtype=np.float32))[None]
    with torch.no_grad():
        out = F.interpolate(tensor, size=shape, mode=mode, align_corners=False)[0]
    return out.numpy()
