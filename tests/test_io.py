"""Reading and writing images, volumes, masks and markers."""

from __future__ import annotations

import numpy as np
import pytest

from hitlseg.errors import InputError
from hitlseg.io import (
    read_image,
    read_mask,
    read_markers,
    read_markers_text,
    write_array,
    write_markers,
    write_markers_text,
)
from hitlseg.io.color import rgb_to_normalized_lab
from tests.helpers import disk_mask, rgb_from_mask, write_nifti, write_png


def test_rgb_png_becomes_normalized_lab(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[0, 0] = (255, 255, 255)
    path = write_png(tmp_path / "a.png", rgb)
    image, meta = read_image(path)
    assert image.shape == (3, 4, 5) and image.dtype == np.float32
    assert image[0, 0, 0] == pytest.approx(1.0, abs=1e-3)  # white: L* = 100
    assert image[0, 1, 1] == pytest.approx(0.0, abs=1e-3)  # black: L* = 0
    assert 0 <= image.min() and image.max() <= 1
    assert meta.spatial_shape == (4, 5)


def test_lab_of_pure_colours_matches_gamut_extremes():
    green = np.zeros((3, 1, 1), np.float32)
    green[1] = 1
    lab = rgb_to_normalized_lab(green)
    assert lab[1, 0, 0] == pytest.approx(0.0, abs=0.01)  # a* of pure green is the minimum


def test_16bit_rgb_png_keeps_full_depth(tmp_path):
    import png

    data = np.zeros((2, 3, 3), np.uint16)
    data[0, 0] = (65535, 65535, 65535)
    data[0, 1] = (256, 256, 256)  # would be 1/255 after truncation to 8 bits
    path = tmp_path / "deep.png"
    png.from_array(data.reshape(2, -1), "RGB;16").save(str(path))
    image, _ = read_image(path, color="rgb")
    assert image[0, 0, 0] == pytest.approx(1.0)
    assert image[0, 0, 1] == pytest.approx(256 / 65535, rel=1e-4)


@pytest.mark.shared
def test_schisto_16bit_png(shared):
    image, _ = read_image(shared("schisto") / "images" / "000002.png", color="rgb")
    assert image.shape == (3, 400, 400)
    levels = np.unique(np.round(image[0] * 65535))
    assert len(levels) > 256  # genuinely 16-bit


@pytest.mark.shared
def test_16bit_png_reader_equals_pypng_on_the_schisto_images(shared):
    """Issue 14.1: libpng (imagecodecs) reads every schisto image bit-exactly as pypng did."""
    from hitlseg.io.images import _read_png16, _read_png_pypng

    files = sorted((shared("schisto") / "images").glob("*.png"))
    assert len(files) >= 10
    for path in files:
        new, old = _read_png16(path), _read_png_pypng(path)
        assert new.dtype == old.dtype == np.uint16 and new.shape == old.shape
        np.testing.assert_array_equal(new, old, err_msg=str(path))


@pytest.mark.parametrize("mode, planes", [("L;16", 1), ("LA;16", 2), ("RGB;16", 3), ("RGBA;16", 4)])
def test_16bit_png_reader_equals_pypng_in_every_colour_type(tmp_path, mode, planes):
    import png

    from hitlseg.io.images import _read_png16, _read_png_pypng

    data = np.random.default_rng(planes).integers(0, 65536, size=(5, 7 * planes)).astype(np.uint16)
    path = tmp_path / "deep.png"
    png.from_array(data, mode).save(str(path))
    new, old = _read_png16(path), _read_png_pypng(path)
    assert new.dtype == np.uint16
    np.testing.assert_array_equal(new, old)
    np.testing.assert_array_equal(new.reshape(5, -1), data)


def test_16bit_png_with_an_sbit_chunk_reads_as_before(tmp_path):
    """pypng scales values down to the significant bits an sBIT chunk declares; libpng would not."""
    import struct
    import zlib

    import png

    from hitlseg.io.images import _read_png16, _read_png_pypng

    data = np.random.default_rng(0).integers(0, 65536, size=(4, 18)).astype(np.uint16)
    buffer = tmp_path / "plain.png"
    png.from_array(data, "RGB;16").save(str(buffer))
    raw = buffer.read_bytes()
    body = b"sBIT" + bytes([12, 12, 12])
    chunk = struct.pack(">I", 3) + body + struct.pack(">I", zlib.crc32(body))
    path = tmp_path / "sbit.png"
    path.write_bytes(raw[:33] + chunk + raw[33:])  # after IHDR
    np.testing.assert_array_equal(_read_png16(path), _read_png_pypng(path))
    assert _read_png16(path).max() < 4096


def test_grey_tiff_bmp_jpeg(tmp_path):
    import tifffile
    from PIL import Image

    grey = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    tifffile.imwrite(tmp_path / "g.tif", grey)
    image, _ = read_image(tmp_path / "g.tif", normalize="minmax")
    assert image.shape == (1, 8, 8) and image.min() == 0 and image.max() == 1
    rgb = rgb_from_mask(disk_mask((16, 16), radius=4))
    Image.fromarray(rgb).save(tmp_path / "c.bmp")
    Image.fromarray(rgb).save(tmp_path / "c.jpg")
    assert read_image(tmp_path / "c.bmp")[0].shape == (3, 16, 16)
    assert read_image(tmp_path / "c.jpg")[0].shape == (3, 16, 16)


def test_nifti_axes_and_geometry_round_trip(tmp_path):
    volume = np.zeros((4, 5, 6), np.int16)  # (z, y, x)
    volume[1, 2, 3] = 7
    affine = np.array([[1.2, 0, 0, -10], [0, 1, 0, 5], [0, 0, 2.5, 3], [0, 0, 0, 1]])
    path = write_nifti(tmp_path / "v.nii.gz", volume, affine)
    mask, meta = read_mask(path)
    assert mask.shape == (4, 5, 6) and mask[1, 2, 3] == 7
    out = write_array(tmp_path / "out.nii.gz", mask, meta)
    import nibabel as nib

    nii = nib.load(str(out))
    assert np.allclose(nii.affine, affine)
    assert nii.shape == (6, 5, 4)
    assert read_mask(out)[0][1, 2, 3] == 7


def test_multimodal_case_stacks_channels_and_checks_shapes(tmp_path):
    a = write_nifti(tmp_path / "flair.nii.gz", np.random.default_rng(0).normal(size=(4, 5, 6)))
    b = write_nifti(tmp_path / "t1c.nii.gz", np.random.default_rng(1).normal(size=(4, 5, 6)))
    image, _ = read_image([a, b])
    assert image.shape == (2, 4, 5, 6)
    c = write_nifti(tmp_path / "t2.nii.gz", np.zeros((4, 5, 7)))
    with pytest.raises(InputError, match="t2.nii.gz"):
        read_image([a, c])


def test_mask_png_round_trip(tmp_path):
    mask = disk_mask((20, 30), labels=[2])
    path = write_array(tmp_path / "m.png", mask)
    loaded, _ = read_mask(path)
    assert np.array_equal(loaded, mask)


def test_corrupt_png_names_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(InputError, match="bad.png"):
        read_image(bad)
    (tmp_path / "trunc.png").write_bytes(b"nope")
    with pytest.raises(InputError, match="trunc.png"):
        read_mask(tmp_path / "trunc.png")


def test_marker_text_round_trip_2d_and_3d(tmp_path):
    rng = np.random.default_rng(0)
    for shape in [(7, 9), (3, 7, 9)]:
        markers = (rng.random(shape) < 0.2) * rng.integers(1, 4, shape)
        markers = markers.astype(np.uint8)
        path = write_markers_text(tmp_path / f"m{len(shape)}.txt", markers)
        header = path.read_text().split("\n")[0].split()
        assert header == [str(int((markers > 0).sum()))] + [str(s) for s in shape[::-1]]
        assert np.array_equal(read_markers_text(path), markers)


def test_marker_text_pixel_convention(tmp_path):
    path = tmp_path / "m.txt"
    path.write_text("2 5 4\n3 1 -1 0\n0 2 -1 1\n")  # x y id label
    markers = read_markers_text(path)
    assert markers.shape == (4, 5)
    assert markers[1, 3] == 1 and markers[2, 0] == 2 and markers.sum() == 3


@pytest.mark.shared
def test_schisto_human_markers_round_trip(shared, tmp_path):
    for source in sorted((shared("schisto") / "markers").glob("*.txt")):
        markers, ids = read_markers_text(source, return_ids=True)
        copy = write_markers_text(tmp_path / source.name, markers, ids)
        again, again_ids = read_markers_text(copy, return_ids=True)
        assert np.array_equal(again, markers) and np.array_equal(again_ids, ids)
        original = sorted(line.split() for line in source.read_text().split("\n")[1:] if line.strip())
        written = sorted(line.split() for line in copy.read_text().split("\n")[1:] if line.strip())
        assert original == written
        assert set(np.unique(markers)) == {0, 1, 2}


def test_marker_label_image_and_shape_check(tmp_path):
    markers = np.zeros((6, 8), np.uint8)
    markers[1, 1] = 1
    markers[4, 5] = 3
    path = write_markers(tmp_path / "m.png", markers)
    assert np.array_equal(read_markers(path, shape=(6, 8)), markers)
    with pytest.raises(InputError, match="m.png"):
        read_markers(path, shape=(6, 9))


@pytest.mark.parametrize(
    "text, problem",
    [
        ("2 5 4\n3 1 -1 0\n9 2 -1 1\n", "outside"),
        ("3 5 4\n3 1 -1 0\n", "announces 3"),
        ("x y z\n", "first line"),
        ("1 5 4\n3 1 0\n", "expected 4"),
    ],
)
def test_bad_marker_text(tmp_path, text, problem):
    path = tmp_path / "bad-seeds.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=problem) as info:
        read_markers_text(path)
    assert "bad-seeds.txt" in str(info.value)


def test_write_is_atomic_on_failure(tmp_path):
    path = write_array(tmp_path / "keep.png", np.ones((3, 3), np.uint8))
    before = path.read_bytes()
    with pytest.raises(InputError):
        write_array(path, -np.ones((3, 3), np.int16))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_normalized_lab_round_trip():
    from hitlseg.io.color import normalized_lab_to_rgb

    rgb = np.random.default_rng(0).random((3, 5, 4)).astype(np.float32)
    back = normalized_lab_to_rgb(rgb_to_normalized_lab(rgb))
    assert back.shape == (5, 4, 3)
    assert np.allclose(np.moveaxis(back, -1, 0), rgb, atol=1e-3)
