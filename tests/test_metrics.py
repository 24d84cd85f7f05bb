"""Tests of hitlseg.metrics: hand-computed cases, empty-mask conventions, slow reference versions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from hitlseg import metrics as M
from hitlseg.errors import InputError

EPS = np.spacing(1.0)


# --------------------------------------------------------------------------- helpers


def blob(shape, seed, sigma=2.0, level=0.5):
    """A random smooth binary mask (one or a few blobs)."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), sigma)
    return field > np.quantile(field, level)


def smooth_map(gt, seed):
    """A random saliency map in [0, 1] loosely correlated with gt."""
    rng = np.random.default_rng(seed)
    s = ndimage.gaussian_filter(rng.random(gt.shape), 1.5) + 0.3 * gt
    return (s - s.min()) / (s.max() - s.min())


# --------------------------------------------------------------------------- Dice / IoU


def test_dice_iou_binary_hand_case():
    pred = np.zeros((4, 4), int)
    truth = np.zeros((4, 4), int)
    pred[0, 0:4] = 1  # 4 pixels: (0,0) (0,1) (0,2) (0,3)
    truth[0, 1:4] = 1  # 5 pixels: (0,1) (0,2) (0,3) (1,0) (1,1)
    truth[1, 0:2] = 1
    # overlap 3 -> Dice = 2*3/(4+5) = 6/9; IoU = 3/(4+5-3) = 0.5
    assert M.dice_score(pred, truth) == pytest.approx(6 / 9)
    assert M.iou_score(pred, truth) == pytest.approx(0.5)
    assert M.dice_per_class(pred, truth) == {1: pytest.approx(6 / 9)}
    assert M.iou_per_class(pred, truth) == {1: pytest.approx(0.5)}


def test_dice_iou_per_class_hand_case():
    pred = np.array([[1, 1, 2, 2],
                     [1, 0, 2, 0],
                     [0, 0, 3, 3]])
    truth = np.array([[1, 1, 1, 2],
                      [0, 0, 2, 2],
                      [0, 0, 0, 0]])
    # class 1: |P|=3, |T|=3, overlap (0,0),(0,1) = 2 -> Dice 4/6, IoU 2/4
    # class 2: |P|=3, |T|=3, overlap (0,3),(1,2) = 2 -> Dice 4/6, IoU 2/4
    # class 3: |P|=2, |T|=0 -> Dice 0, IoU 0
    d = M.dice_per_class(pred, truth)
    assert list(d) == [1, 2, 3]
    assert d[1] == pytest.approx(4 / 6) and d[2] == pytest.approx(4 / 6) and d[3] == 0.0
    j = M.iou_per_class(pred, truth)
    assert j == {1: pytest.approx(0.5), 2: pytest.approx(0.5), 3: 0.0}
    assert M.mean_dice(pred, truth) == pytest.approx((4 / 6 + 4 / 6 + 0) / 3)
    assert M.mean_iou(pred, truth) == pytest.approx(1 / 3)
    # foreground: |P|=8, |T|=6, overlap (0,0)(0,1)(0,2)(0,3)(1,2) = 5 -> 10/14
    assert M.dice_score(pred, truth) == pytest.approx(10 / 14)
    assert M.iou_score(pred, truth) == pytest.approx(5 / 9)
    # chosen labels: 2 only, 7 absent from both -> 1.0; order normalised
    assert M.dice_per_class(pred, truth, labels=[7, 2]) == {2: pytest.approx(4 / 6), 7: 1.0}
    assert M.mean_dice(pred, truth, labels=[3]) == 0.0


def test_binary_variant_ignores_class_identity():
    pred = np.array([[1, 1], [0, 0]])
    truth = np.array([[2, 2], [0, 0]])
    assert M.dice_score(pred, truth) == 1.0
    assert M.dice_per_class(pred, truth) == {1: 0.0, 2: 0.0}


