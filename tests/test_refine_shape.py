"""Active shape model (hitlseg.refine.shape): learning from synthetic ellipses, fitting to corrupted predictions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import EllipseModel, regionprops

from hitlseg.errors import InputError
from hitlseg.refine.shape import ShapeModel, contour_landmarks, shape_refine


def _ellipse(shape, centre, a, b, theta):
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    y, x = yy - centre[0], xx - centre[1]
    u = x * np.cos(theta) + y * np.sin(theta)
    v = -x * np.sin(theta) + y * np.cos(theta)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def _dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * (a & b).sum() / max(1, a.sum() + b.sum())


def _aspect(points_rc):
    model = EllipseModel.from_estimate(np.asarray(points_rc)[:, ::-1])
    a, b = sorted(model.axis_lengths, reverse=True)
    return a / b


def _soft(labels, n_labels=2, sigma=1.0):
    p = np.stack([ndimage.gaussian_filter((labels == k).astype(float), sigma) for k in range(n_labels)])
    return p / p.sum(0)


@pytest.fixture(scope="module")
def ellipses():
    """20 ellipses, aspect ratio uniform in [1.7, 2.3] (mean about 2), random size, rotation and position."""
    rng = np.random.default_rng(0)
    masks, ratios = [], []
    for _ in range(20):
        minor, ratio = rng.uniform(7, 12), rng.uniform(1.7, 2.3)
        centre = rng.uniform(28, 36, 2)
        masks.append(_ellipse((64, 64), centre, minor * ratio, minor, rng.uniform(0, np.pi)).astype(np.uint8))
        ratios.append(ratio)
    return masks, float(np.mean(ratios))


@pytest.fixture(scope="module")
def model(ellipses):
    return ShapeModel.fit(ellipses[0], class_index=1, n_landmarks=64)


# ---------------------------------------------------------------------------- learning


def test_model_recovers_the_mean_aspect_ratio_and_one_dominant_mode(ellipses, model):
    masks, mean_ratio = ellipses
    assert model.n_shapes == 20 and model.n_landmarks == 64
    # rotations and sizes are aligned away: the mean is an ellipse of the mean aspect ratio
    assert abs(_aspect(model.shape()) - mean_ratio) < 0.1
    # one mode (the aspect ratio) carries most of the variance; the rest is pixel noise
    assert model.explained_variance_ratio[0] > 0.8
    assert ShapeModel.fit(masks, 1, variance=0.9).n_modes <= 3
    sd = np.sqrt(model.eigenvalues[0])
    along = [_aspect(model.shape(np.r_[s * sd, np.zeros(model.n_modes - 1)])) for s in (-2, 2)]
    assert abs(along[1] - along[0]) > 0.3  # the first mode changes the aspect ratio


def test_identical_shapes_up_to_a_similarity_have_no_modes():
    base = _ellipse((80, 80), (40, 40), 20, 9, 0.0)
    shapes = []
    for k, (scale, angle, shift) in enumerate([(1.0, 0.0, 0), (1.7, 0.9, 3), (0.6, 2.5, 11), (1.2, -1.2, 40)]):
        z = contour_landmarks(base, 64)
        shapes.append(np.roll(scale * np.exp(1j * angle) * z + (5 + 7j) * k, shift))
    flat = ShapeModel.from_landmarks(shapes, 1)
    assert flat.n_modes == 0  # translation, scale, rotation and the landmarks' starting point are all removed


def test_landmarks_are_counter_clockwise_and_evenly_spaced():
    z = contour_landmarks(_ellipse((60, 60), (30, 30), 20, 12, 0.4), 32)
    area = 0.5 * np.imag(np.conj(z) * np.roll(z, -1)).sum()
    steps = np.abs(np.diff(np.append(z, z[0])))
    assert z.shape == (32,) and area > 0
    assert steps.std() / steps.mean() < 0.1


def test_fit_predictions_uses_confident_objects_only(ellipses):
    masks, _ = ellipses
    probabilities = [_soft(m) for m in masks[:4]]
    vague = _soft(masks[4])
    vague[1] = 0.3 + 0.3 * vague[1]  # argmax still the ellipse (0.6 > 0.4 inside) but mean confidence < 0.9
    vague[0] = 1 - vague[1]
    model = ShapeModel.fit_predictions(probabilities + [vague], 1, confidence=0.9)
    assert model.n_shapes == 4


# ---------------------------------------------------------------------------- fitting


def _corrupted(kind):
    """A true ellipse and a prediction with a blob stuck to its side or a bite taken out of it."""
    theta, centre, a, b = 0.6, (30, 33), 18, 9
    true = _ellipse((64, 64), centre, a, b, theta)
    yy, xx = np.mgrid[:64, :64]
    frac = 1.1 if kind == "blob" else 0.9
    cy, cx = centre[0] + np.cos(theta) * b * frac, centre[1] - np.sin(theta) * b * frac  # on the minor axis
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= 25
    return true, (true | disk) if kind == "blob" else (true & ~disk)


@pytest.mark.parametrize("kind", ["blob", "bite"])
def test_fitting_a_corrupted_prediction_recovers_the_ellipse(model, kind):
    true, corrupted = _corrupted(kind)
    labels = shape_refine(np.zeros((1, 64, 64), np.float32), _soft(corrupted.astype(int)), model=model)
    before, after = _dice(corrupted, true), _dice(labels == 1, true)
    assert before < 0.96
    assert after > before + 0.02 and after > 0.98
    assert labels.dtype.kind == "i" and set(np.unique(labels)) <= {0, 1}


def test_clean_prediction_is_kept(model):
    true = _ellipse((64, 64), (30, 33), 18, 9, 0.6)
    labels = shape_refine(np.zeros((1, 64, 64)), _soft(true.astype(int)), model=model)
    assert _dice(labels == 1, true) > 0.99


def test_fitted_shape_stays_within_three_standard_deviations(model):
    disk = _ellipse((64, 64), (32, 32), 14, 14, 0.0)  # aspect 1: about 6 sd below the training ellipses
    labels = shape_refine(np.zeros((1, 64, 64)), _soft(disk.astype(int)), model=model, detail=False)
    region = regionprops((labels == 1).astype(np.uint8))[0]
    assert 1.3 < region.axis_major_length / region.axis_minor_length < 2.8


def test_multi_class_pixels_given_up_take_the_next_class_and_markers_win(model):
    true, corrupted = _corrupted("blob")
    labels = np.where(corrupted, 2, 0)
    ring = ndimage.binary_dilation(corrupted, iterations=3) & ~corrupted
    labels[ring] = 1  # class 1 around the class-2 object, as a cytoplasm around a nucleus
    p = _soft(labels, 3)
    markers = np.zeros((64, 64), np.uint8)
    markers[30, 33] = 1  # a background stroke inside the object
    out = shape_refine(np.zeros((3, 64, 64)), p, markers, model=model, class_index=2)
    blob = corrupted & ~true
    assert _dice(out == 2, true) > 0.97
    assert (out[blob] == 1).mean() > 0.7  # the blob goes back to the surrounding class, not background
    assert out[30, 33] == 0


def test_small_objects_are_left_as_predicted(model):
    labels = np.zeros((64, 64), int)
    labels[5:8, 5:8] = 1  # 9 pixels < min_size
    out = shape_refine(np.zeros((1, 64, 64)), _soft(labels, sigma=0.3), model=model)
    assert (out == (np.argmax(_soft(labels, sigma=0.3), 0))).all()


# ---------------------------------------------------------------------------- errors and files


def test_too_few_shapes(ellipses):
    masks, _ = ellipses
    with pytest.raises(InputError, match="at least 3 training shapes, got 2"):
        ShapeModel.fit(masks[:2], 1)
    with pytest.raises(InputError, match="at least 6 training shapes, got 4"):
        ShapeModel.fit(masks[:4], 1, n_modes=5)
    with pytest.raises(InputError, match="got 0"):
        ShapeModel.fit(masks[:5], 2)  # no objects of class 2


def test_3d_inputs_are_refused(ellipses, model):
    volume = np.stack(ellipses[0][:4])
    with pytest.raises(InputError, match="2D only"):
        ShapeModel.fit(volume, 1)
    with pytest.raises(InputError, match=r"masks\[0\].*2D only"):
        ShapeModel.fit([volume], 1)
    p = np.stack([1 - volume, volume]).astype(float)
    with pytest.raises(InputError, match="image: the shape model is 2D only"):
        shape_refine(np.zeros((1,) + volume.shape), p, model=model)


def test_missing_model_and_bad_class(model):
    p = _soft(_ellipse((64, 64), (32, 32), 15, 8, 0).astype(int))
    with pytest.raises(InputError, match="model: .*needs a shape model"):
        shape_refine(np.zeros((1, 64, 64)), p)
    with pytest.raises(InputError, match="model: expected a ShapeModel"):
        shape_refine(np.zeros((1, 64, 64)), p, model="model.npz")
    with pytest.raises(InputError, match="class_index: class 2"):
        shape_refine(np.zeros((1, 64, 64)), p, model=model, class_index=2)
    with pytest.raises(InputError, match="probabilities"):
        shape_refine(np.zeros((1, 64, 64)), p * 2, model=model)


def test_save_load_round_trip(tmp_path, model):
    path = model.save(tmp_path / "nuclei.npz")
    loaded = ShapeModel.load(path)
    for name in ("mean", "modes", "eigenvalues", "explained_variance_ratio"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    assert (loaded.class_index, loaded.n_shapes) == (model.class_index, model.n_shapes)
    _, corrupted = _corrupted("bite")
    p = _soft(corrupted.astype(int))
    image = np.zeros((1, 64, 64))
    np.testing.assert_array_equal(shape_refine(image, p, model=loaded), shape_refine(image, p, model=model))


def test_load_refuses_other_files(tmp_path):
    np.savez(tmp_path / "other.npz", format=np.array("something-else"), mean=np.zeros(4))
    with pytest.raises(InputError, match="not a hitlseg shape model"):
        ShapeModel.load(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(InputError, match="junk.npz: cannot read"):
        ShapeModel.load(tmp_path / "junk.npz")
    with pytest.raises(InputError, match="not found"):
        ShapeModel.load(tmp_path / "missing.npz")


def test_refine_entry_point_runs_the_shape_model_as_uint8_labels(model):
    from hitlseg.refine import refine

    true, corrupted = _corrupted("bite")
    labels = refine(np.zeros((1, 64, 64), np.float32), _soft(corrupted.astype(int)), "shape", model=model)
    assert labels.dtype == np.uint8 and _dice(labels == 1, true) > 0.98
