"""Ground-truth-free image selection: superpixels, descriptors, recommendations, projection,
heatmaps, selectors, stopping signal, the session and the ``select`` command."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.distance import cdist

from hitlseg.cli import main
from hitlseg.errors import InputError
from hitlseg.flim import fit_encoder
from hitlseg.flim.decoders import decode
from hitlseg.io.color import rgb_to_normalized_lab
from hitlseg.metrics import mean_dice
from hitlseg.robot import Robot
from hitlseg.selection import (
    FILLS,
    SELECTORS,
    SelectionContext,
    SelectionSession,
    StoppingMonitor,
    SuperpixelCache,
    activation_map,
    compute_superpixels,
    coverage_radius,
    compute_descriptors,
    display_rgb,
    make_selector,
    overlay,
    png_bytes,
    pooled_descriptors,
    project,
    recommend,
    selection_arch,
    slic_superpixels,
)
import hitlseg.selection.superpixels as superpixels_module  # noqa: E402
from hitlseg.selection.descriptors import SuperpixelIndex, activation_maps, labels_at, map_kernels
from tests.helpers import disk_mask, make_2d_dataset, rgb_from_mask

# --------------------------------------------------------------------------------------------
# synthetic data
# --------------------------------------------------------------------------------------------


def disk_pool(n=8, sizes=((40, 40), (36, 44)), seed=0):
    """Images (normalised LAB, (3, H, W)) of disks on noise, two shapes, and their masks."""
    rng = np.random.default_rng(seed)
    images, masks = {}, {}
    for i in range(n):
        shape = sizes[i % len(sizes)]
        centers = [tuple(int(v) for v in rng.integers(10, min(shape) - 10, 2)) for _ in range(int(rng.integers(1, 3)))]
        mask = disk_mask(shape, centers, radius=int(rng.integers(4, 9)))
        rgb = rgb_from_mask(mask, seed + i).astype(np.float32) / 255
        images[f"im{i:02d}"] = rgb_to_normalized_lab(np.moveaxis(rgb, -1, 0))
        masks[f"im{i:02d}"] = mask
    return images, masks


def ball_volume(shape=(14, 18, 16), center=(7, 9, 8), radius=4, seed=0):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape)
    mask = (((zz - center[0]) ** 2 + (yy - center[1]) ** 2 + (xx - center[2]) ** 2) <= radius**2).astype(np.uint8)
    image = (0.2 + 0.6 * mask + rng.normal(0, 0.05, shape)).clip(0, 1).astype(np.float32)[None]
    return image, mask


def reference_descriptor(features, labels, length, fill):
    """Direct per-superpixel loop: means, sort, bring to ``length`` (the documented fill rules)."""
    values = []
    for fmap in features:
        means = [float(fmap[labels == s].mean()) for s in np.unique(labels)]
        profile = sorted(means, reverse=True)
        n = len(profile)
        if fill == "quantile":
            positions = np.arange(length) * (n - 1) / max(length - 1, 1)
            profile = list(np.interp(positions, np.arange(n), profile))
        elif n >= length:
            profile = profile[:length]
        else:
            profile = profile + [profile[-1] if fill == "edge" else 0.0] * (length - n)
        values.extend(profile)
    return np.asarray(values)


@pytest.fixture(scope="module")
def pool():
    return disk_pool()


@pytest.fixture(scope="module")
def fitted(pool):
    images, masks = pool
    ids = ["im00", "im01"]
    robot = Robot(0)
    markers = [robot.mark(masks[i], key=i) for i in ids]
    encoder = fit_encoder([images[i] for i in ids], markers, selection_arch(), seed=0, device="cpu")
    return ids, encoder


# --------------------------------------------------------------------------------------------
# superpixels
# --------------------------------------------------------------------------------------------


def test_superpixels_2d_labels_contiguous_and_near_requested(pool):
    images, _ = pool
    labels = slic_superpixels(images["im00"], 12)
    assert labels.shape == images["im00"].shape[1:] and labels.dtype == np.int32
    present = np.unique(labels)
    assert present[0] == 0 and np.array_equal(present, np.arange(len(present)))
    assert 4 <= len(present) <= 24


def test_superpixels_3d_default_count():
    image, _ = ball_volume(shape=(20, 24, 22))
    labels = slic_superpixels(image)  # 40 requested by default in 3D
    assert labels.shape == (20, 24, 22)
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
    assert 15 <= labels.max() + 1 <= 80


def test_superpixel_cache_files_are_reused(tmp_path, pool, monkeypatch):
    images, _ = pool
    subset = {i: images[i] for i in ["im00", "im01", "im02"]}
    first = compute_superpixels(subset, 10, cache=SuperpixelCache(tmp_path / "sp"))
    assert len(list((tmp_path / "sp").glob("*.npy"))) == 3

    def fail(*args, **kwargs):
        raise AssertionError("SLIC ran although the labels were cached")

    monkeypatch.setattr(superpixels_module, "slic_superpixels", fail)
    again = compute_superpixels(subset, 10, cache=SuperpixelCache(tmp_path / "sp"))
    assert all(np.array_equal(first[i], again[i]) for i in subset)


def test_superpixel_cache_with_wrong_shape_is_recomputed(pool):
    images, _ = pool
    cache = SuperpixelCache()
    key = superpixels_module.cache_key("im00", 10, superpixels_module.DEFAULT_COMPACTNESS)
    cache.put(key, np.zeros((3, 3), dtype=np.int32))
    labels = compute_superpixels({"im00": images["im00"]}, 10, cache=cache)["im00"]
    assert labels.shape == images["im00"].shape[1:] and labels.max() > 0


def test_superpixels_bad_input():
    with pytest.raises(InputError, match="n_superpixels"):
        slic_superpixels(np.zeros((1, 8, 8), np.float32), 0)
    with pytest.raises(InputError, match="shape"):
        slic_superpixels(np.zeros((8, 8), np.float32))
    with pytest.raises(InputError, match="compactness"):
        slic_superpixels(np.zeros((1, 8, 8), np.float32), 4, compactness=-1)


# --------------------------------------------------------------------------------------------
# descriptors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fill", FILLS)
def test_descriptor_matches_direct_loop(fill):
    rng = np.random.default_rng(1)
    shapes = [(12, 14), (10, 9), (12, 14)]
    features = [rng.random((4,) + s).astype(np.float32) for s in shapes]
    labels = [
        rng.integers(0, 7, shapes[0]),
        rng.integers(0, 3, shapes[1]) * 2,  # labels 0, 2, 4: fewer and non-contiguous
        rng.integers(0, 9, shapes[2]),
    ]
    got = compute_descriptors(features, labels, length=8, fill=fill)
    assert got.shape == (3, 4 * 8)
    for b in range(3):
        expected = reference_descriptor(features[b], labels[b], 8, fill)
        np.testing.assert_allclose(got[b], expected, rtol=1e-5, atol=1e-6)


def test_descriptor_profiles_non_increasing_and_default_length():
    rng = np.random.default_rng(2)
    features = torch.rand(3, 5, 16, 16)
    labels = [rng.integers(0, n, (16, 16)) for n in (4, 6, 5)]
    got = compute_descriptors(features, labels)
    assert got.shape == (3, 5 * 6)  # default length: the most superpixels present
    profiles = got.reshape(3, 5, 6)
    assert np.all(np.diff(profiles, axis=2) <= 1e-7)


def test_descriptor_fill_rules_on_a_small_case():
    features = np.array([[[1.0, 1.0, 3.0, 3.0, 2.0, 2.0]]], dtype=np.float32)  # one map, 1x6 pixels
    labels = [np.array([[0, 0, 1, 1, 2, 2]])]
    assert compute_descriptors(features[None], labels, 5, "edge").tolist() == [[3.0, 2.0, 1.0, 1.0, 1.0]]
    assert compute_descriptors(features[None], labels, 5, "zero").tolist() == [[3.0, 2.0, 1.0, 0.0, 0.0]]
    assert compute_descriptors(features[None], labels, 5, "quantile").tolist() == [[3.0, 2.5, 2.0, 1.5, 1.0]]


def test_descriptor_on_strided_grid_uses_labels_at_pooling_centres():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, (11, 9))
    features = rng.random((2, 6, 5)).astype(np.float32)  # ceil(11/2) x ceil(9/2)
    grid = labels_at(labels, (6, 5))
    assert np.array_equal(grid, labels[::2, ::2])
    got = compute_descriptors([features], [labels], length=5, fill="edge")
    np.testing.assert_allclose(got[0], reference_descriptor(features, grid, 5, "edge"), rtol=1e-5)


def test_superpixel_index_groups_match_per_image_computation():
    rng = np.random.default_rng(4)
    batch = torch.rand(3, 2, 8, 8)
    labels = [rng.integers(0, 4, (8, 8)) for _ in range(3)]
    index = SuperpixelIndex.build(labels, [(8, 8)] * 3, [3])
    grouped = compute_descriptors([batch], index, 4)
    single = compute_descriptors(list(batch), labels, 4)
    np.testing.assert_allclose(grouped, single, rtol=1e-6)
    with pytest.raises(InputError, match="superpixel index"):
        compute_descriptors([batch[:2]], index, 4)


@pytest.mark.parametrize("step", [1, 2, 3, 50])
def test_pooled_descriptors_equal_all_maps_at_once(step):
    """Maps computed a few images at a time and summed at once give compute_descriptors' descriptors
    exactly, over groups of two grid shapes; a grid or group mismatch is named."""
    rng = np.random.default_rng(5)
    images = [torch.rand(5, 3, 9, 9), torch.rand(2, 3, 7, 11)]
    weight = torch.rand(4, 3, 1, 1)
    maps = lambda batch: torch.nn.functional.conv2d(batch, weight)  # noqa: E731
    labels = [rng.integers(0, 6, (9, 9)) for _ in range(5)] + [rng.integers(0, 4, (7, 11)) for _ in range(2)]
    index = SuperpixelIndex.build(labels, [(9, 9)] * 5 + [(7, 11)] * 2, [5, 2])
    expected = compute_descriptors([maps(b) for b in images], index, 6)
    got = pooled_descriptors(images, index, maps, 6, step=step)
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(InputError, match="superpixel index"):
        pooled_descriptors(images[:1], index, maps, 6)
    with pytest.raises(InputError, match="grid"):
        pooled_descriptors(images, index, lambda b: maps(b)[..., :-1], 6)
    with pytest.raises(InputError, match="step"):
        pooled_descriptors(images, index, maps, 6, step=0)


def test_activation_maps_match_the_flim_layer(fitted, pool):
    images, _ = pool
    _, encoder = fitted
    layer = encoder.layers[0]
    x = torch.as_tensor(images["im03"][None])
    full = torch.relu(layer.convolve(x))
    kernels, as_asked = map_kernels(encoder, "object")
    assert as_asked and np.all(layer.kernel_classes.numpy()[kernels] > 0)
    ours = activation_maps(layer, x, kernels, stride=1)
    torch.testing.assert_close(ours, full[:, kernels], rtol=1e-4, atol=1e-4)
    strided = activation_maps(layer, x, kernels, stride=2)
    torch.testing.assert_close(strided, full[:, kernels, ::2, ::2], rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------
# recommendations
# --------------------------------------------------------------------------------------------


def test_recommendation_distances_match_cdist():
    rng = np.random.default_rng(5)
    d = rng.normal(size=(10, 6))
    ids = [f"i{k}" for k in range(10)]
    rec = recommend(d, ids, ["i3", "i7"], k=4)
    free = [k for k in range(10) if k not in (3, 7)]
    expected = cdist(d[free], d[[3, 7]]).min(1)
    assert rec.distances == pytest.approx({ids[k]: v for k, v in zip(free, expected)})
    assert [i for i, _ in rec.closest] == [ids[free[j]] for j in np.argsort(expected)[:4]]
    assert [i for i, _ in rec.most_distant] == [ids[free[j]] for j in np.argsort(-expected)[:4]]
    closest = [v for _, v in rec.closest]
    distant = [v for _, v in rec.most_distant]
    assert closest == sorted(closest) and distant == sorted(distant, reverse=True)
    assert not {"i3", "i7"} & set(rec.closest_ids + rec.most_distant_ids)


def test_recommendation_last_mode_uses_the_last_selected_only():
    d = np.array([[0.0], [10.0], [1.0], [9.0], [5.0]])
    ids = list("abcde")
    by_min = recommend(d, ids, ["a", "b"], k=3, distance="min")
    by_last = recommend(d, ids, ["a", "b"], k=3, distance="last")
    assert by_min.distances == {"c": 1.0, "d": 1.0, "e": 5.0}
    assert by_last.distances == {"c": 9.0, "d": 1.0, "e": 5.0}
    assert by_last.most_distant_ids == ["c", "e", "d"]
    assert by_min.closest_ids == ["c", "d", "e"]  # ties keep pool order


def test_recommendation_bad_input():
    d = np.zeros((3, 2))
    with pytest.raises(InputError, match="not in the pool"):
        recommend(d, ["a", "b", "c"], ["z"])
    with pytest.raises(InputError, match="no image selected"):
        recommend(d, ["a", "b", "c"], [])
    with pytest.raises(InputError, match="shape"):
        recommend(np.zeros((2, 2)), ["a", "b", "c"], ["a"])
    with pytest.raises(InputError, match="distance"):
        recommend(d, ["a", "b", "c"], ["a"], distance="max")


# --------------------------------------------------------------------------------------------
# selectors: one template test for every selector
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def context(pool, fitted):
    images, masks = pool
    selected, encoder = fitted
    ids = list(images)
    rng = np.random.default_rng(6)
    return SelectionContext(ids, list(selected), rng.normal(size=(len(ids), 12)), None, images, masks, encoder)


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_selector_template(name, context):
    selector = make_selector(name, seed=3)
    chosen = selector.query(context, n=3)
    assert len(chosen) == 3 and len(set(chosen)) == 3
    assert set(chosen) <= set(context.pool) and not set(chosen) & set(context.selected)
    assert make_selector(name, seed=3).query(context, n=3) == chosen  # deterministic for a seed
    one = selector.query(context)
    assert len(one) == 1 and one[0] not in context.selected
    # cold start: nothing selected yet
    cold = SelectionContext(context.pool, [], None, None, context.images, context.masks, None)
    first = selector.query(cold, n=2)
    assert len(set(first)) == 2 and set(first) <= set(context.pool)
    # nothing left to choose
    full = SelectionContext(context.pool, list(context.pool), context.descriptors, None, context.images,
                            context.masks, context.encoder)
    with pytest.raises(InputError, match="already selected"):
        selector.query(full)
    with pytest.raises(InputError, match="only"):
        selector.query(context, n=len(context.pool))
    bad = SelectionContext(context.pool, ["nope"], context.descriptors, None, context.images, context.masks,
                           context.encoder)
    with pytest.raises(InputError, match="not in the pool"):
        selector.query(bad)


def test_gtfree_policies_follow_the_distances(context):
    distances = cdist(context.descriptors, context.descriptors[[0, 1]]).min(1)
    free = np.arange(2, len(context.pool))
    far = context.pool[free[np.argmax(distances[free])]]
    near = context.pool[free[np.argmin(distances[free])]]
    assert make_selector("gtfree", policy="most_distant").query(context) == [far]
    assert make_selector("gtfree", policy="closest").query(context) == [near]
    # two selected (even): alternate starts with the closest, then the most distant
    assert make_selector("gtfree", policy="alternate").query(context, n=2) == [near, far]


def test_kcenter_picks_the_farthest_raw_feature_vector(context):
    x = np.random.default_rng(7).normal(size=(len(context.pool), 5))
    ctx = SelectionContext(context.pool, context.selected, None, x)
    d = cdist(x, x[[0, 1]]).min(1)
    d[[0, 1]] = -1
    first = int(np.argmax(d))
    d2 = np.minimum(d, cdist(x, x[[first]])[:, 0])
    d2[[0, 1, first]] = -1
    assert make_selector("kcenter").query(ctx, n=2) == [context.pool[first], context.pool[int(np.argmax(d2))]]


def test_labeled_picks_the_worst_dice_and_scores_are_dice(context):
    selector = make_selector("labeled")
    chosen = selector.query(context)
    scores = selector.scores
    assert chosen == [min(scores, key=lambda i: (scores[i], context.pool.index(i)))]
    image_id = context.unselected()[0]
    layer = context.encoder.layers[0]
    features = context.encoder.features(torch.as_tensor(context.images[image_id][None]), upto=0)[0][0]
    mask = context.masks[image_id]
    decoded = decode(features, layer.kernel_classes, mask.shape, "labels", int(mask.max()))
    assert scores[image_id] == pytest.approx(mean_dice(decoded.mask, mask))


def test_labeled_needs_masks(context):
    no_masks = SelectionContext(context.pool, context.selected, None, None, context.images, None, context.encoder)
    with pytest.raises(InputError, match="ground-truth"):
        make_selector("labeled").query(no_masks)


def test_make_selector_errors():
    with pytest.raises(InputError, match="gtfree, random, labeled, kcenter"):
        make_selector("best")
    with pytest.raises(InputError, match="unknown option"):
        make_selector("random", policy="closest")
    with pytest.raises(InputError, match="policy"):
        make_selector("gtfree", policy="random")


# --------------------------------------------------------------------------------------------
# projection
# --------------------------------------------------------------------------------------------


def test_tsne_projection_shape_and_determinism():
    x = np.random.default_rng(8).normal(size=(40, 10))
    a = project(x, "tsne", perplexity=10, seed=1)
    b = project(x, "tsne", perplexity=10, seed=1)
    assert a.coords.shape == (40, 2) and a.method == "tsne" and a.note is None
    np.testing.assert_array_equal(a.coords, b.coords)
    warm = project(x, "tsne", perplexity=10, seed=1, init=a.coords)
    assert warm.coords.shape == (40, 2) and np.all(np.isfinite(warm.coords))


def test_tsne_affinities_equal_opentsnes_exact_ones_without_pynndescent():
    """faiss's neighbours give openTSNE's method="exact" affinities, and a t-SNE layout imports no
    pynndescent/numba (openTSNE's own neighbour choice imported them: 1.2 s at the first round)."""
    import subprocess
    import sys

    import openTSNE

    from hitlseg.selection.projection import _nearest_neighbours

    x = np.random.default_rng(12).normal(size=(120, 10))
    exact = openTSNE.affinity.PerplexityBasedNN(x, perplexity=10, method="exact", random_state=0, verbose=False)
    ours = openTSNE.affinity.PerplexityBasedNN(perplexity=10, knn_index=_nearest_neighbours(x, 30, 1),
                                               random_state=0, verbose=False)
    np.testing.assert_allclose(ours.P.toarray(), exact.P.toarray(), atol=1e-6)
    code = ("import sys, numpy as np\nfrom hitlseg.selection.projection import project\n"
            "project(np.random.default_rng(0).normal(size=(50, 4)), max_iter=4)\n"
            "print(','.join(m for m in ('pynndescent', 'numba') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == ""


def test_large_pool_neighbours_are_exact_and_leave_each_point_out():
    """The affinities come from faiss's exact neighbours (duplicates too), small and large pools."""
    from scipy.spatial.distance import cdist

    from hitlseg.selection.projection import _nearest_neighbours

    EXACT_AFFINITIES = 1000  # openTSNE's method="exact" switched to approximate neighbours beyond

    rng = np.random.default_rng(11)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    x[5] = x[4]  # a duplicate: its twin is at distance 0, itself must still be left out
    knn = _nearest_neighbours(x, 6, threads=1)
    neighbours, distances = knn.build()
    full = cdist(x, x)
    np.fill_diagonal(full, np.inf)
    assert not (neighbours == np.arange(300)[:, None]).any()
    np.testing.assert_allclose(distances, np.sort(full, 1)[:, :6], atol=1e-4)
    assert neighbours[4, 0] == 5 and neighbours[5, 0] == 4
    big = rng.normal(size=(EXACT_AFFINITIES + 50, 6))
    fresh = project(big, "tsne", seed=0, max_iter=10)
    warm = project(big, "tsne", seed=0, init=fresh.coords, max_iter=5)
    assert fresh.coords.shape == warm.coords.shape == (EXACT_AFFINITIES + 50, 2)
    assert np.all(np.isfinite(warm.coords))


def test_tsne_perplexity_too_large_is_reduced():
    x = np.random.default_rng(9).normal(size=(7, 4))
    result = project(x, "tsne", perplexity=30)
    assert result.perplexity == pytest.approx(2.0) and "reduced" in result.note
    assert result.coords.shape == (7, 2) and np.all(np.isfinite(result.coords))


def test_projection_small_pools_and_pca():
    assert project(np.ones((1, 3))).method == "trivial"
    two = project(np.array([[0.0, 0.0], [3.0, 4.0]]))
    assert two.method == "trivial" and two.coords[:, 0].tolist() == [-2.5, 2.5]
    x = np.random.default_rng(10).normal(size=(6, 3))
    pca = project(x, "pca")
    assert pca.coords.shape == (6, 2) and pca.method == "pca"
    np.testing.assert_array_equal(pca.coords, project(x, "pca").coords)
    with pytest.raises(InputError, match="method"):
        project(x, "umapx")
    with pytest.raises(InputError, match="perplexity"):
        project(x, perplexity=0)


# --------------------------------------------------------------------------------------------
# heatmaps
# --------------------------------------------------------------------------------------------


def _decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_heatmap_2d_red_where_activation_is_high():
    image = np.full((1, 20, 30), 0.5, dtype=np.float32)
    activation = np.tile(np.linspace(0, 1, 30, dtype=np.float32), (20, 1))
    rgb = _decode_png(png_bytes(overlay(image, activation)))
    assert rgb.shape == (20, 30, 3)
    high, low = rgb[:, -1].astype(int), rgb[:, 0].astype(int)
    assert np.all(high[:, 0] > high[:, 2] + 40) and np.all(low[:, 2] > low[:, 0] + 40)


def test_heatmap_3d_slices_have_the_slice_size():
    image, _ = ball_volume(shape=(6, 10, 8))
    activation = np.random.default_rng(11).random((6, 10, 8)).astype(np.float32)
    assert _decode_png(png_bytes(overlay(image, activation))).shape == (10, 8, 3)
    assert overlay(image, activation, axis=1, slice_index=2).shape == (6, 8, 3)
    assert overlay(image, activation, axis=2).shape == (6, 10, 3)
    with pytest.raises(InputError, match="out of range"):
        overlay(image, activation, slice_index=6)


def test_display_rgb_undoes_the_lab_normalisation():
    rgb = np.random.default_rng(12).random((3, 8, 8)).astype(np.float32)
    shown = display_rgb(rgb_to_normalized_lab(rgb))
    np.testing.assert_allclose(np.moveaxis(shown, -1, 0), rgb, atol=1e-3)


def test_activation_map_is_normalised_and_resized():
    features = torch.zeros(2, 4, 4)
    features[:, 0, 0] = 3.0
    act = activation_map(features, (8, 8))
    assert act.shape == (8, 8) and act.max() == pytest.approx(1.0) and act.min() == pytest.approx(0.0)
    assert act[0, 0] == act.max()


# --------------------------------------------------------------------------------------------
# stopping signal
# --------------------------------------------------------------------------------------------


def test_coverage_radius_is_monotone_and_stop_is_suggested():
    points = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [20.0]])
    monitor = StoppingMonitor(threshold=0.1, patience=1, min_rounds=2)
    patient = StoppingMonitor(threshold=0.1, patience=2, min_rounds=2)
    order = [0, 5, 3, 2, 1]  # far-first: large improvements, then none
    radii, signals = [], []
    for k in range(1, len(order) + 1):
        signals.append(monitor.update(points, order[:k]))
        patient_signal = patient.update(points, order[:k])
        radii.append(coverage_radius(points, order[:k])[0])
    assert radii == sorted(radii, reverse=True)
    assert radii[0] == 20.0 and signals[0].normalized_radius == pytest.approx(1.0)
    assert signals[0].relative_change is None and not signals[0].stop
    assert signals[1].relative_change == pytest.approx(0.5) and not signals[1].stop
    assert radii == [20.0, 10.0, 2.0, 1.0, 1.0]
    assert not any(s.stop for s in signals[:4])
    # selecting 1 after {0, 20, 10, 2} leaves the radius at 1 (point 11): no improvement -> stop
    assert signals[4].relative_change == 0.0 and signals[4].stop
    assert not patient_signal.stop  # with patience 2, one flat round is not enough
    assert all(0.0 <= s.normalized_radius <= 1.0 for s in signals)
    assert all(s.diameter == 20.0 for s in signals)
    assert [s.suggestion for s in signals] == ["continue"] * 4 + ["stop"]
    record = signals[4].to_dict()
    assert record["suggestion"] == "stop" and record["diameter"] == 20.0
    assert record["normalized_radius"] == pytest.approx(1 / 20) and json.loads(json.dumps(record)) == record