def test_dice_empty_conventions():
    z = np.zeros((3, 3), np.uint8)
    one = z.copy()
    one[1, 1] = 1
    assert M.dice_score(z, z) == 1.0 and M.iou_score(z, z) == 1.0
    assert M.dice_score(one, z) == 0.0 and M.iou_score(z, one) == 0.0
    assert M.dice_per_class(z, z) == {} and M.mean_dice(z, z) == 1.0 and M.mean_iou(z, z) == 1.0
    # K = max over both masks = 2; class 1 absent from both -> 1.0, class 2 in one only -> 0.0
    two = z.copy()
    two[0, 0] = 2
    assert M.dice_per_class(two, z) == {1: 1.0, 2: 0.0}


def test_dice_bool_3d_and_large_labels():
    pred = np.zeros((2, 3, 3), bool)
    truth = np.zeros((2, 3, 3), bool)
    pred[0, :, :] = True  # 9 voxels
    truth[:, 0, :] = True  # 6 voxels, overlap 3 -> 6/15
    assert M.dice_score(pred, truth) == pytest.approx(6 / 15)
    assert M.dice_per_class(pred, truth) == {1: pytest.approx(6 / 15)}
    # labels far beyond the bincount range take the np.unique path
    big = 5_000_000
    p = np.where(pred, big, 0).astype(np.int64)
    t = np.where(truth, big, 0).astype(np.int64)
    assert M.dice_per_class(p, t, labels=[big, 3]) == {3: 1.0, big: pytest.approx(6 / 15)}
    assert M.iou_per_class(p, t, labels=[big]) == {big: pytest.approx(3 / 12)}


# --------------------------------------------------------------------------- HD95


def brute_surface(mask):
    """Foreground voxels with a face neighbour outside the mask (array border counts as outside)."""
    padded = np.pad(mask, 1)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    surf = np.zeros_like(mask)
    for ax in range(mask.ndim):
        for step in (-1, 1):
            nb = list(inner)
            nb[ax] = slice(1 + step, padded.shape[ax] - 1 + step)
            surf |= mask & ~padded[tuple(nb)]
    return surf


def brute_hd95(p, t, spacing):
    sp = np.asarray(spacing, float)
    a = np.argwhere(brute_surface(p)) * sp
    b = np.argwhere(brute_surface(t)) * sp
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    return max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))


def squares_2d():
    a = np.zeros((10, 12), np.uint8)
    b = np.zeros((10, 12), np.uint8)
    a[2:6, 2:6] = 1  # 4x4 square, 12 boundary pixels
    b[2:6, 4:8] = 1  # shifted 2 columns right
    return a, b


def test_hd95_shift_2d():
    a, b = squares_2d()
    # left column of a is 2 from b's left column (4 of 12 boundary pixels), nothing is further,
    # and the 95th percentile of 12 values sorted lies between the top two -> 2
    assert M.hd95(a, b) == pytest.approx(2.0)
    assert M.hd95(b, a) == pytest.approx(2.0)
    assert M.hd95(a, a) == 0.0
    # isotropic spacing 0.5 halves it; spacing (1, 3) stretches the column axis: 2 columns -> 6
    assert M.hd95(a, b, spacing=0.5) == pytest.approx(1.0)
    assert M.hd95(a, b, spacing=(1.0, 3.0)) == pytest.approx(6.0)
    # a shift along rows is unaffected by the column spacing
    assert M.hd95(a, np.roll(a, 2, axis=0), spacing=(1.0, 3.0)) == pytest.approx(2.0)


def test_hd95_shift_3d_and_anisotropic():
    a = np.zeros((8, 9, 10), bool)
    a[2:5, 2:5, 2:5] = True
    b = np.roll(a, 2, axis=2)  # cube shifted by 2 voxels along the last axis
    assert M.hd95(a, b) == pytest.approx(2.0)
    assert M.hd95(a, b, spacing=(5.0, 5.0, 1.5)) == pytest.approx(3.0)  # 2 voxels x 1.5
    c = np.roll(a, 2, axis=0)
    assert M.hd95(a, c, spacing=(2.5, 1.0, 1.0)) == pytest.approx(5.0)  # 2 slices x 2.5


