"""Reviewing a prediction: strokes refined by a graph cut, passes until satisfied, the accepted mask as the label."""

from __future__ import annotations

import numpy as np
import pytest

from hitlseg.active.review import review, reviewed_mask
from hitlseg.errors import InputError


def _scene(unsure: float = 0.3):
    """A bright 20x20 square on a dark 48x48 image; the model found only its left half."""
    truth = np.zeros((48, 48), np.uint8)
    truth[14:34, 14:34] = 1
    image = np.where(truth > 0, 0.9, 0.1).astype(np.float32)[None].repeat(3, 0)
    found = np.zeros_like(truth)
    found[14:34, 14:24] = 1
    p_object = np.where(found > 0, 0.9, np.where(truth > 0, unsure, 0.05)).astype(np.float32)
    return image, np.stack([1 - p_object, p_object]), truth


def _dice(a, b):
    return 2 * ((a > 0) & (b > 0)).sum() / ((a > 0).sum() + (b > 0).sum())


def test_reviewed_mask_keeps_the_strokes_and_snaps_to_edges_where_the_model_is_unsure():
    image, probabilities, truth = _scene(unsure=0.3)
    none = np.zeros(truth.shape, np.uint8)
    assert _dice(reviewed_mask(image, probabilities, none), truth) < 0.7  # confidently wrong: stays wrong
    painted = np.zeros(truth.shape, np.uint8)
    painted[15:33, 25:33] = 2  # the missed half painted, a pixel short of its edges
    accepted = reviewed_mask(image, probabilities, painted)
    assert (accepted[painted > 0] == 1).all()
    np.testing.assert_array_equal(accepted, truth)  # the cut closes the unpainted ring along the edge
    background = np.zeros_like(painted)
    background[20, 16:20] = 1  # a background stroke wins over a confident model
    assert (reviewed_mask(image, probabilities, background)[20, 16:20] == 0).all()
    image, unsure, truth = _scene(unsure=0.45)
    np.testing.assert_array_equal(reviewed_mask(image, unsure, none), truth)  # unsure: the square's edge decides
    with pytest.raises(InputError, match="does not match"):
        reviewed_mask(image, probabilities, painted[:10])


def test_review_corrects_the_shown_mask_until_nothing_is_left():
    from hitlseg.robot import corrective_markers

    image, probabilities, truth = _scene()
    shown = []

    def person(labels, so_far):
        shown.append(labels.copy())
        new = corrective_markers(truth, labels, n_regions=1, fill=True, rng=0)
        return np.where(new > 0, new, so_far).astype(np.uint8)

    markers, accepted, used = review(person, image, probabilities, np.zeros(truth.shape, np.uint8), passes=4)
    assert 1 <= used <= 4 and len(shown) >= used
    np.testing.assert_array_equal(shown[0], np.argmax(probabilities, 0))  # the first pass sees the prediction
    assert _dice(accepted, truth) > _dice(shown[0], truth)
    assert (accepted[markers > 0] == markers[markers > 0] - 1).all()
    if used < 4:  # stopped because a pass added nothing
        assert len(shown) == used + 1

    calls = []
    review(lambda labels, so_far: calls.append(1) or person(labels, so_far), image, probabilities,
           np.zeros(truth.shape, np.uint8), passes=1)
    assert len(calls) == 1
    nothing_wrong = np.stack([1 - truth, truth]).astype(np.float32)
    markers, accepted, used = review(person, image, nothing_wrong, np.zeros(truth.shape, np.uint8), passes=3)
    assert used == 0 and not markers.any()
    np.testing.assert_array_equal(accepted, truth)  # accepted as shown
    with pytest.raises(InputError, match="passes"):
        review(person, image, probabilities, markers, passes=0)
    with pytest.raises(InputError, match="shape"):
        review(lambda labels, so_far: so_far[:5], image, probabilities, markers, passes=2)