def test_normalised_radius_ignores_the_descriptor_scale():
    """Scaling every descriptor (as a longer descriptor of like maps does to all distances) changes
    the raw radius, not the normalised one, nor the relative change."""
    rng = np.random.default_rng(0)
    points = rng.normal(size=(12, 5))
    plain, scaled = StoppingMonitor(), StoppingMonitor()
    for k in (1, 2, 3):
        a = plain.update(points, list(range(k)))
        b = scaled.update(7.5 * points, list(range(k)))
        assert b.radius == pytest.approx(7.5 * a.radius) and b.diameter == pytest.approx(7.5 * a.diameter)
        assert b.normalized_radius == pytest.approx(a.normalized_radius)
    assert b.relative_change == pytest.approx(a.relative_change)


def test_growing_radius_does_not_suggest_a_stop():
    monitor = StoppingMonitor(threshold=0.1, patience=1, min_rounds=1)
    spread = np.array([[0.0], [1.0], [10.0]])
    monitor.update(spread, [0, 2])  # radius 1 of diameter 10
    grown = monitor.update(np.array([[0.0], [6.0], [10.0]]), [0, 2])  # radius 4 of 10
    assert grown.relative_change == pytest.approx(-3.0) and not grown.stop and "grew" in grown.reason
    level = monitor.update(np.array([[0.0], [6.1], [10.0]]), [0, 2])  # radius 3.9: 2.5% change
    assert level.stop


