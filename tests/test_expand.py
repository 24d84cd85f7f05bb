"""Strokes expanded by a graph cut where a strokes-trained model agrees (hitlseg.pseudo.expand)."""

from __future__ import annotations

import numpy as np
import pytest

from hitlseg.errors import InputError
from hitlseg.pseudo import SelfTrainingConfig, default_strokes_config, expand_strokes, learn_from_strokes
from tests.helpers import disk_mask, rgb_from_mask


def _disk_image():
    mask = disk_mask((64, 64), [(32, 32)], radius=14)
    image = rgb_from_mask(mask, seed=0).astype(np.float32).transpose(2, 0, 1) / 255.0
    markers = np.zeros(mask.shape, np.uint8)
    markers[32, 24:40] = 2  # object stroke
    markers[4, 4:60] = 1  # background stroke
    return image, mask, markers


def test_agreeing_pixels_join_the_strokes_and_the_strokes_stay():
    image, mask, markers = _disk_image()
    out = expand_strokes(image, markers, mask)
    np.testing.assert_array_equal(out[markers > 0], markers[markers > 0])
    labelled = out > 0
    assert labelled.mean() > 0.9  # the cut follows the disk: almost every pixel agrees with the truth
    np.testing.assert_array_equal(out[labelled] - 1, mask[labelled])  # and every added label is the true one


def test_disagreeing_pixels_stay_unlabelled():
    image, mask, markers = _disk_image()
    wrong = np.zeros_like(mask)  # a model that sees no object
    out = expand_strokes(image, markers, wrong)
    assert not ((out == 2) & (markers == 0)).any()  # no object pixel added against the model
    assert (out[markers == 2] == 2).all()  # the person's object stroke is kept anyway


def test_one_class_of_strokes_is_returned_as_it_is_and_shapes_are_checked():
    image, mask, markers = _disk_image()
    only_background = np.where(markers == 1, 1, 0).astype(np.uint8)
    np.testing.assert_array_equal(expand_strokes(image, only_background, mask), only_background)
    with pytest.raises(InputError, match="one spatial shape"):
        expand_strokes(image, markers, mask[:-1])


@pytest.fixture(scope="module")
def demo_strokes():
    from hitlseg.datasets import demo
    from hitlseg.robot import Robot

    dataset = demo()
    loaded = [dataset.load(i) for i in dataset.ids[:14]]
    return ([s.image for s in loaded[:2]], [Robot(seed=0).mark(s.mask, key=s.id) for s in loaded[:2]],
            [(s.image, s.mask) for s in loaded[2:]])


def test_learner_trains_on_the_expanded_strokes(demo_strokes):
    import hitlseg.nets
    from hitlseg.metrics import mean_dice

    images, markers, held_out = demo_strokes
    sizes = []
    real = hitlseg.nets.train

    def spy(model, samples, val, config, **options):
        sizes.append(sum(int((mask != 255).sum()) for _, mask in samples))
        return real(model, samples, val, config, **options)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hitlseg.nets, "train", spy)
        result = learn_from_strokes(images, markers, config=default_strokes_config(epochs=15, seed=0),
                                    self_training=SelfTrainingConfig(iterations=0), expand=True)
    assert len(sizes) == 2 and sizes[1] > 5 * sizes[0]  # strokes, then strokes plus the agreeing pixels
    record = result.history[0]
    assert record["expanded_fraction"] > 5 * result.marked_fraction
    dice = np.mean([mean_dice(result.model.predict(image).labels, mask, labels=[1, 2]) for image, mask in held_out])
    assert dice > 0.6, dice


def test_expand_needs_the_strokes_stage(demo_strokes):
    images, markers, _ = demo_strokes
    model = learn_from_strokes(images[:1], markers[:1], config=default_strokes_config(epochs=1),
                               self_training=SelfTrainingConfig(iterations=0)).model
    with pytest.raises(InputError, match="expand"):
        learn_from_strokes(images[:1], markers[:1], [images[1]], model=model, strokes_stage=False, expand=True,
                           self_training=SelfTrainingConfig(iterations=1, epochs=1))


def test_fresh_2d_learners_expand_by_default_and_correction_rounds_do_not(demo_strokes):
    from hitlseg.defaults import EXPAND_STROKES

    images, markers, _ = demo_strokes
    config = default_strokes_config(epochs=2, seed=0)
    fresh = learn_from_strokes(images, markers, config=config, self_training=SelfTrainingConfig(iterations=0))
    assert EXPAND_STROKES[2] and "expanded_fraction" in fresh.history[0]
    again = learn_from_strokes(images, markers, model=fresh.model, config=config,
                               self_training=SelfTrainingConfig(iterations=0))
    assert "expanded_fraction" not in again.history[0]  # a correction round keeps its model
    with pytest.raises(InputError, match="strokes stage"):
        learn_from_strokes(images, markers, [images[0]], model=fresh.model, config=config,
                           self_training=SelfTrainingConfig(iterations=1), strokes_stage=False, expand=True)
