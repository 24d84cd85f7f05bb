"""The active-learning protocol on a tiny configuration: complete, resumable, reported; and its CLI."""

from __future__ import annotations

import json

import pytest

from hitlseg.dataset import Dataset
from hitlseg.errors import InputError
from hitlseg.experiments.active import ActiveProtocolConfig, run_active_protocol
from hitlseg.experiments.active_report import effort_to_reach, write_active_report
from tests.helpers import copy_demo


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return copy_demo(tmp_path_factory.mktemp("tiny_active"), 16)


def _config(**changes):
    settings = dict(strategies=("random", "entropy"), splits=1, images=2, rounds=2, initial_self_training=0,
                    self_training=1, self_training_epochs=1, epochs=1, pool_limit=3, baseline_epochs=1, eval_limit=3,
                    refresh=False)
    settings.update(changes)
    return ActiveProtocolConfig(**settings)


@pytest.fixture(scope="module")
def study(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("active_study")
    lines = []
    results = run_active_protocol(Dataset.from_folder(tiny_root), out, _config(), log=lines.append)
    return out, results, lines


def test_every_strategy_runs_every_round_from_the_same_round_zero(study):
    out, results, lines = study
    (split,) = results["splits"]
    first = split["round0"]["first"]
    assert len(first) == 2
    for strategy in ("random", "entropy"):
        rounds = split["strategies"][strategy]["rounds"]
        assert [r["round"] for r in rounds] == [0, 1, 2]
        assert rounds[0]["queried"] == first
        queried = [i for r in rounds[1:] for i in r["queried"]]
        assert len(set(queried)) == 2 and not set(queried) & set(first)
        assert all(0 <= r["evaluation"]["mean"] <= 1 for r in rounds)
        seconds = [r["totals"]["seconds"] for r in rounds]
        assert seconds == sorted(seconds) and seconds[0] > 0
    assert 0 <= split["baseline"]["test"]["mean"] <= 1
    assert (out / "results.json").is_file()


def test_study_resumes_without_recomputing(study, tiny_root):
    out, results, _ = study
    again = run_active_protocol(Dataset.from_folder(tiny_root), out, _config())
    assert again["splits"][0]["strategies"] == results["splits"][0]["strategies"]
    with pytest.raises(InputError, match="other settings"):
        run_active_protocol(Dataset.from_folder(tiny_root), out, _config(rounds=3))


def test_report_tables_and_figures(study, tmp_path):
    out, results, _ = study
    report = write_active_report(results, tmp_path / "report")
    text = report.read_text()
    assert "Effort to reach 90% and 95%" in text and "| entropy |" in text
    assert (tmp_path / "report" / "dice_vs_seconds.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert set(summary["curves"]) == {"random", "entropy"}
    # a reference any model reaches: every strategy reaches it at round 0, saving 0 against random
    fixed = {**results, "config": {**results["config"], "reference": 0.01},
             "splits": [{k: v for k, v in s.items() if k != "baseline"} for s in results["splits"]]}
    reach = effort_to_reach(fixed)
    assert reach["entropy"]["0.9"]["reached"] == "1/1"
    assert reach["entropy"]["0.9"]["saving_vs_random"] == pytest.approx(0.0)


def _constructed_results(dice: list[float], refreshed: float) -> dict:
    rounds = [{"round": k, "queried": [f"i{k}"], "evaluation": {"mean": d},
               "totals": {"seconds": 10.0 * (k + 1), "pixels": 100 * (k + 1), "images": k + 1, "marked_fraction": 0.01}}
              for k, d in enumerate(dice)]
    part = {"rounds": rounds, "refresh": {"after_round": len(dice) - 1, "before": {"mean": dice[-1], "validation": 0.8},
                                          "evaluation": {"mean": refreshed, "validation": 0.9}, "train_seconds": 5.0}}
    return {"config": {"reference": 1.0, "rounds": len(dice) - 1, "per_round": 1, "images": 1},
            "dataset": "/data/constructed",
            "splits": [{"index": 0, "sizes": {"train": 9, "val": 1, "test": 1}, "round0": {"first": ["i0"]},
                        "strategies": {"random": part}}]}


def test_effort_to_reach_counts_the_refreshed_model_at_the_last_rounds_effort(tmp_path):
    results = _constructed_results([0.80, 0.91, 0.93], refreshed=0.97)
    warm = effort_to_reach(results)["random"]
    assert warm["0.9"]["seconds"] == 20.0 and warm["0.95"]["reached"] == "0/1" and warm["0.95"]["seconds"] is None
    fresh = effort_to_reach(results, with_refresh=True)["random"]
    assert fresh["0.9"]["seconds"] == 20.0  # an earlier warm round still counts first
    assert fresh["0.95"] == {**fresh["0.95"], "reached": "1/1", "seconds": 30.0, "images": 3.0}
    text = write_active_report(results, tmp_path).read_text()
    assert "Counting the model retrained from scratch" in text
    assert "| 0 | random | 0.800 | 0.900 | 0.930 | 0.970 | 5 |" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["effort_to_reach_with_refresh"]["random"]["0.95"]["reached"] == "1/1"


def test_refresh_switched_on_when_resuming_adds_a_part_and_a_report_table(study, tiny_root, tmp_path):
    out, results, _ = study
    config = json.loads((out / "config.json").read_text())
    del config["refresh"], config["review_passes"]  # a folder written before these settings existed
    (out / "config.json").write_text(json.dumps(config))
    again = run_active_protocol(Dataset.from_folder(tiny_root), out, _config(refresh=True))
    for strategy in ("random", "entropy"):
        part = again["splits"][0]["strategies"][strategy]
        assert part["rounds"] == results["splits"][0]["strategies"][strategy]["rounds"]  # not recomputed
        refresh = part["refresh"]
        assert refresh["after_round"] == 2 and 0 <= refresh["evaluation"]["mean"] <= 1
        assert 0 <= refresh["before"]["validation"] <= 1 and 0 <= refresh["evaluation"]["validation"] <= 1
        assert refresh["before"]["mean"] == pytest.approx(part["rounds"][-1]["evaluation"]["mean"])
    assert (out / "parts" / "split0-random-refresh.json").is_file()
    text = write_active_report(again, tmp_path / "report").read_text()
    assert "## Retrained from scratch after the last round" in text and "| 0 | entropy |" in text
    with pytest.raises(InputError, match="refresh: must be true or false"):
        _config(refresh="yes")


def test_protocol_bad_settings():
    with pytest.raises(InputError, match="unknown name"):
        _config(strategies=("oracle",))
    with pytest.raises(InputError, match="strategies"):
        _config(strategies=())
    with pytest.raises(InputError, match="reference"):
        _config(reference=2.0)
    with pytest.raises(InputError, match="budget"):
        _config(strategies=("knapsack",), budget=-5.0)
    with pytest.raises(InputError, match="synthetic: must be an integer >= 0"):
        _config(synthetic=-1)
    assert [a for a, _, _ in _config(synthetic=2).arms()] == ["random", "random+synthetic", "entropy",
                                                             "entropy+synthetic"]
    with pytest.raises(InputError, match="correction: unknown 'brush'"):
        _config(correction="brush")
    with pytest.raises(InputError, match="review_passes"):
        _config(review_passes=-2)


def test_cli_experiment_active_with_review(tiny_root, tmp_path):
    from hitlseg.cli import main

    out = tmp_path / "review"
    code = main(["experiment", "active", "--dataset", str(tiny_root), "--strategies", "random", "--splits", "1",
                 "--images", "2", "--rounds", "1", "--initial-self-training", "0", "--self-training", "0",
                 "--epochs", "1", "--baseline-epochs", "0", "--reference", "0.9",
                 "--eval-limit", "2", "--review-passes", "2", "--correction", "fill", "--refresh", "--out", str(out)])
    assert code == 0
    part = json.loads((out / "results.json").read_text())["splits"][0]["strategies"]["random"]
    (queried,) = part["rounds"][1]["queried"]
    assert set(part["accepted_dice"]) == {queried} and 0 <= part["accepted_dice"][queried] <= 1
    assert 1 <= part["rounds"][1]["review_passes"][queried] <= 2
    text = (out / "report.md").read_text()
    assert "fills of the prediction's errors (a review: up to 2 passes" in text
    assert "## Accepted masks of the reviewed images" in text
    assert part["refresh"]["after_round"] == 1 and "## Retrained from scratch after the last round" in text


def test_cli_experiment_active(tiny_root, tmp_path, capsys):
    from hitlseg.cli import main

    out = tmp_path / "cli"
    code = main(["experiment", "active", "--dataset", str(tiny_root), "--strategies", "fg_random", "--splits", "1",
                 "--images", "2", "--rounds", "1", "--initial-self-training", "0", "--self-training", "0",
                 "--epochs", "1", "--baseline-epochs", "0", "--reference", "0.9", "--eval-limit", "2", "--out", str(out),
                 "--synthetic", "1", "--generator-steps", "4", "--generator-refresh-steps", "2", "--no-refresh"])
    assert code == 0
    assert "refresh" not in json.loads((out / "results.json").read_text())["splits"][0]["strategies"]["fg_random"]
    text = (out / "report.md").read_text()
    assert "| fg_random |" in text and "| fg_random+synthetic |" in text
    assert "With and without synthetic samples (equal human effort)" in text and "| fg_random | difference |" in text
    arms = json.loads((out / "results.json").read_text())["splits"][0]["strategies"]
    plain, synthetic = arms["fg_random"]["rounds"], arms["fg_random+synthetic"]["rounds"]
    assert [r["queried"] for r in plain] == [r["queried"] for r in synthetic]  # the same images corrected
    assert "synthesis" not in plain[1] and synthetic[1]["synthesis"]["candidates"] == 3 * 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["synthesis"]["fg_random"]["splits"] == 1
    assert main(["experiment", "active", "--dataset", str(tiny_root), "--strategies", "nope", "--out", str(out)]) != 0
    assert "unknown name" in capsys.readouterr().err
