"""Markers: uint8 label arrays (0 unmarked, c+1 for class c), as label images or FLIM text files.

The FLIM community's text format has a first line ``N xsize ysize [zsize]`` and then one marked
pixel per line, ``x y [z] id label``, where ``label`` is the class (0 background) and ``id`` the
marker (stroke) it belongs to. In arrays, ``x`` is the column, ``y`` the row and ``z`` the slice:
a pixel ``x y`` is ``markers[y, x]`` and a voxel ``x y z`` is ``markers[z, y, x]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hitlseg.errors import InputError
from hitlseg.io.formats import MARKER_TEXT_SUFFIXES, suffix_of
from hitlseg.io.images import ImageMeta, _atomic_target, read_mask, write_array
from hitlseg.io.limits import check_size


def read_markers_text(path: str | Path, *, return_ids: bool = False):
    """Read a FLIM marker text file into a marker label array.

    Parameters
    ----------
    path : path
        Text file: ``N xsize ysize [zsize]`` then ``N`` lines ``x y [z] id label``.
    return_ids : bool
        Also return an int32 array of the marker id of each marked pixel (-1 where unmarked).

    Returns
    -------
    markers : ndarray, uint8, shape (ysize, xsize) or (zsize, ysize, xsize)
    ids : ndarray, int32, same shape (only with ``return_ids``)
    """
    path = Path(path)
    try:
        lines = path.read_text().split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read marker file ({exc})") from exc
    header = lines[0].split() if lines else []
    if len(header) not in (3, 4) or not all(h.lstrip("-").isdigit() for h in header):
        raise InputError(f"{path}: first line must be 'N xsize ysize [zsize]', got {lines[0][:60]!r}")
    count, *sizes = (int(h) for h in header)
    if len(sizes) == 3 and sizes[2] == 0:  # some writers put zsize 0 for 2D
        sizes = sizes[:2]
    if min(sizes) < 1 or count < 0:
        raise InputError(f"{path}: bad sizes in header {lines[0]!r}")
    check_size(path, sizes[::-1])  # before allocating the arrays the header announces
    ncols = len(sizes) + 2
    body = [line for line in lines[1:] if line.strip()]
    if len(body) != count:
        raise InputError(f"{path}: header announces {count} marked pixels but the file has {len(body)} lines")
    try:
        table = np.array([line.split() for line in body], dtype=np.int64).reshape(count, -1) if count else \
            np.zeros((0, ncols), dtype=np.int64)
    except OverflowError as exc:
        raise InputError(f"{path}: a number after the first line is too large (beyond 64-bit integers)") from exc
    except ValueError as exc:
        raise InputError(f"{path}: every line after the first must hold {ncols} integers") from exc
    if count and table.shape[1] != ncols:
        raise InputError(f"{path}: lines hold {table.shape[1]} numbers, expected {ncols} ('x y{' z' if ncols == 5 else ''} id label')")
    shape = tuple(reversed(sizes))
    markers = np.zeros(shape, dtype=np.uint8)
    ids = np.full(shape, -1, dtype=np.int32)
    if count:
        coords = table[:, : len(sizes)]
        outside = ((coords < 0) | (coords >= np.array(sizes))).any(axis=1)
        if outside.any():
            first = body[int(np.argmax(outside))]
            raise InputError(
                f"{path}: {int(outside.sum())} marked pixels lie outside the {'x'.join(map(str, sizes))} image "
                f"(first: {first.strip()!r})"
            )
        labels = table[:, -1]
        if labels.min() < 0 or labels.max() > 254:
            raise InputError(f"{path}: labels must be 0..254 (0 background), got {labels.min()}..{labels.max()}")
        marker = table[:, -2]
        if marker.min() < -1 or marker.max() > np.iinfo(np.int32).max:
            raise InputError(f"{path}: marker ids must be -1..{np.iinfo(np.int32).max}, got "
                             f"{marker.min()}..{marker.max()}")
        index = tuple(coords[:, ::-1].T)
        markers[index] = labels + 1
        ids[index] = table[:, -2]
    return (markers, ids) if return_ids else markers


def write_markers_text(path: str | Path, markers: np.ndarray, ids: np.ndarray | None = None) -> Path:
    """Write a marker label array in the FLIM text format, atomically.

    Parameters
    ----------
    path : path
        Output ``.txt`` file.
    markers : ndarray, uint8, 2D or 3D
        0 unmarked, c+1 for class c.
    ids : ndarray, optional
        Marker id per pixel; by default each connected stroke of one class gets its own id.
    """
    path = Path(path)
    markers = np.asarray(markers)
    if markers.ndim not in (2, 3):
        raise InputError(f"markers: expected a 2D or 3D array, got shape {markers.shape}")
    if ids is None:
        ids = marker_ids(markers)
    elif ids.shape != markers.shape:
        raise InputError(f"ids: shape {ids.shape} differs from markers {markers.shape}")
    coords = np.nonzero(markers)
    xyz = np.stack(coords[::-1], axis=1) if coords[0].size else np.zeros((0, markers.ndim), dtype=np.int64)
    table = np.column_stack([xyz, ids[coords], markers[coords].astype(np.int64) - 1])
    sizes = " ".join(str(s) for s in markers.shape[::-1])
    tmp = _atomic_target(path)
    try:
        with open(tmp, "w") as handle:
            handle.write(f"{len(table)} {sizes}\n")
            np.savetxt(handle, table, fmt="%d")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def marker_ids(markers: np.ndarray) -> np.ndarray:
    """Number each connected stroke (one class, full connectivity) from 0; -1 where unmarked."""
    from scipy import ndimage

    ids = np.full(markers.shape, -1, dtype=np.int32)
    offset = 0
    structure = np.ones((3,) * markers.ndim, dtype=bool)
    for value in np.unique(markers[markers > 0]):
        components, n = ndimage.label(markers == value, structure=structure)
        ids[components > 0] = components[components > 0] - 1 + offset
        offset += n
    return ids


def read_markers(path: str | Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Read markers from a text file or a label image (PNG/TIFF/NIfTI).

    Parameters
    ----------
    path : path
        Marker file.
    shape : tuple, optional
        Spatial shape of the image the markers belong to; a mismatch raises :class:`InputError`.
    """
    path = Path(path)
    if suffix_of(path) in MARKER_TEXT_SUFFIXES:
        markers = read_markers_text(path)
    else:
        markers, _ = read_mask(path)
        if markers.max() > 255:
            raise InputError(f"{path}: marker labels must be 0..255")
        markers = markers.astype(np.uint8)
    if shape is not None and tuple(markers.shape) != tuple(shape):
        raise InputError(f"{path}: markers have shape {markers.shape} but the image has shape {tuple(shape)}")
    return markers


def write_markers(path: str | Path, markers: np.ndarray, meta: ImageMeta | None = None) -> Path:
    """Write markers as text (``.txt``) or as a label image in the format of ``path``."""
    if suffix_of(path) in MARKER_TEXT_SUFFIXES:
        return write_markers_text(path, markers)
    return write_array(path, np.asarray(markers, dtype=np.uint8), meta)
