"""OME-Zarr (OME-NGFF 0.4 and 0.5) images as ``(C, *spatial)`` arrays, read lazily.

An OME-Zarr image is a zarr group whose ``multiscales`` metadata (in the group's attributes, under
``ome`` in 0.5) lists resolution levels, each an array with named axes (``t``, ``c``, ``z``,
``y``, ``x``; Moore et al., Nature Methods 2021). hitlseg reads the full-resolution level and
presents it in its own order: channels first, then the spatial axes as stored (``z, y, x`` or
``y, x``). A time axis must have one point; an image without a channel axis gets one.
Written by hand (about forty lines) rather than through ``ome-zarr-py``: only the metadata's
axes and first dataset are read, and zarr itself does the rest.
"""

from __future__ import annotations

import numpy as np

from hitlseg.errors import InputError

SPATIAL = ("z", "y", "x")


def multiscales(group) -> list | None:
    """The ``multiscales`` list of an OME-Zarr group's metadata, or None when it is not one."""
    attrs = dict(group.attrs)
    found = attrs.get("ome", {}).get("multiscales") if isinstance(attrs.get("ome"), dict) else None
    return found if found is not None else attrs.get("multiscales")


class ChannelsFirst:
    """A read-only view ``(C, *spatial)`` of an OME-Zarr array: ``view[c, z, y, x]`` reads that region."""

    def __init__(self, array, axes: list[str], name: str = "image"):
        self.array, self.axes = array, list(axes)
        unknown = [a for a in self.axes if a not in ("t", "c", *SPATIAL)]
        if unknown or len(set(self.axes)) != len(self.axes):
            raise InputError(f"{name}: OME-Zarr axes {self.axes} are not a subset of t, c, z, y, x")
        if "t" in self.axes and array.shape[self.axes.index("t")] != 1:
            raise InputError(f"{name}: a time series of {array.shape[self.axes.index('t')]} points; "
                             "hitlseg segments one time point (extract it first)")
        self.spatial = [a for a in self.axes if a in SPATIAL]
        if len(self.spatial) not in (2, 3):
            raise InputError(f"{name}: OME-Zarr image with spatial axes {self.spatial}; need y, x or z, y, x")
        channels = array.shape[self.axes.index("c")] if "c" in self.axes else 1
        self.shape = (int(channels),) + tuple(int(array.shape[self.axes.index(a)]) for a in self.spatial)
        self.ndim = len(self.shape)
        self.dtype = array.dtype

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = tuple(key) + (slice(None),) * (self.ndim - len(key))
        wanted = {"c": key[0], **dict(zip(self.spatial, key[1:]))}
        index = tuple(wanted.get(a, slice(None)) if a != "t" else 0 for a in self.axes)
        data = np.asarray(self.array[index])
        kept = [a for a in self.axes if a != "t"]  # integer indices are slices here (regions)
        order = ["c"] + self.spatial if "c" in kept else self.spatial
        data = np.transpose(data, [kept.index(a) for a in order])
        return data if "c" in kept else data[None]


def open_ome(group, name: str = "image") -> ChannelsFirst | None:
    """The full-resolution level of an OME-Zarr group, channels first; None when ``group`` is not OME-Zarr."""
    scales = multiscales(group)
    if not scales:
        return None
    try:
        first = scales[0]
        axes = [a["name"] if isinstance(a, dict) else str(a) for a in first["axes"]]
        path = first["datasets"][0]["path"]
    except (KeyError, IndexError, TypeError):
        raise InputError(f"{name}: OME-Zarr 'multiscales' metadata without axes or datasets") from None
    if path not in group:
        raise InputError(f"{name}: OME-Zarr level {path!r} is listed but missing")
    array = group[path]
    if len(axes) != array.ndim:
        raise InputError(f"{name}: OME-Zarr axes {axes} do not match level {path!r} of shape {array.shape}")
    return ChannelsFirst(array, axes, name)
