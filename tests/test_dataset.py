"""Dataset discovery, lazy loading and splits."""

from __future__ import annotations

import numpy as np
import pytest

from hitlseg.dataset import Dataset, Split, describe, make_split
from hitlseg.datasets import DEMO_ROOT, demo
from hitlseg.errors import InputError
from hitlseg.io import write_markers_text
from tests.helpers import disk_mask, make_2d_dataset, write_nifti, write_png


def test_discovers_by_stem_and_loads_lazily(tmp_path):
    root = make_2d_dataset(tmp_path / "ds", n=4)
    markers = np.zeros((64, 64), np.uint8)
    markers[5, 5] = 1
    (root / "markers").mkdir()
    write_markers_text(root / "markers" / "img01-seeds.txt", markers)
    ds = Dataset.from_folder(root)
    assert ds.ids == ["img00", "img01", "img02", "img03"]
    sample = ds.load("img01")
    assert sample.image.shape == (3, 64, 64) and sample.mask.shape == (64, 64)
    assert sample.markers[5, 5] == 1
    assert ds.load("img00").markers is None


def test_stray_and_orphan_files_are_reported(tmp_path):
    root = make_2d_dataset(tmp_path / "ds", n=2)
    (root / "images" / "notes.txt").write_text("hello")
    (root / "images" / ".DS_Store").write_text("x")
    write_png(root / "masks" / "lonely.png", disk_mask((8, 8)))
    ds = Dataset.from_folder(root)
    reasons = {p.name: r for p, r in ds.ignored}
    assert "not an image" in reasons["notes.txt"]
    assert "without an image" in reasons["lonely.png"]
    assert ".DS_Store" not in reasons and len(ds) == 2


def test_image_without_mask(tmp_path):
    root = make_2d_dataset(tmp_path / "ds", n=3)
    (root / "masks" / "img02.png").unlink()
    ds = Dataset.from_folder(root)
    assert ds.load("img02").mask is None
    assert ds.with_masks() == ["img00", "img01"]
    assert describe(ds)["without_mask"] == ["img02"]


def test_image_mask_shape_mismatch_names_both(tmp_path):
    root = make_2d_dataset(tmp_path / "ds", n=2)
    write_png(root / "masks" / "img01.png", disk_mask((32, 64)))
    ds = Dataset.from_folder(root)
    with pytest.raises(InputError, match="img01.png") as info:
        ds.load("img01")
    assert "(32, 64)" in str(info.value) and "(64, 64)" in str(info.value)


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(InputError, match="no images found"):
        Dataset.from_folder(tmp_path / "empty")
    with pytest.raises(InputError, match="not found"):
        Dataset.from_folder(tmp_path / "nowhere")


def test_duplicate_stems_are_refused(tmp_path):
    root = make_2d_dataset(tmp_path / "ds", n=1)
    write_png(root / "images" / "img00.bmp", np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match="img00"):
        Dataset.from_folder(root)


def test_case_per_folder_layout_with_groups(tmp_path):
    rng = np.random.default_rng(0)
    for group in ("train", "validation", "test"):
        case = tmp_path / "cases" / group / f"case_{group}"
        write_nifti(case / "Flair.nii.gz", rng.normal(size=(4, 6, 8)))
        write_nifti(case / "T1c.nii.gz", rng.normal(size=(4, 6, 8)))
        write_nifti(case / "brainmask.nii.gz", np.ones((4, 6, 8), np.uint8))
        write_nifti(case / "OTMultiClass.nii.gz", rng.integers(0, 5, (4, 6, 8)).astype(np.uint8))
    ds = Dataset.from_folder(tmp_path / "cases")
    assert len(ds) == 3
    sample = ds.load("case_train")
    assert sample.image.shape == (2, 4, 6, 8) and sample.mask.shape == (4, 6, 8)
    assert [p.name for p in ds.sample("case_train").image_paths] == ["Flair.nii.gz", "T1c.nii.gz"]
    split = ds.predefined_split()
    assert split.train == ["case_train"] and split.val == ["case_validation"] and split.test == ["case_test"]


def test_modalities_of_different_shape(tmp_path):
    case = tmp_path / "cases" / "c1"
    write_nifti(case / "Flair.nii.gz", np.zeros((4, 6, 8)))
    write_nifti(case / "T1c.nii.gz", np.zeros((4, 6, 9)))
    ds = Dataset.from_folder(tmp_path / "cases")
    with pytest.raises(InputError, match="differ in shape") as info:
        ds.image("c1")
    assert "T1c.nii.gz" in str(info.value)


def test_split_is_seeded_and_round_trips(tmp_path):
    ids = [f"s{i:03d}" for i in range(50)]
    a, b = make_split(ids, seed=3), make_split(ids, seed=3)
    assert a.train == b.train and make_split(ids, seed=4).train != a.train
    assert (len(a.train), len(a.val), len(a.test)) == (30, 5, 15)
    assert sorted(a.train + a.val + a.test) == ids
    path = a.save(tmp_path / "split.json")
    loaded = Split.load(path)
    assert loaded.train == a.train and loaded.test == a.test


def test_split_naming_missing_ids_is_refused(tmp_path):
    root = make_2d_dataset(tmp_path / "ds", n=3)
    ds = Dataset.from_folder(root)
    Split(["img00", "ghost"], ["img01"], ["img02"]).save(tmp_path / "s.json")
    with pytest.raises(InputError, match="ghost"):
        Split.load(tmp_path / "s.json", ds)
    with pytest.raises(InputError, match="fractions"):
        make_split(ds.ids, fractions=(0.5, 0.5, 0.5))


def test_demo_dataset_is_bundled():
    ds = demo()
    assert len(ds) == 300
    assert (DEMO_ROOT / "README.md").is_file() and (DEMO_ROOT / "LICENSE").is_file()
    sample = ds.load(ds.ids[0])
    assert sample.image.shape[0] == 3 and set(np.unique(sample.mask)) <= {0, 1, 2}
