"""``hitlseg split`` and grouped splits: no group on two sides, group sources, one-line errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hitlseg.dataset import (
    Split,
    groups_from_regex,
    leaking_groups,
    make_split,
    read_groups,
    resolve_groups,
)
from hitlseg.errors import InputError
from tests.helpers import cli_one_line_error as _one_line_error, cli_run as _run, rgb_from_mask, write_png

# 12 images of 4 patients, 2-4 images each
PATIENTS = {"p1": 4, "p2": 3, "p3": 3, "p4": 2}
IDS = sorted(f"{p}_{k:02d}" for p, n in PATIENTS.items() for k in range(n))
GROUP = {i: i.split("_")[0] for i in IDS}


@pytest.fixture
def dataset(tmp_path):
    """A dataset folder of tiny images named PATIENT_NN.png with masks."""
    import numpy as np

    root = tmp_path / "ds"
    for index, sample_id in enumerate(IDS):
        mask = np.zeros((16, 16), np.uint8)
        mask[4:12, 4:12] = 1
        write_png(root / "images" / f"{sample_id}.png", rgb_from_mask(mask, index))
        write_png(root / "masks" / f"{sample_id}.png", mask)
    return root


# --------------------------------------------------------------------------------------------
# the library: a grouped split never puts one group on two sides
# --------------------------------------------------------------------------------------------


@st.composite
def grouped_ids(draw):
    n_groups = draw(st.integers(3, 25))
    sizes = draw(st.lists(st.integers(1, 8), min_size=n_groups, max_size=n_groups))
    ids = [f"g{g}_{k}" for g, size in enumerate(sizes) for k in range(size)]
    return ids, {i: i.split("_")[0] for i in ids}


FRACTIONS = st.sampled_from([(0.6, 0.1, 0.3), (0.8, 0.0, 0.2), (0.5, 0.25, 0.25), (0.34, 0.33, 0.33), (1.0, 0.0, 0.0)])


@settings(max_examples=150, deadline=None)
@given(grouped_ids(), FRACTIONS, st.integers(0, 2**32 - 1))
def test_grouped_split_never_puts_a_group_on_two_sides(data, fractions, seed):
    ids, groups = data
    split = make_split(ids, fractions, seed, groups=groups)
    parts = [split.train, split.val, split.test]
    assert sorted(split.train + split.val + split.test) == sorted(ids)  # every id exactly once
    for a in range(3):
        for b in range(a + 1, 3):
            assert not {groups[i] for i in parts[a]} & {groups[i] for i in parts[b]}
    assert leaking_groups(split) == {}
    for part, fraction in zip(parts, fractions):  # every part with a fraction gets a group, the others none
        assert bool(part) == (fraction > 0)
    assert make_split(ids, fractions, seed, groups=groups) == split  # seeded


def test_grouped_split_fits_the_fractions_when_groups_allow():
    ids = [f"g{g}_{k}" for g in range(40) for k in range(1 + g % 3)]  # 79 images, groups of 1-3
    splits = [make_split(ids, (0.6, 0.1, 0.3), seed, groups={i: i.split("_")[0] for i in ids}) for seed in range(4)]
    for split in splits:  # the nearest whole numbers to 47.4, 7.9 and 23.7
        assert (len(split.train), len(split.val), len(split.test)) == (47, 8, 24)
    assert len({tuple(s.test) for s in splits}) == 4  # yet the seed still decides which groups go where


def test_leaking_split_file_is_refused(tmp_path):
    split = make_split(IDS, (0.5, 0.0, 0.5), 0, groups=GROUP)
    data = split.to_dict()
    moved = data["test"].pop()  # every patient has at least 2 images: the rest of its group stays in test
    data["train"].append(moved)
    (tmp_path / "s.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=f"group '{GROUP[moved]}' has images in train and test"):
        Split.load(tmp_path / "s.json")
    data["train"].remove(moved)
    data["test"].append(moved)
    del data["groups"][moved]
    (tmp_path / "s.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="1 ids have no group"):
        Split.load(tmp_path / "s.json")


def test_regex_and_file_group_sources(tmp_path):
    assert groups_from_regex(IDS, r"^(p\d)_") == GROUP
    assert groups_from_regex(IDS, r"^p\d") == GROUP  # no capture group: the whole match
    (tmp_path / "g.csv").write_text("image,patient\n" + "".join(f"{i}.png,{GROUP[i]}\n" for i in IDS))
    assert read_groups(tmp_path / "g.csv", IDS) == GROUP  # file names stand for their stems
    (tmp_path / "g.tsv").write_text("".join(f"{i}\t{GROUP[i]}\n" for i in IDS))
    assert read_groups(tmp_path / "g.tsv", IDS) == GROUP
    (tmp_path / "three.csv").write_text("slide;file;note\n" + "".join(f"{GROUP[i]};{i};x\n" for i in IDS))
    assert read_groups(tmp_path / "three.csv", IDS) == GROUP
    (tmp_path / "g.json").write_text(json.dumps(GROUP))
    assert resolve_groups(str(tmp_path / "g.json"), IDS) == GROUP
    assert resolve_groups(r"^(p\d)_", IDS) == GROUP
    (tmp_path / "two.csv").write_text("p1_00,a\np1_00,b\n")
    with pytest.raises(InputError, match="two groups"):
        read_groups(tmp_path / "two.csv", IDS)


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------


def _check_grouped(path, expected_groups=GROUP):
    split = Split.load(path)
    assert split.groups == expected_groups and leaking_groups(split) == {}
    for part in (split.train, split.val, split.test):
        assert part
    return split


def test_split_command_ungrouped_is_seeded(dataset, tmp_path, capsys):
    out = tmp_path / "split.json"
    code, text, _ = _run(capsys, "split", dataset, "--seed", 3, "--out", out)
    assert code == 0 and "train:" in text and "groups:    none" in text
    split = Split.load(out)
    assert split.groups is None and split.seed == 3 and split == make_split(IDS, seed=3)
    assert len(split.train) == 7 and len(split.val) == 1 and len(split.test) == 4


@pytest.mark.parametrize("source", ["regex", "csv", "tsv", "json"])
def test_split_command_by_groups(dataset, tmp_path, capsys, source):
    if source == "regex":
        group_by = r"^(p\d)_"
    else:
        group_by = tmp_path / f"groups.{source}"
        if source == "csv":
            group_by.write_text("id,group\n" + "".join(f"{i},{GROUP[i]}\n" for i in IDS))
        elif source == "tsv":
            group_by.write_text("".join(f"{i}.png\t{GROUP[i]}\n" for i in IDS))
        else:
            group_by.write_text(json.dumps(GROUP))
    out = tmp_path / "split.json"
    code, text, err = _run(capsys, "split", dataset, "--fractions", "0.5,0.25,0.25", "--group-by", group_by,
                           "--out", out)
    assert code == 0, err
    assert "groups:    4 " in text and "no group has images in two parts" in text
    split = _check_grouped(out)
    assert split.group_by == str(group_by) and split.fractions == (0.5, 0.25, 0.25)
    # the summary's sizes are the file's
    for name in ("train", "val", "test"):
        assert f"{len(getattr(split, name)):5d} images" in text
    code, text, _ = _run(capsys, "split", dataset, "--group-by", group_by, "--out", out, "--json")
    summary = json.loads(text)
    assert summary["groups"] == 4 and summary["groups_on_two_sides"] == 0
    assert sum(summary["groups_per_part"].values()) == 4


def test_a_split_file_of_split_is_read_by_train_and_predict(dataset, tmp_path, capsys):
    """The file ``split`` writes is what ``train --split`` and ``predict --split`` read."""
    out = tmp_path / "split.json"
    assert _run(capsys, "split", dataset, "--group-by", r"^(p\d)_", "--out", out)[0] == 0
    split = Split.load(out)
    model = tmp_path / "m.pt"
    code, text, err = _run(capsys, "train", "--dataset", dataset, "--split", out, "--encoder", "backprop",
                           "--epochs", "1", "--crop-size", "16", "--out", model, "--json")
    assert code == 0, err
    summary = json.loads(text)
    assert (summary["train"], summary["val"], summary["test"]) == (len(split.train), len(split.val), len(split.test))
    code, _, err = _run(capsys, "predict", "--model", model, "--images", dataset, "--split", out,
                        "--out", tmp_path / "pred")
    assert code == 0, err
    assert sorted(p.stem for p in (tmp_path / "pred").glob("*.png")) == sorted(split.test)


def test_split_command_bad_input_is_one_line_exit_2(dataset, tmp_path, capsys):
    out = tmp_path / "split.json"
    base = ["split", dataset, "--out", out]

    def error(*extra) -> str:
        return _one_line_error(capsys, *base, *extra)

    (tmp_path / "unknown.csv").write_text("".join(f"{i},{GROUP[i]}\n" for i in IDS) + "ghost_01,p9\n")
    assert "ghost_01" in error("--group-by", tmp_path / "unknown.csv")
    (tmp_path / "partial.csv").write_text("".join(f"{i},{GROUP[i]}\n" for i in IDS[1:]))
    assert IDS[0] in error("--group-by", tmp_path / "partial.csv")  # an id the file leaves out
    (tmp_path / "none.csv").write_text("a,b\nc,d\n")
    assert "none of the" in error("--group-by", tmp_path / "none.csv")
    (tmp_path / "bad.json").write_text("{not json")
    assert "bad.json" in error("--group-by", tmp_path / "bad.json")
    (tmp_path / "empty.csv").write_text("")
    assert "empty" in error("--group-by", tmp_path / "empty.csv")
    assert "regular expression" in error("--group-by", "p(")
    assert "matches no image id" in error("--group-by", r"^patient(\d+)")
    assert "p4_00" in error("--group-by", r"^(p[123])_")  # ids the pattern gives no group
    assert "sum to 1" in error("--fractions", "0.5,0.5,0.5")
    assert "three numbers" in error("--fractions", "0.5,0.5")
    assert "three numbers" in error("--fractions", "a,b,c")
    assert "training fraction" in error("--fractions", "0,0.5,0.5")
    (tmp_path / "two.csv").write_text("".join(f"{i},{'a' if GROUP[i] in ('p1', 'p2') else 'b'}\n" for i in IDS))
    assert "2 groups" in error("--group-by", tmp_path / "two.csv")  # 2 groups cannot fill 3 parts
    assert "cannot fill" in error("--group-by", r"^p")  # one group
    assert "not found" in error("--group-by", tmp_path / "missing.csv")
    assert "is a folder" in error("--group-by", tmp_path)
    assert "not found" in _one_line_error(capsys, "split", tmp_path / "nope", "--out", out)
    assert "folder" in _one_line_error(capsys, "split", dataset, "--out", tmp_path)  # --out names a folder
    assert "seed" in error("--seed", "-1")
    assert not out.exists()  # nothing was written by a refused command
