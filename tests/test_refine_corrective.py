"""Corrective learning (hitlseg.refine.corrective): planted systematic host errors are learnt and undone."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from hitlseg.errors import InputError
from hitlseg.refine.corrective import CorrectiveModel, _Forest, corrective_features, corrective_refine, feature_names


def _dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * (a & b).sum() / max(1, a.sum() + b.sum())


def _soft(labels, n_labels, sigma=1.0):
    p = np.stack([ndimage.gaussian_filter((labels == k).astype(float), sigma) for k in range(n_labels)])
    return p / p.sum(0)


def _balls(shape, rng, n=3, radius=(5, 10)):
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).astype(float)
    out = []
    for _ in range(n):
        centre = np.array([rng.uniform(12, s - 12) for s in shape]).reshape((-1,) + (1,) * len(shape))
        out.append(((grid - centre) ** 2).sum(0) <= rng.uniform(*radius) ** 2)
    return out


def dilating_host(seed, shape=(64, 64)):
    """Bright balls on a dark background; the host always dilates them by 2 pixels."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.int64)
    for ball in _balls(shape, rng):
        truth[ball] = 1
    image = (0.3 + 0.4 * truth + rng.normal(0, 0.1, shape))[None].astype(np.float32)
    host = ndimage.binary_dilation(truth == 1, ndimage.generate_binary_structure(len(shape), 1), iterations=2)
    return image, _soft(host.astype(int), 2), truth