def test_hd95_is_a_percentile_not_the_maximum():
    truth = np.zeros((30, 30), np.uint8)
    truth[2:22, 2:22] = 1  # 20x20 square, 76 boundary pixels
    pred = truth.copy()
    pred[28, 28] = 1  # one stray pixel, far away
    # pred -> truth: 76 zeros and one distance sqrt(6^2+6^2); its 95th percentile is 0
    assert M.hd95(pred, truth) == 0.0


def test_hd95_empty_conventions():
    z = np.zeros((5, 5), int)
    one = z.copy()
    one[2, 2] = 1
    assert M.hd95(z, z) == 0.0
    assert M.hd95(one, z) == math.inf and M.hd95(z, one) == math.inf


@pytest.mark.parametrize(
    "shape, spacing, seed",
    [((30, 28), (1.0, 1.0), 0), ((24, 20), (0.7, 2.0), 1), ((10, 12, 14), (2.0, 1.0, 0.5), 2)],
)
def test_hd95_matches_brute_force(shape, spacing, seed):
    p = blob(shape, seed, level=0.55)
    t = blob(shape, seed + 100, level=0.5)
    assert M.hd95(p, t, spacing=spacing) == pytest.approx(brute_hd95(p, t, spacing))


def test_hd95_per_class():
    a, b = squares_2d()
    pred = a.astype(np.int32) + 2 * np.roll(a, 6, axis=0)  # class 2: a moved down 6 rows
    truth = b.astype(np.int32) + 2 * np.roll(a, 6, axis=0)
    assert M.hd95_per_class(pred, truth) == {1: pytest.approx(2.0), 2: 0.0}
    assert M.hd95_per_class(pred, truth, labels=[1, 5], spacing=(1, 3)) == {1: pytest.approx(6.0), 5: 0.0}


def test_evaluate_masks():
    a, b = squares_2d()
    pred = a.astype(np.int32) + 3 * np.roll(a, 6, axis=0)
    truth = b.astype(np.int32)
    out = M.evaluate_masks(pred, truth)
    # class 1: two 16-pixel squares overlapping in 8 -> Dice 16/32, IoU 8/24, HD95 2
    # class 2: absent from both -> 1, 1, 0; class 3: only in pred -> 0, 0, inf
    assert out["labels"] == [1, 2, 3]
    assert out["dice"] == {1: pytest.approx(0.5), 2: 1.0, 3: 0.0}
    assert out["iou"] == {1: pytest.approx(1 / 3), 2: 1.0, 3: 0.0}
    assert out["hd95"] == {1: pytest.approx(2.0), 2: 0.0, 3: math.inf}
    assert out["mean_dice"] == pytest.approx(0.5) and out["mean_iou"] == pytest.approx(4 / 9)
    assert out["mean_hd95"] == math.inf
    json.dumps(out)  # plain Python types only
    only1 = M.evaluate_masks(pred, truth, labels=[1], spacing=(1, 3))
    assert only1["mean_hd95"] == pytest.approx(6.0) and only1["mean_dice"] == pytest.approx(0.5)
    z = np.zeros((4, 4, 4), np.uint8)
    assert M.evaluate_masks(z, z) == {
        "labels": [], "dice": {}, "iou": {}, "hd95": {},
        "mean_dice": 1.0, "mean_iou": 1.0, "mean_hd95": 0.0,
    }


# --------------------------------------------------------------------------- BraTS


