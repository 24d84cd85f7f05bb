"""Experiment progress (issue 20.7) and report wording (20.5, 20.7): selection rounds, training
epochs and correction rounds reach the progress callback with the time left; a one-split report
shows no spread; every table row says which masks its model used."""

from __future__ import annotations

import re

import pytest

from hitlseg.dataset import Dataset
from hitlseg.errors import InputError
from hitlseg.experiments import ProtocolConfig, run_protocol, write_report
from hitlseg.experiments.active import ActiveProtocolConfig, run_active_protocol
from hitlseg.experiments.active_report import write_active_report
from hitlseg.progress import PartsProgress, format_time_left, nested
from tests.helpers import copy_demo

TIME_LEFT = re.compile(r" · part (\d+)/(\d+) · about \d+(\.\d)? (s|min|h) left$")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_nested_maps_a_stage_into_its_share():
    seen = []
    stage = nested(lambda d, t, m: seen.append((d, t, m)), 0.25, 0.75, "sU-Net")
    stage(0, 4, "epoch 0/4")
    stage(2, 4, "epoch 2/4")
    stage(9, 4, "")  # beyond its total: clamped
    assert seen == [(250, 1000, "sU-Net: epoch 0/4"), (500, 1000, "sU-Net: epoch 2/4"), (750, 1000, "sU-Net")]
    assert nested(None, 0, 1, "x") is None
    with pytest.raises(InputError, match="share"):
        nested(print, 0.8, 0.2)


def test_time_left_comes_from_the_work_done_so_far():
    clock, seen, lines = Clock(), [], []
    tracker = PartsProgress(lambda d, t, m: seen.append((d, t, m)), 4, log=lines.append, log_every=30, clock=clock)
    assert tracker.seconds_left() is None and tracker.time_left() == "time left: estimating"
    tracker.skip()  # a part of an earlier run: done, but neither work nor time
    with tracker.part("p2") as stage:
        assert seen == [(1, 4, "p2 · part 2/4 · time left: estimating")]
        clock.now = 10.0
        stage(1, 4, "epoch 1/4")  # a quarter of the part in 10 s: 40 s per part, 2.75 parts left
        assert tracker.seconds_left() == pytest.approx(110.0)
        assert seen[-1] == (1, 4, "p2: epoch 1/4 · part 2/4 · about 2 min left")
        stage(0, 10, "pseudo-labelling")  # a stage restarting its count does not move the share back
        assert tracker.seconds_left() == pytest.approx(110.0)
        clock.now = 40.0
        stage(4, 4, "epoch 4/4")
    assert tracker.done == 2 and tracker.computed == 1
    assert tracker.seconds_left() == pytest.approx(80.0)  # 40 s per part, 2 parts left
    assert lines == ["p2: epoch 4/4 · part 2/4 · about 80 s left"]  # the only one 30 s after the previous
    tracker.log("p2: done")
    assert lines[-1] == "p2: done"
    with pytest.raises(RuntimeError):
        with tracker.part("p3"):
            raise RuntimeError("boom")
    assert tracker.done == 2 and tracker.computed == 1  # a failed part is not counted
    assert format_time_left(30) == "about 30 s left" and format_time_left(600) == "about 10 min left"
    assert format_time_left(3 * 3600) == "about 3.0 h left" and format_time_left(None) == "time left: estimating"
    with pytest.raises(InputError, match="log_every"):
        PartsProgress(None, 3, log_every=-1)


@pytest.fixture(scope="module")
def one_split(tmp_path_factory):
    root = copy_demo(tmp_path_factory.mktemp("progress_data"), 12)
    out = tmp_path_factory.mktemp("progress_run")
    config = ProtocolConfig(splits=1, images=2, methods=("gtfree",), epochs=2)
    messages, lines = [], []
    results = run_protocol(Dataset.from_folder(root), out, config, progress=lambda d, t, m: messages.append((d, t, m)),
                           log=lines.append, log_every=0)
    return out, results, messages, lines


def test_selection_progress_names_rounds_and_epochs_with_the_time_left(one_split):
    _, _, messages, lines = one_split
    texts = [m for _, _, m in messages]
    rounds = [m for m in texts if m.startswith("split0-gtfree: selection: round ")]
    assert [m.split(" marked")[0] for m in rounds] == ["split0-gtfree: selection: round 1/2",
                                                       "split0-gtfree: selection: round 2/2"]
    assert any(m.startswith("split0-gtfree: sU-Net decoder (all training masks): epoch 2/2") for m in texts)
    assert any(m.startswith("split0-baseline: U-Net: epoch 1/2") for m in texts)
    # every message but the run's first and last says which part and how long is left
    for done, total, text in messages[1:-1]:
        match = TIME_LEFT.search(text)
        assert match, text
        assert total == 3 and int(match.group(1)) == done + 1
    assert messages[0][2].endswith("time left: estimating") and messages[-1] == (3, 3, "done")
    assert [d for d, _, _ in messages] == sorted(d for d, _, _ in messages)
    # log_every=0: the log gets every progress message, and a line per finished part with the time left
    finished = [line for line in lines if ": done (" in line]
    assert [line.split(":")[0] for line in finished] == ["split0-first", "split0-gtfree", "split0-baseline"]
    assert finished[0].endswith("left)") and len(lines) > len(finished)