def dark_blind_host(seed, shape=(64, 64)):
    """Bright (class 1) and dark (class 2) discs on a mid-grey background; the host calls the dark ones background."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.int64)
    for k, ball in enumerate(_balls(shape, rng, n=4, radius=(4, 8))):
        truth[ball] = 1 + k % 2
    image = (np.array([0.5, 0.85, 0.15])[truth] + rng.normal(0, 0.05, shape))[None].astype(np.float32)
    host = np.where(truth == 2, 0, truth)
    return image, _soft(host, 3), truth


def _fit(make, n=4, shape=(64, 64), **options):
    data = [make(i, shape) for i in range(n)]
    return CorrectiveModel.fit([d[0] for d in data], [d[1] for d in data], [d[2] for d in data], seed=0, **options)


@pytest.fixture(scope="module")
def dilation_model():
    return _fit(dilating_host)


# ---------------------------------------------------------------------------- learning the error


def test_corrects_a_host_that_dilates_objects(dilation_model):
    before, after = [], []
    for seed in range(100, 104):  # held-out images
        image, p, truth = dilating_host(seed)
        before.append(_dice(np.argmax(p, 0) == 1, truth == 1))
        after.append(_dice(corrective_refine(image, p, model=dilation_model) == 1, truth == 1))
    assert np.mean(before) < 0.88
    assert np.mean(after) > np.mean(before) + 0.08 and min(after) > 0.95


def test_corrects_a_host_blind_to_dark_objects():
    model = _fit(dark_blind_host)
    image, p, truth = dark_blind_host(200)
    labels = model.predict(image, p)
    assert _dice(np.argmax(p, 0) == 2, truth == 2) == 0
    assert _dice(labels == 2, truth == 2) > 0.9 and _dice(labels == 1, truth == 1) > 0.9
    probabilities = model.predict_proba(image, p)
    assert probabilities.shape == (3, 64, 64) and np.allclose(probabilities.sum(0), 1, atol=1e-5)


def test_works_in_3d():
    model = _fit(dilating_host, n=3, shape=(24, 32, 32), max_samples=20_000)
    assert model.ndim == 3 and model.n_samples <= 20_000
    image, p, truth = dilating_host(100, (24, 32, 32))
    labels = corrective_refine(image, p, model=model)
    assert labels.shape == (24, 32, 32)
    assert _dice(labels == 1, truth == 1) > _dice(np.argmax(p, 0) == 1, truth == 1) + 0.1


def test_learns_from_corrections_given_as_markers():
    data = [dilating_host(i) for i in range(4)]
    rng = np.random.default_rng(1)
    strokes = []
    for _, _, truth in data:  # a person marks 10% of the pixels with their true class
        marked = rng.random(truth.shape) < 0.1
        strokes.append(np.where(marked, truth + 1, 0).astype(np.uint8))
    model = CorrectiveModel.fit([d[0] for d in data], [d[1] for d in data], strokes, truth_format="markers", seed=0)
    assert model.n_samples == sum(int((s > 0).sum()) for s in strokes)
    image, p, truth = dilating_host(100)
    assert _dice(model.predict(image, p) == 1, truth == 1) > _dice(np.argmax(p, 0) == 1, truth == 1) + 0.08


def test_same_seed_same_model_and_markers_win(dilation_model):
    again = _fit(dilating_host)
    image, p, _ = dilating_host(100)
    np.testing.assert_array_equal(again.predict_proba(image, p), dilation_model.predict_proba(image, p))
    markers = np.zeros((64, 64), np.uint8)
    markers[0, 0], markers[1, 1] = 2, 1
    labels = corrective_refine(image, p, markers, model=dilation_model)
    assert labels[0, 0] == 1 and labels[1, 1] == 0


def test_sampling_is_bounded_and_concentrated_near_boundaries():
    small = _fit(dilating_host, max_samples=1000)
    assert 990 <= small.n_samples <= 1010
    nothing_outside = _fit(dilating_host, outside_fraction=0.0, band=1.0)
    everything = _fit(dilating_host, outside_fraction=1.0)
    assert nothing_outside.n_samples < 0.25 * everything.n_samples
    assert everything.n_samples == 4 * 64 * 64


def test_array_forest_predicts_as_scikit_learn():
    from sklearn.ensemble import ExtraTreesClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(int) + (x[:, 3] > 1)
    forest = ExtraTreesClassifier(n_estimators=10, max_depth=8, random_state=0).fit(x, y)
    test = rng.normal(size=(500, 6)).astype(np.float32)
    np.testing.assert_allclose(_Forest.from_sklearn(forest).predict_proba(test), forest.predict_proba(test), atol=1e-12)


def test_features_are_named_and_dimension_agnostic():
    for shape in ((20, 24), (6, 10, 12)):
        image = np.random.default_rng(0).random((2,) + shape, dtype=np.float32)
        labels = np.zeros(shape, int)
        labels[(slice(2, 5),) * len(shape)] = 1
        x = corrective_features(image, _soft(labels, 3), coordinates=True)
        names = feature_names(2, 3, len(shape), coordinates=True)
        assert x.shape == (len(names),) + shape and x.dtype == np.float32
        distance = x[names.index("distance(host==1)")]
        assert distance[(3,) * len(shape)] > 0 > distance[(5,) * len(shape)]


# ---------------------------------------------------------------------------- errors and files


def test_bad_inputs():
    image, p, truth = dilating_host(0)
    with pytest.raises(InputError, match="spatial shape"):
        CorrectiveModel.fit([image], [p[:, :-1]], [truth])
    with pytest.raises(InputError, match=r"truths\[0\]: shape"):
        CorrectiveModel.fit([image], [p], [truth[:-1]])
    with pytest.raises(InputError, match="one length"):
        CorrectiveModel.fit([image, image], [p], [truth])
    with pytest.raises(InputError, match="no training images"):
        CorrectiveModel.fit([], [], [])
    with pytest.raises(InputError, match=r"truths\[0\]: values must lie in 0\.\.1, found \[0, 2\]"):
        CorrectiveModel.fit([image], [p], [truth * 2])
    with pytest.raises(InputError, match="no training pixels"):
        CorrectiveModel.fit([image], [p], [np.zeros_like(truth)], truth_format="markers")
    with pytest.raises(InputError, match=r"images\[1\]: .*but images\[0\]"):
        CorrectiveModel.fit([image, np.concatenate([image, image])], [p, p], [truth, truth])
    with pytest.raises(InputError, match="must sum to one"):
        CorrectiveModel.fit([image], [p * 0.5], [truth])


def test_prediction_checks(dilation_model):
    image, p, _ = dilating_host(0)
    with pytest.raises(InputError, match="model: corrective refinement needs a trained CorrectiveModel"):
        corrective_refine(image, p)
    with pytest.raises(InputError, match="trained on 2D images with 1 channel"):
        dilation_model.predict(np.concatenate([image, image]), p)
    volume, pv, _ = dilating_host(0, (32, 32, 32))
    with pytest.raises(InputError, match="got 3D"):
        dilation_model.predict(volume, pv)


def test_save_load_round_trip_without_pickle(tmp_path, dilation_model):
    path = dilation_model.save(tmp_path / "corrective.npz")
    with np.load(path, allow_pickle=False) as data:  # plain arrays only
        assert str(data["format"]) == "hitlseg-corrective-model"
    loaded = CorrectiveModel.load(path)
    image, p, _ = dilating_host(101)
    np.testing.assert_array_equal(loaded.predict_proba(image, p), dilation_model.predict_proba(image, p))
    assert loaded.feature_names == dilation_model.feature_names


def test_load_refuses_damaged_files(tmp_path, dilation_model):
    path = dilation_model.save(tmp_path / "model.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["left"] = arrays["left"].copy()
    inner = np.flatnonzero(arrays["left"] >= 0)
    arrays["left"][inner[5]] = 0  # a child pointing back at a root: the walk would never end
    np.savez(tmp_path / "loop.npz", **arrays)
    with pytest.raises(InputError, match="loop.npz: corrupt corrective model"):
        CorrectiveModel.load(tmp_path / "loop.npz")
    with pytest.raises(InputError, match="not a hitlseg corrective model"):
        CorrectiveModel.load(_shape_model_file(tmp_path))


def _shape_model_file(tmp_path):
    np.savez(tmp_path / "shape.npz", format=np.array("hitlseg-shape-model"), version=np.array(1))
    return tmp_path / "shape.npz"


def test_refine_entry_point_runs_the_corrective_model_as_uint8_labels(dilation_model):
    from hitlseg.refine import refine

    image, p, truth = dilating_host(105)
    labels = refine(image, p, "corrective", model=dilation_model)
    assert labels.dtype == np.uint8 and np.array_equal(labels, corrective_refine(image, p, model=dilation_model))
    assert _dice(labels == 1, truth == 1) > 0.95