def test_brats_regions_and_dice():
    truth = np.array([[0, 1, 2, 3, 4],
                      [0, 4, 4, 2, 1]])
    r = M.brats_regions(truth)
    assert set(r) == {"WT", "TC", "ET"}
    np.testing.assert_array_equal(r["WT"], truth > 0)
    np.testing.assert_array_equal(r["TC"], [[0, 1, 0, 1, 1], [0, 1, 1, 0, 1]])
    np.testing.assert_array_equal(r["ET"], [[0, 0, 0, 0, 1], [0, 1, 1, 0, 0]])
    pred = np.array([[0, 2, 2, 3, 4],
                     [0, 4, 1, 0, 0]])
    # WT: |P|=6, |T|=8, overlap 6 -> 12/14
    # TC: P = {(0,3),(0,4),(1,1),(1,2)} 4, T = {(0,1),(0,3),(0,4),(1,1),(1,2),(1,4)} 6, overlap 4 -> 8/10
    # ET: P = {(0,4),(1,1)} 2, T = {(0,4),(1,1),(1,2)} 3, overlap 2 -> 4/5
    d = M.brats_dice(pred, truth)
    assert d == {"WT": pytest.approx(12 / 14), "TC": pytest.approx(0.8), "ET": pytest.approx(0.8)}
    no_et = np.where(truth == 4, 1, truth)
    assert M.brats_dice(no_et, no_et)["ET"] == 1.0  # empty in both
    assert M.brats_dice(pred, no_et)["ET"] == 0.0


# --------------------------------------------------------------------------- saliency

SAL = np.array([[0.75, 0.5], [0.25, 0.0]])  # 255*sal = 191.25, 127.5, 63.75, 0 -> levels 191, 127, 63, 0
GT = np.array([[1, 0], [1, 0]], bool)


def test_mae_hand_case():
    # |0.75-1| + |0.5-0| + |0.25-1| + |0-0| = 0.25 + 0.5 + 0.75 = 1.5 -> / 4
    assert M.mae(SAL, GT) == pytest.approx(0.375)
    assert M.mae(SAL, GT.astype(np.uint8)) == pytest.approx(0.375)


def f(p, r, b2=0.3):
    return (1 + b2) * p * r / (b2 * p + r)


def test_f_measure_hand_case():
    res = M.f_measure(SAL, GT)
    # adaptive threshold 2 * mean = 0.75 -> only 0.75 predicted: P = 1, R = 1/2
    assert res.adaptive == pytest.approx(f(1, 0.5))  # 0.8125
    # t = 0: all 4 predicted (P 1/2, R 1); t = 1..63: {0.75, 0.5, 0.25} (P 2/3, R 1);
    # t = 64..127: {0.75, 0.5} (P 1/2, R 1/2); t = 128..191: {0.75} (P 1, R 1/2);
    # t = 192..255: nothing predicted -> P = 0 by convention, R = 0, F = 0
    expected = np.array([f(0.5, 1)] + [f(2 / 3, 1)] * 63 + [f(0.5, 0.5)] * 64 + [f(1, 0.5)] * 64 + [0.0] * 64)
    np.testing.assert_allclose(res.curve, expected)
    assert res.maximum == pytest.approx(0.8125)
    assert res.mean == pytest.approx(expected.mean())
    assert res.precision[0] == 0.5 and res.precision[200] == 0.0 and res.recall[100] == 0.5
    assert M.f_measure(SAL, GT, beta2=1.0).adaptive == pytest.approx(2 / 3)  # F1 of P=1, R=1/2


def test_f_measure_empty_gt():
    res = M.f_measure(SAL, np.zeros((2, 2), bool))
    assert res.adaptive == 0.0 and res.maximum == 0.0  # recall 0 when gt is empty


def test_e_measure_hand_case():
    res = M.e_measure(SAL, GT)
    # adaptive threshold 0.75: FM = [[1,0],[0,0]]; mean(FM) = 1/4, mean(GT) = 1/2
    # bias-removed pairs (FM, GT): (3/4, 1/2), (-1/4, -1/2), (-1/4, 1/2), (-1/4, -1/2)
    # alignment 2ab/(a^2+b^2): 12/13, 4/5, -4/5, 4/5; enhanced (1+x)^2/4: 625/676, .81, .01, .81
    assert res.adaptive == pytest.approx((625 / 676 + 0.81 + 0.01 + 0.81) / 4)
    assert res.curve.shape == (256,)
    assert res.curve[150] == pytest.approx(res.adaptive)  # t = 150 also keeps only 0.75
    assert res.maximum == pytest.approx(res.curve.max()) and res.mean == pytest.approx(res.curve.mean())


