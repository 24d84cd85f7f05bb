"""Size limits checked from file headers before any pixel is decoded.

A small file can announce a huge array (a PNG of 20000x20000, a NIfTI of 1200^3, a marker text
header ``1 1000000 1000000``); decoding it would exhaust memory. Every reader compares the size
its header announces with :func:`max_pixels` first and refuses larger images with an
:class:`~hitlseg.errors.InputError` naming the file.

The limit is 2**27 pixels or voxels per image (134 million: a 512^3 volume, an 11585^2 slide;
as float32 one channel is 512 MiB), overridable with the environment variable
``HITLSEG_MAX_PIXELS``. Larger collections belong to the block-wise (Dask) path. An image may
have at most 16 channels (modalities, colour bands).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hitlseg.errors import InputError

DEFAULT_MAX_PIXELS = 2**27
MAX_CHANNELS = 16
ENV_MAX_PIXELS = "HITLSEG_MAX_PIXELS"


def max_pixels() -> int:
    """The largest number of pixels (voxels) per image: ``HITLSEG_MAX_PIXELS`` or 2**27."""
    value = os.environ.get(ENV_MAX_PIXELS)
    if value is None or not value.strip():
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(value)
    except ValueError:
        raise InputError(f"{ENV_MAX_PIXELS}: must be a positive integer, got {value!r}") from None
    if limit < 1:
        raise InputError(f"{ENV_MAX_PIXELS}: must be a positive integer, got {value!r}")
    return limit


def check_size(path: str | Path, shape) -> None:
    """Refuse ``path`` when its announced spatial ``shape`` holds more than :func:`max_pixels` elements.

    Raises
    ------
    InputError
        Naming the file, its size and the limit.
    """
    sizes = [int(s) for s in shape]
    if any(s < 1 for s in sizes):
        raise InputError(f"{path}: announces an empty image of size {'x'.join(map(str, sizes))}")
    count = int(np.prod(np.array(sizes, dtype=object)))  # exact: no int64 overflow
    limit = max_pixels()
    if count > limit:
        raise InputError(f"{path}: announces a {'x'.join(map(str, sizes))} image ({count:,} pixels), more than the "
                         f"limit of {limit:,} (set {ENV_MAX_PIXELS} to raise it)")


def check_channels(path: str | Path, channels: int) -> None:
    """Refuse ``path`` when it announces more than :data:`MAX_CHANNELS` channels."""
    if int(channels) > MAX_CHANNELS:
        raise InputError(f"{path}: announces {int(channels)} channels, more than the {MAX_CHANNELS} an image may have")
