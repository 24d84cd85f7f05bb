"""No-reference quality: degradations, the quality model, its uses and the active-learning strategy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from helpers import disk_mask, rgb_from_mask
from hitlseg.errors import DataWarning, InputError
from hitlseg.quality import (DEGRADATIONS, QualityModel, choose_threshold, degrade, expected_dice, fingerprint,
                             random_degradation, rank_predictions, similarity, threshold_labels, train_quality)

#: Mean Dice over seeds at strength 1 must stay below this (one disk, 2D); at 0 it is exactly 1.
MAX_DICE_AT_FULL_STRENGTH = {"erode": 0.3, "dilate": 0.5, "holes": 0.7, "blobs": 0.8, "boundary": 0.85,
                             "shift": 0.5, "swap": 0.7}


def _mean_dice(mask, kind, strength, k, seeds=range(6)):
    return float(np.mean([similarity(degrade(mask, kind, strength, seed, n_classes=k), mask, k)["dice"]
                          for seed in seeds]))


@pytest.mark.parametrize("kind", sorted(DEGRADATIONS))
def test_each_degradation_spans_its_intended_dice_range(kind):
    mask = disk_mask((80, 80), ((40, 40),), radius=15)
    assert similarity(degrade(mask, kind, 0.0, 0), mask, 1)["dice"] == 1.0
    mild, severe = _mean_dice(mask, kind, 0.3, 1), _mean_dice(mask, kind, 1.0, 1)
    assert 1.0 > mild > severe, (mild, severe)
    assert severe <= MAX_DICE_AT_FULL_STRENGTH[kind], severe
    assert mild >= 0.6, mild


@pytest.mark.parametrize("kind", sorted(DEGRADATIONS))
def test_degradations_keep_shape_dtype_and_labels_in_2d_multiclass_and_3d(kind):
    two = disk_mask((64, 64), ((24, 24), (40, 42)), radius=10, labels=[1, 2])
    volume = np.zeros((20, 28, 28), np.uint8)
    volume[5:15, 6:22, 6:22] = 1
    volume[8:12, 10:18, 10:18] = 2
    for mask in (two, volume):
        out = degrade(mask, kind, 0.8, 3, n_classes=2)
        assert out.shape == mask.shape and out.dtype == mask.dtype
        assert set(np.unique(out)) <= {0, 1, 2}
        assert similarity(out, mask, 2)["dice"] < 1.0
        np.testing.assert_array_equal(degrade(mask, kind, 0.8, 3, n_classes=2), out)  # seeded


def test_random_degradations_cover_the_quality_range_and_refuse_bad_input():
    mask = disk_mask((64, 64), ((28, 28), (40, 40)), radius=12, labels=[1, 2])
    rng = np.random.default_rng(0)
    dice = [similarity(random_degradation(mask, rng, 2)[0], mask, 2)["dice"] for _ in range(120)]
    assert np.percentile(dice, 10) < 0.45 and np.percentile(dice, 90) > 0.85 and max(dice) == 1.0
    with pytest.raises(InputError, match="unknown degradation"):
        degrade(mask, "blur", 0.5)
    with pytest.raises(InputError, match="strength"):
        degrade(mask, "erode", 1.5)
    with pytest.raises(InputError, match="integer label mask"):
        degrade(mask.astype(float), "erode", 0.5)


def test_similarity_measures():
    mask = disk_mask((32, 32), ((16, 16),), radius=8)
    assert similarity(mask, mask, 1) == {"dice": 1.0, "nmi": 1.0}
    empty = np.zeros_like(mask)
    assert similarity(empty, mask, 1)["dice"] == 0.0 and similarity(empty, mask, 1)["nmi"] == 0.0


# ----------------------------------------------------------------------------------- the model


def _synthetic(n, seed, size=48):
    """RGB disk images (float, channel first) and their masks."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for i in range(n):
        centre = tuple(int(v) for v in rng.integers(16, size - 16, 2))
        mask = disk_mask((size, size), (centre,), radius=int(rng.integers(7, 12)))
        images.append(np.moveaxis(rgb_from_mask(mask, seed * 100 + i).astype(np.float32) / 255, -1, 0))
        masks.append(mask)
    return images, masks


@pytest.fixture(scope="module")
def trained():
    images, masks = _synthetic(14, 0)
    return train_quality(images, masks, epochs=6, samples_per_image=6, size=32, seed=0)