def test_e_measure_special_cases():
    # gt all background: E = fraction predicted background; all foreground: fraction predicted
    # foreground. Adaptive threshold 0.75 predicts 1 of 4 pixels.
    assert M.e_measure(SAL, np.zeros((2, 2))).adaptive == pytest.approx(3 / 4)
    assert M.e_measure(SAL, np.ones((2, 2))).adaptive == pytest.approx(1 / 4)
    # threshold 0 predicts everything: 0 and 1 respectively
    assert M.e_measure(SAL, np.zeros((2, 2))).curve[0] == 0.0
    assert M.e_measure(SAL, np.ones((2, 2))).curve[0] == 1.0


def test_s_measure_hand_case():
    sal = np.array([[1.0, 0.0], [0.0, 0.5]])
    gt = np.array([[1, 0], [0, 0]])
    # object: fg values [1] -> 2*1/(1+1+0) = 1; bg values 1-sal = [1, 1, .5]: mean 5/6,
    # std (n-1) = sqrt(1/12) -> 2(5/6)/((5/6)^2 + 1 + sqrt(1/12)); S_o = 1/4 * 1 + 3/4 * that
    bg = 2 * (5 / 6) / ((5 / 6) ** 2 + 1 + math.sqrt(1 / 12))
    s_o = 0.25 + 0.75 * bg
    # region: centroid (1, 1) (1-based) -> four 1x1 quadrants of weight 1/4; each has zero
    # variance and covariance -> SSIM 1 (alpha = beta = 0), so S_r = 1
    assert M.s_measure(sal, gt) == pytest.approx(0.5 * s_o + 0.5 * 1.0)
    assert M.s_measure(sal, gt, alpha=1.0) == pytest.approx(s_o)


def test_s_measure_special_cases():
    # mean(SAL) = 0.375
    assert M.s_measure(SAL, np.zeros((2, 2), bool)) == pytest.approx(1 - 0.375)
    assert M.s_measure(SAL, np.ones((2, 2), int)) == pytest.approx(0.375)


def test_perfect_prediction():
    gt = blob((40, 50), 3)
    sal = gt.astype(np.float64)
    out = M.saliency_metrics(sal, gt)
    assert set(out) == {"S", "E_adaptive", "E_max", "E_mean", "F_adaptive", "F_max", "MAE"}
    assert out["S"] == pytest.approx(1.0, abs=1e-12)
    assert out["E_adaptive"] == pytest.approx(1.0, abs=1e-12)
    assert out["E_max"] == pytest.approx(1.0, abs=1e-12)
    assert out["F_adaptive"] == pytest.approx(1.0) and out["F_max"] == pytest.approx(1.0)
    assert out["MAE"] == 0.0
    assert all(isinstance(v, float) for v in out.values())


# slow, loop-based versions written from the papers' formulas (and Fan's MATLAB code)


