"""The selection experiment protocol on a tiny configuration: complete, consistent and resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hitlseg.dataset import Dataset
from hitlseg.errors import InputError
from hitlseg.experiments import ProtocolConfig, correlation, run_protocol, table_one, table_two, write_report
from hitlseg.experiments import protocol as protocol_module
from hitlseg.experiments.report import stopping_table
from hitlseg.experiments.scoring import is_brats, score
from tests.helpers import copy_demo

METHODS = ("gtfree", "random", "labeled", "kcenter")


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    return Dataset.from_folder(copy_demo(tmp_path_factory.mktemp("tiny"), 12))


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment")
    config = ProtocolConfig(splits=2, images=3, methods=METHODS, epochs=1)
    lines = []
    results = run_protocol(tiny_dataset, out, config, log=lines.append)
    return out, config, results, lines


def test_every_split_and_method_is_complete(run):
    out, config, results, lines = run
    finished = [line for line in lines if ": done (" in line]  # one line per part (others are throttled progress)
    assert len(results["splits"]) == 2 and len(finished) == 2 * (len(METHODS) + 2)
    for split in results["splits"]:
        assert set(split["methods"]) == set(METHODS)
        firsts = {part["selected"][0] for part in split["methods"].values()}
        assert firsts == {split["first"]}  # the same first image for every method
        for part in split["methods"].values():
            assert len(part["selected"]) == config.images == len(set(part["selected"]))
            assert len(part["curve_val_dice"]) == config.images
            for model in ("adaptive", "sunet"):
                for subset in ("val", "test"):
                    summary = part[model][subset]
                    assert 0 <= summary["mean"] <= 1
                    assert set(summary["class"]) == {"1", "2"}
                    assert summary["mean"] == pytest.approx(np.mean(list(summary["class"].values())))
        assert 0 <= split["baseline"]["test"]["mean"] <= 1
        first = split["first_image"]
        assert len(first["ids"]) == len(first["distance"]) == len(first["dice"]) == len(first["coords"])
        assert first["distance"][first["ids"].index(first["first"])] == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["methods"] == list(METHODS)


def test_selection_log_records_the_stopping_signal(run):
    """Each round of each method's log: the raw and normalised coverage radius and the suggestion."""
    _, config, results, _ = run
    for split in results["splits"]:
        for part in split["methods"].values():
            rounds = part["rounds"]
            assert [r["image"] for r in rounds] == part["selected"]
            for index, r in enumerate(rounds):
                assert r["n_maps"] > 0 and r["coverage_radius"] >= 0 and r["diameter"] > 0
                assert 0 <= r["normalized_radius"] <= 1
                assert r["normalized_radius"] == pytest.approx(r["coverage_radius"] / r["diameter"])
                assert r["suggestion"] in ("continue", "stop") and r["reason"]
                if index == 0:
                    assert r["relative_change"] is None
                else:
                    previous = rounds[index - 1]["normalized_radius"]
                    assert r["relative_change"] == pytest.approx((previous - r["normalized_radius"]) / previous)
            # three images: too early for a stop (the monitor's first suggestion comes with the 4th)
            assert all(r["suggestion"] == "continue" and "too early" in r["reason"] for r in rounds)


def test_stopping_table_and_report_section(run, tmp_path):
    _, config, results, _ = run
    table = stopping_table(results)
    assert set(table) == set(METHODS)
    for method, cells in table.items():
        values = np.array([[r["normalized_radius"] for r in s["methods"][method]["rounds"]] for s in results["splits"]])
        assert len(cells["normalized_radius"]) == config.images
        assert [m for m, _ in cells["normalized_radius"]] == pytest.approx(list(values.mean(0)))
        assert [d for _, d in cells["normalized_radius"]] == pytest.approx(list(values.std(0)))
        assert cells["first_stop"] == [None, None]
    text = write_report(results, tmp_path).read_text()
    assert "## Stopping signal" in text and "| method | round 1 | round 2 | round 3 | stop suggested at |" in text
    assert f"| gtfree | {table['gtfree']['normalized_radius'][0][0]:.3f} ± " in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stopping"]["gtfree"]["first_stop"] == [None, None]
    # parts of an older run (raw radius only) are left out, not an error
    old = json.loads(json.dumps(results))
    for split in old["splits"]:
        for part in split["methods"].values():
            part["rounds"] = [{"image": r["image"], "coverage_radius": r["coverage_radius"], "seconds": r["seconds"]}
                              for r in part["rounds"]]
    assert stopping_table(old) == {}
    assert "Not recorded" in write_report(old, tmp_path / "old").read_text()