def test_the_quality_model_learns_the_planted_relation(trained):
    """On unseen synthetic images, predicted Dice follows the true Dice of degraded masks."""
    images, masks = _synthetic(12, 7)
    rng = np.random.default_rng(5)
    degraded = [random_degradation(m, rng, 1)[0] for m in masks for _ in range(3)]
    truth = [similarity(d, m, 1)["dice"] for d, m in zip(degraded, [m for m in masks for _ in range(3)])]
    predicted = [s["dice"] for s in trained.score_many([im for im in images for _ in range(3)], degraded)]
    assert np.corrcoef(predicted, truth)[0, 1] > 0.5
    assert trained.info["history"] and trained.info["validation_images"] >= 1


def test_training_is_seeded():
    images, masks = _synthetic(6, 1)
    a = train_quality(images, masks, epochs=1, samples_per_image=2, size=16, seed=3)
    b = train_quality(images, masks, epochs=1, samples_per_image=2, size=16, seed=3)
    assert a.score(images[0], masks[0]) == b.score(images[0], masks[0])


def test_save_load_round_trip_gives_identical_scores(trained, tmp_path):
    import torch

    images, masks = _synthetic(4, 9)
    path = trained.save(tmp_path / "q.pt")
    loaded = QualityModel.load(path)
    assert loaded.score_many(images, masks) == trained.score_many(images, masks)
    assert loaded.fingerprint == trained.fingerprint and loaded.n_classes == 1
    state = torch.load(path, weights_only=True)  # plain tensors and values only
    assert state["format"] == "hitlseg-quality-model"
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(InputError, match="bad.pt"):
        QualityModel.load(tmp_path / "bad.pt")
    torch.save({"format": "hitlseg-seg-model"}, tmp_path / "seg.pt")
    with pytest.raises(InputError, match="not a hitlseg quality model"):
        QualityModel.load(tmp_path / "seg.pt")


def test_domain_shift_warns_and_hard_mismatches_refuse(trained):
    images, masks = _synthetic(4, 11)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = rank_predictions(trained, dict(enumerate(images)), dict(enumerate(masks)))
    assert result["domain_warnings"] == []
    dark = {i: np.clip(im * 0.3, 0, 1) for i, im in enumerate(images)}
    with pytest.warns(DataWarning, match="differ from the quality model's training data"):
        rank_predictions(trained, dark, dict(enumerate(masks)))
    gray = {i: im[:1] for i, im in enumerate(images)}
    with pytest.raises(InputError, match="1 channels"):
        rank_predictions(trained, gray, dict(enumerate(masks)))
    seen = fingerprint(images, 3)
    from hitlseg.quality import compare

    with pytest.raises(InputError, match="classes up to 3"):
        compare(trained.fingerprint, seen)


def test_bad_input_gives_clear_errors(trained):
    images, masks = _synthetic(2, 12)
    with pytest.raises(InputError, match=r"img: mask shape \(40, 40\) differs"):
        trained.score(images[0], masks[0][:40, :40], name="img")
    with pytest.raises(InputError, match="labels 0..2, but the quality model knows 0..1"):
        trained.score(images[0], masks[0] * 2)
    with pytest.raises(InputError, match="no prediction: b"):
        rank_predictions(trained, {"a": images[0], "b": images[1]}, {"a": masks[0]})
    with pytest.raises(InputError, match="none to score"):
        rank_predictions(trained, {}, {})
    with pytest.raises(InputError, match="training set: empty"):
        train_quality([], [])
    with pytest.raises(InputError, match="differs from its image"):
        train_quality(images, [masks[0][:10], masks[1]])


def test_ranking_is_worst_first(trained):
    images, masks = _synthetic(3, 13)
    preds = {"good": masks[0], "bad": np.zeros_like(masks[1]), "ok": degrade(masks[2], "erode", 0.5, 0)}
    result = rank_predictions(trained, {"good": images[0], "bad": images[1], "ok": images[2]}, preds)
    dice = [r["dice"] for r in result["ranking"]]
    assert dice == sorted(dice) and result["ranking"][0]["id"] == "bad"
    assert result["mean"]["dice"] == pytest.approx(np.mean(dice))


# ----------------------------------------------------------------------------------- threshold choice


class _Oracle:
    """A stand-in quality model that knows the truth: scores are the true Dice."""

    def __init__(self, truth):
        self.truth = truth

    def score_many(self, images, masks, names=None):
        return [{"dice": similarity(m, self.truth, 1)["dice"], "nmi": 0.0} for m in masks]


