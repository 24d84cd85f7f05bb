"""Colour previews of label masks: masks saved as 0/1/2 look black in ordinary viewers.

A preview is an RGB PNG where class ``c`` has colour ``PALETTE[c]`` (background black), meant to
sit beside the label file, never to replace it. A 3D mask becomes a contact sheet of evenly spaced
slices along its first axis, each with a thin grey frame, so the whole volume shows in one picture.
"""

from __future__ import annotations

import io

import numpy as np

from hitlseg.errors import InputError

#: Colours of class c (index 0: background in overlays), shared by the page's brushes, the
#: server's overlays and the previews.
PALETTE = ("#2f7bff", "#ff3b30", "#ffd60a", "#34c759", "#af52de", "#ff9f0a", "#5ac8fa", "#ff2d95",
           "#a2845e", "#00c7be", "#8e8e93", "#bf5af2")

#: Slices of a 3D preview (at most).
MAX_SLICES = 16

__all__ = ["MAX_SLICES", "PALETTE", "class_color", "colour_labels", "preview_png"]


def class_color(index: int) -> tuple[int, int, int]:
    """RGB of class ``index`` (0 background, 1..K objects)."""
    value = PALETTE[index % len(PALETTE)]
    return tuple(int(value[i:i + 2], 16) for i in (1, 3, 5))


def colour_labels(labels: np.ndarray) -> np.ndarray:
    """RGB uint8 picture of a 2D label array: class ``c >= 1`` in ``PALETTE[c]``, 0 black.

    Parameters
    ----------
    labels : int array (H, W)
        Labels 0..K.

    Returns
    -------
    ndarray, uint8, shape (H, W, 3)
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"labels: expected a 2D array, got shape {labels.shape}")
    if labels.dtype.kind not in "iub":
        raise InputError(f"labels: expected integer labels, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise InputError(f"labels: negative label {int(labels.min())}")
    top = int(labels.max()) if labels.size else 0
    table = np.zeros((top + 1, 3), dtype=np.uint8)
    for c in range(1, top + 1):
        table[c] = class_color(c)
    return table[labels.astype(np.intp)]


def _contact_sheet(volume: np.ndarray) -> np.ndarray:
    """Evenly spaced slices of ``volume`` (D, H, W) tiled in a near-square grid, one grey pixel apart."""
    depth, height, width = volume.shape
    picks = np.unique(np.linspace(0, depth - 1, min(depth, MAX_SLICES)).round().astype(int))
    columns = int(np.ceil(np.sqrt(len(picks))))
    rows = int(np.ceil(len(picks) / columns))
    sheet = np.full((rows * (height + 1) + 1, columns * (width + 1) + 1, 3), 96, dtype=np.uint8)
    for n, z in enumerate(picks):
        r, c = divmod(n, columns)
        top, left = 1 + r * (height + 1), 1 + c * (width + 1)
        sheet[top:top + height, left:left + width] = colour_labels(volume[z])
    return sheet


def preview_png(labels: np.ndarray) -> bytes:
    """PNG bytes of the colour preview of a 2D mask, or of a 3D mask's contact sheet.

    Parameters
    ----------
    labels : int array (H, W) or (D, H, W)
        Labels 0..K, as a segmentation is saved.

    Returns
    -------
    bytes
        An RGB PNG.
    """
    from PIL import Image

    labels = np.asarray(labels)
    if labels.ndim == 3:
        picture = _contact_sheet(labels)
    elif labels.ndim == 2:
        picture = colour_labels(labels)
    else:
        raise InputError(f"labels: expected a 2D or 3D mask, got shape {labels.shape}")
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()