def test_learner_trains_an_accepted_image_on_its_accepted_mask(monkeypatch):
    import hitlseg.nets
    from hitlseg.datasets import demo
    from hitlseg.pseudo import IGNORE, SelfTrainingConfig, default_strokes_config, learn_from_strokes
    from hitlseg.robot import Robot

    dataset = demo()
    samples = [dataset.load(i) for i in dataset.ids[:3]]
    robot = Robot(seed=0)
    images = [s.image for s in samples[:2]]
    markers = [robot.mark(s.mask, key=s.id) for s in samples[:2]]
    accepted = [None, samples[1].mask.astype(np.uint8)]
    seen, real = [], hitlseg.nets.train

    def spy(model, pairs, *args, **kwargs):
        seen.append(list(pairs))
        return real(model, pairs, *args, **kwargs)

    monkeypatch.setattr(hitlseg.nets, "train", spy)
    learn_from_strokes(images, markers, [samples[2].image], config=default_strokes_config(epochs=1, crf_weight=0.0),
                       self_training=SelfTrainingConfig(iterations=1, epochs=1), expand=False, accepted=accepted)
    assert len(seen) == 2  # the strokes stage, one self-training iteration
    for pairs in seen:
        image, mask, person = pairs[1]
        np.testing.assert_array_equal(mask, accepted[1])  # every pixel labelled, not strokes or pseudo-labels
        np.testing.assert_array_equal(person, markers[1] > 0)  # the strokes weigh as the person's
    strokes_pair = seen[0][0]
    assert len(strokes_pair) == 2 and (strokes_pair[1] == IGNORE).any()  # the other image: its strokes
    image, markers0 = images[0], markers[0]
    with pytest.raises(InputError, match="1 entries for 2"):
        learn_from_strokes(images, markers, accepted=[None])
    with pytest.raises(InputError, match=r"accepted\[image 0\]: need integer labels of shape"):
        learn_from_strokes(images, markers, accepted=[accepted[1][:10], None])
    with pytest.raises(InputError, match=r"labels must be 0..2"):
        learn_from_strokes(images, markers, accepted=[accepted[1] + 3, None])


def test_loop_with_review_trains_on_accepted_masks_and_resumes(tmp_path, monkeypatch):
    import hitlseg.pseudo
    from hitlseg.active import ActiveConfig, ActiveLoop, RobotAnnotator
    from hitlseg.datasets import demo
    from hitlseg.robot import Robot

    dataset = demo()
    ids = dataset.ids[:12]
    loaded = {i: dataset.load(i) for i in ids}
    images, masks = {i: loaded[i].image for i in ids}, {i: loaded[i].mask for i in ids}
    reads = []

    class Watched(dict):
        def __getitem__(self, key):
            reads.append(key)
            return dict.__getitem__(self, key)

    given, learn = [], hitlseg.pseudo.learn_from_strokes

    def spy(*args, accepted=None, **kwargs):
        given.append(accepted)
        return learn(*args, accepted=accepted, **kwargs)

    monkeypatch.setattr(hitlseg.pseudo, "learn_from_strokes", spy)
    settings = dict(strategy="random", rounds=1, initial_self_training=1, epochs=1, self_training_epochs=1,
                    pool_limit=3, review_passes=2)

    def make():
        return ActiveLoop(images, ids, RobotAnnotator(Robot(seed=0), Watched(masks)), ActiveConfig(**settings),
                          n_classes=2, folder=tmp_path / "loop")

    loop = make()
    loop.start(ids[:2])
    record = loop.step()
    (queried,) = record["queried"]
    assert set(loop.accepted) == {queried} and 1 <= record["review_passes"][queried] <= 2
    assert sorted(set(reads)) == sorted(ids[:2] + [queried])  # masks only through the annotator
    accepted, markers = loop.accepted[queried], loop.markers[queried]
    assert accepted.shape == markers.shape and (accepted[markers > 0] == markers[markers > 0] - 1).all()
    assert given[0] == [None, None]
    assert given[1][:2] == [None, None] and given[1][2] is accepted
    assert record["effort"]["strokes"] >= 1
    resumed = make()
    np.testing.assert_array_equal(resumed.accepted[queried], accepted)
    with pytest.raises(InputError, match="review_passes"):
        ActiveConfig(review_passes=-1)