def test_choose_threshold_keeps_the_candidate_rated_best():
    truth = disk_mask((40, 40), ((20, 20),), radius=10)
    yy, xx = np.mgrid[:40, :40]
    p1 = np.clip(1.0 - np.hypot(yy - 20, xx - 20) / 16.0, 0, 1).astype(np.float32)  # the disk edge at p1 = 0.375
    probabilities = np.stack([1 - p1, p1])
    pick = choose_threshold(_Oracle(truth), np.zeros((1, 40, 40), np.float32), probabilities)
    best = max(pick["thresholds"], key=lambda t: similarity(threshold_labels(probabilities, t), truth, 1)["dice"])
    assert pick["threshold"] == best and abs(best - 0.375) <= 0.05
    np.testing.assert_array_equal(pick["labels"], threshold_labels(probabilities, best))
    with pytest.raises(InputError, match="thresholds"):
        choose_threshold(_Oracle(truth), None, probabilities, thresholds=[1.5])


def test_threshold_labels_and_expected_dice():
    p = np.array([[[0.9, 0.4, 0.2]], [[0.05, 0.5, 0.3]], [[0.05, 0.1, 0.5]]], np.float32)  # (3, 1, 3)
    np.testing.assert_array_equal(threshold_labels(p, 0.5), [[0, 1, 2]])
    np.testing.assert_array_equal(threshold_labels(p, 0.7), [[0, 0, 2]])
    confident = np.stack([np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])]).astype(np.float32)
    assert expected_dice(confident) == pytest.approx(1.0)
    unsure = np.stack([np.array([[0.6, 0.4]]), np.array([[0.4, 0.6]])]).astype(np.float32)
    assert expected_dice(unsure) < 0.8
    with pytest.raises(InputError, match="probabilities"):
        expected_dice(np.ones((1, 4, 4)))


# ----------------------------------------------------------------------------------- active learning


def test_quality_strategy_keeps_the_template_contract_and_asks_the_worst_first(trained):
    from hitlseg.active import ActiveContext, make_strategy

    images, masks = _synthetic(6, 21)
    pool = [f"im{i}" for i in range(6)]
    probabilities = {}
    for i, (image_id, mask) in enumerate(zip(pool, masks)):
        shown = degrade(mask, "erode", 0.15 * i, i)  # im5 the worst prediction
        p1 = np.where(shown > 0, 0.9, 0.1).astype(np.float32)
        probabilities[image_id] = np.stack([1 - p1, p1])
    context = ActiveContext(pool=pool, selected=["im0"], images=dict(zip(pool, images)), probabilities=probabilities)
    strategy = make_strategy("quality", model=trained, seed=3)
    chosen = strategy.query(context, 2)
    assert len(set(chosen)) == 2 and "im0" not in chosen
    assert make_strategy("quality", model=trained, seed=3).query(context, 2) == chosen
    predicted = {i: -s for i, s in strategy.scores.items()}
    assert chosen == sorted(predicted, key=lambda i: (predicted[i], pool.index(i)))[:2]
    assert "quality model" in strategy.criterion
    with pytest.raises(InputError, match="only 5 unannotated"):
        strategy.query(context, 6)
    with pytest.raises(InputError, match="needs the pool images"):
        strategy.query(ActiveContext(pool=pool, selected=[], probabilities=probabilities), 1)
    fallback = make_strategy("quality")
    assert fallback.query(context, 1) and "expected Dice" in fallback.criterion
    with pytest.raises(InputError, match="measure"):
        make_strategy("quality", measure="hd95")


def test_quality_strategy_reads_a_model_file(trained, tmp_path):
    from hitlseg.active import make_strategy

    path = trained.save(tmp_path / "q.pt")
    assert make_strategy("quality", model=str(path)).model.fingerprint == trained.fingerprint
    with pytest.raises(InputError, match="model file not found"):
        make_strategy("quality", model=str(tmp_path / "missing.pt"))


def test_on_the_bundled_demo_the_model_tells_good_from_bad_masks():
    """wbc1: trained on 12 demo masks for a few seconds, a true mask outscores an eroded one and an empty one."""
    from hitlseg.datasets import demo

    dataset = demo()
    samples = [dataset.load(i) for i in dataset.ids[:16]]
    model = train_quality([s.image for s in samples[:12]], [s.mask for s in samples[:12]], epochs=5,
                          samples_per_image=6, size=32, seed=0)
    wins = 0
    for s in samples[12:]:
        good, bad = model.score_many([s.image, s.image], [s.mask, degrade(s.mask, "erode", 0.9, 0)])
        wins += good["dice"] > bad["dice"]
    assert wins >= 3