#: Demo images, rounds and robot seed of the stopping signal on real descriptors.
DEMO_STOP_IMAGES, DEMO_STOP_ROUNDS = 40, 5


def _demo_stopping_rounds(policy: str, cache) -> tuple[list, SelectionSession]:
    """``DEMO_STOP_ROUNDS`` rounds of the gtfree loop with ``policy`` and the robot on the first
    ``DEMO_STOP_IMAGES`` demo images (the first image: the pool's first)."""
    from hitlseg.datasets import demo

    dataset = demo()
    dataset = dataset.subset(dataset.ids[:DEMO_STOP_IMAGES])
    session = SelectionSession(dataset, superpixel_cache=cache, seed=0, projection="pca", k=3)
    robot, selector = Robot(0), make_selector("gtfree", policy=policy, seed=0)
    image_id, results = session.ids[0], []
    for _ in range(DEMO_STOP_ROUNDS):
        results.append(session.step(image_id, robot.mark(dataset.mask(image_id), key=image_id)))
        image_id = selector.query(session.context(), 1)[0]
    return results, session


@pytest.fixture(scope="module")
def demo_stopping():
    from hitlseg.selection import SuperpixelCache

    cache = SuperpixelCache()  # both runs share the superpixels
    return {policy: _demo_stopping_rounds(policy, cache) for policy in ("most_distant", "closest")}