def test_one_split_report_has_no_spread_and_names_the_masks_used(one_split, tmp_path):
    _, results, _, _ = one_split
    text = write_report(results, tmp_path).read_text()
    assert "±" not in text
    assert "## Table I: validation Dice (one split)" in text
    assert "| method | model | masks used | mean |" in text
    assert "| gtfree | adaptive | none (strokes) |" in text
    assert "| gtfree | sunet | all training masks |" in text
    assert "| baseline (all backprop) | unet | all training masks |" in text
    assert "decoder trained by backprop on **every training mask**" in text
    assert re.search(r"\| gtfree \| adaptive \| none \(strokes\) \| \d\.\d{3} \|", text)
    import json

    assert json.loads((tmp_path / "summary.json").read_text())["masks_used"]["sunet"] == "all training masks"
    # with two splits the spread is back
    two = {**results, "config": {**results["config"], "splits": 2}, "splits": results["splits"] * 2}
    assert "± 0.000" in write_report(two, tmp_path / "two").read_text()


def test_resumed_run_reports_parts_done_earlier(one_split):
    out, results, _, _ = one_split
    root = results["dataset"]
    messages, lines = [], []
    run_protocol(Dataset.from_folder(root), out, ProtocolConfig(splits=1, images=2, methods=("gtfree",), epochs=2),
                 progress=lambda d, t, m: messages.append(m), log=lines.append)
    assert lines == ["split0-first: done in an earlier run", "split0-gtfree: done in an earlier run",
                     "split0-baseline: done in an earlier run"]
    assert messages == ["done"]


def test_active_progress_and_one_split_report(tmp_path, monkeypatch):
    root = copy_demo(tmp_path / "data", 10)
    config = ActiveProtocolConfig(strategies=("random",), splits=1, images=2, rounds=1, initial_self_training=0,
                                  self_training=0, epochs=1, pool_limit=2, baseline_epochs=1, eval_limit=2)
    messages = []
    results = run_active_protocol(Dataset.from_folder(root), tmp_path / "out", config,
                                  progress=lambda d, t, m: messages.append((d, t, m)))
    texts = [m for _, _, m in messages]
    assert any(m.startswith("split0-baseline: U-Net: epoch 1/1") for m in texts)
    assert any(m.startswith("split0-round0: ground-truth-free selection: round 2/2 marked") for m in texts)
    assert any(m.startswith("split0-round0: strokes learner: training on strokes: epoch") for m in texts)
    assert any(m.startswith("split0-random: correction: round 1") for m in texts)
    assert all(TIME_LEFT.search(m) for m in texts[1:-1])
    titles = []
    import matplotlib.axes

    original = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", lambda self, title, *a, **k: (titles.append(title),
                                                                                          original(self, title, *a, **k))[1])
    text = write_active_report(results, tmp_path / "report").read_text()
    assert "±" not in text and "## Test Dice after each round (one split)" in text
    assert titles and not any("±" in t for t in titles)


def test_quality_model_scores_the_test_predictions_beside_their_true_dice(tmp_path):
    """``quality_model`` (``--quality-model``): each trained network's test predictions get a predicted
    Dice (no ground truth read) next to the true one, in the results and in the report (issue 16.4a)."""
    from hitlseg.quality import train_quality

    root = copy_demo(tmp_path / "data", 10)
    dataset = Dataset.from_folder(root)
    samples = [dataset.load(i) for i in dataset.ids[:4]]
    quality = train_quality([s.image for s in samples], [s.mask for s in samples], epochs=1, samples_per_image=2,
                            size=32, seed=0).save(tmp_path / "quality.pt")
    with pytest.raises(InputError, match="not a file"):
        ProtocolConfig(quality_model=str(tmp_path / "missing.pt"))
    config = ProtocolConfig(splits=1, images=2, methods=("gtfree",), epochs=1, quality_model=str(quality))
    results = run_protocol(dataset, tmp_path / "run", config, log_every=0)
    split = results["splits"][0]
    scored = split["methods"]["gtfree"]["sunet"]["test"]["quality"]
    assert scored["n"] == split["sizes"]["test"] and 0 <= scored["predicted"] <= 1
    assert scored["true"] == pytest.approx(split["methods"]["gtfree"]["sunet"]["test"]["mean"])
    assert "quality" in split["baseline"]["test"] and "quality" not in split["methods"]["gtfree"]["adaptive"]["test"]
    text = write_report(results, tmp_path / "report").read_text()
    assert "## Predicted quality (no ground truth read)" in text and "| gtfree | sunet |" in text
    assert ProtocolConfig().to_dict().get("quality_model", "absent") == "absent"  # older runs still resume
