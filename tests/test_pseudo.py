"""HISE pseudo-labels on hand-made probabilities: tripartition, local consistency, schedule, choice."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hitlseg.errors import InputError
from hitlseg.pseudo import (IGNORE, Schedule, agreement, check_ignore, choose_images, confidence, confident_prediction,
                            local_consistency, markers_to_target, merge_strokes, tripartition)


def probs_of(rows):
    """(K + 1, 1, n) probabilities from per-pixel rows."""
    return np.asarray(rows, dtype=np.float32).T[:, None, :]


def test_tripartition_threshold_is_strict_and_keeps_the_argmax():
    p = probs_of([[0.9, 0.1, 0.0], [0.1, 0.05, 0.85], [0.05, 0.95, 0.0], [0.5, 0.5, 0.0], [0.9001, 0.0999, 0.0]])
    labels = tripartition(p, 0.9)[0]
    # mu == delta is not trusted; just above is
    assert labels.tolist() == [IGNORE, IGNORE, 1, IGNORE, 0]
    assert tripartition(p, 0.8)[0].tolist() == [0, 2, 1, IGNORE, 0]


def test_tripartition_in_3d():
    p = np.zeros((2, 2, 3, 4), np.float32)
    p[0], p[1] = 0.99, 0.01
    p[:, 1, 2, 3] = [0.3, 0.7]
    out = tripartition(p, 0.6)
    assert out.shape == (2, 3, 4) and out[1, 2, 3] == 1 and (out[0] == 0).all()
    assert tripartition(p, 0.8)[1, 2, 3] == IGNORE


def test_confident_prediction_is_the_tripartition_for_a_sure_model():
    rng = np.random.default_rng(0)
    p = rng.dirichlet([0.05, 0.05, 0.05], size=(6, 7)).astype(np.float32).transpose(2, 0, 1)
    p /= p.sum(0)
    sure = tripartition(p, 0.9)
    assert ((sure != IGNORE).mean(axis=None)) > 0.6
    kept = confident_prediction(p, 0.9)
    mostly_sure = [c for c in range(3) if (sure == c).sum() > 0.5 * (p.argmax(0) == c).sum()]
    assert mostly_sure
    for c in mostly_sure:  # a class more than half sure: exactly the tripartition
        np.testing.assert_array_equal(kept == c, sure == c)


def test_confident_prediction_keeps_the_surer_part_of_each_class_of_an_unsure_model():
    """A model below delta everywhere: tripartition keeps nothing, this keeps the surer half per class."""
    p = probs_of([[0.5, 0.3, 0.2], [0.6, 0.2, 0.2], [0.4, 0.35, 0.25], [0.7, 0.2, 0.1],
                  [0.2, 0.45, 0.35], [0.2, 0.6, 0.2], [0.3, 0.3, 0.4]])
    assert (tripartition(p, 0.95) == IGNORE).all()
    kept = confident_prediction(p, 0.95)[0].tolist()
    # class 0 (confidences 0.5, 0.6, 0.4, 0.7): the surer half; class 1 (0.45, 0.6): the surer; class 2: its one pixel
    assert kept == [IGNORE, 0, IGNORE, 0, IGNORE, 1, 2]
    assert (confident_prediction(p, 0.95, keep=1.0)[0] == p.argmax(0)[0]).all()
    with pytest.raises(InputError, match="keep"):
        confident_prediction(p, 0.95, keep=0.0)


def test_confidence():
    mu, labels = confidence(probs_of([[0.2, 0.8], [0.6, 0.4]]))
    np.testing.assert_allclose(mu[0], [0.8, 0.6])
    assert labels.dtype == np.uint8 and labels[0].tolist() == [1, 0]


def test_local_consistency_by_hand_and_its_conventions():
    p = probs_of([[0.1, 0.9], [0.3, 0.7], [0.4, 0.6], [0.99, 0.01], [0.05, 0.95]])
    # object pixels: mu 0.9, 0.7, 0.6, 0.95; below beta 0.92: 0.9, 0.7, 0.6
    assert local_consistency(p, 0.92) == pytest.approx((0.9 + 0.7 + 0.6) / 3)
    assert local_consistency(p, 0.65) == pytest.approx(0.6)
    assert local_consistency(p, 0.55) == 1.0  # objects, none below beta: consistent
    assert local_consistency(probs_of([[0.9, 0.1], [0.8, 0.2]]), 0.9) == 0.0  # no object at all


def test_schedule_progression_and_clamping():
    s = Schedule(delta=0.9, beta0=0.95, d_beta=0.05, gamma0=0.3, d_gamma=0.2, beta_min=0.8)
    assert s.at(0) == pytest.approx((0.95, 0.3))
    assert s.at(1) == pytest.approx((0.90, 0.5))
    assert s.at(5) == pytest.approx((0.8, 1.0))
    with pytest.raises(InputError, match="t:"):
        s.at(-1)


@pytest.mark.parametrize("delta", [0, 1, 1.5, -0.1, float("nan")])
def test_bad_delta(delta):
    with pytest.raises(InputError, match="delta"):
        tripartition(probs_of([[0.5, 0.5]]), delta)
    with pytest.raises(InputError, match="delta"):
        Schedule(delta=delta)


@pytest.mark.parametrize("field, value", [("beta0", 0), ("beta0", 1.2), ("gamma0", 0), ("d_beta", -0.1), ("d_gamma", "x")])
def test_bad_schedule(field, value):
    with pytest.raises(InputError, match=field):
        Schedule(**{field: value})


def test_probabilities_are_checked():
    with pytest.raises(InputError, match="sum to 1"):
        tripartition(probs_of([[0.5, 0.6]]), 0.5)
    with pytest.raises(InputError, match="at least 2 classes"):
        tripartition(np.ones((1, 4, 4), np.float32), 0.5)
    with pytest.raises(InputError, match="beta"):
        local_consistency(probs_of([[0.5, 0.5]]), 0)


def test_choose_images_ranks_by_consistency_with_stable_ties():
    scores = {"a": 0.5, "b": 0.9, "c": 0.9, "d": 0.1}
    assert choose_images(scores, 0.5) == ["b", "c"]
    assert choose_images(scores, 0.3) == ["b", "c"]  # ceil(1.2) = 2
    assert choose_images(scores, 0.25) == ["b"]
    assert choose_images(scores, 1.0) == ["b", "c", "a", "d"]
    assert choose_images({}, 0.5) == []
    with pytest.raises(InputError, match="gamma"):
        choose_images(scores, 0)


def test_strokes_override_machine_labels_and_become_targets():
    pseudo = np.array([[0, 1, IGNORE], [2, IGNORE, 0]], np.uint8)
    markers = np.array([[3, 0, 1], [0, 2, 0]], np.uint8)
    merged = merge_strokes(pseudo, markers)
    assert merged.tolist() == [[2, 1, 0], [2, 1, 0]]
    assert markers_to_target(markers).tolist() == [[2, IGNORE, 0], [IGNORE, 1, IGNORE]]
    with pytest.raises(InputError, match="shape"):
        merge_strokes(pseudo, markers[:1])
    with pytest.raises(InputError, match="no pixel is marked"):
        markers_to_target(np.zeros((3, 3), np.uint8))


def test_ignore_value_collisions():
    check_ignore(2)
    with pytest.raises(InputError, match="ignore value"):
        check_ignore(255)
    with pytest.raises(InputError, match="ignore value"):
        markers_to_target(np.array([[256]], np.int64))


def test_agreement_counts_labelled_pixels_only():
    pseudo = np.array([[1, 1, IGNORE, 0]])
    truth = np.array([[1, 0, 1, 0]])
    found = agreement(pseudo, truth)
    assert found["labelled"] == 0.75 and found["accuracy"] == pytest.approx(2 / 3)
    assert found["dice"][1] == pytest.approx(2 / 3) and found["iou"][1] == pytest.approx(0.5)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, (3, 4, 5), elements=st.floats(0.0625, 1.0, width=32)), st.floats(0.05, 0.9), st.floats(0.0, 0.09))
def test_tripartition_properties(raw, delta, step):
    p = raw / raw.sum(0, keepdims=True)
    low, high = tripartition(p, delta), tripartition(p, delta + step)
    argmax = p.argmax(0)
    assert np.all((low == IGNORE) | (low == argmax))
    assert (high != IGNORE).sum() <= (low != IGNORE).sum()
