"""``hitlseg index build|add`` and ``hitlseg search`` on copies of the bundled demo images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from helpers import cli_one_line_error, cli_run, copy_demo, write_png


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """The retrieval commands registered (until cli/__init__.py lists the module)."""
    import hitlseg.cli as cli

    if "hitlseg.cli.retrieval" not in cli.COMMAND_MODULES:
        monkeypatch.setattr(cli, "COMMAND_MODULES", cli.COMMAND_MODULES + ("hitlseg.cli.retrieval",))


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    """20 demo images with masks, and a FLIM model fitted on robot markers of 3 of them."""
    from hitlseg.dataset import Dataset
    from hitlseg.flim.model import FLIMModel
    from hitlseg.robot import markers_from_mask

    root = tmp_path_factory.mktemp("retrieval")
    data = copy_demo(root / "data", 20)
    dataset = Dataset.from_folder(data)
    loaded = [dataset.load(i) for i in dataset.ids[:3]]
    markers = [markers_from_mask(s.mask, rng=np.random.default_rng(i)) for i, s in enumerate(loaded)]
    model = FLIMModel.fit([s.image for s in loaded], markers, seed=0).save(root / "flim.pt")
    return data, model


def test_build_add_search(tmp_path, capsys, demo_files):
    data, model = demo_files
    first = tmp_path / "first"
    for folder in ("images", "masks"):
        (first / folder).mkdir(parents=True)
        for path in sorted((data / folder).iterdir())[:16]:
            shutil.copy(path, first / folder / path.name)
    index = tmp_path / "index"
    code, out, err = cli_run(capsys, "index", "build", "--dataset", first, "--model", model, "--descriptor", "gtfree",
                             "--bits", 16, "--hash", "itq", "--out", index, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["count"] == 16 and summary["bits"] == 16 and summary["descriptor"] == "gtfree"
    code, out, err = cli_run(capsys, "index", "add", "--index", index, "--dataset", data, "--json")
    assert code == 0, err
    assert json.loads(out)["added"] == 4 and json.loads(out)["count"] == 20
    image = data / "images" / "018.png"
    code, out, err = cli_run(capsys, "search", "--index", index, "--image", image, "-k", 5)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 5 and lines[0].split("\t") == ["018", "0"]
    code, out, err = cli_run(capsys, "search", "--index", index, "--image", image, "--mask", data / "masks" / "018.png",
                             "-k", 3, "--json")
    assert code == 0, err
    results = json.loads(out)["results"]
    assert [r["rank"] for r in results] == [1, 2, 3] and all(r["distance"] >= 0 for r in results)


def test_float_flim_index_query_own_id_first(tmp_path, capsys, demo_files):
    data, model = demo_files
    index = tmp_path / "index"
    assert cli_run(capsys, "index", "build", "--dataset", data, "--model", model, "--out", index)[0] == 0
    code, out, err = cli_run(capsys, "search", "--index", index, "--image", data / "images" / "007.png", "--json")
    assert code == 0, err
    results = json.loads(out)["results"]
    assert results[0]["id"] == "007" and results[0]["distance"] == 0 and len(results) == 10
    assert [r["distance"] for r in results] == sorted(r["distance"] for r in results)


def test_errors_are_one_line(tmp_path, capsys, demo_files):
    data, model = demo_files
    index = tmp_path / "index"
    assert cli_run(capsys, "index", "build", "--dataset", data, "--model", model, "--out", index)[0] == 0
    gray = write_png(tmp_path / "gray.png", np.full((64, 64), 128, np.uint8))
    assert "channels" in cli_one_line_error(capsys, "search", "--index", index, "--image", gray)
    assert "-k" in cli_one_line_error(capsys, "search", "--index", index, "--image", gray, "-k", 0)
    assert "labels" in cli_one_line_error(capsys, "index", "build", "--dataset", data, "--model", model,
                                          "--bits", 16, "--hash", "deep", "--out", tmp_path / "deep")
    assert "multiple of 8" in cli_one_line_error(capsys, "index", "build", "--dataset", data, "--model", model,
                                                 "--bits", 12, "--out", tmp_path / "x")
    assert "'encoder' needs a segmentation network" in cli_one_line_error(
        capsys, "index", "build", "--dataset", data, "--model", model, "--descriptor", "encoder", "--out", tmp_path / "e")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    assert "no images" in cli_one_line_error(capsys, "index", "build", "--dataset", tmp_path / "empty", "--model", model,
                                             "--out", tmp_path / "y")
    # an index built with another encoder refuses the model
    other = tmp_path / "other.pt"
    from hitlseg.flim.model import FLIMModel

    changed = FLIMModel.load(model)
    changed.encoder.layers[0].weight.mul_(1.01)
    changed.save(other)
    assert "another encoder" in cli_one_line_error(capsys, "index", "add", "--index", index, "--dataset", data,
                                                   "--model", other)
    (index / "vectors.npy").write_bytes(b"broken")
    assert "corrupt retrieval index" in cli_one_line_error(capsys, "search", "--index", index, "--image",
                                                           data / "images" / "001.png")