def test_normalised_radius_falls_on_demo_descriptors(demo_stopping):
    """On real descriptors, which grow every round (more filters, more maps), the normalised
    radius falls as images are added while the raw radius does not: it rises in some round."""
    results, session = demo_stopping["most_distant"]
    signals = [r.stopping for r in results]
    normalised = [s.normalized_radius for s in signals]
    raw = [s.radius for s in signals]
    n_maps = [r.n_maps for r in results]
    print("most_distant: normalised", [round(v, 3) for v in normalised], "raw", [round(v, 1) for v in raw],
          "maps", n_maps)
    assert n_maps[-1] > n_maps[0]  # the descriptor grows
    assert all(0 < v <= 1 for v in normalised)
    # non-increasing (1% slack) and at least halved from round 1 to round 5; the raw radius, in
    # units that grow with the descriptor, rises in some round and would fail the first check
    assert all(b <= a + 0.01 for a, b in zip(normalised, normalised[1:])), normalised
    assert normalised[-1] < 0.5 * normalised[0], normalised
    assert any(b > a for a, b in zip(raw, raw[1:])), raw
    # the signal is the radius of *all* selected images in this round's descriptors
    rows = [session.ids.index(i) for i in session.selected]
    radius, diameter = coverage_radius(session.descriptors, rows)
    assert signals[-1].radius == pytest.approx(radius) and signals[-1].diameter == pytest.approx(diameter)
    assert normalised[-1] == pytest.approx(radius / diameter)
    first_only, _ = coverage_radius(session.descriptors, rows[:1])
    assert first_only / diameter > 1.5 * normalised[-1]  # new selections count
    # relative changes follow the normalised radius; too early to stop before 4 images
    for previous, signal in zip(signals, signals[1:]):
        expected = (previous.normalized_radius - signal.normalized_radius) / previous.normalized_radius
        assert signal.relative_change == pytest.approx(expected)
    assert [s.suggestion for s in signals[:3]] == ["continue"] * 3 and all("too early" in s.reason for s in signals[:3])
    for signal in signals[3:]:
        assert signal.suggestion == ("stop" if signal.stop else "continue")
        if abs(signal.relative_change) >= 0.05:
            assert signal.suggestion == "continue"


