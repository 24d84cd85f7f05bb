"""``experiment selection --refine``: refined scores of the probability models, paired, resumable, checked."""

from __future__ import annotations

import json

import pytest

from hitlseg.dataset import Dataset
from hitlseg.errors import InputError
from hitlseg.experiments import ProtocolConfig, run_protocol, table_one, table_two, write_report
from hitlseg.experiments import protocol as protocol_module
from hitlseg.experiments.scoring import score
from hitlseg.refine import refine
from helpers import cli_run, make_2d_dataset

REFINE = ("crf", "graphcut")
SMALL = dict(splits=1, images=2, methods=("gtfree",), epochs=1, baseline=False, eval_limit=1)
CLI_SMALL = ["--splits", "1", "--images", "2", "--methods", "gtfree", "--epochs", "1", "--baseline", "none",
             "--eval-limit", "1"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_2d_dataset(tmp_path_factory.mktemp("refine-data"), n=8)


@pytest.fixture(scope="module")
def run(root, tmp_path_factory):
    """One split with the sU-Net decoder and the strokes model, refined by crf and graphcut; the
    models and split each :func:`protocol._evaluate` call scored are kept."""
    out = tmp_path_factory.mktemp("refine-run")
    config = ProtocolConfig(**SMALL, strokes=True, self_training=0, refine=REFINE)
    evaluated = []
    original = protocol_module._evaluate

    def spy(model, data, refiners=(), quality=None):
        evaluated.append((model, data, refiners))
        return original(model, data, refiners, quality)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(protocol_module, "_evaluate", spy)
        results = run_protocol(Dataset.from_folder(root), out, config)
    return out, config, results, evaluated


def test_refined_columns_exist_for_probability_models_only(run):
    out, _, results, _ = run
    part = results["splits"][0]["methods"]["gtfree"]
    for model in ("sunet", "strokes"):
        for refiner in REFINE:
            refined = part[f"{model}+{refiner}"]
            assert 0 <= refined["val"]["mean"] <= 1 and 0 <= refined["test"]["mean"] <= 1
            assert set(refined["test"]["class"]) == {"1", "2"} and refined["refine_seconds"] >= 0
    assert not any(key.startswith("adaptive+") for key in part)  # saliency, not probabilities
    assert json.loads((out / "results.json").read_text())["config"]["refine"] == list(REFINE)
    models = ["adaptive", "sunet", "sunet+crf", "sunet+graphcut", "strokes", "strokes+crf", "strokes+graphcut"]
    assert list(table_one(results)["gtfree"]) == models and list(table_two(results)["gtfree"]) == models


def test_refined_dice_is_the_refiner_on_the_same_probabilities(run):
    """Each refined test Dice equals hitlseg.refine.refine on that model's probabilities of the
    (one) test image, and the unrefined one its argmax: a paired comparison."""
    _, _, results, evaluated = run
    part = results["splits"][0]["methods"]["gtfree"]
    assert [refiners for _, _, refiners in evaluated] == [REFINE, REFINE]  # sunet, then strokes
    changed = False
    for name, (model, data, _) in zip(("sunet", "strokes"), evaluated):
        (test_id,) = data.test
        image, mask = data.images[test_id], data.masks[test_id]
        prediction = model.predict(image)
        assert part[name]["test"]["mean"] == pytest.approx(score(prediction.labels, mask, data.classes)["mean"])
        for refiner in REFINE:
            labels = refine(image, prediction.probabilities, refiner)
            assert part[f"{name}+{refiner}"]["test"]["mean"] == pytest.approx(score(labels, mask, data.classes)["mean"])
            changed |= bool((labels != prediction.labels).any())
    assert changed  # the refiners did change the labels here, so a skipped refinement would fail above


def test_report_rows_and_masks_used(run, tmp_path):
    _, _, results, _ = run
    report = write_report(results, tmp_path).read_text()
    assert "| gtfree | sunet+crf | all training masks |" in report
    assert "| gtfree | strokes+graphcut | none (strokes) |" in report
    assert "adaptive decoder gives saliency, not class probabilities" in report
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "sunet+graphcut" in summary["table_two"]["gtfree"]
    assert summary["masks_used"]["sunet+crf"] == "all training masks"


def test_resume_reuses_refined_results(run, root, monkeypatch):
    out, config, results, _ = run

    def fail(*args, **kwargs):
        raise AssertionError("recomputed a finished part")

    monkeypatch.setattr(protocol_module, "run_method", fail)
    monkeypatch.setattr(protocol_module, "_evaluate", fail)
    lines = []
    again = run_protocol(Dataset.from_folder(root), out, config, log=lines.append)
    assert again["splits"] == results["splits"]
    assert "split0-gtfree: done in an earlier run" in lines


def test_resume_with_other_refiners_is_refused(run, root):
    """Like every other setting: the models are not kept, so other refiners cannot be paired with them."""
    out = run[0]
    config = ProtocolConfig(**SMALL, strokes=True, self_training=0, refine=("levelset",))
    with pytest.raises(InputError, match="refine differ"):
        run_protocol(Dataset.from_folder(root), out, config)


def test_without_refine_the_settings_of_older_runs_still_match():
    assert "refine" not in ProtocolConfig().to_dict()
    assert ProtocolConfig(refine=("crf", "crf")).refine == ("crf",) == ProtocolConfig(refine="crf").refine


def test_bad_refiners():
    with pytest.raises(InputError, match=r"unknown refiner blur \(use graphcut, crf, levelset\)"):
        ProtocolConfig(refine=("blur",))
    for name in ("shape", "corrective"):
        with pytest.raises(InputError, match=f"{name} needs a trained model .*not available in experiments"):
            ProtocolConfig(refine=(name, "crf"))
    with pytest.raises(InputError, match="nothing to refine"):
        ProtocolConfig(refine=("crf",), sunet=False)


def test_cli_runs_with_refine(root, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = cli_run(capsys, "experiment", "selection", "--dataset", root, *CLI_SMALL,
                                   "--refine", "crf, graphcut", "--out", out)
    assert code == 0 and "report:" in stdout and "split0-gtfree: done (" in stderr
    part = json.loads((out / "results.json").read_text())["splits"][0]["methods"]["gtfree"]
    assert {"sunet", "sunet+crf", "sunet+graphcut"} <= set(part)
    report = (out / "report.md").read_text()
    assert "| gtfree | sunet+crf |" in report and "| gtfree | sunet+graphcut |" in report


@pytest.mark.parametrize("refiners, message", [
    ("crf,blur", "unknown refiner blur (use graphcut, crf, levelset)"),
    ("shape", "shape needs a trained model ('hitlseg refiner') and is not available in experiments"),
    ("corrective", "corrective needs a trained model ('hitlseg refiner') and is not available in experiments"),
])
def test_cli_bad_refiners_are_one_line_errors(root, tmp_path, capsys, refiners, message):
    code, _, stderr = cli_run(capsys, "experiment", "selection", "--dataset", root, *CLI_SMALL,
                              "--refine", refiners, "--out", tmp_path / "out")
    assert code == 2 and message in stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert not (tmp_path / "out" / "parts").exists()
