"""``hitlseg experiment weak`` (hitlseg.experiments.weak): one run of every method, resume, report, bad arguments;
the synthetic area label of wbc1 (hitlseg.weak.synthetic)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hitlseg.dataset import Dataset
from hitlseg.errors import InputError
from hitlseg.weak.labels import read_image_labels, write_image_labels
from tests.test_weak import _folder, demo_folder  # noqa: F401  (a fixture)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
TINY = ["--rounds", "1", "--epochs", "1", "--warmup-epochs", "1", "--max-side", "32", "--device", "cpu"]


def _squares(tmp_path, n=12, split=False):
    ids = [f"s{k:02d}" for k in range(n)]
    tmp_path.mkdir(parents=True, exist_ok=True)
    root = _folder(tmp_path, ids)
    write_image_labels(root / "labels.csv", {i: ("square" if k % 2 else "plain") for k, i in enumerate(ids)})
    if split:
        parts = ["train"] * (n - 4) + ["testA"] * 2 + ["testB"] * 2
        (root / "meta.csv").write_text("id,split\n" + "".join(f"{i},{p}\n" for i, p in zip(ids, parts)))
    return root


def test_protocol_runs_every_method_writes_report_and_resumes(tmp_path, monkeypatch):
    from hitlseg.experiments import weak
    from hitlseg.experiments.weak import WeakProtocolConfig, run_weak_protocol
    from hitlseg.experiments.weak_report import write_weak_report

    root = _squares(tmp_path / "data", split=True)
    config = WeakProtocolConfig(budgets=(0.25, 0.5), rounds=2, warmup_epochs=1, epochs=1, widths=(4, 8), norm="none",
                                overlays=1, device="cpu")
    out = tmp_path / "out"
    lines = []
    results = run_weak_protocol(Dataset.from_folder(root), out, config, log=lines.append)
    assert results["split"] == "meta.csv" and results["groups"] == ["testA", "testB"]
    assert results["sizes"] == {"train": 8, "testA": 2, "testB": 2}
    assert results["budgets"]["0.25"] == {"budget": 0.25, "oracle_images": 2, "per_round": 1, "fraction": 0.25}
    assert sorted(results["parts"]) == ["all_foreground", "cam_only", "full", "joint-b0.25", "joint-b0.5",
                                        "no_pseudo-b0.25", "no_pseudo-b0.5"]
    joint = results["parts"]["joint-b0.5"]["result"]
    assert [r["oracle_images"] for r in joint["rounds"]] == [2, 4] and len(joint["oracle_ids"]) == 4
    assert set(joint["rounds"][-1]["testA"]) >= {"dice", "dice_per_class", "accuracy", "cam_dice", "foreground_dice"}
    assert "cam_crf_dice" in results["parts"]["cam_only"]["result"]["testB"]
    assert (out / "results.json").is_file() and (out / "parts" / "joint-b0.25.json").is_file()
    shown = results["overlays"]["ids"]
    assert len(shown) == 2 and all((out / "figures" / f"joint-b0.5_{i}_cam.png").is_file() for i in shown)
    report = write_weak_report(results, out).read_text()
    assert "## testA (2 images)" in report and "## testB" in report and "joint (pseudo-labels)" in report
    assert "figures/cam_only_" in report and (out / "dice_testA.png").is_file()

    def fail(*args, **kwargs):
        raise AssertionError("a finished part was recomputed")

    monkeypatch.setattr(weak, "run_method", fail)
    again = run_weak_protocol(Dataset.from_folder(root), out, config, log=lines.append)
    assert again["parts"] == results["parts"]
    assert sum("done in an earlier run" in line for line in lines) == 7
    with pytest.raises(InputError, match="other settings \\(epochs differ\\)"):
        run_weak_protocol(Dataset.from_folder(root), out, WeakProtocolConfig(**{**config.to_dict(), "epochs": 2}))


def test_cli_experiment_weak_holdout_prints_report(tmp_path, capsys):
    from hitlseg.cli import main

    root = _squares(tmp_path / "data")
    out = tmp_path / "out"
    assert main(["experiment", "weak", "--dataset", str(root), "--budgets", "0.2", "--methods", "all_foreground,joint",
                 "--overlays", "1", *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.md'}" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["split"] == "holdout" and results["sizes"] == {"train": 10, "holdout": 2}
    assert "## holdout (2 images)" in (out / "report.md").read_text()


@pytest.mark.parametrize("extra, message", [
    (["--budgets", "1.5"], "each budget must be a fraction of the training images in \\(0, 1\\), got '1.5'"),
    (["--budgets", "0"], "in \\(0, 1\\), got '0'"),
    (["--budgets", "a,0.2"], "expected comma-separated fractions"),
    (["--methods", "joint,magic"], "unknown method\\(s\\) 'magic'"),
    (["--budgets", "0.01"], "budgets: 0.01 of the 10 training images is 0 image\\(s\\)"),
    (["--budgets", "0.1", "--rounds", "2"], "1 image\\(s\\), fewer than one per round over 2 rounds"),
])
def test_cli_experiment_weak_bad_arguments(tmp_path, capsys, extra, message):
    import re

    from hitlseg.cli import main

    root = _squares(tmp_path / "data")
    args = ["experiment", "weak", "--dataset", str(root), *TINY, "--out", str(tmp_path / "out"), *extra]
    assert main(args) == 2
    assert re.search(message, capsys.readouterr().err)


def test_cli_method_names_match_the_library():
    from hitlseg.cli.experiment import WEAK_METHODS
    from hitlseg.experiments.weak import METHODS

    assert WEAK_METHODS == METHODS
    with pytest.raises(InputError, match="methods: unknown 'magic'"):
        from hitlseg.experiments.weak import WeakProtocolConfig

        WeakProtocolConfig(methods=("magic",))


def test_official_split_errors_name_the_file(tmp_path):
    from hitlseg.weak.splits import official_split, study_split

    root = _squares(tmp_path, n=6)
    dataset = Dataset.from_folder(root)
    assert official_split(dataset) is None
    (root / "meta.csv").write_text("id,split\ns00,train\ns01,test\n")
    with pytest.raises(InputError, match=r"meta.csv: 4 images of the dataset have no split"):
        official_split(dataset)
    (root / "meta.csv").write_text("id,split\n" + "".join(f"s{k:02d},testA\n" for k in range(6)))
    with pytest.raises(InputError, match="needs 'train' and at least one test value, found testA"):
        study_split(dataset)


# -- the synthetic label of wbc1 ----------------------------------------------------------------------


def _cells(tmp_path, nucleus_sides):
    (tmp_path / "images").mkdir(parents=True)
    (tmp_path / "masks").mkdir()
    for k, side in enumerate(nucleus_sides):
        mask = np.zeros((20, 20), np.uint8)
        mask[2:18, 2:18] = 1
        mask[5:5 + side, 5:5 + side] = 2
        Image.fromarray(mask * 100).save(tmp_path / "images" / f"c{k}.png")
        Image.fromarray(mask).save(tmp_path / "masks" / f"c{k}.png")
    return tmp_path


def test_area_rule_labels_a_linked_copy_and_never_writes_the_source(tmp_path):
    from hitlseg.weak.synthetic import labelled_copy

    source = _cells(tmp_path / "src", [2, 8, 4, 6, 5])  # nucleus fractions 4, 64, 16, 36, 25 / 400: median 25
    before = sorted(p.name for p in source.rglob("*"))
    out, labels = labelled_copy(source, tmp_path / "copy")
    assert labels == {"c0": "small", "c1": "large", "c2": "small", "c3": "large", "c4": "small"}
    assert sorted(p.name for p in source.rglob("*")) == before
    assert (out / "images").is_symlink() and (out / "masks").is_symlink()
    read = read_image_labels(Dataset.from_folder(out))
    assert read.counts() == {"large": 2, "small": 3}
    with pytest.raises(InputError, match="exists and is not an empty folder"):
        labelled_copy(source, out)
    with pytest.raises(InputError, match="inside the source dataset"):
        labelled_copy(source, source / "copy")
    with pytest.raises(InputError, match="one class only"):
        labelled_copy(_cells(tmp_path / "same", [4, 4, 4]), tmp_path / "copy2")


def test_make_wbc1_labels_script(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_wbc1_labels", Path(__file__).parents[1] / "benchmarks" / "make_wbc1_labels.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    source = _cells(tmp_path / "src", [2, 8, 4, 6])
    assert script.main(["--dataset", str(source), "--out", str(tmp_path / "copy")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"] == {"large": 2, "small": 2} and (tmp_path / "copy" / "labels.csv").is_file()


@pytest.mark.skipif(not (SHARED / "wbc1" / "masks").is_dir(), reason="../shared/datasets/wbc1 is not on this machine")
def test_area_rule_on_wbc1_is_balanced(tmp_path):
    from hitlseg.weak.synthetic import area_fractions, area_labels

    dataset = Dataset.from_folder(SHARED / "wbc1")
    ids = dataset.ids[:40]
    labels = area_labels(area_fractions(dataset.subset(ids)))
    assert abs(sum(v == "large" for v in labels.values()) - 20) <= 1


@pytest.mark.skipif(not (SHARED / "glas" / "meta.csv").is_file(), reason="../shared/datasets/glas is not on this machine")
def test_glas_official_split():
    from hitlseg.weak.splits import study_split

    train, groups, source = study_split(Dataset.from_folder(SHARED / "glas"))
    assert source == "meta.csv" and len(train) == 85 and {k: len(v) for k, v in groups.items()} == {"testA": 60, "testB": 20}


def test_weak_benchmark_script(tmp_path, capsys):
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("weak_benchmark", Path(__file__).parents[1] / "benchmarks" / "weak.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "weak.json"
    assert script.main(["--train-images", "10", "--test-images", "4", "--warmup-epochs", "1", "--epochs", "1",
                        "--max-side", "32", "--threads", str(torch.get_num_threads()), "--out", str(out)]) == 0
    line = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == line
    assert line["benchmark"] == "weak" and line["split"] == "holdout" and line["train"] == 10
    assert line["tests"] == {"holdout": 4} and line["oracle_images"] == 2 and line["rounds"] == 2
    assert {"threads", "omp_num_threads", "mkl_num_threads", "load_average", "load_average_after", "peak_mb",
            "load_seconds", "total_seconds"} <= set(line) and line["peak_mb"] > 0
    assert [r["round"] for r in line["history"]] == [1, 2]
    for row in line["history"]:
        assert {"oracle_images", "pseudo_images", "train_seconds", "eval_seconds", "seconds", "dice"} <= set(row)
        assert row["train_seconds"] > 0 and set(row["dice"]) == {"holdout"}