def test_normalised_radius_falls_where_the_raw_radius_grows(demo_stopping):
    """Policy ``closest`` takes images like the selected ones: the raw radius grows with the
    descriptor (by about 60% over five rounds), the normalised radius still falls overall."""
    results, _ = demo_stopping["closest"]
    normalised = [r.stopping.normalized_radius for r in results]
    raw = [r.stopping.radius for r in results]
    print("closest: normalised", [round(v, 3) for v in normalised], "raw", [round(v, 1) for v in raw])
    assert raw[-1] > 1.3 * raw[0], raw
    assert normalised[-1] < normalised[0] and max(normalised[1:]) <= normalised[0] + 0.01, normalised


def test_stopping_bad_threshold():
    with pytest.raises(InputError, match="stop_threshold"):
        StoppingMonitor(threshold=2.0)


# --------------------------------------------------------------------------------------------
# session
# --------------------------------------------------------------------------------------------


def test_session_descriptors_equal_direct_computation(pool, monkeypatch):
    import hitlseg.selection.session as session_module

    images, masks = pool
    monkeypatch.setattr(session_module, "CHUNK_POINTS", 600)  # several chunks and shape groups
    session = SelectionSession(images, n_superpixels=8, seed=0, projection="pca", stride=2)
    assert len(session._chunks) > 1
    result = session.step("im02", Robot(0).mark(masks["im02"], key="im02"))
    kernels, _ = map_kernels(session.encoder, "object")
    layer = session.encoder.layers[0]
    for image_id in ["im00", "im02", "im05"]:
        maps = activation_maps(layer, torch.as_tensor(images[image_id][None]), kernels, 2)
        expected = compute_descriptors(maps, [session.superpixels[image_id]], session.length)
        np.testing.assert_allclose(session.descriptors[session.ids.index(image_id)], expected[0], rtol=1e-4, atol=1e-5)
    assert result.n_maps == len(kernels)


