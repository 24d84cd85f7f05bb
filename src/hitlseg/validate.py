"""Checks made before long work: output paths that can be written, images an encoder can take.

A command that trains for minutes and then cannot write its model, or that meets a 1x1 image
deep inside a convolution, should say so at once and name the path: these functions raise
:class:`~hitlseg.errors.InputError` naming the file or folder and what is wrong.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

from hitlseg.errors import InputError


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable(folder: Path) -> bool:
    """Whether files can be created in the existing folder ``folder``."""
    return os.access(folder, os.W_OK | os.X_OK)


def _check_creatable(path: Path, what: str) -> None:
    """Raise unless the missing folders up to ``path`` can be created (the nearest existing one is a writable folder)."""
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise InputError(f"{path}: {what}: cannot be created because {base} is a file, not a folder")
    if not _writable(base):
        raise InputError(f"{path}: {what}: folder {base} is not writable")


def check_output_file(path: str | Path, what: str = "--out") -> Path:
    """Check that the file ``path`` can be written (created or replaced) before any work is done.

    Parameters
    ----------
    path : str or Path
        The file a command will write (atomically: a temporary file in its folder, then a rename).
    what : str
        What ``path`` is, for the message (the option that names it).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        When ``path`` is an existing folder, a folder above it is a file, or the folder that
        would hold it is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: {what} must name a file, but it is a folder")
    if path.exists() and not path.is_file():
        raise InputError(f"{path}: {what} must name a regular file")
    _check_creatable(path, what)
    return path


def check_output_dir(path: str | Path, what: str = "--out") -> Path:
    """Check that files can be written into the folder ``path`` (created when missing) before any work is done.

    Parameters
    ----------
    path : str or Path
        The output folder.
    what : str
        What ``path`` is, for the message (the option that names it).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        When ``path`` is an existing file, a folder above it is a file, or the folder is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: {what} must name a folder, but it is a file")
    if path.is_dir():
        if not _writable(path):
            raise InputError(f"{path}: {what}: folder is not writable")
        return path
    _check_creatable(path, what)
    return path


def _deepest_sizes(shape: Sequence[int], arch, reflect: bool) -> tuple[list[int], int | None]:
    """Spatial sizes after the last layer of ``arch``, and the index of the first layer that does not fit."""
    sizes = [int(s) for s in shape]
    for index, layer in enumerate(getattr(arch, "layers", arch)):
        if reflect and min(sizes) <= layer.reach:
            return sizes, index
        if layer.pool != "none":  # 'same' pooling of hitlseg.flim.ops.pool: padding pool_size // 2
            size, stride = layer.pool_size, layer.pool_stride
            sizes = [(s + 2 * (size // 2) - size) // stride + 1 for s in sizes]
    return sizes, None


def image_fits(shape: Sequence[int], arch, *, reflect: bool = True, training: bool = False) -> bool:
    """Whether an image of spatial ``shape`` fits the encoder layout ``arch``.

    Parameters
    ----------
    shape : sequence of int
        Spatial shape (``(H, W)`` or ``(D, H, W)``).
    arch : ArchSpec or sequence of LayerSpec
        The encoder's layers (kernel reach, pooling size and stride).
    reflect : bool
        The encoder pads by reflection (FLIM): every layer's input must be larger than its
        kernel's reach on each axis. The backprop U-Net pads with zeros.
    training : bool
        The network is trained: instance normalisation needs more than one feature per channel
        at the deepest level.
    """
    sizes, failed = _deepest_sizes(shape, arch, reflect)
    return failed is None and (not training or math.prod(sizes) > 1)


def min_image_size(arch, *, reflect: bool = True, training: bool = False) -> int:
    """The smallest size ``s`` such that ``s`` pixels on every axis fit ``arch`` (see :func:`image_fits`)."""
    size = 1
    while not image_fits((size, size), arch, reflect=reflect, training=training):
        size += 1
    return size


def check_image_size(shape: Sequence[int], arch, name: str, *, reflect: bool = True, training: bool = False) -> None:
    """Raise :class:`InputError` naming ``name`` when an image of spatial ``shape`` is too small for ``arch``.

    Parameters
    ----------
    shape : sequence of int
        Spatial shape of the image.
    arch : ArchSpec or sequence of LayerSpec
        The encoder's layers.
    name : str
        The image's file (or id), for the message.
    reflect, training : bool
        See :func:`image_fits`.
    """
    if image_fits(shape, arch, reflect=reflect, training=training):
        return
    size = min_image_size(arch, reflect=reflect, training=training)
    shown = "x".join(str(int(s)) for s in shape)
    _, failed = _deepest_sizes(shape, arch, reflect)
    if failed is not None:
        reach = list(getattr(arch, "layers", arch))[failed].reach
        why = f"the kernels of encoder layer {failed + 1} reach {reach} pixel{'s' if reach != 1 else ''} to each side"
    else:
        why = "training needs more than one pixel of the encoder's deepest features"
    raise InputError(f"{name}: image of {shown} pixels is too small ({why}); images need at least {size} pixels "
                     f"on each axis")


def check_label_mask(mask, name: str = "mask", *, allow_empty: bool = False, bool_as_int: bool = True):
    """``mask`` as a 2D ``(H, W)`` or 3D ``(D, H, W)`` integer label mask (0 background, 1..K), or an
    :class:`InputError` naming ``name``.

    A boolean mask becomes ``uint8`` (kept boolean with ``bool_as_int=False``); a mask of no pixel is
    refused unless ``allow_empty``; negative labels are refused.
    """
    import numpy as np  # here: the command line imports this module before it needs numpy

    mask = np.asarray(mask)
    if mask.dtype == bool:
        mask = mask.astype(np.uint8) if bool_as_int else mask
    elif not np.issubdtype(mask.dtype, np.integer):
        raise InputError(f"{name}: must be an integer label mask (integer labels: 0 background, 1..K), "
                         f"got dtype {mask.dtype}")
    if mask.ndim not in (2, 3):
        raise InputError(f"{name}: must be a 2D (H, W) or 3D (D, H, W) label mask, got {mask.ndim}D shape {mask.shape}")
    if mask.size == 0 and not allow_empty:
        raise InputError(f"{name}: is empty (shape {mask.shape})")
    if mask.size and mask.dtype != bool and mask.min() < 0:
        raise InputError(f"{name}: has negative labels (min {int(mask.min())}); labels must be >= 0")
    return mask
