"""Post-processing of predicted labels (hitlseg.nets.postprocess) and its place in SegModel."""

from __future__ import annotations

import numpy as np
import pytest

from hitlseg.errors import InputError
from hitlseg.flim import FLIMModel
from hitlseg.nets import SegModel
from hitlseg.nets.postprocess import agreeing_objects, largest_object, postprocess


def test_largest_object_drops_blobs_and_fills_holes_with_the_nearest_class():
    labels = np.zeros((12, 12), np.uint8)
    labels[2:9, 2:9] = 1  # cytoplasm ring...
    labels[4:7, 4:7] = 2  # ...around a nucleus
    labels[5, 5] = 0  # a hole inside the nucleus
    labels[3, 3] = 0  # a hole inside the cytoplasm
    labels[10:12, 10:12] = 2  # a stray blob
    out = largest_object(labels)
    assert out[5, 5] == 2 and out[3, 3] == 1
    assert not out[10:, 10:].any()
    assert (out[2:9, 2:9] > 0).all() and out.dtype == labels.dtype
    # diagonal neighbours belong to one object (full connectivity)
    diagonal = np.zeros((4, 4), np.int64)
    diagonal[0, 0] = diagonal[1, 1] = diagonal[2, 2] = 1
    diagonal[3, 0] = 2
    assert (largest_object(diagonal) == np.where(np.eye(4, dtype=bool) & (np.arange(4) < 3), 1, 0)).all()


def test_largest_object_in_3d_and_on_empty_maps():
    volume = np.zeros((5, 6, 6), np.uint8)
    volume[1:4, 1:4, 1:4] = 1
    volume[2, 2, 2] = 0  # enclosed in 3D
    volume[4, 5, 5] = 1
    out = largest_object(volume)
    assert out[2, 2, 2] == 1 and out[4, 5, 5] == 0
    assert not largest_object(np.zeros((3, 3), np.uint8)).any()


@pytest.mark.parametrize("bad, match", [(np.zeros((2,), np.uint8), "2D or 3D"), (np.zeros((2, 2), np.float32), "integer")])
def test_bad_labels(bad, match):
    with pytest.raises(InputError, match=match):
        largest_object(bad)
    with pytest.raises(InputError, match="unknown rule"):
        postprocess(np.zeros((2, 2), np.uint8), "biggest")


def _marked_noise(seed: int, **fit):
    """A random image with two strokes, its FLIM model and an untrained sU-Net on it."""
    image = np.random.default_rng(seed).random((3, 40, 40)).astype(np.float32)
    markers = np.zeros((40, 40), np.uint8)
    markers[5, 5:30] = 1
    markers[20, 10:30] = 2
    flim = FLIMModel.fit([image], [markers], seed=0, **fit)
    return image, flim, SegModel.sunet(flim.encoder, 1, seed=0)


def test_segmodel_applies_its_rule_to_labels_only_and_keeps_it_on_disk(tmp_path):
    image, flim, model = _marked_noise(0)
    plain = model.predict(image)
    largest = model.predict(image, postprocess="largest")
    assert np.array_equal(plain.probabilities, largest.probabilities)
    assert np.array_equal(largest.labels, largest_object(plain.labels))
    model.postprocess = "largest"
    path = model.save(tmp_path / "m.pt")
    loaded = SegModel.load(path)
    assert loaded.postprocess == "largest"
    assert np.array_equal(loaded.predict(image).labels, largest.labels)
    assert np.array_equal(loaded.predict(image, postprocess="none").labels, plain.labels)
    with pytest.raises(InputError, match="postprocess"):
        SegModel(model.kind, model.net, postprocess="smooth")


def test_agreeing_objects_keeps_what_the_second_prediction_also_finds():
    labels = np.zeros((10, 12), np.uint8)
    labels[1:6, 1:6] = 1  # an object the second prediction sees a corner of...
    labels[3, 3] = 0  # ...with a hole
    labels[7:9, 8:11] = 2  # a blob it does not see
    labels[1:3, 9:11] = 1  # another blob it does not see
    other = np.zeros((10, 12), np.int64)
    other[5, 5] = 1
    other[0, 0] = 1  # foreground of the other prediction outside any object keeps nothing
    out = agreeing_objects(labels, other)
    assert out.dtype == labels.dtype and out[3, 3] == 1
    assert (out[1:6, 1:6] == 1).all() and not out[7:, 8:].any() and not out[1:3, 9:].any()
    assert np.array_equal(postprocess(labels, "agree", other=other), out)
    # 3D, and nothing to keep when the other prediction is empty
    volume = np.zeros((3, 4, 4), np.uint8)
    volume[1, 1:3, 1:3] = 1
    assert not agreeing_objects(volume, np.zeros_like(volume)).any()
    assert np.array_equal(agreeing_objects(volume, volume), volume)
    with pytest.raises(InputError, match="does not match"):
        agreeing_objects(labels, other[:5])
    with pytest.raises(InputError, match="second prediction"):
        postprocess(labels, "agree")


def test_segmodel_agree_uses_the_flim_decoder_of_its_own_encoder(tmp_path):
    from hitlseg.flim.decoders import decode

    image, flim, model = _marked_noise(1, decoder="weights")
    model.flim_decoder = "weights"
    assert np.array_equal(model.flim_mask(image), flim.predict(image).mask)
    plain = model.predict(image)
    agreed = model.predict(image, postprocess="agree")
    assert np.array_equal(agreed.probabilities, plain.probabilities)
    assert np.array_equal(agreed.labels, agreeing_objects(plain.labels, flim.predict(image).mask))
    model.postprocess = "agree"
    loaded = SegModel.load(model.save(tmp_path / "m.pt"))
    assert loaded.flim_decoder == "weights" and np.array_equal(loaded.predict(image).labels, agreed.labels)
    # without a stored rule: labels (kernels of background and object here)
    model.flim_decoder = None
    features = flim.features(image)
    expected = decode(features, flim.encoder.layers[-1].kernel_classes, (40, 40), "labels", 1).mask
    assert np.array_equal(model.flim_mask(image), expected)
    with pytest.raises(InputError, match="flim_decoder"):
        SegModel(model.kind, model.net, flim_decoder="median")
    unet = SegModel.unet(3, 1, seed=0)
    with pytest.raises(InputError, match="sU-Net"):
        unet.predict(image, postprocess="agree")