def test_session_end_to_end_with_the_robot_on_demo_images():
    from hitlseg.datasets import demo

    dataset = demo().subset(demo().ids[:12])
    session = SelectionSession(dataset, seed=0, k=3)
    robot = Robot(0, policy="alternate")
    image_id = session.ids[0]
    results = []
    for round_index in range(3):
        markers = robot.mark(dataset.mask(image_id), key=image_id)
        result = session.step(image_id, markers)
        results.append(result)
        rec = result.recommendation
        assert not set(rec.closest_ids + rec.most_distant_ids) & set(result.selected)
        assert len(rec.closest) == 3 and len(rec.most_distant) == 3
        assert set(result.coords) == set(session.ids)
        assert {"fit", "features", "recommend", "projection", "total"} <= set(result.timings)
        assert result.n_maps > 0 and result.stopping.radius > 0
        image_id = robot.choose(rec.closest_ids, rec.most_distant_ids, round_index, exclude=session.selected)
    assert len(set(session.selected)) == 3 and session.selected == results[-1].selected
    assert [r.round for r in results] == [1, 2, 3]
    assert results[0].projection.note and "reduced" in results[0].projection.note  # 12 images < 3 * 30 + 1
    png = _decode_png(session.heatmap(session.selected[0]))
    assert png.shape == dataset.image(session.selected[0])[0].shape[1:] + (3,)
    json.dumps(results[-1].to_dict())  # JSON-ready


