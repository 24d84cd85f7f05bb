"""Pictures and label arrays as the page exchanges them.

Marker transfer format (both directions): the uint8 label array (0 unmarked, c+1 for class c) in
C order, compressed with zlib (RFC 1950, what the browser's ``CompressionStream("deflate")``
writes) and base64-encoded, together with its shape. The same format serves 2D and 3D; it is
validated strictly (base64 alphabet, zlib stream, exact byte count, shape of the image, labels of
known classes) and decompression stops one byte past the expected size, so a small upload cannot
expand into a large array.
"""

from __future__ import annotations

import base64
import binascii
import threading
import zlib
from collections import OrderedDict

import numpy as np

from hitlseg.errors import InputError
from hitlseg.io.preview import PALETTE, class_color  # noqa: F401  (the page's palette, re-exported)
from hitlseg.selection.heatmap import png_bytes, resolve_slice, take_slice

MARKER_ENCODING = "uint8-zlib-base64"

def encode_labels(array: np.ndarray) -> str:
    """``array`` (uint8) as base64 of its zlib-compressed bytes."""
    data = np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    return base64.b64encode(zlib.compress(data, 6)).decode("ascii")


def decode_labels(data: str, shape: tuple[int, ...], what: str = "markers") -> np.ndarray:
    """Inverse of :func:`encode_labels` for an array of ``shape``; :class:`InputError` on anything else."""
    if not isinstance(data, str) or not data:
        raise InputError(f"{what}.data: expected a non-empty base64 string")
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise InputError(f"{what}.data: not valid base64") from None
    expected = int(np.prod(shape, dtype=np.int64))
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(raw, expected + 1)
    except zlib.error as exc:
        raise InputError(f"{what}.data: not a zlib-compressed stream ({exc})") from None
    if len(out) > expected or inflater.unconsumed_tail:
        raise InputError(f"{what}.data: decompresses to more than the {expected} bytes of shape {tuple(shape)} "
                         "(one uint8 label per pixel)")
    if not inflater.eof:
        raise InputError(f"{what}.data: the zlib stream is truncated")
    if inflater.unused_data:
        raise InputError(f"{what}.data: trailing bytes after the zlib stream")
    if len(out) != expected:
        raise InputError(f"{what}.data: decompresses to {len(out)} bytes, expected {expected} for shape {tuple(shape)} "
                         "(one uint8 label per pixel)")
    return np.frombuffer(out, dtype=np.uint8).reshape(shape).copy()


def check_view(ndim: int, shape: tuple[int, ...], slice_index: int | None, axis: int | None) -> tuple[int | None, int]:
    """Validate ``slice``/``axis`` query values for an image of spatial ``shape`` (2D: no slice)."""
    if ndim == 2:
        return None, 0
    return resolve_slice(tuple(shape), slice_index, 0 if axis is None else axis)


def label_overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.45, contours: bool = True) -> np.ndarray:
    """Colour classes 1..K of ``labels`` (H, W) over ``rgb`` (H, W, 3) uint8, with class outlines."""
    out = rgb.astype(np.float32)
    labels = np.asarray(labels)
    for value in np.unique(labels):
        if value == 0:
            continue
        where = labels == value
        out[where] = (1 - alpha) * out[where] + alpha * np.asarray(class_color(int(value)), np.float32)
    if contours:
        from skimage.segmentation import find_boundaries

        edges = find_boundaries(labels, mode="inner") & (labels > 0)
        colours = np.asarray([class_color(i) for i in range(int(labels.max()) + 1)], np.float32)
        out[edges] = colours[labels[edges]]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def thumbnail(rgb: np.ndarray, size: int) -> np.ndarray:
    """``rgb`` (H, W, 3) shrunk to fit ``size`` x ``size`` (aspect kept; never enlarged)."""
    from PIL import Image

    image = Image.fromarray(rgb)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image)


class LRU:
    """A small thread-safe least-recently-used cache, bounded by entries and, optionally, by bytes."""

    def __init__(self, size: int, max_bytes: int | None = None):
        self.size = int(size)
        self.max_bytes = max_bytes
        self._data: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def _weight(value) -> int:
        return int(getattr(value, "nbytes", None) or (len(value) if isinstance(value, (bytes, bytearray)) else 0))

    def get(self, key):
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key, value) -> None:
        with self._lock:
            if key in self._data:
                self._bytes -= self._weight(self._data.pop(key))
            self._data[key] = value
            self._bytes += self._weight(value)
            while len(self._data) > self.size or (self.max_bytes is not None and self._bytes > self.max_bytes
                                                  and len(self._data) > 1):
                _, old = self._data.popitem(last=False)
                self._bytes -= self._weight(old)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0


class Renderer:
    """Display pictures of project images (RGB uint8), cached per image."""

    def __init__(self, project, cache_size: int = 64):
        self.project = project
        self._rgb = LRU(cache_size, max_bytes=512 * 2**20)
        self._png = LRU(cache_size * 8, max_bytes=128 * 2**20)

    def rgb(self, image_id: str) -> np.ndarray:
        """The whole image as displayable uint8 RGB ``(*spatial, 3)``."""
        cached = self._rgb.get(image_id)
        if cached is None:
            from hitlseg.selection.heatmap import display_rgb

            cached = np.clip(np.round(display_rgb(self.project.image(image_id)) * 255), 0, 255).astype(np.uint8)
            self._rgb.put(image_id, cached)
        return cached

    def view(self, image_id: str, slice_index: int | None, axis: int) -> np.ndarray:
        info = self.project.image_info(image_id)
        return take_slice(self.rgb(image_id), slice_index, axis, info["ndim"])

    def png(self, image_id: str, slice_index: int | None, axis: int) -> bytes:
        key = ("png", image_id, slice_index, axis)
        data = self._png.get(key)
        if data is None:
            data = png_bytes(self.view(image_id, slice_index, axis))
            self._png.put(key, data)
        return data

    def thumbnail_png(self, image_id: str, size: int) -> bytes:
        key = ("thumb", image_id, size)
        data = self._png.get(key)
        if data is None:
            info = self.project.image_info(image_id)
            view = self.view(image_id, None if info["ndim"] == 2 else info["shape"][0] // 2, 0)
            data = png_bytes(thumbnail(view, size))
            self._png.put(key, data)
        return data
