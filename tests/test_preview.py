"""Colour previews of label masks (hitlseg.io.preview)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from hitlseg.errors import InputError
from hitlseg.io.preview import MAX_SLICES, PALETTE, class_color, colour_labels, preview_png


def test_each_class_gets_its_palette_colour():
    labels = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    rgb = colour_labels(labels)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (0, 0, 0)
    for c, (r, k) in zip((1, 2, 3), ((0, 1), (1, 0), (1, 1))):
        assert tuple(rgb[r, k]) == class_color(c)
    assert len({tuple(rgb[r, k]) for r in range(2) for k in range(2)}) == 4


def test_png_round_trip_2d():
    labels = np.zeros((5, 7), dtype=np.int64)
    labels[1:3, 2:5] = 2
    picture = np.asarray(Image.open(io.BytesIO(preview_png(labels))))
    assert picture.shape == (5, 7, 3)
    assert (picture[1, 2] == class_color(2)).all() and (picture[0, 0] == 0).all()


def test_3d_contact_sheet_shows_every_labelled_slice_picked():
    volume = np.zeros((4, 3, 5), dtype=np.uint8)
    volume[2, 1, 1] = 1
    picture = np.asarray(Image.open(io.BytesIO(preview_png(volume))))
    # 4 slices -> 2x2 grid of 3x5 tiles, one grey pixel apart and around
    assert picture.shape == (2 * 4 + 1, 2 * 6 + 1, 3)
    assert (picture[0, 0] == 96).all()
    top, left = 1 + 1 * 4, 1 + 0 * 6  # slice 2 is the third tile: row 1, column 0
    assert (picture[top + 1, left + 1] == class_color(1)).all()


def test_deep_volume_is_subsampled():
    volume = np.zeros((100, 2, 2), dtype=np.uint8)
    picture = np.asarray(Image.open(io.BytesIO(preview_png(volume))))
    assert picture.shape == (4 * 3 + 1, 4 * 3 + 1, 3)  # MAX_SLICES = 16 slices -> 4x4
    assert MAX_SLICES == 16 and len(PALETTE) >= 10


@pytest.mark.parametrize("bad, match", [(np.zeros((2, 2, 2, 2), np.uint8), "2D or 3D"),
                                         (np.zeros((2, 2), np.float32), "integer"),
                                         (-np.ones((2, 2), np.int64), "negative")])
def test_bad_labels(bad, match):
    with pytest.raises(InputError, match=match):
        preview_png(bad)