def slow_s_measure(sal, gt, alpha=0.5):
    h, w = gt.shape
    n = h * w
    fg = [sal[i, j] for i in range(h) for j in range(w) if gt[i, j]]
    bg = [1 - sal[i, j] for i in range(h) for j in range(w) if not gt[i, j]]
    y = len(fg) / n
    if y == 0:
        return 1 - sal.sum() / n
    if y == 1:
        return sal.sum() / n

    def obj(vals):
        mu = sum(vals) / len(vals)
        sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        return 2 * mu / (mu * mu + 1 + sd + EPS)

    s_o = y * obj(fg) + (1 - y) * obj(bg)
    # MATLAB: X = round(sum(cols .* (1:w)) / total), round half away from zero
    total = len(fg)
    x_c = math.floor(sum(j + 1 for i in range(h) for j in range(w) if gt[i, j]) / total + 0.5)
    y_c = math.floor(sum(i + 1 for i in range(h) for j in range(w) if gt[i, j]) / total + 0.5)

    def ssim(r0, r1, c0, c1):
        px = [sal[i, j] for i in range(r0, r1) for j in range(c0, c1)]
        gx = [float(gt[i, j]) for i in range(r0, r1) for j in range(c0, c1)]
        m = len(px)
        mx, my = sum(px) / m, sum(gx) / m
        vx = sum((v - mx) ** 2 for v in px) / (m - 1 + EPS)
        vy = sum((v - my) ** 2 for v in gx) / (m - 1 + EPS)
        cxy = sum((a - mx) * (b - my) for a, b in zip(px, gx)) / (m - 1 + EPS)
        a = 4 * mx * my * cxy
        b = (mx * mx + my * my) * (vx + vy)
        return a / (b + EPS) if a != 0 else (1.0 if b == 0 else 0.0)

    s_r = 0.0
    for r0, r1, c0, c1 in ((0, y_c, 0, x_c), (0, y_c, x_c, w), (y_c, h, 0, x_c), (y_c, h, x_c, w)):
        if r1 > r0 and c1 > c0:
            s_r += (r1 - r0) * (c1 - c0) / n * ssim(r0, r1, c0, c1)
    return max(0.0, alpha * s_o + (1 - alpha) * s_r)


def slow_e_curve(sal, gt):
    g = gt.astype(float)
    out = []
    for t in range(256):
        fm = (np.floor(sal * 255) >= t).astype(float)
        if g.sum() == 0:
            phi = 1 - fm
        elif g.sum() == g.size:
            phi = fm
        else:
            a = fm - fm.mean()
            b = g - g.mean()
            xi = 2 * a * b / (a * a + b * b + EPS)  # alignment matrix
            phi = (xi + 1) ** 2 / 4  # enhanced alignment matrix
        out.append(phi.sum() / g.size)
    return np.array(out)


def slow_f_curve(sal, gt, b2=0.3):
    out = []
    for t in range(256):
        pm = np.floor(sal * 255) >= t
        tp = np.sum(pm & gt)
        p = tp / pm.sum() if pm.sum() else 0.0
        r = tp / gt.sum() if gt.sum() else 0.0
        out.append((1 + b2) * p * r / (b2 * p + r) if p + r else 0.0)
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_saliency_matches_slow_reference(seed):
    gt = blob((14, 17), seed, sigma=1.5, level=0.6)
    sal = smooth_map(gt, seed)
    assert M.s_measure(sal, gt) == pytest.approx(slow_s_measure(sal, gt), abs=1e-12)
    e = M.e_measure(sal, gt)
    np.testing.assert_allclose(e.curve, slow_e_curve(sal, gt), atol=1e-12)
    assert e.maximum == pytest.approx(e.curve.max()) and e.mean == pytest.approx(e.curve.mean())
    np.testing.assert_allclose(M.f_measure(sal, gt).curve, slow_f_curve(sal, gt), atol=1e-12)


def test_s_measure_centroid_rounding_and_edge_quadrants():
    rng = np.random.default_rng(7)
    sal = rng.random((6, 7))
    gt = np.zeros((6, 7), bool)
    gt[1:3, 1:3] = True  # centroid (2.5, 2.5) 1-based: MATLAB rounds half up to 3, numpy to 2
    assert M.s_measure(sal, gt) == pytest.approx(slow_s_measure(sal, gt), abs=1e-12)
    gt = np.zeros((6, 7), bool)
    gt[:, -1] = True  # centroid on the last column: the right quadrants are empty
    s = M.s_measure(sal, gt)
    assert math.isfinite(s) and s == pytest.approx(slow_s_measure(sal, gt), abs=1e-12)
    gt = np.zeros((6, 7), bool)
    gt[2, 3] = True  # a single foreground pixel: its std is 0, as in MATLAB
    assert M.s_measure(sal, gt) == pytest.approx(slow_s_measure(sal, gt), abs=1e-12)


