"""``hitlseg quality train`` and ``hitlseg quality score``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from helpers import cli_one_line_error, cli_run, make_2d_dataset, write_png


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """The command module in the CLI (a no-op once it is registered in hitlseg.cli)."""
    import hitlseg.cli

    if "hitlseg.cli.quality" not in hitlseg.cli.COMMAND_MODULES:
        monkeypatch.setattr(hitlseg.cli, "COMMAND_MODULES", (*hitlseg.cli.COMMAND_MODULES, "hitlseg.cli.quality"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 6-image dataset, predictions of it (true masks, one emptied, one eroded) and a trained quality model."""
    from hitlseg.cli import COMMAND_MODULES, main
    from hitlseg.io import read_mask
    from hitlseg.quality import degrade

    root = tmp_path_factory.mktemp("quality")
    dataset = make_2d_dataset(root / "data", n=6, size=48)
    pred = root / "pred"
    for i, path in enumerate(sorted((dataset / "masks").iterdir())):
        mask, _ = read_mask(path)
        if i == 0:
            mask = np.zeros_like(mask)
        elif i == 1:
            mask = degrade(mask, "erode", 0.8, 0)
        write_png(pred / path.name, mask.astype(np.uint8))
    model = root / "q.pt"
    import hitlseg.cli

    saved = hitlseg.cli.COMMAND_MODULES
    hitlseg.cli.COMMAND_MODULES = tuple(dict.fromkeys((*COMMAND_MODULES, "hitlseg.cli.quality")))
    try:
        assert main(["quality", "train", "--dataset", str(dataset), "--epochs", "6", "--samples-per-image", "16", "--batch-size", "8",
                     "--out", str(model), "--json"]) == 0
    finally:
        hitlseg.cli.COMMAND_MODULES = saved
    return {"dataset": dataset, "pred": pred, "model": model, "root": root}


def test_train_writes_a_model_and_a_summary(data, capsys, tmp_path):
    code, out, err = cli_run(capsys, "quality", "train", "--dataset", data["dataset"], "--epochs", "1",
                             "--samples-per-image", "2", "--predictions", data["pred"], "--seed", "3",
                             "--out", tmp_path / "q2.pt", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["images"] == 6 and summary["real_predictions"] == 6 and summary["degraded_samples"] == 12
    assert (tmp_path / "q2.pt").is_file()
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["img00", "img01", "img02", "img03"], "val": ["img04"], "test": ["img05"]}))
    code, out, err = cli_run(capsys, "quality", "train", "--dataset", data["dataset"], "--split", split, "--epochs", "1",
                             "--samples-per-image", "2", "--out", tmp_path / "q3.pt")
    assert code == 0, err
    assert "from 4 images" in out


def test_score_ranks_worst_first_without_reading_masks(data, capsys):
    code, out, err = cli_run(capsys, "quality", "score", "--model", data["model"], "--images", data["dataset"] / "images",
                             "--pred", data["pred"], "--json")
    assert code == 0, err
    result = json.loads(out)
    dice = [row["dice"] for row in result["ranking"]]
    assert result["images"] == 6 and dice == sorted(dice)
    assert {row["id"] for row in result["ranking"][:2]} == {"img00", "img01"}  # emptied and eroded: the worst
    from hitlseg.dataset import Dataset
    from hitlseg.quality import QualityModel, rank_predictions

    flat = Dataset.from_parts(data["dataset"] / "images", data["pred"])
    library = rank_predictions(QualityModel.load(data["model"]), {i: flat.image(i)[0] for i in flat.ids},
                               {i: flat.mask(i) for i in flat.ids})
    assert [r["id"] for r in result["ranking"]] == [r["id"] for r in library["ranking"]]
    assert [r["dice"] for r in result["ranking"]] == pytest.approx([r["dice"] for r in library["ranking"]])
    assert result["mean"]["dice"] == pytest.approx(np.mean(dice))
    code, out, err = cli_run(capsys, "quality", "score", "--model", data["model"], "--images", data["dataset"],
                             "--pred", data["pred"])
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("image") and lines[1][:5] in ("img00", "img01") and lines[-1].startswith("mean")
    assert len(lines) == 8


def test_score_warns_on_images_unlike_the_training_data(data, capsys, tmp_path):
    from PIL import Image

    images = tmp_path / "dark"
    for path in sorted((data["dataset"] / "images").iterdir()):
        write_png(images / path.name, (np.asarray(Image.open(path)) * 0.3).astype(np.uint8))
    code, out, err = cli_run(capsys, "quality", "score", "--model", data["model"], "--images", images,
                             "--pred", data["pred"], "--json")
    assert code == 0
    assert "hitlseg: warning: images: differ from the quality model's training data" in err
    assert json.loads(out)["domain_warnings"]


def test_score_bad_input_gives_one_line_errors(data, capsys, tmp_path):
    model, images, pred = data["model"], data["dataset"] / "images", data["pred"]
    partial = tmp_path / "partial"
    shutil.copytree(pred, partial)
    (partial / "img03.png").unlink()
    line = cli_one_line_error(capsys, "quality", "score", "--model", model, "--images", images, "--pred", partial)
    assert "no prediction for 1 image(s): img03" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    line = cli_one_line_error(capsys, "quality", "score", "--model", model, "--images", images, "--pred", empty)
    assert "no prediction for 6 image(s)" in line
    line = cli_one_line_error(capsys, "quality", "score", "--model", model, "--images", empty, "--pred", pred)
    assert "no images found" in line
    shaped = tmp_path / "shaped"
    shutil.copytree(pred, shaped)
    write_png(shaped / "img02.png", np.zeros((20, 30), np.uint8))
    line = cli_one_line_error(capsys, "quality", "score", "--model", model, "--images", images, "--pred", shaped)
    assert "img02.png" in line and "(20, 30)" in line
    classes = tmp_path / "classes"
    shutil.copytree(pred, classes)
    write_png(classes / "img04.png", np.full((48, 48), 5, np.uint8))
    line = cli_one_line_error(capsys, "quality", "score", "--model", model, "--images", images, "--pred", classes)
    assert "img04" in line and "quality model knows 0..2" in line
    line = cli_one_line_error(capsys, "quality", "score", "--model", tmp_path / "none.pt", "--images", images,
                              "--pred", pred)
    assert "none.pt" in line and "not found" in line
    line = cli_one_line_error(capsys, "quality", "score", "--model", model, "--images", images, "--pred",
                              tmp_path / "nowhere")
    assert "--pred" in line and "not found" in line


def test_train_bad_input_gives_one_line_errors(data, capsys, tmp_path):
    line = cli_one_line_error(capsys, "quality", "train", "--dataset", tmp_path / "nowhere", "--out", tmp_path / "q.pt")
    assert "dataset folder not found" in line
    line = cli_one_line_error(capsys, "quality", "train", "--dataset", data["dataset"], "--predictions",
                              tmp_path / "nowhere", "--out", tmp_path / "q.pt")
    assert "--predictions" in line
    line = cli_one_line_error(capsys, "quality", "train", "--dataset", data["dataset"], "--epochs", "0",
                              "--out", tmp_path / "q.pt")
    assert "--epochs" in line
    partial = tmp_path / "partial"
    shutil.copytree(data["pred"], partial)
    (partial / "img05.png").unlink()
    line = cli_one_line_error(capsys, "quality", "train", "--dataset", data["dataset"], "--predictions", partial,
                              "--out", tmp_path / "q.pt")
    assert "no prediction for 1 image(s): img05" in line
    assert not (tmp_path / "q.pt").exists()
