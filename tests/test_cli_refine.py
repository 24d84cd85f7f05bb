"""``hitlseg predict --refine`` and ``hitlseg refiner``: each refiner from the shell, and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import cli_one_line_error, cli_run, make_2d_dataset
from hitlseg.cli import main


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict[str, Path]:
    """Six 64x64 images with masks and a segmentation model trained on them (a few epochs)."""
    folder = tmp_path_factory.mktemp("refine-cli")
    data = make_2d_dataset(folder / "ds", n=6, size=64)
    model = folder / "seg.pt"
    assert main(["train", "--dataset", str(data), "--epochs", "12", "--device", "cpu", "--out", str(model), "--json"]) == 0
    return {"data": data, "model": model, "folder": folder}


def _read(path: Path) -> np.ndarray:
    from hitlseg.io import read_mask

    return read_mask(path)[0]


def _expected(case, image_id: str, method: str, **options) -> np.ndarray:
    """What the library gives for one image: the model's probabilities through hitlseg.refine.refine."""
    from hitlseg.nets import SegModel, workflow
    from hitlseg.refine import refine

    model = SegModel.load(case["model"])
    dataset = workflow.open_images(case["data"], model.preprocessing)
    image, _ = dataset.image(image_id)
    labels = refine(image, model.predict(image, postprocess="none").probabilities, method, **options)
    from hitlseg.nets.postprocess import postprocess

    return postprocess(labels, model.postprocess) if model.postprocess != "none" else labels


@pytest.mark.parametrize("method", ["graphcut", "crf", "levelset"])
def test_predict_refine_writes_the_refined_masks_of_the_library(case, capsys, tmp_path, method):
    out = tmp_path / method
    code, stdout, err = cli_run(capsys, "predict", "--model", case["model"], "--images", case["data"], "--out", out,
                                "--refine", method, "--json")
    assert code == 0, err
    assert '"refine": "%s"' % method in stdout
    written = sorted(p.name for p in out.iterdir() if p.is_file())
    assert written == [f"img{i:02d}.png" for i in range(6)]
    assert np.array_equal(_read(out / "img03.png"), _expected(case, "img03", method))


def test_shape_and_corrective_models_from_the_shell(case, capsys, tmp_path):
    from hitlseg.refine import CorrectiveModel, ShapeModel

    shape, corrective = tmp_path / "shape.npz", tmp_path / "corrective.npz"
    code, stdout, err = cli_run(capsys, "refiner", "shape", "--dataset", case["data"], "--class", 1, "--out", shape, "--json")
    assert code == 0, err and '"shapes": 6' in stdout
    assert ShapeModel.load(shape).n_shapes == 6  # one disk of class 1 per mask
    code, _, err = cli_run(capsys, "refiner", "corrective", "--dataset", case["data"], "--model", case["model"],
                           "--out", corrective)
    assert code == 0, err
    for method, file in (("shape", shape), ("corrective", corrective)):
        out = tmp_path / method
        code, _, err = cli_run(capsys, "predict", "--model", case["model"], "--images", case["data"], "--out", out,
                               "--refine", method, "--refine-model", file)
        assert code == 0, err
        loaded = ShapeModel.load(file) if method == "shape" else CorrectiveModel.load(file)
        assert np.array_equal(_read(out / "img02.png"), _expected(case, "img02", method, model=loaded))


def test_predict_refine_shape_without_confident_objects_says_so(case, capsys, tmp_path):
    # the few-epoch model of the fixture has no object of mean probability 0.9
    line = cli_one_line_error(capsys, "predict", "--model", case["model"], "--images", case["data"], "--out",
                              tmp_path / "out", "--refine", "shape", "--refine-class", 1)
    assert "confident objects of class 1" in line and "at least 0.9" in line


def test_the_shape_model_learned_from_predictions_reads_no_mask(case, tmp_path, monkeypatch):
    from hitlseg.dataset import Dataset
    from hitlseg.nets import workflow
    from hitlseg.nets.infer import Prediction

    dataset = Dataset.from_folder(case["data"])
    truth = {i: dataset.load(i).mask for i in dataset.ids}

    class Confident:  # a model whose predictions are the true masks, sure of every pixel
        def predict(self, image, name="image", postprocess=None):
            mask = truth[name]
            p = np.stack([mask == k for k in range(3)]).astype(np.float32)
            return Prediction(p, mask)

    monkeypatch.setattr(Dataset, "mask", lambda *a, **k: pytest.fail("read a mask"))
    model = workflow.fit_shape_model(Confident(), dataset, dataset.ids, 1)
    assert model.class_index == 1 and model.n_shapes == 6


@pytest.mark.parametrize("argv,message", [
    (["--refine", "corrective"], "needs --refine-model"),
    (["--refine", "shape"], "--refine-class K"),
    (["--refine", "crf", "--refine-class", "1"], "only used with --refine shape or corrective"),
    (["--refine", "graphcut", "--refine-model", "x.npz"], "only used with --refine shape or corrective"),
    (["--refine", "shape", "--refine-model", "missing.npz"], "refiner model file not found"),
    (["--refine", "snake"], "invalid choice"),
])
def test_predict_refine_errors_are_one_line(case, capsys, tmp_path, argv, message):
    line = cli_one_line_error(capsys, "predict", "--model", case["model"], "--images", case["data"],
                              "--out", tmp_path / "out", *argv)
    assert message in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_model_file_of_the_wrong_kind_or_not_a_model_is_refused(case, capsys, tmp_path):
    shape = tmp_path / "shape.npz"
    assert main(["refiner", "shape", "--dataset", str(case["data"]), "--class", "2", "--out", str(shape)]) == 0
    capsys.readouterr()
    line = cli_one_line_error(capsys, "predict", "--model", case["model"], "--images", case["data"], "--out",
                              tmp_path / "out", "--refine", "corrective", "--refine-model", shape)
    assert "ShapeModel" in line and "CorrectiveModel" in line
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    line = cli_one_line_error(capsys, "predict", "--model", case["model"], "--images", case["data"], "--out",
                              tmp_path / "out", "--refine", "shape", "--refine-model", junk)
    assert "junk.npz" in line and "cannot read" in line
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    line = cli_one_line_error(capsys, "predict", "--model", case["model"], "--images", case["data"], "--out",
                              tmp_path / "out", "--refine", "shape", "--refine-model", tmp_path / "other.npz")
    assert "not a hitlseg shape or corrective model" in line


@pytest.mark.parametrize("argv,message", [
    (["shape"], "--class"),
    (["corrective"], "--model"),
    (["corrective", "--class", "1"], "--model"),
])
def test_refiner_errors_are_one_line(case, capsys, tmp_path, argv, message):
    line = cli_one_line_error(capsys, "refiner", *argv, "--dataset", case["data"], "--out", tmp_path / "m.npz")
    assert message in line
    assert not (tmp_path / "m.npz").exists()


def test_refiner_shape_on_masks_without_objects_names_the_problem(case, capsys, tmp_path):
    line = cli_one_line_error(capsys, "refiner", "shape", "--dataset", case["data"], "--class", 3,
                              "--out", tmp_path / "m.npz")
    assert "shape" in line.lower()