def test_session_3d_pool_and_heatmap_slice():
    images = {f"v{i}": ball_volume(center=(7, 9 - i % 3, 8), seed=i)[0] for i in range(5)}
    _, mask = ball_volume()
    session = SelectionSession(images, n_superpixels=12, projection="pca")
    result = session.step("v0", Robot(0).mark(mask, key="v0"))
    assert len(result.recommendation.most_distant) == 4 and result.projection.coords.shape == (5, 2)
    assert session.heatmap_array("v1").shape == (18, 16, 3)
    assert session.heatmap_array("v1", axis=2, slice_index=3).shape == (14, 18, 3)


def test_session_saliency_maps_and_last_distance(pool):
    images, masks = pool
    session = SelectionSession(images, n_superpixels=8, maps="saliency", distance="last", projection="pca")
    result = session.step("im01", Robot(0).mark(masks["im01"], key="im01"))
    assert result.n_maps == 1  # one object class
    assert result.recommendation.distance == "last"


def test_session_small_pool_until_every_image_is_selected(pool, tmp_path):
    images, masks = pool
    session = SelectionSession({i: images[i] for i in ["im00", "im02", "im04"]}, n_superpixels=6)
    robot = Robot(1)
    first = session.step("im00", robot.mark(masks["im00"], key="im00"))
    assert "reduced" in first.projection.note and first.projection.coords.shape == (3, 2)
    session.step("im02", robot.mark(masks["im02"], key="im02"))
    last = session.step("im04", robot.mark(masks["im04"], key="im04"))
    assert last.recommendation.closest == [] and last.recommendation.most_distant == []
    assert last.stopping.radius == 0.0 and last.stopping.stop
    with pytest.raises(InputError, match="already selected"):
        make_selector("gtfree").query(session.context())
    path = session.save_heatmap("im02", tmp_path / "report" / "im02.png")
    assert _decode_png(path.read_bytes()).shape == (40, 40, 3)


def test_session_bad_input(pool):
    images, masks = pool
    with pytest.raises(InputError, match="at least 2 images"):
        SelectionSession({"only": images["im00"]})
    with pytest.raises(InputError, match="maps"):
        SelectionSession(images, maps="everything")
    session = SelectionSession({i: images[i] for i in ["im00", "im01", "im02"]}, n_superpixels=6, projection="pca")
    good = Robot(0).mark(masks["im00"], key="im00")
    with pytest.raises(InputError, match="not in the pool"):
        session.step("im07", good)
    with pytest.raises(InputError, match="shape"):
        session.step("im00", good[:-1])
    with pytest.raises(InputError, match="no marked pixel"):
        session.step("im00", np.zeros_like(good))
    with pytest.raises(InputError, match="no filters yet"):
        session.heatmap("im00")
    assert session.selected == [] and session.encoder is None  # nothing half-done
    session.step("im00", good)
    session.step("im00", good)  # marking again replaces the markers, not a second selection
    assert session.selected == ["im00"]


