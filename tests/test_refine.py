"""Refinement: graph cut (against brute force), dense CRF (against the exact mean field), level sets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage

from hitlseg.errors import InputError
from hitlseg.refine import REFINERS, LiveGraphCut, refine
from hitlseg.refine.crf import CRFParams, _Kernels, dense_crf, mean_field_step
from hitlseg.refine.graphcut import (contrast_weights, graphcut, graphcut_refine, neighbour_offsets, potts_energy,
                                     stroke_unary)
from hitlseg.refine.levelset import levelset_refine


def _dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * (a & b).sum() / max(1, a.sum() + b.sum())


def _probs_of(labels, n_labels, confidence=0.8):
    p = np.full((n_labels,) + labels.shape, (1 - confidence) / (n_labels - 1))
    np.put_along_axis(p, labels[None], confidence, 0)
    return p


def _disc(n=48, radius=12, centre=None):
    centre = centre or (n // 2, n // 2)
    yy, xx = np.mgrid[:n, :n]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


# ---------------------------------------------------------------------------- graph cut: exactness


def _brute_energies(image, unary, smoothness, sigma, connectivity, labelings):
    """Energies of every labeling, pair by pair, written independently of hitlseg's code."""
    c, h, w = image.shape
    pairs = []
    for y, x in itertools.product(range(h), range(w)):
        for dy, dx in itertools.product((-1, 0, 1), repeat=2):
            if (dy, dx) <= (0, 0) and not (dy == 0 and dx > 0):
                continue
            if (dy, dx) == (0, 0) or (connectivity == 1 and dy and dx):
                continue
            if dy < 0:
                continue
            yy, xx = y + dy, x + dx
            if 0 <= yy < h and 0 <= xx < w:
                d2 = float(((image[:, y, x] - image[:, yy, xx]) ** 2).sum())
                weight = np.exp(-d2 / (2 * sigma**2)) / np.hypot(dy, dx)
                pairs.append((y * w + x, yy * w + xx, weight))
    flat_unary = unary.reshape(unary.shape[0], -1)
    energies = flat_unary[labelings, np.arange(h * w)].sum(1)
    for p, q, weight in pairs:
        energies = energies + smoothness * weight * (labelings[:, p] != labelings[:, q])
    return energies


