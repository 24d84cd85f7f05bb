"""Active learning: strategies on constructed contexts, pool scoring, effort and costs, the correction loop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hitlseg.active import (STRATEGIES, ActiveConfig, ActiveContext, ActiveLoop, CostModel, DASLStrategy, RobotAnnotator,
                            TimeModel, count_strokes, knapsack, make_strategy, mask_features, pixel_uncertainty, reduce,
                            score_pool)
from hitlseg.active.context import build_context
from hitlseg.errors import InputError

N_POOL = 12


def _probs(confidence: float, shape=(16, 16), fg_share: float = 0.3, seed: int = 0) -> np.ndarray:
    """Two-class probabilities: a foreground square of ``fg_share`` with max probability ``confidence``."""
    p1 = np.full(shape, 1 - confidence, np.float32)
    side = int(round(np.sqrt(fg_share) * shape[0]))
    p1[:side, :side] = confidence
    return np.stack([1 - p1, p1])


def _context(**changes) -> ActiveContext:
    """A pool of 12 images: image ``i`` has confidence decreasing with i (image 11 the most uncertain)."""
    rng = np.random.default_rng(0)
    pool = [f"im{i:02d}" for i in range(N_POOL)]
    probabilities = {image_id: _probs(0.99 - 0.04 * i, fg_share=0.1 + 0.05 * i) for i, image_id in enumerate(pool)}
    disagreement = {image_id: np.full((16, 16), 0.01 * ((i * 5) % N_POOL), np.float32) for i, image_id in enumerate(pool)}
    variance = {image_id: np.full((16, 16), 0.01 * ((i * 7) % N_POOL), np.float32) for i, image_id in enumerate(pool)}
    settings = dict(pool=pool, selected=["im00", "im03"], probabilities=probabilities, disagreement=disagreement,
                    variance=variance, member_source="mc_dropout", members=5, features=rng.normal(size=(N_POOL, 6)),
                    costs={image_id: 10.0 + i for i, image_id in enumerate(pool)}, round=2)
    settings.update(changes)
    return ActiveContext(**settings)


def _context_for(name: str) -> ActiveContext:
    if name == "ensemble":
        return _context(member_source="ensemble", members=3)
    return _context()


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_keeps_the_query_contract(name):
    """Template: distinct unannotated ids, at most n (exactly n unless budgeted), deterministic, clear errors."""
    context = _context_for(name)
    strategy = make_strategy(name, seed=3)
    chosen = strategy.query(context, 3)
    assert len(set(chosen)) == len(chosen)
    assert not set(chosen) & set(context.selected)
    assert set(chosen) <= set(context.pool)
    assert 1 <= len(chosen) <= 3 and (len(chosen) == 3 or strategy.variable_size)
    assert make_strategy(name, seed=3).query(_context_for(name), 3) == chosen
    assert strategy.criterion
    with pytest.raises(InputError, match="only 10 unannotated"):
        strategy.query(context, 11)
    with pytest.raises(InputError, match="already annotated"):
        strategy.query(_context_for(name).__class__(**{**vars(_context_for(name)), "selected": list(context.pool)}), 1)
    with pytest.raises(InputError, match="n: must be a positive integer"):
        strategy.query(context, 0)


def test_uncertainty_measures_pick_the_most_uncertain_image():
    context = _context()
    for measure in ("entropy", "margin", "least_confidence"):
        for reduction in ("mean", "sum", "max", "topk"):
            strategy = make_strategy("uncertainty", measure=measure, reduction=reduction)
            assert strategy.query(context, 2) == ["im11", "im10"]
    assert make_strategy("entropy").query(context, 1) == ["im11"]


def test_uncertainty_values_on_hand_made_probabilities():
    p = np.array([[[0.5, 0.9]], [[0.5, 0.1]]], np.float32)  # (2 classes, 1, 2)
    np.testing.assert_allclose(pixel_uncertainty(p, "least_confidence"), [[0.5, 0.1]], atol=1e-6)
    np.testing.assert_allclose(pixel_uncertainty(p, "margin"), [[1.0, 0.2]], atol=1e-6)
    np.testing.assert_allclose(pixel_uncertainty(p, "entropy")[0, 0], 1.0, atol=1e-6)
    u = np.arange(100, dtype=float)
    assert reduce(u, "topk", 0.1) == pytest.approx(94.5)
    assert reduce(u, "max") == 99 and reduce(u, "sum") == 4950
    with pytest.raises(InputError, match="top_fraction"):
        reduce(u, "topk", 0)
    with pytest.raises(InputError, match="measure"):
        pixel_uncertainty(p, "variance")


def test_member_strategies_follow_the_disagreement():
    context = _context()
    # disagreement of image i is 0.01 * (5 i mod 12): the largest, 0.11, at i = 7, then 0.10 at i = 2
    assert make_strategy("bald").query(context, 2) == ["im07", "im02"]
    assert make_strategy("ensemble").query(_context(member_source="ensemble", members=3), 1) == ["im07"]


def test_consistency_picks_the_lowest_local_consistency():
    assert make_strategy("consistency").query(_context(), 1) == ["im11"]


def test_coreset_covering_radius_is_within_twice_the_optimum():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(N_POOL, 2))
    context = _context(features=x, selected=["im00"])
    chosen = make_strategy("coreset").query(context, 2)
    centres = [0] + [int(c[2:]) for c in chosen]

    def radius(rows):
        return max(min(np.linalg.norm(x[i] - x[c]) for c in rows) for i in range(N_POOL))

    best = min(radius([0, *pair]) for pair in itertools.combinations(range(1, N_POOL), 2))
    assert radius(centres) <= 2 * best + 1e-9
    assert chosen[0] == f"im{int(np.argmax(np.linalg.norm(x - x[0], axis=1))):02d}"


def test_suggestive_prefers_the_candidate_that_covers_the_pool():
    """Two uncertain candidates; the one similar to most unannotated images wins."""
    features = np.zeros((N_POOL, 2))
    features[:, 0] = 1.0  # most images point along x
    features[5] = [0.0, 1.0]  # an outlier along y
    variance = {f"im{i:02d}": np.full((16, 16), 0.9 if i in (5, 6) else 0.1, np.float32) for i in range(N_POOL)}
    context = _context(features=features, variance=variance)
    strategy = make_strategy("suggestive", candidates=2)
    assert strategy.query(context, 1) == ["im06"]


def test_knapsack_matches_brute_force_on_12_items():
    rng = np.random.default_rng(4)
    for trial in range(5):
        values, costs = rng.uniform(0, 10, 12), rng.integers(1, 20, 12).astype(float)
        budget = float(rng.integers(15, 60))
        for max_items in (None, 3):
            chosen = knapsack(values, costs, budget, max_items=max_items)
            best = 0.0
            for r in range(1, (max_items or 12) + 1):
                for subset in itertools.combinations(range(12), r):
                    if costs[list(subset)].sum() <= budget:
                        best = max(best, values[list(subset)].sum())
            assert costs[chosen].sum() <= budget
            assert values[chosen].sum() == pytest.approx(best)
    with pytest.raises(InputError, match="below the cheapest image"):
        knapsack([1.0, 2.0], [30.0, 40.0], 20.0)


def test_knapsack_strategy_respects_the_budget_and_errors():
    context = _context()
    strategy = make_strategy("knapsack", budget=35.0)
    chosen = strategy.query(context, 5)
    assert sum(context.costs[i] for i in chosen) <= 35.0
    with pytest.raises(InputError, match="below the cheapest image"):
        make_strategy("knapsack", budget=5.0).query(context, 2)
    with pytest.raises(InputError, match="costs"):
        make_strategy("knapsack").query(_context(costs=None), 1)
    with pytest.raises(InputError, match="budget"):
        make_strategy("knapsack", budget=-1)


def test_strategies_needing_members_say_so():
    single = _context(member_source=None, members=0, disagreement=None, variance=None)
    with pytest.raises(InputError, match=r"ensemble of at least 2 models .*the context has a single model"):
        make_strategy("ensemble").query(single, 1)
    with pytest.raises(InputError, match="ensemble of at least 2"):
        make_strategy("ensemble").query(_context(member_source="ensemble", members=1), 1)
    with pytest.raises(InputError, match="MC-dropout"):
        make_strategy("bald").query(single, 1)
    with pytest.raises(InputError, match="come from ensemble"):
        make_strategy("bald").query(_context(member_source="ensemble", members=3), 1)
    with pytest.raises(InputError, match="unknown name"):
        make_strategy("oracle")
    with pytest.raises(InputError, match="unknown option"):
        make_strategy("random", temperature=2)


def test_foreground_random_favours_foreground():
    counts = dict.fromkeys(_context().pool, 0)
    for seed in range(200):
        counts[make_strategy("fg_random", share=1.0, seed=seed).query(_context(), 1)[0]] += 1
    assert counts["im11"] > counts["im01"] * 2  # foreground share 0.65 against 0.15


def test_dasl_hands_confident_images_to_pseudo_labels_at_a_growing_pace():
    strategy = DASLStrategy(pace0=0.2, pace_step=0.2)
    context = _context(round=0)
    queried = strategy.query(context, 1)
    assert queried == ["im11"]
    early = strategy.pseudo_pool(context, exclude=queried)
    assert early == ["im01", "im02"]  # the most confident free images, ceil(0.2 * 9)
    later = strategy.pseudo_pool(_context(round=3), exclude=queried)
    assert len(later) == 8 and later[:2] == early


# -- effort and cost ---------------------------------------------------------------------------------
def test_count_strokes_and_time_model():
    m = np.zeros((20, 20), np.uint8)
    m[2, 2:10] = 1
    m[5, 2:10] = 1
    m[10:12, 5:15] = 2
    assert count_strokes(m) == 3
    volume = np.zeros((3, 8, 8), np.uint8)
    volume[:, 4, 1:6] = 1  # one 3D stroke over 3 slices: 3 strokes of a person
    assert count_strokes(volume) == 3
    tm = TimeModel(per_image=1.0, per_stroke=2.0, per_pixel=0.5)
    effort = tm.effort(m)
    assert effort == {"strokes": 3, "pixels": 36, "seconds": 1.0 + 6.0 + 18.0}
    assert tm.effort(m, before=m)["pixels"] == 0
    with pytest.raises(InputError, match="per_stroke"):
        TimeModel(per_stroke=-1)


def test_cost_model_recovers_a_log_linear_time():
    rng = np.random.default_rng(0)
    features = np.column_stack([rng.uniform(10, 1000, 40), rng.integers(1, 20, 40)])
    seconds = np.exp(1.0 + 0.5 * np.log1p(features[:, 0]) + 0.3 * np.log1p(features[:, 1]))
    model = CostModel(ridge=0.0).fit(features, seconds)
    np.testing.assert_allclose(model.weights, [1.0, 0.5, 0.3], atol=1e-6)
    np.testing.assert_allclose(model.predict(features[:3]), seconds[:3], rtol=1e-6)
    with pytest.raises(InputError, match="at least 3"):
        CostModel().fit(features[:2], seconds[:2])
    square = np.zeros((10, 10), np.uint8)
    square[2:6, 2:6] = 1
    square[8, 8] = 2
    np.testing.assert_array_equal(mask_features(square), [12 + 1, 2])


# -- pool scoring and the loop on demo data ------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_loop_data():
    from hitlseg.datasets import demo

    dataset = demo()
    ids = dataset.ids[:24]
    loaded = {i: dataset.load(i) for i in ids}
    return {"ids": ids, "images": {i: loaded[i].image for i in ids}, "masks": {i: loaded[i].mask for i in ids}}


def _loop(data, strategy="entropy", folder=None, masks=None, **options):
    from hitlseg.robot import Robot

    settings = dict(strategy=strategy, rounds=2, initial_self_training=1, epochs=2, self_training_epochs=2, pool_limit=4)
    settings.update(options)
    annotator = RobotAnnotator(Robot(seed=0), masks if masks is not None else data["masks"])
    return ActiveLoop(data["images"], data["ids"][:16], annotator, ActiveConfig(**settings), n_classes=2, folder=folder)


@pytest.fixture(scope="module")
def started_loop(demo_loop_data):
    loop = _loop(demo_loop_data)
    loop.start(demo_loop_data["ids"][:2])
    return loop


def test_score_pool_batches_mc_passes_through_one_encoder_pass(started_loop, demo_loop_data):
    model = started_loop.model
    calls = []
    real = model.net.encoder.features

    def spy(x, *args, **kwargs):
        calls.append(x.shape[0])
        return real(x, *args, **kwargs)

    ids = demo_loop_data["ids"][:6]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model.net.encoder, "features", spy)
        scored = score_pool(model, demo_loop_data["images"], ids, mc_passes=5)
        assert sum(calls) == 6  # each image through the encoder once, not 5 times
        calls.clear()
        score_pool(model, demo_loop_data["images"], ids, mc_passes=5, max_elements=1 << 23)
        assert calls == [6]  # one batch of the six images
    for i in ids:
        np.testing.assert_allclose(scored["probabilities"][i], model.predict(demo_loop_data["images"][i]).probabilities,
                                   atol=2e-3)
        assert scored["disagreement"][i].shape == (120, 120) and scored["disagreement"][i].max() > 0
    assert scored["features"].shape[0] == 6
    with pytest.raises(InputError, match="at least 2 models"):
        score_pool(model, demo_loop_data["images"], ids, ensemble=[model])
    with pytest.raises(InputError, match="mc_passes"):
        score_pool(model, demo_loop_data["images"], ids, mc_passes=1)


def test_score_pool_runs_images_larger_than_the_window_once_when_nothing_else_needs_them(started_loop,
                                                                                       demo_loop_data):
    """An image larger than the model's sliding window gets the windowed prediction; it passes whole
    through the network only for pooled features or MC members, never for discarded probabilities."""
    model = started_loop.model
    ids = demo_loop_data["ids"][:3]
    calls = []
    real = model.net.decoder.forward

    def spy(*args, **kwargs):
        calls.append(args[0].shape[-1])
        return real(*args, **kwargs)

    saved = model.window
    try:
        model.window = (64, 64)  # the 120 x 120 demo images are larger
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(model.net.decoder, "forward", spy)
            plain = score_pool(model, demo_loop_data["images"], ids, features=False)
            assert calls and set(calls) == {64}  # only the windows: no whole-image decoder pass
            calls.clear()
            with_features = score_pool(model, demo_loop_data["images"], ids, features=True)
            assert set(calls) == {64}  # features need the encoder only
            calls.clear()
            score_pool(model, demo_loop_data["images"], ids, mc_passes=2, features=False)
            assert 120 in calls  # MC members on the whole image
    finally:
        model.window = saved
    for i in ids:
        expected = model.predict(demo_loop_data["images"][i], window=(64, 64)).probabilities
        np.testing.assert_allclose(plain["probabilities"][i], expected, atol=2e-3)
    assert with_features["features"].shape[0] == 3


def test_loop_queries_new_images_and_reads_masks_only_through_the_annotator(demo_loop_data, tmp_path):
    class Watched(dict):
        reads: list = []

        def __getitem__(self, key):
            Watched.reads.append(key)
            return dict.__getitem__(self, key)

    masks = Watched(demo_loop_data["masks"])
    loop = _loop(demo_loop_data, "entropy", folder=tmp_path / "loop", masks=masks, per_round=2)
    first = demo_loop_data["ids"][:2]
    loop.start(first)
    records = loop.run()
    queried = [i for r in records[1:] for i in r["queried"]]
    assert len(records) == 3 and len(queried) == 4 and len(set(queried)) == 4
    assert not set(queried) & set(first)
    assert sorted(set(Watched.reads)) == sorted(first + queried)  # the annotator's reads, nothing else
    assert loop.annotated == first + queried
    totals = records[-1]["totals"]
    assert totals["pixels"] == sum(r["effort"]["pixels"] for r in records) > 0
    assert records[-1]["train_seconds"] > 0 and records[-1]["scoring_seconds"] > 0

    resumed = _loop(demo_loop_data, "entropy", folder=tmp_path / "loop", per_round=2)
    assert len(resumed.rounds) == 3 and resumed.annotated == loop.annotated
    for i in loop.annotated:
        np.testing.assert_array_equal(resumed.markers[i], loop.markers[i])
    assert resumed.run() == resumed.rounds  # nothing left to do: rounds already done
    with pytest.raises(InputError, match="other settings"):
        _loop(demo_loop_data, "random", folder=tmp_path / "loop", per_round=2)


def test_loop_with_synthetic_samples(demo_loop_data, tmp_path, monkeypatch):
    import hitlseg.pseudo

    class Watched(dict):
        reads: list = []

        def __getitem__(self, key):
            Watched.reads.append(key)
            return dict.__getitem__(self, key)

    extras, learn = [], hitlseg.pseudo.learn_from_strokes

    def spy(*args, extra=(), **kwargs):
        extras.append(list(extra))
        return learn(*args, extra=extra, **kwargs)

    monkeypatch.setattr(hitlseg.pseudo, "learn_from_strokes", spy)
    settings = dict(synthetic=1, synthetic_candidates=2, generator_steps=6, generator_refresh_steps=3, rounds=2)
    loop = _loop(demo_loop_data, "random", folder=tmp_path / "loop", masks=Watched(demo_loop_data["masks"]), **settings)
    first = demo_loop_data["ids"][:2]
    loop.start(first)
    records = loop.run()
    assert extras[0] == []  # round 0 learns from strokes alone
    for record, extra, annotated in zip(records[1:], extras[1:], (3, 4)):
        synthesis = record["synthesis"]
        assert synthesis["candidates"] == 2 * annotated and 1 <= synthesis["kept"] <= annotated
        assert len(extra) == synthesis["kept"]
        for image, mask in extra:
            assert image.shape == (3, 120, 120) and mask.shape == (120, 120) and set(np.unique(mask)) <= {0, 1, 2}
    assert [r["synthesis"]["generator_steps"] for r in records[1:]] == [6, 3]
    assert sorted(set(Watched.reads)) == sorted(loop.annotated)  # synthesis reads no ground truth
    context = build_context(loop.pool, loop.annotated, score_pool(loop.model, loop.images, loop.pool), images=loop.images)
    accepted = loop.accepted_masks(context)
    for i, markers in loop.markers.items():
        np.testing.assert_array_equal(accepted[i][markers > 0], markers[markers > 0] - 1)  # strokes override
    resumed = _loop(demo_loop_data, "random", folder=tmp_path / "loop", **settings)
    assert resumed.synthesizer is not None and resumed.synthesizer.config.steps == 9


def test_refresh_retrains_from_scratch_on_every_label_and_survives_interruption(demo_loop_data, tmp_path,
                                                                               monkeypatch):
    import json

    import torch

    import hitlseg.pseudo

    calls, learn = [], hitlseg.pseudo.learn_from_strokes

    def spy(images, markers, pool=(), **kwargs):
        calls.append({"images": len(images), "pool": len(pool), **kwargs})
        return learn(images, markers, pool, **kwargs)

    monkeypatch.setattr(hitlseg.pseudo, "learn_from_strokes", spy)
    evaluated = []

    def evaluate(model):
        evaluated.append(model)
        return {"mean": 0.5, "validation": 0.4}

    folder = tmp_path / "loop"
    loop = _loop(demo_loop_data, "random", folder=folder, rounds=1, review_passes=1)
    loop.evaluate = evaluate
    with pytest.raises(InputError, match="start"):
        loop.refresh()
    loop.start(demo_loop_data["ids"][:2])
    loop.run()
    warm = loop.model
    calls.clear()
    record = loop.refresh()
    (call,) = calls
    assert call["model"] is None and call["expand"] is False and call["strokes_stage"]  # a fresh sU-Net
    assert call["images"] == 3 and call["pool"] == 4  # every annotated image; pool_limit unannotated ones
    assert call["self_training"].iterations == loop.config.initial_self_training
    assert sum(a is not None for a in call["accepted"]) == 1  # the reviewed image trains on its accepted mask
    assert loop.model is not warm and evaluated[-2] is warm and evaluated[-1] is loop.model
    assert record["after_round"] == 1 and record["before"]["validation"] == 0.4 and record["train_seconds"] > 0
    assert loop.refresh() is record and len(calls) == 1  # nothing new to retrain on

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a.net.state_dict().values(), b.net.state_dict().values()))

    resumed = _loop(demo_loop_data, "random", folder=folder, rounds=1, review_passes=1)
    assert resumed.refreshed == json.loads(json.dumps(record)) and same(resumed.model, loop.model)
    # interrupted between saving the fresh model and its record: the warm model stands
    state = json.loads((folder / "active.json").read_text())
    state["refreshed"] = None
    (folder / "active.json").write_text(json.dumps(state))
    interrupted = _loop(demo_loop_data, "random", folder=folder, rounds=1, review_passes=1)
    assert interrupted.refreshed is None and same(interrupted.model, warm)


def test_loop_with_knapsack_and_ensemble(demo_loop_data):
    loop = _loop(demo_loop_data, "knapsack", strategy_options={"budget": 60.0}, rounds=1, per_round=3)
    loop.start(demo_loop_data["ids"][:3])
    record = loop.step()
    assert sum(record["predicted_seconds"].values()) <= 60.0 and "weights" in record["cost_model"]
    loop = _loop(demo_loop_data, "ensemble", rounds=1, ensemble=2, ensemble_epochs=1)
    loop.start(demo_loop_data["ids"][:2])
    assert len(loop.step()["queried"]) == 1


def test_loop_bad_input(demo_loop_data):
    with pytest.raises(InputError, match="per_round"):
        ActiveConfig(per_round=0)
    with pytest.raises(InputError, match="mc_passes"):
        ActiveConfig(strategy="bald", mc_passes=0)
    with pytest.raises(InputError, match="unknown name"):
        ActiveConfig(strategy="best")
    loop = _loop(demo_loop_data)
    with pytest.raises(InputError, match="start"):
        loop.step()
    with pytest.raises(InputError, match="not in the loop's images"):
        loop.start(["nope"])