def test_gtfree_session_never_reads_a_mask(tmp_path, monkeypatch):
    """The ground-truth-free loop on a Dataset whose masks cannot be read: markers come from the
    person (here computed from the masks before they become unreadable), and ``gtfree`` queries
    need descriptors only."""
    import hitlseg.dataset
    import hitlseg.io
    import hitlseg.io.images
    from hitlseg.dataset import Dataset
    from hitlseg.robot import markers_from_mask

    root = make_2d_dataset(tmp_path / "ds", n=6, size=40)
    dataset = Dataset.from_folder(root)
    markers = {i: markers_from_mask(dataset.mask(i), rng=k) for k, i in enumerate(dataset.ids[:2])}

    def no_mask(*args, **kwargs):
        raise AssertionError("the ground-truth-free selection read a mask")

    for module in (hitlseg.io, hitlseg.io.images, hitlseg.dataset):
        monkeypatch.setattr(module, "read_mask", no_mask)
    monkeypatch.setattr(Dataset, "mask", no_mask)
    with pytest.raises(AssertionError, match="read a mask"):
        dataset.mask(dataset.ids[0])  # the patch is in force

    session = SelectionSession(dataset, n_superpixels=8, projection="pca", k=2)
    first = dataset.ids[0]
    result = session.step(first, markers[first])
    context = session.context()
    assert context.masks is None and context.descriptors is not None
    for policy in ("most_distant", "closest", "alternate"):
        chosen = make_selector("gtfree", policy=policy).query(context)
        assert len(chosen) == 1 and chosen[0] in session.ids and chosen[0] not in session.selected
    assert make_selector("gtfree").query(context) == [result.recommendation.most_distant_ids[0]]
    second = dataset.ids[1]
    session.step(second, markers[second])
    chosen = make_selector("gtfree").query(session.context(), n=2)
    assert len(set(chosen)) == 2 and not set(chosen) & {first, second}


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def test_cli_select_json(tmp_path, capsys):
    root = make_2d_dataset(tmp_path / "ds", n=6, size=40)
    code = main(["select", "--dataset", str(root), "--robot", "--rounds", "3", "--seed", "2", "--k", "2", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["rounds"]) == 3 and len(set(out["selected"])) == 3
    for r in out["rounds"]:
        assert r["image_id"] in r["selected"]
        listed = [x["id"] for x in r["recommendation"]["closest"] + r["recommendation"]["most_distant"]]
        assert not set(listed) & set(r["selected"])
        assert r["stopping"]["radius"] >= 0 and r["timings"]["total"] > 0
        stopping = r["stopping"]
        assert 0 <= stopping["normalized_radius"] <= 1 and stopping["suggestion"] in ("continue", "stop")
        assert stopping["normalized_radius"] == pytest.approx(stopping["radius"] / stopping["diameter"])
        assert stopping["suggestion"] == ("stop" if stopping["stop"] else "continue") and stopping["reason"]
    assert out["rounds"][0]["stopping"]["relative_change"] is None
    # the same seed gives the same run, text output names each round
    assert main(["select", "--dataset", str(root), "--robot", "--rounds", "3", "--seed", "2", "--k", "2"]) == 0
    text = capsys.readouterr().out
    assert f"selected: {', '.join(out['selected'])}" in text and "normalised coverage radius" in text
    assert "suggestion: continue" in text


@pytest.mark.parametrize("selector", ["random", "kcenter", "labeled"])
def test_cli_select_other_selectors(tmp_path, capsys, selector):
    root = make_2d_dataset(tmp_path / "ds", n=5, size=40)
    args = ["select", "--dataset", str(root), "--robot", "--rounds", "2", "--selector", selector, "--json"]
    assert main(args + ["--projection", "pca"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["selector"] == selector and len(set(out["selected"])) == 2


def test_cli_select_errors(tmp_path, capsys):
    root = make_2d_dataset(tmp_path / "ds", n=3, size=40)
    assert main(["select", "--dataset", str(root), "--rounds", "2"]) == 2
    assert "--robot" in capsys.readouterr().err
    (root / "masks" / "img01.png").unlink()
    assert main(["select", "--dataset", str(root), "--robot"]) == 2
    assert "img01" in capsys.readouterr().err
    assert main(["select", "--dataset", str(tmp_path / "missing"), "--robot"]) == 2


# --------------------------------------------------------------------------------------------
# real data (../shared/datasets)
# --------------------------------------------------------------------------------------------


@pytest.mark.shared
def test_shared_wbc1_two_rounds(shared):
    from hitlseg.dataset import Dataset

    dataset = Dataset.from_folder(shared("wbc1"))
    dataset = dataset.subset(dataset.ids[:20])
    session = SelectionSession(dataset, seed=0)
    robot = Robot(0)
    image_id = session.ids[0]
    for _ in range(2):
        result = session.step(image_id, robot.mark(dataset.mask(image_id), key=image_id))
        image_id = result.recommendation.most_distant_ids[0]
    assert session.length >= 20 * 0.5 and result.n_maps > 0
    assert len(result.recommendation.most_distant) == 5


@pytest.mark.shared
def test_shared_hippocampus_round_and_slice(shared):
    from hitlseg.dataset import Dataset

    dataset = Dataset.from_folder(shared("hippocampus"))
    dataset = dataset.subset(dataset.ids[:6])
    session = SelectionSession(dataset, seed=0, projection="pca")
    image_id = session.ids[0]
    result = session.step(image_id, Robot(0).mark(dataset.mask(image_id), key=image_id))
    assert len(result.recommendation.closest) == 5 and result.projection.coords.shape == (6, 2)
    volume = session.images[session.ids[1]]
    assert session.heatmap_array(session.ids[1]).shape == volume.shape[2:] + (3,)


def test_cli_choices_match_the_library():
    from hitlseg.cli.select import POLICY_NAMES, SELECTOR_NAMES
    from hitlseg.selection.selectors import GTFREE_POLICIES, SELECTORS

    assert tuple(SELECTORS) == SELECTOR_NAMES and tuple(GTFREE_POLICIES) == POLICY_NAMES


def test_default_descriptor_is_the_papers_sorted_means_padded_with_zeros():
    """Issue 12.11: an image with fewer superpixels keeps its own sorted means (no resampling)."""
    import inspect

    from hitlseg.selection import SelectionSession, compute_descriptors

    features = [np.array([[[3.0, 3.0, 1.0, 1.0, 2.0, 2.0]]], np.float32), np.array([[[5.0, 5.0, 5.0, 4.0, 4.0, 4.0]]], np.float32)]
    labels = [np.array([[0, 0, 1, 1, 2, 2]]), np.array([[0, 0, 0, 1, 1, 1]])]
    descriptors = compute_descriptors(features, labels)
    assert descriptors.tolist() == [[3.0, 2.0, 1.0], [5.0, 4.0, 0.0]]
    parameters = inspect.signature(SelectionSession.__init__).parameters
    assert parameters["fill"].default == "zero" and parameters["stride"].default == 2