def test_saliency_3d():
    gt = blob((5, 8, 9), 4)
    sal = smooth_map(gt, 4)
    out = M.saliency_metrics(sal, gt)
    assert math.isnan(out["S"])  # the S-measure is 2D only
    np.testing.assert_allclose(M.e_measure(sal, gt).curve, slow_e_curve(sal, gt), atol=1e-12)
    np.testing.assert_allclose(M.f_measure(sal, gt).curve, slow_f_curve(sal, gt), atol=1e-12)
    assert out["E_max"] == pytest.approx(slow_e_curve(sal, gt).max())
    assert out["MAE"] == pytest.approx(np.abs(sal - gt).mean())


# --------------------------------------------------------------------------- PySODMetrics


def sod_cases():
    """Ten seeded (sal, gt) pairs: random blobs, maps made of other blobs, 8-bit and binary maps, edge cases."""
    cases = []
    for seed in range(8):
        shape = (40 + 3 * seed, 52 - 2 * seed)
        gt = blob(shape, seed, sigma=3.0, level=0.55 + 0.04 * seed)
        if seed % 4 == 0:  # blurred blobs under noise
            noise = np.random.default_rng(seed).random(shape)
            sal = np.clip(0.7 * ndimage.gaussian_filter(gt.astype(float), 2.0) + 0.3 * noise, 0, 1)
        elif seed % 4 == 1:  # a map of other blobs, partly overlapping
            other = ndimage.gaussian_filter(blob(shape, seed + 100, sigma=3.0).astype(float), 2.0)
            sal = np.clip(0.6 * other + 0.4 * ndimage.gaussian_filter(gt.astype(float), 1.0), 0, 1)
        elif seed % 4 == 2:  # an 8-bit map, as read from a PNG
            sal = np.round(smooth_map(gt, seed) * 255) / 255
        else:  # a binary prediction: the blobs shifted
            sal = np.roll(gt, (2, -3), axis=(0, 1)).astype(float)
        cases.append((sal, gt))
    rng = np.random.default_rng(99)
    cases.append((rng.random((30, 30)) * 0.4, np.zeros((30, 30), bool)))  # no foreground
    cases.append((rng.random((30, 30)), np.ones((30, 30), bool)))  # all foreground
    return cases


def _centroid_tie(gt):
    """True when a gt centroid coordinate is exactly k + 0.5 (0-based) with k even.

    hitlseg rounds half away from zero (MATLAB ``round``), PySODMetrics uses ``np.round``
    (half to even): there the S-measure quadrants differ by one row or column.
    """
    if not gt.any() or gt.all():
        return False
    means = np.argwhere(gt).mean(axis=0)
    return any(m % 1 == 0.5 and int(m) % 2 == 0 for m in means)


def test_saliency_metrics_agree_with_pysodmetrics():
    """S, E (adaptive, mean, max), F (adaptive, max) and MAE against PySODMetrics on ten maps.

    Known difference: PySODMetrics (like Fan et al.'s MATLAB code) divides the enhanced-alignment
    sum by ``N - 1``, hitlseg by ``N`` (as in the paper), so its E values are hitlseg's times
    ``N / (N - 1)``; they are compared after that correction. PySODMetrics' threshold curves run
    from threshold 255 down to 0, hitlseg's from 0 up to 255.
    """
    sod = pytest.importorskip("py_sod_metrics")
    for sal, gt in sod_cases():
        ours = M.saliency_metrics(sal, gt)
        e_ours, f_ours = M.e_measure(sal, gt), M.f_measure(sal, gt)
        n = gt.size

        s_ref = sod.Smeasure(alpha=0.5)
        e_ref = sod.Emeasure()
        f_ref = sod.FmeasureV2({"f": sod.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=0.3)})
        mae_ref = sod.MAE()
        for evaluator in (s_ref, e_ref, f_ref, mae_ref):
            evaluator.step(sal.astype(np.float64), gt, normalize=False)

        if not _centroid_tie(gt):
            assert ours["S"] == pytest.approx(float(s_ref.get_results()["sm"]), abs=1e-10)
        e = e_ref.get_results()["em"]
        scale = n / (n - 1)
        assert ours["E_adaptive"] * scale == pytest.approx(float(e["adp"]), abs=1e-10)
        np.testing.assert_allclose(e_ours.curve * scale, np.asarray(e["curve"])[::-1], atol=1e-10)
        assert ours["E_mean"] * scale == pytest.approx(float(np.mean(e["curve"])), abs=1e-10)
        assert ours["E_max"] * scale == pytest.approx(float(np.max(e["curve"])), abs=1e-10)
        # without the correction the two differ by E / (N - 1): small, but more than rounding
        assert abs(ours["E_mean"] - float(np.mean(e["curve"]))) == pytest.approx(ours["E_mean"] / (n - 1), rel=1e-6)
        f = f_ref.get_results()["f"]
        assert ours["F_adaptive"] == pytest.approx(float(f["adaptive"]), abs=1e-10)
        np.testing.assert_allclose(f_ours.curve, np.asarray(f["dynamic"])[::-1], atol=1e-10)
        assert ours["F_max"] == pytest.approx(float(np.max(f["dynamic"])), abs=1e-10)
        assert ours["MAE"] == pytest.approx(float(mae_ref.get_results()["mae"]), abs=1e-12)