@pytest.mark.parametrize("connectivity", [1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_binary_graph_cut_finds_the_brute_force_minimum_on_3x3(seed, connectivity):
    rng = np.random.default_rng(seed)
    image = rng.random((2, 3, 3))
    unary = rng.random((2, 3, 3)) * 2
    smoothness = [0.3, 1.0, 2.0, 5.0][seed]
    offsets, weights, sigma = contrast_weights(image, connectivity)
    labels = graphcut(unary, offsets, weights, smoothness)
    labelings = np.array(list(itertools.product((0, 1), repeat=9)))
    energies = _brute_energies(image, unary, smoothness, sigma, connectivity, labelings)
    mine = potts_energy(labels, unary, offsets, weights, smoothness)
    assert mine == pytest.approx(float(energies.min()), abs=1e-9)
    # potts_energy agrees with the independent pair-by-pair energy on every labeling
    index = int(np.flatnonzero((labelings == labels.ravel()).all(1))[0])
    assert mine == pytest.approx(float(energies[index]), abs=1e-9)


def test_binary_graph_cut_with_hard_constraints_is_the_constrained_minimum():
    rng = np.random.default_rng(7)
    image = rng.random((1, 3, 3))
    unary = rng.random((2, 3, 3)) * 3
    markers = np.zeros((3, 3), np.uint8)
    markers[0, 0] = 2  # class 1 where the unary prefers 0 ...
    unary[:, 0, 0] = [0.0, 10.0]
    markers[2, 2] = 1  # ... and class 0 where it prefers 1
    unary[:, 2, 2] = [10.0, 0.0]
    offsets, weights, sigma = contrast_weights(image)
    labels = graphcut(unary, offsets, weights, 1.0, markers)
    assert labels[0, 0] == 1 and labels[2, 2] == 0
    labelings = np.array([lab for lab in itertools.product((0, 1), repeat=9) if lab[0] == 1 and lab[8] == 0])
    energies = _brute_energies(image, unary, 1.0, sigma, 2, labelings)
    assert potts_energy(labels, unary, offsets, weights, 1.0) == pytest.approx(float(energies.min()), abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_alpha_expansion_on_3_classes_never_raises_the_energy_and_stays_within_twice_the_optimum(seed):
    rng = np.random.default_rng(10 + seed)
    image = rng.random((3, 3, 3))
    unary = rng.random((3, 3, 3)) * 2
    offsets, weights, sigma = contrast_weights(image)
    labelings = np.array(list(itertools.product((0, 1, 2), repeat=9)))
    optimum = float(_brute_energies(image, unary, 1.5, sigma, 2, labelings).min())
    for init in (np.argmin(unary, 0), rng.integers(0, 3, (3, 3))):
        labels = graphcut(unary, offsets, weights, 1.5, init=init)
        energy = potts_energy(labels, unary, offsets, weights, 1.5)
        assert energy <= potts_energy(init, unary, offsets, weights, 1.5) + 1e-9
        assert optimum - 1e-9 <= energy <= 2 * optimum + 1e-9


def test_alpha_expansion_lowers_the_energy_of_a_noisy_labeling_on_a_larger_image():
    rng = np.random.default_rng(3)
    truth = np.zeros((20, 24), np.int64)
    truth[:, 8:16] = 1
    truth[:, 16:] = 2
    image = truth[None].astype(float) + rng.normal(0, 0.3, (1, 20, 24))
    p = _probs_of(truth, 3, 0.5) + rng.random((3, 20, 24)) * 0.6
    p /= p.sum(0)
    unary = -np.log(p)
    offsets, weights, _ = contrast_weights(image)
    init = np.argmin(unary, 0)
    labels = graphcut(unary, offsets, weights, 1.0, init=init)
    assert potts_energy(labels, unary, offsets, weights, 1.0) < potts_energy(init, unary, offsets, weights, 1.0)
    assert (labels == truth).mean() > (init == truth).mean()


@pytest.mark.parametrize("shape", [(9, 11), (5, 6, 7)])
@pytest.mark.parametrize("n_labels", [2, 3])
def test_hard_constraints_are_always_respected(shape, n_labels):
    rng = np.random.default_rng(len(shape) * 10 + n_labels)
    image = rng.random((2,) + shape)
    markers = np.zeros(shape, np.int64)
    marked = rng.random(shape) < 0.2
    markers[marked] = rng.integers(1, n_labels + 1, int(marked.sum()))
    # unary strongly against every marker, heavy smoothing: the constraints must still win
    unary = np.zeros((n_labels,) + shape)
    for label in range(n_labels):
        unary[label][markers == label + 1] = 50.0
    offsets, weights, _ = contrast_weights(image)
    labels = graphcut(unary, offsets, weights, 20.0, markers)
    assert np.array_equal(labels[marked], markers[marked] - 1)
    p = np.exp(-unary)
    p /= p.sum(0)
    refined = refine(image, p, "graphcut", markers=markers, smoothness=20.0)
    assert np.array_equal(refined[marked], markers[marked] - 1)


def test_contrast_weights_follow_boykov_jolly():
    image = np.zeros((1, 6, 6))
    image[0, :, 3:] = 1.0
    offsets, weights, sigma = contrast_weights(image)
    assert offsets == [(0, 1), (1, -1), (1, 0), (1, 1)]
    across = weights[offsets.index((0, 1))]
    assert across[0, 2] == pytest.approx(np.exp(-1 / (2 * sigma**2)))  # the edge between columns 2 and 3
    assert across[0, 0] == 1.0 and across[0, 5] == 0.0  # flat; past the border
    assert weights[offsets.index((1, 1))][0, 0] == pytest.approx(1 / np.sqrt(2))
    # default sigma: root mean squared difference of axis neighbours (30 vertical, 30 horizontal pairs, 6 differ)
    assert sigma == pytest.approx(np.sqrt(6 / 60))
    assert len(neighbour_offsets(3)) == 13 and len(neighbour_offsets(3, 1)) == 3 and len(neighbour_offsets(2, 1)) == 2


def test_graph_cut_refinement_cleans_a_noisy_prediction_in_2d_and_3d():
    rng = np.random.default_rng(0)
    for truth in (_disc(40, 12), ndimage.distance_transform_edt(np.pad(np.ones((1, 1, 1)), 7)) > 0):
        truth = truth if truth.ndim == 2 else (np.indices((15, 15, 15)) - 7.0).__pow__(2).sum(0) <= 25
        image = truth[None] + rng.normal(0, 0.4, (1,) + truth.shape)
        p1 = np.clip(0.5 + 0.35 * (truth * 2 - 1) + rng.normal(0, 0.3, truth.shape), 0.01, 0.99)
        p = np.stack([1 - p1, p1])
        labels = refine(image, p, "graphcut", smoothness=1.0)
        assert _dice(labels, truth) > _dice(p1 > 0.5, truth) + 0.05
        assert _dice(labels, truth) > 0.95


def _two_colour_image(shape, rng):
    """An object of one colour on a background of another (noisy), and robot-like strokes."""
    centre = np.array(shape) / 2
    grid = np.indices(shape).astype(float)
    truth = (((grid - centre.reshape((-1,) + (1,) * len(shape))) / (np.array(shape) / 4).reshape(
        (-1,) + (1,) * len(shape))) ** 2).sum(0) <= 1
    image = np.stack([truth * 0.6 + 0.2, 1 - truth * 0.5]) + rng.normal(0, 0.08, (2,) + shape)
    markers = np.zeros(shape, np.uint8)
    inner = ndimage.binary_erosion(truth, iterations=2)
    middle = tuple(int(c) for c in centre)
    line = np.zeros(shape, bool)
    line[middle[:-1]] = True
    markers[line & inner] = 2
    markers[(0,) * (len(shape) - 1)] = 1
    return image.astype(np.float32), truth, markers


@pytest.mark.parametrize("shape", [(40, 48), (14, 16, 18)])
def test_live_graph_cut_segments_from_two_strokes(shape):
    rng = np.random.default_rng(1)
    image, truth, markers = _two_colour_image(shape, rng)
    live = LiveGraphCut(image)
    labels = live.segment(markers)
    assert _dice(labels, truth) > 0.95
    assert np.array_equal(labels[markers > 0], markers[markers > 0] - 1)
    assert np.array_equal(refine(image, None, "graphcut", markers=markers), labels)


def test_live_graph_cut_with_three_classes_and_seeded_objects_only():
    rng = np.random.default_rng(2)
    image = np.zeros((3, 30, 60))
    truth = np.zeros((30, 60), np.int64)
    truth[5:25, 5:25] = 1
    truth[5:25, 35:55] = 2
    twin = np.zeros((30, 60), bool)
    for label, colour in ((0, (0.1, 0.1, 0.1)), (1, (0.9, 0.1, 0.1)), (2, (0.1, 0.9, 0.1))):
        image[:, truth == label] = np.array(colour)[:, None]
    image[:, 27:, 27:33] = np.array((0.9, 0.1, 0.1))[:, None, None]  # a small object of class 1's colour, unmarked
    twin[27:, 27:33] = True
    image += rng.normal(0, 0.05, image.shape)
    markers = np.zeros((30, 60), np.uint8)
    markers[15, 10:20] = 2
    markers[15, 40:50] = 3
    markers[2, :] = 1
    seeded = LiveGraphCut(image).segment(markers)
    everything = LiveGraphCut(image, keep="all").segment(markers)
    assert (seeded[truth == 1] == 1).mean() > 0.95 and (seeded[truth == 2] == 2).mean() > 0.95
    assert (seeded[twin] == 0).all() and (everything[twin] == 1).mean() > 0.9


def test_live_graph_cut_refits_only_the_class_whose_strokes_changed(monkeypatch):
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(5)
    image, truth, markers = _two_colour_image((40, 48), rng)
    live = LiveGraphCut(image)
    fits = []
    original = GaussianMixture.fit
    monkeypatch.setattr(GaussianMixture, "fit", lambda self, x, y=None: fits.append(len(x)) or original(self, x))
    live.segment(markers)
    assert len(fits) == 2
    more = markers.copy()
    more[np.nonzero(truth)[0][0], np.nonzero(truth)[1][0]] = 2  # one more object pixel: only class 1 changes
    fits.clear()
    labels = live.segment(more)
    assert len(fits) == 1
    assert np.array_equal(labels, LiveGraphCut(image).segment(more))  # the cache never changes the answer
    fits.clear()
    live.segment(more)
    assert fits == []


def test_stroke_unary_prefers_the_marked_colours():
    rng = np.random.default_rng(4)
    image, truth, markers = _two_colour_image((30, 30), rng)
    unary = stroke_unary(image, markers)
    assert unary.shape == (2, 30, 30)
    assert (np.argmin(unary, 0) == truth).mean() > 0.95
    assert stroke_unary(image, markers, n_labels=3)[2].min() == pytest.approx(-np.log(1e-4))


# ------------------------------------------------------------------------------------- dense CRF


def _crf_case(n, seed=0, c=3, shape=None):
    rng = np.random.default_rng(seed)
    shape = shape or (n, n)
    image = rng.random((c,) + shape) * 0.1
    image[..., shape[-1] // 2:] += 0.5  # a colour edge, so the bilateral kernel matters
    logits = rng.normal(size=(3,) + shape) * 2
    p = np.exp(logits)
    return image, p / p.sum(0)


def _one_update(image, p, params, exact):
    img = torch.as_tensor(image, dtype=torch.float64)[None]
    unary = torch.as_tensor(-np.log(np.clip(p, 1e-6, 1)))[None]
    q = torch.softmax(-unary, 1)
    return mean_field_step(q, unary, _Kernels(img, params, exact=exact))[0].numpy()


@pytest.mark.parametrize("params,tolerance", [
    (CRFParams(bilateral_sigma_xy=3.0, scale=1.0, truncate=100.0), 1e-9),  # window covering the image: exact
    (CRFParams(bilateral_sigma_xy=3.0, scale=1.0), 2e-3),  # 3-sigma window (measured 7e-4)
])
def test_crf_window_approximation_matches_the_exact_mean_field_update_on_12x12(params, tolerance):
    image, p = _crf_case(12)
    approx = _one_update(image, p, params, exact=False)
    exact = _one_update(image, p, params, exact=True)
    assert np.abs(approx - exact).max() <= tolerance


@pytest.mark.parametrize("shape", [(24, 24), (8, 10, 12)])
def test_crf_downsampled_approximation_matches_the_exact_update_within_the_stated_tolerance(shape):
    image, p = _crf_case(0, shape=shape)
    params = CRFParams(bilateral_sigma_xy=4.0)  # scale chosen: 0.5
    assert params.bilateral_scale == 0.5
    approx = _one_update(image, p, params, exact=False)
    exact = _one_update(image, p, params, exact=True)
    error = np.abs(approx - exact)
    assert error.max() <= 0.1 and error.mean() <= 0.01  # measured 0.061 / 0.0043 on 24x24
    assert (approx.argmax(0) == exact.argmax(0)).mean() >= 0.97


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("shape", [(12, 12), (6, 8, 8)])
def test_crf_kl_objective_decreases_over_mean_field_iterations(shape, exact):
    image, p = _crf_case(0, seed=3, shape=shape)
    params = CRFParams(bilateral_sigma_xy=3.0, bilateral_weight=8.0, gaussian_weight=4.0, scale=1.0)
    q, trace = dense_crf(image, p, iterations=8, params=params, exact=exact, return_objective=True,
                         dtype=torch.float64)
    steps = np.diff(trace)
    assert (steps <= 1e-9 * abs(trace[0])).all(), trace
    assert trace[-1] < trace[0] - 1.0
    assert q.shape == p.shape and np.allclose(q.sum(0), 1, atol=1e-5)


def test_crf_refinement_fixes_noisy_labels_along_a_colour_edge():
    rng = np.random.default_rng(5)
    truth = np.zeros((40, 40), np.int64)
    truth[:, 20:] = 1
    image = np.stack([truth * 0.8 + 0.1] * 3) + rng.normal(0, 0.03, (3, 40, 40))
    p1 = np.clip(0.5 + 0.2 * (truth * 2 - 1) + rng.normal(0, 0.25, truth.shape), 0.02, 0.98)
    p = np.stack([1 - p1, p1])
    labels = refine(image, p, "crf", iterations=5)
    assert (labels == truth).mean() > 0.99 > (np.argmax(p, 0) == truth).mean()


# ------------------------------------------------------------------------------------ level sets


def test_chan_vese_recovers_a_disc_from_a_noisy_initial_mask():
    rng = np.random.default_rng(0)
    disc = _disc(64, 15, (32, 30))
    image = (disc + rng.normal(0, 0.4, disc.shape))[None]
    init = np.roll(disc, 4, axis=1) ^ (rng.random(disc.shape) < 0.1)
    p = np.stack([1.0 - init, init])
    for per_object in (False, True):
        labels = refine(image, p, "levelset", variant="chan_vese", per_object=per_object)
        assert _dice(labels, disc) > 0.95 > _dice(init, disc) + 0.2


def test_geodesic_active_contour_snaps_to_the_disc_edge():
    rng = np.random.default_rng(1)
    disc = _disc(64, 15, (32, 30))
    image = (disc + rng.normal(0, 0.2, disc.shape))[None]
    for init in (ndimage.binary_dilation(disc, iterations=5), ndimage.binary_erosion(disc, iterations=5)):
        p = np.stack([1.0 - init, init])
        labels = refine(image, p, "levelset", variant="geodesic")
        assert _dice(labels, disc) > 0.96 > _dice(init, disc) + 0.1


def test_chan_vese_in_3d_and_per_object_with_different_contrasts():
    rng = np.random.default_rng(2)
    # radius 10: the morphological curvature step (smoothing=1) shrinks smaller balls (radius 6 loses
    # 15% of its volume), as the level-set module notes
    ball = (np.indices((28, 28, 28)) - 14.0).__pow__(2).sum(0) <= 100
    image = (ball + rng.normal(0, 0.3, ball.shape))[None]
    init = np.roll(ball, 2, axis=0)
    labels = levelset_refine(image, np.stack([1.0 - init, init]))
    assert _dice(labels, ball) > 0.95 > _dice(init, ball)
    # two discs: a bright one and a faint one; per object, each gets its own inside/outside means
    n = 80
    a, b = _disc(n, 10, (20, 20)), _disc(n, 10, (55, 55))
    image = (a * 1.0 + b * 0.25 + rng.normal(0, 0.05, (n, n)))[None]
    init = ndimage.binary_dilation(a | b, iterations=3)
    p = np.stack([1.0 - init, init])
    per_object = levelset_refine(image, p, per_object=True)
    assert _dice(per_object, a | b) > 0.95


def test_level_set_classes_and_markers():
    rng = np.random.default_rng(3)
    truth = np.zeros((50, 80), np.int64)
    truth[_disc(50, 12, (25, 20))[:, :80] if False else np.pad(_disc(50, 12, (25, 20)), ((0, 0), (0, 30)))] = 1
    truth[np.pad(_disc(50, 12, (25, 30)), ((0, 0), (30, 0)))] = 2
    image = (truth * 0.5 + rng.normal(0, 0.1, truth.shape))[None]
    init = np.zeros_like(truth)
    init[ndimage.binary_erosion(truth == 1, iterations=3)] = 1
    init[ndimage.binary_erosion(truth == 2, iterations=3)] = 2
    markers = np.zeros(truth.shape, np.uint8)
    markers[0, 0] = 3  # a (wrong) marker: it must win anyway
    labels = refine(image, _probs_of(init, 3), "levelset", markers=markers)
    assert labels[0, 0] == 2
    for c in (1, 2):
        assert _dice(labels == c, truth == c) > 0.93


# ---------------------------------------------------------------------------------- entry point


def test_refine_returns_uint8_labels_for_every_method():
    rng = np.random.default_rng(0)
    image, p = _crf_case(16, seed=1)
    assert set(REFINERS) == {"graphcut", "crf", "levelset", "shape", "corrective"}
    for method in ("graphcut", "crf", "levelset"):  # shape and corrective: with their models, in their tests
        labels = refine(image, p, method)
        assert labels.dtype == np.uint8 and labels.shape == (16, 16) and labels.max() <= 2
    del rng


@pytest.mark.parametrize("call,message", [
    (lambda img, p, m: refine(img, p * 0.8, "crf"), "sum to one"),
    (lambda img, p, m: refine(img, np.stack([p[0] + 0.6, p[1] - 0.6]), "graphcut"), "[0, 1]"),
    (lambda img, p, m: refine(img, p[:, :5], "levelset"), "does not match"),
    (lambda img, p, m: refine(img, p[:1], "crf"), "at least 2 channels"),
    (lambda img, p, m: refine(img, p, "snake"), "unknown refiner"),
    (lambda img, p, m: refine(img, p, "crf", markers=m[:5]), "markers: shape"),
    (lambda img, p, m: refine(img, p, "crf", markers=m + 2), "only 2 labels"),
    (lambda img, p, m: refine(img, None, "graphcut", markers=(m == 2).astype(np.uint8) * 2), "two classes"),
    (lambda img, p, m: refine(img, None, "graphcut", markers=np.zeros_like(m)), "two classes"),
    (lambda img, p, m: refine(img, None, "graphcut"), "markers"),
    (lambda img, p, m: refine(img, None, "crf", markers=m), "needs probabilities"),
    (lambda img, p, m: refine(img[0], p, "crf"), "channel first"),
    (lambda img, p, m: refine(img, np.where(np.isnan(p), 0, p) * np.nan, "crf"), "NaN"),
    (lambda img, p, m: refine(img, p, "levelset", variant="snake"), "unknown level set"),
    (lambda img, p, m: refine(img, p, "graphcut", connectivity=3), "connectivity"),
    (lambda img, p, m: refine(img, p, "graphcut", smoothness=-1.0), "smoothness"),
    (lambda img, p, m: refine(img, p, "crf", iterations=-1), "iterations"),
    (lambda img, p, m: refine(img, p, "crf", bilateral_sigma_xy=0.0), "bilateral_sigma_xy"),
    (lambda img, p, m: refine(img, p, "crf", colour=1.0), "options"),
    (lambda img, p, m: refine(img, p, "shape"), "needs a shape model"),
    (lambda img, p, m: refine(img, p, "corrective"), "needs a trained CorrectiveModel"),
    (lambda img, p, m: refine(img, None, "shape", markers=m), "needs probabilities"),
])
def test_bad_inputs_raise_input_errors_naming_the_problem(call, message):
    rng = np.random.default_rng(0)
    image = rng.random((3, 10, 10)).astype(np.float32)
    p1 = rng.random((10, 10))
    p = np.stack([1 - p1, p1])
    markers = np.zeros((10, 10), np.uint8)
    markers[1, 1], markers[8, 8] = 1, 2
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call(image, p, markers)


def test_probabilities_within_the_tolerance_are_accepted():
    image, p = _crf_case(8)
    labels = refine(image, p * (1 + 5e-4), "graphcut")
    assert labels.shape == (8, 8)
    assert np.array_equal(graphcut_refine(image, p), refine(image, p, "graphcut"))


@pytest.mark.parametrize("covariance, n_features", [("full", 3), ("diag", 12)])
def test_hand_written_mixture_density_matches_scikit_learn(covariance, n_features):
    from sklearn.mixture import GaussianMixture

    from hitlseg.refine.graphcut import _mixture_log_density

    x = np.random.default_rng(0).normal(size=(2000, n_features))
    gmm = GaussianMixture(3, covariance_type=covariance, random_state=0).fit(x[:500])
    assert np.allclose(_mixture_log_density(gmm, x.astype(np.float32)), gmm.score_samples(x), atol=1e-3)
