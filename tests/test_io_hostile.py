"""Hostile files: sizes announced by headers, non-finite values, stray labels, leftovers of a killed init."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from helpers import make_2d_dataset, write_nifti, write_png
from hitlseg.errors import DataWarning, InputError
from hitlseg.io import peek_image, read_image, read_mask, read_markers_text
from hitlseg.project.store import DB_NAME
from hitlseg.io.limits import DEFAULT_MAX_PIXELS, ENV_MAX_PIXELS, max_pixels


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(path: Path, width: int, height: int, depth: int = 16) -> Path:
    """A valid greyscale PNG of ``width`` x ``height`` zeros, a few hundred KB on disk."""
    row = b"\0" + b"\0" * (width * depth // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    return path


def test_marker_header_announcing_a_huge_image_is_refused_before_allocation(tmp_path):
    path = tmp_path / "m.txt"
    path.write_text("1 1000000 1000000\n1 1 0 1\n")
    with pytest.raises(InputError, match=r"m\.txt: announces a 1000000x1000000 image .*HITLSEG_MAX_PIXELS"):
        read_markers_text(path)


@pytest.mark.parametrize("line, message", [("1 1 99999999999999999999 1", "too large"),
                                           ("1 1 5000000000 1", "marker ids must be")])
def test_marker_ids_out_of_range_are_refused(tmp_path, line, message):
    path = tmp_path / "m.txt"
    path.write_text(f"1 10 10\n{line}\n")
    with pytest.raises(InputError, match=message):
        read_markers_text(path)


def test_empty_marker_file_reads_as_no_strokes(tmp_path):
    path = tmp_path / "m.txt"
    path.write_text("0 120 100\n")
    markers = read_markers_text(path)
    assert markers.shape == (100, 120) and not markers.any()


@pytest.mark.parametrize("depth", [8, 16])
def test_png_bomb_is_refused_from_its_header(tmp_path, depth):
    path = png_bomb(tmp_path / "bomb.png", 20000, 20000, depth)
    assert path.stat().st_size < 2_000_000
    for reader in (read_image, read_mask, peek_image):
        with pytest.raises(InputError, match=r"bomb\.png: announces a 20000x20000 image"):
            reader(path)


def test_limit_is_overridable_and_checked(tmp_path, monkeypatch):
    assert max_pixels() == DEFAULT_MAX_PIXELS
    path = write_png(tmp_path / "a.png", np.zeros((20, 30), np.uint8))
    monkeypatch.setenv(ENV_MAX_PIXELS, "500")
    with pytest.raises(InputError, match="600 pixels"):
        read_image(path)
    monkeypatch.setenv(ENV_MAX_PIXELS, "600")
    assert read_image(path)[0].shape == (1, 20, 30)
    monkeypatch.setenv(ENV_MAX_PIXELS, "lots")
    with pytest.raises(InputError, match="HITLSEG_MAX_PIXELS: must be a positive integer"):
        read_image(path)


def test_tiff_and_nifti_sizes_are_checked_from_headers(tmp_path, monkeypatch):
    import tifffile

    tiff = tmp_path / "a.tif"
    tifffile.imwrite(tiff, np.zeros((40, 50), np.uint16))
    volume = write_nifti(tmp_path / "v.nii.gz", np.zeros((10, 10, 10), np.float32))
    monkeypatch.setenv(ENV_MAX_PIXELS, "999")
    for reader in (read_image, peek_image):
        with pytest.raises(InputError, match=r"a\.tif: announces a 40x50 image"):
            reader(tiff)
        with pytest.raises(InputError, match=r"v\.nii\.gz: announces a 10x10x10 image"):
            reader(volume)


def test_too_many_channels_are_refused(tmp_path):
    volume = tmp_path / "v.nii.gz"
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 40), np.float32), np.eye(4)), str(volume))
    with pytest.raises(InputError, match="40 channels"):
        read_image(volume)


def test_non_finite_voxels_are_reported_and_do_not_spread(tmp_path):
    data = np.random.default_rng(0).random((12, 14, 16)).astype(np.float32)
    data[0, :3] = np.nan
    data[5, 5, 5] = np.inf
    data[6, 6, 6] = -np.inf
    path = write_nifti(tmp_path / "v.nii.gz", data)
    with pytest.warns(DataWarning, match=r"v\.nii\.gz: 50 of 2688 values .* NaN or infinite"):
        image, _ = read_image(path)
    assert np.isfinite(image).all()
    finite = np.isfinite(data)
    assert image[0][finite].std() > 0.2  # the finite voxels keep their contrast
    clean = data.copy()
    clean[~finite] = data[finite].min()
    write_nifti(tmp_path / "clean.nii.gz", clean)
    np.testing.assert_allclose(image, read_image(tmp_path / "clean.nii.gz")[0], atol=1e-6)


def test_all_nan_volume_and_nan_mask_are_refused(tmp_path):
    path = write_nifti(tmp_path / "nan.nii.gz", np.full((4, 4, 4), np.nan, np.float32))
    with pytest.raises(InputError, match="no finite value"):
        read_image(path)
    with pytest.raises(InputError, match="NaN or infinite"):
        read_mask(path)


def test_clean_images_raise_no_warning(tmp_path):
    path = write_nifti(tmp_path / "v.nii.gz", np.ones((4, 4, 4), np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(path)


def test_jpeg_named_png_is_refused_by_every_reader(tmp_path):
    from PIL import Image

    path = tmp_path / "fake.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, format="JPEG")
    for reader in (read_image, peek_image):
        with pytest.raises(InputError, match=r"fake\.png: not a valid PNG"):
            reader(path)


# ---- one rule for the labels of a task ------------------------------------------------------

def test_task_classes_rule():
    from hitlseg.dataset import task_classes

    assert task_classes({"a": [0, 1], "b": [0, 2]}) == 2
    assert task_classes({"a": [0]}) == 1
    assert task_classes({"a": [0, 1, 3]}, n_classes=4) == 4
    with pytest.raises(InputError, match=r"b\.png: label 255 looks stray: .* 0, 1, 255 but no 2"):
        task_classes({"a.png": [0, 1], "b.png": [0, 1, 255]})
    with pytest.raises(InputError, match=r"c\.png: label 1000 is not a class"):
        task_classes({"a.png": list(range(0, 1001)), "c.png": [1000]})
    with pytest.raises(InputError, match="above the 2 declared classes"):
        task_classes({"a": [0, 3]}, n_classes=2)
    with pytest.raises(InputError, match="classes: must be an integer"):
        task_classes({"a": [0, 1]}, n_classes=0)


def _stray_dataset(tmp_path) -> Path:
    root = make_2d_dataset(tmp_path / "data", n=4, size=48)
    mask = read_mask(root / "masks" / "img02.png")[0]
    mask[0, 0] = 255
    write_png(root / "masks" / "img02.png", mask)
    return root


def test_stray_label_is_refused_by_info_init_and_the_train_workflow(tmp_path):
    from hitlseg.dataset import Dataset, describe
    from hitlseg.nets import workflow
    from hitlseg.project import Project

    root = _stray_dataset(tmp_path)
    dataset = Dataset.from_folder(root)
    with pytest.raises(InputError, match=r"img02\.png: label 255 looks stray"):
        describe(dataset)
    with pytest.raises(InputError, match=r"img02\.png: label 255 looks stray"):
        Project.init(tmp_path / "project", dataset=root)
    assert not (tmp_path / "project" / DB_NAME).exists()
    pairs = [(dataset.load(i).image, dataset.load(i).mask) for i in dataset.ids]
    with pytest.raises(InputError, match="img02: label 255 looks stray"):
        workflow.n_classes_of(pairs, dataset.ids)


def test_init_decodes_content_and_refuses_a_truncated_volume(tmp_path):
    from hitlseg.project import Project

    images = tmp_path / "images"
    good = write_nifti(images / "a.nii.gz", np.random.default_rng(0).random((8, 9, 10)).astype(np.float32))
    bad = write_nifti(images / "b.nii.gz", np.random.default_rng(1).random((8, 9, 10)).astype(np.float32))
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    assert good.exists()
    with pytest.raises(InputError, match=r"b\.nii\.gz"):
        Project.init(tmp_path / "project", images_dir=images)
    project = Project.init(tmp_path / "lazy", images_dir=images, validate=False)  # headers only
    assert len(project.images()) == 2
    project.close()


def test_open_removes_temporaries_a_killed_init_left_in_copied_folders(tmp_path):
    from hitlseg.project import Project

    root = make_2d_dataset(tmp_path / "data", n=2, size=48)
    project = Project.init(tmp_path / "project", dataset=root, copy=True)
    project.close()
    leftover = tmp_path / "project" / "masks" / ".img00.png.0a1b2c3d4e5f.tmp"
    leftover.write_bytes(b"half a mask")
    kept = tmp_path / "project" / "masks" / "img00.png"
    project = Project.open(tmp_path / "project")
    assert not leftover.exists() and kept.exists()
    assert "masks/.img00.png.0a1b2c3d4e5f.tmp" in project.removed_garbage
    project.close()


# ---- edges: warnings, bounds, writers that fail ---------------------------------------------

def test_cli_reports_repaired_voxels_in_one_warning_line(tmp_path, capsys):
    from hitlseg.cli import main

    data = np.random.default_rng(0).random((10, 10, 10)).astype(np.float32)
    data[0] = np.nan
    write_nifti(tmp_path / "data" / "images" / "v.nii.gz", data)
    assert main(["info", str(tmp_path / "data")]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warned) == 1 and warned[0].startswith("hitlseg: warning: ") and "v.nii.gz: 100 of 1000" in warned[0]


@pytest.mark.parametrize("field, value", [("lr", float("inf")), ("lr", float("nan")), ("sigma_xy", float("inf")),
                                          ("weight_decay", -1.0), ("sigma_color", 0.0)])
def test_train_config_refuses_non_finite_and_out_of_range_numbers(field, value):
    from hitlseg.nets import TrainConfig

    with pytest.raises(InputError, match=field):
        TrainConfig(**{field: value})


def test_failed_writes_name_the_output_and_leave_nothing(tmp_path, monkeypatch):
    import errno
    import os

    from hitlseg.io import write_array
    from hitlseg.project.files import write_json

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as caught:
        write_json(tmp_path / "results.json", {"a": 1})
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError) as caught:
        write_array(tmp_path / "mask.png", np.zeros((4, 4), np.uint8))
    assert caught.value.filename == str(tmp_path / "mask.png") and caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