def test_tables_agree_with_the_numbers(run):
    _, _, results, _ = run
    one, two = table_one(results), table_two(results)
    assert set(one) == set(METHODS) | {"baseline (all backprop)"}
    for method in METHODS:
        for model in ("adaptive", "sunet"):
            values = [s["methods"][method][model]["val"]["mean"] for s in results["splits"]]
            assert one[method][model]["mean"][0] == pytest.approx(np.mean(values))
            assert one[method][model]["mean"][1] == pytest.approx(np.std(values))
            best = int(np.argmax(values))
            assert two[method][model]["split"] == best
            assert two[method][model]["mean"] == pytest.approx(results["splits"][best]["methods"][method][model]["test"]["mean"])


def test_report_files(run):
    out, _, results, _ = run
    report = write_report(results, out, command="hitlseg experiment selection ...", wall_seconds=12.0)
    text = report.read_text()
    for heading in ("Table I", "Table II", "Figure 6", "Figure 7", "Figure 9"):
        assert heading in text
    for method in METHODS:
        assert f"| {method} | adaptive |" in text and f"| {method} | sunet |" in text
    for figure in ("figure6_curves.png", "figure7_projection.png", "figure9_correlation.png"):
        assert (out / figure).stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["correlation"]) == 2


def test_resume_recomputes_nothing(run, tiny_dataset, monkeypatch):
    out, config, results, _ = run

    def fail(*args, **kwargs):
        raise AssertionError("a finished part was recomputed")

    monkeypatch.setattr(protocol_module, "run_method", fail)
    monkeypatch.setattr(protocol_module, "run_baseline", fail)
    monkeypatch.setattr(protocol_module, "first_image_analysis", fail)
    again = run_protocol(tiny_dataset, out, config)
    assert again["splits"][1]["methods"]["gtfree"]["selected"] == results["splits"][1]["methods"]["gtfree"]["selected"]


def test_resume_with_other_settings_is_refused(run, tiny_dataset):
    out, config, _, _ = run
    with pytest.raises(InputError, match="epochs"):
        run_protocol(tiny_dataset, out, ProtocolConfig(splits=2, images=3, methods=METHODS, epochs=2))


def test_correlation_matches_numpy():
    first = {"distance": [0.0, 1.0, 2.0, 4.0, 5.0], "dice": [1.0, 0.9, 0.7, 0.5, 0.45]}
    fit = correlation(first)
    inverse = 1 / np.array([1.0, 2.0, 4.0, 5.0])
    assert fit["r"] == pytest.approx(np.corrcoef(inverse, [0.9, 0.7, 0.5, 0.45])[0, 1])
    assert fit["n"] == 4


def test_brats_regions_are_scored():
    assert is_brats([1, 2, 4]) and not is_brats([1, 2])
    truth = np.zeros((4, 4), int)
    truth[0, :2], truth[1, :2] = 4, 2
    result = score(truth.copy(), truth, [1, 2, 3, 4], brats=True)
    assert result["regions"] == {"WT": 1.0, "TC": 1.0, "ET": 1.0}


def test_bad_configuration(tiny_dataset, tmp_path):
    with pytest.raises(InputError, match="unknown"):
        ProtocolConfig(methods=("oracle",))
    with pytest.raises(InputError, match="budget"):
        run_protocol(tiny_dataset, tmp_path, ProtocolConfig(splits=1, images=50, epochs=1))


def test_strokes_model_in_the_protocol(tiny_dataset, tmp_path):
    """--strokes: each method's model learned from the robot's strokes alone, scored like the others."""
    config = ProtocolConfig(splits=1, images=2, methods=("gtfree",), sunet=False, baseline=False, strokes=True,
                            self_training=1)
    results = run_protocol(tiny_dataset, tmp_path / "out", config)
    part = results["splits"][0]["methods"]["gtfree"]
    assert part["strokes"]["iterations"] == 1 and 0 <= part["strokes"]["test"]["mean"] <= 1
    assert set(table_one(results)["gtfree"]) == {"adaptive", "strokes"}
    report = write_report(results, tmp_path / "out").read_text()
    assert "| gtfree | strokes |" in report and "robot's strokes only" in report


def test_descriptor_settings_reach_every_selection_session(tiny_dataset, tmp_path, monkeypatch):
    """--descriptor-stride/--descriptor-fill: the sessions of the methods and of the first-image
    analysis compute the descriptor the configuration names."""
    import hitlseg.selection as selection

    seen = []
    original = selection.SelectionSession.__init__

    def spy(self, pool, **options):
        seen.append((options.get("stride"), options.get("fill")))
        original(self, pool, **options)

    monkeypatch.setattr(selection.SelectionSession, "__init__", spy)
    config = ProtocolConfig(splits=1, images=2, methods=("gtfree",), sunet=False, baseline=False, stride=1, fill="zero")
    results = run_protocol(tiny_dataset, tmp_path / "out", config)
    assert seen and set(seen) == {(1, "zero")}
    assert results["config"]["stride"] == 1 and results["config"]["fill"] == "zero"
    with pytest.raises(InputError, match="fill"):
        ProtocolConfig(fill="cubic")
    with pytest.raises(InputError, match="stride"):
        ProtocolConfig(stride=0)
