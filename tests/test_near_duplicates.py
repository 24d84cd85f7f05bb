"""Near-duplicates (issue 20.3): an image almost identical to a selected one is never recommended
nor picked by ``gtfree``; it is reported as a near-duplicate of that image instead."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hitlseg.errors import InputError
from hitlseg.robot import Robot
from hitlseg.selection import SelectionContext, SelectionSession, make_selector, recommend
from hitlseg.selection.recommend import DUPLICATE_TOLERANCE, NearDuplicate, near_duplicates

BAD_TOLERANCES = [-0.1, 1.0, 2.5, float("nan"), float("inf"), "0.1", True, None]


def line_pool():
    """Descriptors on a line (diameter 10): ``b`` is an exact copy of ``a``, ``c`` is 0.05 from ``a``."""
    ids = list("abcdefg")
    d = np.array([[0.0], [0.0], [0.05], [1.0], [4.0], [7.0], [10.0]])
    return ids, d


def test_exact_copy_is_left_out_of_both_lists_and_reported():
    ids, d = line_pool()
    rec = recommend(d, ids, ["a"], k=6)
    assert "b" not in rec.closest_ids + rec.most_distant_ids
    # 0.05 < 0.01 x diameter 10 = 0.1: c is a near-duplicate as well, nearest first
    assert rec.near_duplicates == [NearDuplicate("b", "a", 0.0), NearDuplicate("c", "a", 0.05)]
    assert rec.threshold == pytest.approx(DUPLICATE_TOLERANCE * 10)
    assert rec.closest_ids == ["d", "e", "f", "g"] and rec.most_distant_ids == ["g", "f", "e", "d"]
    assert set(rec.distances) == set("bcdefg")  # the distance table still has every unselected image
    data = json.loads(json.dumps(rec.to_dict()))
    assert data["near_duplicates"] == [{"id": "b", "of": "a", "distance": 0.0}, {"id": "c", "of": "a", "distance": 0.05}]
    assert data["duplicate_tolerance"] == DUPLICATE_TOLERANCE
    assert str(rec.near_duplicates[0]) == "b: near-duplicate of a (distance 0)"


def test_tolerance_zero_turns_the_rule_off_and_the_tolerance_scales_with_the_diameter():
    ids, d = line_pool()
    off = recommend(d, ids, ["a"], k=6, duplicate_tolerance=0)
    assert off.near_duplicates == [] and off.closest_ids[:2] == ["b", "c"]
    tight = recommend(d, ids, ["a"], k=6, duplicate_tolerance=0.001)  # threshold 0.01: only the exact copy
    assert [n.id for n in tight.near_duplicates] == ["b"] and tight.closest_ids[0] == "c"
    scaled = recommend(d * 1000, ids, ["a"], k=6)  # unit-free: the same images under any scale
    assert [n.id for n in scaled.near_duplicates] == ["b", "c"]
    # near-duplicates are judged against the nearest selected image, also when ranking by the last one
    last = recommend(d, ids, ["a", "g"], k=6, distance="last")
    assert [(n.id, n.of) for n in last.near_duplicates] == [("b", "a"), ("c", "a")]
    assert "b" not in last.closest_ids + last.most_distant_ids


@pytest.mark.parametrize("value", BAD_TOLERANCES)
def test_bad_tolerance_values_are_refused_by_name(value):
    ids, d = line_pool()
    with pytest.raises(InputError, match=r"duplicate_tolerance: must be a fraction of the pool's descriptor diameter"):
        recommend(d, ids, ["a"], duplicate_tolerance=value)
    if value is not None:  # None means "the context's" for the selector
        with pytest.raises(InputError, match="duplicate_tolerance"):
            make_selector("gtfree", duplicate_tolerance=value)
    with pytest.raises(InputError, match="duplicate_tolerance"):
        SelectionSession({"x": np.zeros((3, 8, 8), np.float32), "y": np.ones((3, 8, 8), np.float32)},
                         duplicate_tolerance=value)


@pytest.mark.parametrize("policy", ["closest", "alternate", "most_distant"])
def test_gtfree_never_picks_a_near_duplicate(policy):
    ids, d = line_pool()
    context = SelectionContext(ids, ["a", "g"], d)  # alternate with 2 selected: the closest end first
    selector = make_selector("gtfree", policy=policy)
    chosen = selector.query(context, n=len(ids) - 4)
    assert not {"b", "c"} & set(chosen)
    assert [(n.id, n.of) for n in selector.near_duplicates] == [("b", "a"), ("c", "a")]
    off = make_selector("gtfree", policy="closest", duplicate_tolerance=0).query(context, n=1)
    assert off == ["b"]


def test_gtfree_batch_skips_near_duplicates_of_its_own_picks():
    ids = ["s", "x", "x2", "y"]
    d = np.array([[0.0], [10.0], [10.0], [5.0]])  # x2 copies x; both farthest from the selected s
    selector = make_selector("gtfree", policy="most_distant")
    assert selector.query(SelectionContext(ids, ["s"], d), n=2) == ["x", "y"]
    assert selector.near_duplicates == [NearDuplicate("x2", "x", 0.0)]


def test_gtfree_falls_back_to_near_duplicates_only_when_nothing_else_remains():
    ids = ["a", "b", "c"]
    d = np.array([[0.0], [0.0], [10.0]])
    selector = make_selector("gtfree", policy="closest")
    assert selector.query(SelectionContext(ids, ["a", "c"], d), n=1) == ["b"]
    assert selector.notes and "only near-duplicates" in selector.notes[0]
    assert selector.near_duplicates == []  # b was picked, not skipped


def test_the_context_carries_the_sessions_tolerance():
    ids, d = line_pool()
    context = SelectionContext(ids, ["a"], d, duplicate_tolerance=0.0)
    assert make_selector("gtfree", policy="closest").query(context) == ["b"]
    assert make_selector("gtfree", policy="closest", duplicate_tolerance=0.01).query(context) == ["d"]
    with pytest.raises(InputError, match="context.duplicate_tolerance"):
        make_selector("gtfree").query(SelectionContext(ids, ["a"], d, duplicate_tolerance=-1))


def test_near_duplicates_helper_without_selection_or_tolerance():
    ids, d = line_pool()
    assert near_duplicates(d, ids, [], [1, 2], 0.5) == ([], 0.0)
    assert near_duplicates(d, ids, [0], [1, 2], 0.0) == ([], 0.0)
    found, threshold = near_duplicates(d, ids, [0], [1, 2, 3], 0.5, diameter=1.0)
    assert threshold == 0.5 and [n.id for n in found] == ["b", "c"]


@pytest.fixture(scope="module")
def twin_session():
    """Eight demo images and an exact copy of the first, through the real descriptor pipeline."""
    from hitlseg.datasets import demo

    dataset = demo()
    ids = dataset.ids[:8]
    images = {i: dataset.image(i)[0] for i in ids}
    images["copy"] = images[ids[0]].copy()
    masks = {i: dataset.mask(i) for i in ids}
    masks["copy"] = masks[ids[0]]
    return ids, images, masks


def test_session_never_recommends_the_copy_after_its_twin_is_selected(twin_session):
    ids, images, masks = twin_session
    session = SelectionSession(images, seed=0, projection="pca", k=3, n_superpixels=12)
    robot = Robot(0)
    selector = make_selector("gtfree", policy="closest")
    current = ids[0]
    for _ in range(4):
        result = session.step(current, robot.mark(masks[current], key=current))
        rec = result.recommendation
        assert "copy" not in rec.closest_ids + rec.most_distant_ids
        assert [(n.id, n.of, n.distance) for n in result.near_duplicates] == [("copy", ids[0], 0.0)]
        listed = result.to_dict(coords=False)["recommendation"]["near_duplicates"]
        assert listed == [{"id": "copy", "of": ids[0], "distance": 0.0}]
        current = selector.query(session.context(), 1)[0]
        assert current != "copy"  # the closest image of all, yet never picked
    off = SelectionSession(images, seed=0, projection="pca", k=3, n_superpixels=12, duplicate_tolerance=0)
    first = off.step(ids[0], robot.mark(masks[ids[0]], key=ids[0]))
    assert first.recommendation.closest[0] == ("copy", 0.0) and first.near_duplicates == []
    assert make_selector("gtfree", policy="closest").query(off.context(), 1) == ["copy"]


def test_the_demo_datas_repeated_image_is_reported():
    """The bundled wbc1 images 112 and 139 are the same picture stored twice: with 112 marked, 139
    is reported as its near-duplicate, and no other image of the 40 around them is."""
    from hitlseg.datasets import demo

    dataset = demo()
    pool = dataset.ids[105:145]
    assert "112" in pool and "139" in pool
    session = SelectionSession({i: dataset.image(i)[0] for i in pool}, seed=0, projection="pca")
    result = session.step("112", Robot(0).mark(dataset.mask("112"), key="112"))
    assert [(n.id, n.of, n.distance) for n in result.near_duplicates] == [("139", "112", 0.0)]
    assert "139" not in result.recommendation.closest_ids


def test_large_pool_diameter_equals_the_exact_one():
    """Beyond PDIST_ROWS the farthest pair comes from float32 matrix products, its distance from float64."""
    from scipy.spatial.distance import pdist

    from hitlseg.selection.recommend import PDIST_ROWS, descriptor_diameter

    rng = np.random.default_rng(3)
    centers = rng.normal(0, 1, (5, 16))
    d = centers[rng.integers(0, 5, PDIST_ROWS + 500)] + rng.normal(0, 0.3, (PDIST_ROWS + 500, 16)) + 100.0
    d[7] = d[3] + 40  # one far pair, offset from the origin (the search centres the rows first)
    assert descriptor_diameter(d) == pytest.approx(float(pdist(d).max()), rel=1e-12)
    assert descriptor_diameter(np.ones((PDIST_ROWS + 1, 4))) == 0.0
