"""``hitlseg robot mark`` and ``hitlseg robot correct``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from hitlseg.cli import main
from hitlseg.dataset import Dataset
from hitlseg.io import read_markers, write_markers_text
from hitlseg.robot import Robot
from tests.helpers import disk_mask, make_2d_dataset, write_nifti, write_png


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def _mark(root, ids, out=None, *extra):
    return main(["robot", "mark", "--dataset", str(root), "--ids", ids, "--out", str(out or root / "markers"), *map(str, extra)])


def _wrong_prediction(mask: np.ndarray) -> np.ndarray:
    """``mask`` with the class-2 object erased and a false class-1 square in the background."""
    pred = mask.copy()
    pred[mask == 2] = 0
    ys, xs = np.nonzero(mask == 0)
    square = np.zeros_like(mask, dtype=bool)
    for y, x in zip(ys, xs):  # the first background pixel with a clear 12x12 background square
        if y + 12 <= mask.shape[0] and x + 12 <= mask.shape[1] and not mask[y : y + 12, x : x + 12].any():
            square[y : y + 12, x : x + 12] = True
            break
    assert square.any()
    pred[square] = 1
    return pred


@pytest.fixture
def data(tmp_path):
    return make_2d_dataset(tmp_path / "data", n=4)


def test_mark_writes_markers_the_dataset_finds(data, capsys):
    assert _mark(data, "img00,img02", None, "--json") == 0
    summary = _json(capsys)
    assert summary["out"] == str(data / "markers")
    assert [row["id"] for row in summary["images"]] == ["img00", "img02"]

    dataset = Dataset.from_folder(data)
    assert {s.id for s in dataset if s.markers_path is not None} == {"img00", "img02"}
    for row in summary["images"]:
        loaded = dataset.load(row["id"])
        markers, mask = loaded.markers, loaded.mask
        marked = markers > 0
        assert marked.any()
        assert (markers[marked] == mask[marked] + 1).all()
        assert set(np.unique(markers[marked])) == {1, 2, 3}  # background and both classes
        assert row["marked"] == int(marked.sum())
        assert row["fraction"] == pytest.approx(marked.sum() / mask.size)
        assert dataset.sample(row["id"]).markers_path.name == f"{row['id']}.png"
        assert row["path"] == str(dataset.sample(row["id"]).markers_path)
        np.testing.assert_array_equal(markers, Robot(seed=0).mark(mask, key=row["id"]))
    assert not list((data / "markers").glob(".*"))  # no temporary files left


def test_mark_text_output_and_ids_file(data, tmp_path, capsys):
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("img01\n\n# a comment\nimg03\n")
    assert _mark(data, f"@{ids_file}", tmp_path / "out", "--max-marked-fraction", "0.02") == 0
    out = capsys.readouterr().out
    assert "img01" in out and "img03" in out and "wrote 2 marker files" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img01.png", "img03.png"]
    markers = read_markers(tmp_path / "out" / "img01.png")
    assert (markers > 0).sum() <= max(0.02 * markers.size, 3)


def test_mark_same_seed_same_files(data, tmp_path, capsys):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert _mark(data, "img00,img01", tmp_path / name, "--seed", seed) == 0
    for i in ("img00", "img01"):
        assert (tmp_path / "a" / f"{i}.png").read_bytes() == (tmp_path / "b" / f"{i}.png").read_bytes()
    differs = [not np.array_equal(read_markers(tmp_path / "a" / f"{i}.png"), read_markers(tmp_path / "c" / f"{i}.png"))
               for i in ("img00", "img01")]
    assert any(differs)


def test_mark_unknown_or_unmasked_id_exits_2_and_writes_nothing(data, capsys):
    assert _mark(data, "img00,nope,img01") == 2
    err = capsys.readouterr().err
    assert "nope" in err and err.count("\n") == 1 and "img00" not in err
    assert not (data / "markers").exists()

    (data / "masks" / "img01.png").unlink()
    assert _mark(data, "img00,img01") == 2
    assert "img01" in capsys.readouterr().err
    assert not (data / "markers").exists()

    assert _mark(data, " , ") == 2
    assert "no image ids" in capsys.readouterr().err
    assert _mark(data, "img00", None, "--seed", "-1") == 2
    assert "seed" in capsys.readouterr().err
    assert not (data / "markers").exists()


def test_mark_rewrites_an_existing_text_marker_file_in_place(data):
    (data / "markers").mkdir()
    write_markers_text(data / "markers" / "img00-seeds.txt", np.zeros((64, 64), np.uint8))
    assert _mark(data, "img00") == 0
    assert [p.name for p in (data / "markers").iterdir()] == ["img00-seeds.txt"]
    dataset = Dataset.from_folder(data)
    loaded = dataset.load("img00")
    np.testing.assert_array_equal(loaded.markers, Robot(seed=0).mark(loaded.mask, key="img00"))


def test_mark_volume_writes_nifti_with_the_image_geometry(tmp_path, capsys):
    import nibabel as nib

    root = tmp_path / "vol"
    zz, yy, xx = np.mgrid[:12, :24, :24]
    mask = ((zz - 6) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2 <= 25).astype(np.uint8)
    affine = np.array([[0.0, 1.2, 0, 5], [1.5, 0, 0, -3], [0, 0, 2.0, 7], [0, 0, 0, 1]])
    write_nifti(root / "images" / "v1.nii.gz", (mask * 100 + 20).astype(np.int16), affine)
    write_nifti(root / "masks" / "v1.nii.gz", mask, affine)
    assert _mark(root, "v1", None, "--json") == 0
    row = _json(capsys)["images"][0]
    assert row["path"] == str(root / "markers" / "v1.nii.gz")
    np.testing.assert_allclose(nib.load(row["path"]).affine, affine)
    markers = Dataset.from_folder(root).load("v1").markers
    assert markers.shape == (12, 24, 24)
    marked = markers > 0
    assert marked.any() and (markers[marked] == mask[marked] + 1).all()


def _predictions(data, folder, ids, shape=None):
    dataset = Dataset.from_folder(data)
    preds = {}
    for i in ids:
        mask = dataset.mask(i)
        preds[i] = _wrong_prediction(mask) if shape is None else np.zeros(shape, np.uint8)
        write_png(folder / f"{i}.png", preds[i])
    return dataset, preds


def _correct(data, preds, ids, out, *extra):
    return main(["robot", "correct", "--dataset", str(data), "--predictions", str(preds), "--ids", ids,
                 "--out", str(out), *map(str, extra)])


def test_correct_marks_only_errors_with_the_true_class(data, tmp_path, capsys):
    dataset, preds = _predictions(data, tmp_path / "pred", ["img00", "img01"])
    assert _correct(data, tmp_path / "pred", "img00,img01", tmp_path / "out", "--round", 2, "--seed", 5, "--json") == 0
    summary = _json(capsys)
    assert summary["round"] == 2 and len(summary["images"]) == 2
    for row in summary["images"]:
        mask, pred = dataset.mask(row["id"]), preds[row["id"]]
        markers = read_markers(row["path"], mask.shape)
        marked = markers > 0
        error = pred != mask
        assert marked.any()
        assert not (marked & ~error).any()
        assert (markers[marked] == mask[marked] + 1).all()
        assert set(np.unique(markers[marked])) == {1, 3}  # the false square is background, the lost disk class 2
        assert row["marked"] == int(marked.sum()) and row["errors"] == int(error.sum())
        np.testing.assert_array_equal(markers, Robot(seed=5).correct(mask, pred, key=(row["id"], 2)))
    assert _correct(data, tmp_path / "pred", "img00", tmp_path / "out2") == 0
    assert "img00" in capsys.readouterr().out


def test_correct_merge_keeps_earlier_strokes(data, tmp_path, capsys):
    dataset, preds = _predictions(data, tmp_path / "pred", ["img00"])
    out = data / "markers"
    assert _mark(data, "img00") == 0
    capsys.readouterr()
    first = read_markers(out / "img00.png")
    strokes = Robot(seed=0).correct(dataset.mask("img00"), preds["img00"], key=("img00", 1))
    assert strokes.any()

    assert _correct(data, tmp_path / "pred", "img00", out, "--round", 1, "--merge", "--json") == 0
    row = _json(capsys)["images"][0]
    merged = read_markers(out / "img00.png")
    new = strokes > 0
    np.testing.assert_array_equal(merged[new], strokes[new])
    np.testing.assert_array_equal(merged[~new], first[~new])
    assert row["merged"] and row["total"] == int((merged > 0).sum())
    assert Dataset.from_folder(data).sample("img00").markers_path == out / "img00.png"

    assert _correct(data, tmp_path / "pred", "img00", out, "--round", 1) == 0  # without --merge: replaced
    np.testing.assert_array_equal(read_markers(out / "img00.png"), strokes)


def test_correct_wrong_shape_or_missing_prediction_exits_2(data, tmp_path, capsys):
    _predictions(data, tmp_path / "pred", ["img00"], shape=(32, 32))
    assert _correct(data, tmp_path / "pred", "img00", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "img00.png" in err and "shape" in err
    assert not (tmp_path / "out").exists()

    assert _correct(data, tmp_path / "pred", "img01", tmp_path / "out") == 2
    assert "img01" in capsys.readouterr().err
    assert _correct(data, tmp_path / "pred", "img00,zzz", tmp_path / "out") == 2
    assert "zzz" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_help_does_not_import_the_robot():
    code = "import sys, hitlseg.cli.robot; sys.exit('hitlseg.robot' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
