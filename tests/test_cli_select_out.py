"""``select --split --out`` writes a run that ``train`` takes up; near-duplicates in the output.

The end-to-end test runs the README's "From the shell" commands (split -> select --out -> train ->
predict -> evaluate) on a copy of part of the bundled demo data.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hitlseg.cli import main
from hitlseg.dataset import Dataset, Split
from tests.helpers import cli_one_line_error as _one_line_error, cli_run as _run, copy_demo

FAST = ["--projection", "pca"]  # t-SNE is not what these tests are about


@pytest.fixture
def demo(tmp_path):
    return copy_demo(tmp_path / "demo", 20)


def test_shell_workflow_split_select_train_predict_evaluate(demo, tmp_path, capsys):
    from hitlseg.flim import FLIMModel
    from hitlseg.io import read_markers
    from hitlseg.nets import SegModel
    from hitlseg.robot import Robot

    split_file, run = tmp_path / "split.json", tmp_path / "run"
    assert _run(capsys, "split", demo, "--seed", 0, "--out", split_file)[0] == 0
    split = Split.load(split_file)

    code, text, err = _run(capsys, "select", "--dataset", demo, "--split", split_file, "--robot", "--rounds", 3,
                           "--policy", "alternate", "--k", 3, "--out", run, *FAST)
    assert code == 0, err
    info = json.loads((run / "selected.json").read_text())
    selected = info["selected"]
    assert len(selected) == 3 and set(selected) <= set(split.train)  # drawn from the training images only
    assert f"selected: {', '.join(selected)}" in text
    assert (run / "selected.txt").read_text().split() == selected
    assert info["pool"] == len(split.train) and info["split"] == str(split_file.resolve())

    rounds = json.loads((run / "rounds.json").read_text())
    assert [r["image_id"] for r in rounds] == selected
    for r in rounds:
        recommendation = r["recommendation"]
        assert {"closest", "most_distant", "near_duplicates"} <= set(recommendation)
        listed = {x["id"] for x in recommendation["closest"] + recommendation["most_distant"]}
        assert listed and listed <= set(split.train) - set(r["selected"])
    assert rounds[1]["image_id"] == rounds[0]["recommendation"]["most_distant"][0]["id"]  # alternate: distant first

    dataset = Dataset.from_folder(demo)
    robot = Robot(0)
    for sample_id in selected:  # the robot's markers, in the marker format the dataset reads
        mask = dataset.mask(sample_id)
        np.testing.assert_array_equal(read_markers(run / "markers" / f"{sample_id}.png"), robot.mark(mask, key=sample_id))
    assert sorted(p.stem for p in (run / "markers").iterdir()) == sorted(selected)
    flim = FLIMModel.load(run / "flim.pt")
    assert len(flim.encoder.layers) == 3 and flim.preprocessing == {"color": "lab", "normalize": "percentile"}

    # train takes the folder as the encoder ...
    model = tmp_path / "sunet.pt"
    code, text, err = _run(capsys, "train", "--dataset", demo, "--split", split_file, "--encoder", f"flim:{run}",
                           "--epochs", 1, "--out", model)
    assert code == 0 and "warning" not in err, err
    trained = SegModel.load(model)
    assert trained.info["encoder"] == f"flim:{run}"
    weights = flim.encoder.layers[0].weight.detach().cpu()
    assert trained.net.encoder.layers[0].weight.detach().cpu().equal(weights)  # the frozen FLIM encoder
    # ... and its markers, for learning from strokes alone
    strokes = tmp_path / "strokes.pt"
    code, text, err = _run(capsys, "train", "--dataset", demo, "--split", split_file, "--labels", "markers",
                           "--markers", run / "markers", "--self-training", 0, "--epochs", 1, "--out", strokes,
                           "--json")
    assert code == 0, err
    assert sorted(json.loads(text)["marked_images"]) == sorted(selected)

    pred = tmp_path / "pred"
    assert _run(capsys, "predict", "--model", model, "--images", demo, "--split", split_file, "--out", pred)[0] == 0
    assert sorted(p.stem for p in pred.glob("*.png")) == sorted(split.test)
    code, text, err = _run(capsys, "evaluate", "--pred", pred, "--truth", demo, "--json")
    assert code == 0, err
    result = json.loads(text)
    assert len(result["images"]) == len(split.test) and 0 <= result["mean"]["mean_dice"] <= 1


def test_rerun_replaces_the_previous_markers(demo, tmp_path, capsys):
    run = tmp_path / "run"
    assert _run(capsys, "select", "--dataset", demo, "--robot", "--rounds", 2, "--seed", 1, "--out", run, *FAST)[0] == 0
    first = json.loads((run / "selected.json").read_text())["selected"]
    (run / "markers" / "notes.txt.bak").write_text("a file of the user's")
    assert _run(capsys, "select", "--dataset", demo, "--robot", "--rounds", 2, "--seed", 7, "--out", run, *FAST)[0] == 0
    second = json.loads((run / "selected.json").read_text())["selected"]
    assert first != second
    # the markers are exactly the new run's (a stale marker file would be read as strokes); other files stay
    assert sorted(p.name for p in (run / "markers").iterdir()) == sorted([f"{i}.png" for i in second] + ["notes.txt.bak"])


def _duplicated_demo(root, n=6):
    """``n`` demo images, each also stored a second time as ``IDdup`` (with its mask)."""
    copy_demo(root, n)
    for folder in ("images", "masks"):
        for path in sorted((root / folder).glob("*.png")):
            shutil.copy(path, path.with_name(f"{path.stem}dup.png"))
    return root


def test_near_duplicates_are_skipped_and_printed(tmp_path, capsys):
    root = _duplicated_demo(tmp_path / "dup")
    code, text, err = _run(capsys, "select", "--dataset", root, "--robot", "--rounds", 2, "--k", 3, "--json", *FAST)
    assert code == 0, err
    data = json.loads(text)
    for r in data["rounds"]:
        skipped = {d["id"]: d["of"] for d in r["recommendation"]["near_duplicates"]}
        for sample_id in r["selected"]:  # the copy of every selected image is skipped, named with its original
            twin = sample_id[:-3] if sample_id.endswith("dup") else sample_id + "dup"
            if twin not in r["selected"]:
                assert skipped.get(twin) == sample_id
        listed = {x["id"] for x in r["recommendation"]["closest"] + r["recommendation"]["most_distant"]}
        assert not listed & set(skipped)
    assert data["duplicate_tolerance"] == 0.01
    code, text, _ = _run(capsys, "select", "--dataset", root, "--robot", "--rounds", 2, "--k", 3, *FAST)
    first = data["selected"][0]
    twin = first[:-3] if first.endswith("dup") else first + "dup"
    assert f"  skipped: {twin}, near-duplicate of {first} (distance 0)" in text
    code, text, _ = _run(capsys, "select", "--dataset", root, "--robot", "--rounds", 2, "--k", 3,
                         "--duplicate-tolerance", 0, *FAST)
    assert code == 0 and "skipped:" not in text


def test_duplicate_tolerance_default_is_the_library_s(capsys):
    from hitlseg.cli.select import DUPLICATE_TOLERANCE
    from hitlseg.selection import DUPLICATE_TOLERANCE as LIBRARY, NearDuplicate

    assert DUPLICATE_TOLERANCE == LIBRARY and NearDuplicate.__name__ == "NearDuplicate"
    with pytest.raises(SystemExit):
        main(["select", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default {LIBRARY}; 0 turns it off)" in text


def test_select_out_and_train_folder_errors(demo, tmp_path, capsys):
    base = ["select", "--dataset", demo, "--robot", "--rounds", 1, *FAST]
    (tmp_path / "file").write_text("x")
    assert "must name a folder" in _one_line_error(capsys, *base, "--out", tmp_path / "file")
    (tmp_path / "run" / "flim.pt").mkdir(parents=True)
    assert "flim.pt" in _one_line_error(capsys, *base, "--out", tmp_path / "run")
    assert "--out" in _one_line_error(capsys, *base, "--arch", tmp_path / "arch.json")
    bad = tmp_path / "bad.json"
    Split(["001", "ghost"], ["002"], ["003"]).save(bad)
    assert "ghost" in _one_line_error(capsys, *base, "--split", bad)
    small = tmp_path / "small.json"
    Split(["001", "002"], ["003"], ["004"]).save(small)
    assert "training part" in _one_line_error(capsys, "select", "--dataset", demo, "--robot", "--rounds", 3,
                                              "--split", small, "--out", tmp_path / "out2")
    for value in ("1", "-0.1", "nan", "x"):
        assert "[0, 1)" in _one_line_error(capsys, *base, "--duplicate-tolerance", value)
    assert not (tmp_path / "out2").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    train = ["train", "--dataset", demo, "--epochs", 1, "--out", tmp_path / "m.pt"]
    assert "no flim.pt" in _one_line_error(capsys, *train, "--encoder", f"flim:{empty}")
    assert "not found" in _one_line_error(capsys, *train, "--labels", "markers", "--markers", tmp_path / "nope")
    assert "--markers" in _one_line_error(capsys, *train, "--encoder", "backprop", "--markers", empty)
    assert not (tmp_path / "m.pt").exists()


def test_train_warns_when_the_encoder_saw_test_images(demo, tmp_path, capsys):
    run = tmp_path / "run"
    assert _run(capsys, "select", "--dataset", demo, "--robot", "--rounds", 2, "--out", run, *FAST)[0] == 0
    selected = json.loads((run / "selected.json").read_text())["selected"]
    others = [i for i in Dataset.from_folder(demo).ids if i not in selected]
    split = tmp_path / "split.json"
    Split(others[:-3] + selected[:1], others[-3:-2], others[-2:] + selected[1:]).save(split)
    code, _, err = _run(capsys, "train", "--dataset", demo, "--split", split, "--encoder", f"flim:{run}",
                        "--epochs", 1, "--out", tmp_path / "m.pt")
    assert code == 0
    assert f"learned from 1 images outside the training part of the split ({selected[1]})" in err
    # --markers also takes the 'select --out' folder itself (its markers/)
    code, text, err = _run(capsys, "train", "--dataset", demo, "--split", split, "--labels", "markers", "--markers", run,
                           "--self-training", 0, "--epochs", 1, "--out", tmp_path / "s.pt", "--json")
    assert code == 0, err
    assert json.loads(text)["marked_images"] == selected[:1]  # the other marked image is in the test part