# --------------------------------------------------------------------------- bad input

M2 = np.zeros((4, 4), np.int32)
S2 = np.full((4, 4), 0.5)
G2 = np.zeros((4, 4), bool)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: M.dice_per_class(M2, np.zeros((4, 5), int)), ["shape", "pred", "truth"]),
        (lambda: M.dice_score(M2.astype(float), M2), ["pred", "integer"]),
        (lambda: M.iou_score(M2, M2.astype(np.float32)), ["truth", "integer"]),
        (lambda: M.hd95(np.zeros(4, int), np.zeros(4, int)), ["pred", "2D"]),
        (lambda: M.mean_dice(M2, np.zeros((1, 2, 3, 4), int)), ["truth", "4D"]),
        (lambda: M.dice_per_class(M2 - 1, M2), ["pred", "negative"]),
        (lambda: M.dice_per_class(M2, M2, labels=[0]), ["labels"]),
        (lambda: M.iou_per_class(M2, M2, labels=[1.5]), ["labels"]),
        (lambda: M.iou_per_class(M2, M2, labels=[]), ["labels"]),
        (lambda: M.evaluate_masks(M2, M2, labels=3), ["labels"]),
        (lambda: M.hd95(M2, M2, spacing=(1, 2, 3)), ["spacing"]),
        (lambda: M.hd95_per_class(M2, M2, spacing=(1, -2)), ["spacing"]),
        (lambda: M.evaluate_masks(M2, M2, spacing=(1, float("nan"))), ["spacing"]),
        (lambda: M.brats_regions(np.full((2, 2), 5)), ["mask", "5"]),
        (lambda: M.brats_dice(M2, np.full((4, 4), 7)), ["truth", "7"]),
        (lambda: M.mae(S2 * 3, G2), ["sal", "[0, 1]"]),
        (lambda: M.f_measure(np.where(np.eye(4, dtype=bool), np.nan, 0.5), G2), ["sal", "NaN"]),
        (lambda: M.e_measure(S2, np.full((4, 4), 2)), ["gt", "binary"]),
        (lambda: M.saliency_metrics(S2, np.zeros((4, 3), bool)), ["shape", "sal", "gt"]),
        (lambda: M.mae(np.zeros(4), np.zeros(4)), ["sal", "2D"]),
        (lambda: M.s_measure(np.zeros((2, 4, 4)), np.zeros((2, 4, 4))), ["sal", "2D"]),
        (lambda: M.s_measure(S2, G2, alpha=1.5), ["alpha"]),
        (lambda: M.f_measure(S2, G2, beta2=0), ["beta2"]),
        (lambda: M.mae(S2.astype(complex), G2), ["sal", "dtype"]),
    ],
)
def test_bad_input_raises_input_error(call, words):
    with pytest.raises(InputError) as info:
        call()
    assert isinstance(info.value, ValueError)
    for word in words:
        assert word in str(info.value)
