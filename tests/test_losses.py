"""Partial-label loss and the regularisers (dense CRF, normalized cut) against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hitlseg.errors import InputError
from hitlseg.nets.losses import (affinity_products, balanced_class_weights, dense_affinity, dense_crf_loss,
                                 normalized_cut_loss, partial_segmentation_loss)


def _probs(shape, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn((1, k) + shape, generator=g, dtype=torch.float64), 1)


def _image(shape, c=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand((1, c) + shape, generator=g, dtype=torch.float64)
    image[..., : shape[-1] // 2] += 0.5  # an edge, so the colour kernel matters
    return image


def _brute(probs, image, sigma_xy, sigma_color):
    w = dense_affinity(image[0], sigma_xy=sigma_xy, sigma_color=sigma_color)
    s = probs[0].reshape(probs.shape[1], -1).to(torch.float64)
    cut = torch.stack([s[k] @ w @ (1 - s[k]) for k in range(s.shape[0])])
    assoc = torch.stack([w.sum(1) @ s[k] for k in range(s.shape[0])])
    return w, cut, assoc


def test_partial_loss_gives_no_gradient_to_unlabelled_pixels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 9, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 9), generator=g)
    unlabelled = torch.rand(2, 8, 9, generator=g) < 0.7
    target[unlabelled] = -1
    loss = partial_segmentation_loss(logits, target, torch.tensor([0.5, 2.0, 1.0]))
    loss.backward()
    grad = logits.grad.abs().sum(1)
    assert float(grad[unlabelled].max()) == 0.0
    assert float(grad[~unlabelled].min()) > 0.0


def test_partial_loss_equals_full_loss_on_the_labelled_pixels_only():
    from hitlseg.nets import segmentation_loss

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 6, 6, generator=g)
    target = torch.randint(0, 3, (1, 6, 6), generator=g)
    partial = target.clone()
    partial[:, :, 3:] = -1
    # the same pixels, laid out as a smaller image
    expected = segmentation_loss(logits[..., :3], target[..., :3])
    assert torch.allclose(segmentation_loss(logits, partial), expected, atol=1e-6)


def test_partial_loss_without_labels_is_zero_with_a_graph():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    loss = partial_segmentation_loss(logits, torch.full((1, 4, 4), -1))
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(logits.grad.abs().sum()) == 0.0


def test_balanced_class_weights():
    weights = balanced_class_weights([900, 100, 0])
    assert weights[1] > weights[0] and float(weights[2]) == 1.0
    counts = torch.tensor([900.0, 100.0])
    assert float((weights[:2] * counts).sum() / counts.sum()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(InputError, match="counts"):
        balanced_class_weights([-1, 2])


@pytest.mark.parametrize("shape", [(7, 9), (4, 5, 6)])
def test_regularisers_match_brute_force_with_a_full_window(shape):
    probs, image = _probs(shape), _image(shape)
    sigma_xy, sigma_color = 2.0, 0.3
    options = dict(sigma_xy=sigma_xy, sigma_color=sigma_color, scale=1.0, truncate=100.0)
    _, cut, assoc = _brute(probs, image, sigma_xy, sigma_color)
    # the library normalises W by the sum of the spatial Gaussian over the window (the same
    # constant for every pixel of a window covering the image): undo it for the comparison
    offsets = np.stack(np.meshgrid(*(np.arange(-(n - 1), n) for n in shape), indexing="ij"), -1).reshape(-1, len(shape))
    offsets = offsets[np.any(offsets != 0, axis=1)]
    total = float(np.exp(-(offsets**2).sum(1) / (2 * sigma_xy**2)).sum())
    n = int(np.prod(shape))
    crf = dense_crf_loss(probs, image, **options)
    assert float(crf) == pytest.approx(float(cut.sum()) / total / n, rel=1e-9)
    ncut = normalized_cut_loss(probs, image, **options)
    assert float(ncut) == pytest.approx(float((cut / assoc).sum()), rel=1e-9)


def test_affinity_products_equal_the_dense_matrix_products():
    shape = (6, 7)
    probs, image = _probs(shape, k=2), _image(shape)
    s, ws, degree = affinity_products(probs, image, sigma_xy=1.5, sigma_color=0.4, scale=1.0, truncate=100.0, normalize=False)
    w, _, _ = _brute(probs, image, 1.5, 0.4)
    flat = probs[0].reshape(2, -1)
    np.testing.assert_allclose(ws[0].reshape(2, -1).numpy(), (w @ flat.T).T.numpy(), rtol=1e-10)
    np.testing.assert_allclose(degree[0, 0].reshape(-1).numpy(), w.sum(1).numpy(), rtol=1e-10)


def test_approximation_error_of_the_default_kernel_is_small():
    """Truncation at 3 sigma and 2x downsampling against the exact dense kernel (measured here).

    On a 32x32 image with a sharp edge and a smooth soft segmentation, sigma_xy 5, measured:
    truncation alone changes the dense-CRF cut by 0.34% and the normalized cut by 0.005%; with
    the default 2x downsampling the losses differ from the exact ones by 0.72% and 0.56%
    (4x downsampling: 0.46% and 2.9%). Asserted with some margin.
    """
    shape = (32, 32)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    image = torch.stack([(xx > 15).double(), (yy > 20).double() * 0.5, torch.zeros_like(xx).double()])[None]
    logit = (xx - 14.0) / 3.0 + (yy - 16.0) / 8.0
    probs = torch.softmax(torch.stack([logit, -logit, torch.zeros_like(logit)]).double()[None], 1)
    kwargs = dict(sigma_xy=5.0, sigma_color=0.2)
    exact_crf = float(dense_crf_loss(probs, image, scale=1.0, truncate=100.0, **kwargs))
    exact_ncut = float(normalized_cut_loss(probs, image, scale=1.0, truncate=100.0, **kwargs))
    # the exact value is normalised by the full-window Gaussian, the truncated one by its own
    # window; compare the unnormalised cuts for the CRF
    full = affinity_products(probs, image, scale=1.0, truncate=100.0, normalize=False, **kwargs)
    truncated = affinity_products(probs, image, scale=1.0, truncate=3.0, normalize=False, **kwargs)

    def cut(products):
        s, ws, d = products
        return float((s * d).sum() - (s * ws).sum())

    assert abs(cut(truncated) - cut(full)) / cut(full) < 0.005
    assert abs(float(normalized_cut_loss(probs, image, scale=1.0, **kwargs)) - exact_ncut) / exact_ncut < 0.001
    down_crf = float(dense_crf_loss(probs, image, scale=0.5, **kwargs))
    down_ncut = float(normalized_cut_loss(probs, image, scale=0.5, **kwargs))
    assert abs(down_crf - exact_crf) / exact_crf < 0.02
    assert abs(down_ncut - exact_ncut) / exact_ncut < 0.02


def test_regularisers_prefer_segmentations_that_follow_edges():
    shape = (16, 16)
    image = torch.zeros((1, 1) + shape, dtype=torch.float64)
    image[..., 8:] = 1.0
    along = torch.zeros((1, 2) + shape, dtype=torch.float64)
    along[:, 0, :, :8], along[:, 1, :, 8:] = 1, 1
    across = torch.zeros_like(along)
    across[:, 0, :8], across[:, 1, 8:] = 1, 1
    for loss in (dense_crf_loss, normalized_cut_loss):
        assert float(loss(along, image, scale=1.0)) < float(loss(across, image, scale=1.0))


def test_regulariser_gradients_reach_every_pixel_and_padding_is_excluded():
    shape = (12, 12)
    logits = torch.randn((1, 2) + shape, dtype=torch.float64, requires_grad=True)
    image = _image(shape)
    valid = torch.ones((1,) + shape, dtype=torch.bool)
    valid[..., 9:] = False
    loss = dense_crf_loss(torch.softmax(logits, 1), image, scale=1.0, valid=valid)
    loss.backward()
    grad = logits.grad.abs().sum(1)[0]
    assert float(grad[:, :9].min()) > 0 and float(grad[:, 9:].max()) == 0.0
    changed = image.clone()
    changed[..., 9:] = 7.0  # what lies in the padding does not matter
    assert float(dense_crf_loss(torch.softmax(logits, 1), changed, scale=1.0, valid=valid)) == pytest.approx(float(loss))


@pytest.mark.parametrize("bad, match", [({"sigma_xy": 0}, "sigma_xy"), ({"sigma_color": -1}, "sigma_color"),
                                        ({"scale": 1.5}, "scale"), ({"scale": 0}, "scale")])
def test_regulariser_arguments_are_checked(bad, match):
    with pytest.raises(InputError, match=match):
        dense_crf_loss(_probs((5, 5)), _image((5, 5)), **bad)
    with pytest.raises(InputError, match="spatial"):
        normalized_cut_loss(_probs((5, 5)), _image((5, 6)))


def test_person_labels_weigh_more_than_machine_labels():
    """(image, mask, person) samples: the person's pixels get ``person_weight`` in the cross-entropy."""
    import torch.nn.functional as F

    from hitlseg.nets import TrainConfig
    from hitlseg.nets.train import PERSON_FLAG, _check_samples, training_loss

    rng = np.random.default_rng(0)
    image = rng.random((1, 6, 6)).astype(np.float32)
    mask = rng.integers(0, 2, (6, 6))
    person = np.zeros((6, 6), bool)
    person[:2] = True
    ((_, target),) = _check_samples([(image, mask, person)], 2, 1, 1, "training")
    assert (target[:2] >= PERSON_FLAG).all() and (target[2:] < PERSON_FLAG).all()
    logits = torch.randn(1, 2, 6, 6)
    y = torch.from_numpy(target)[None]
    weighted, _ = training_loss(logits, y, torch.from_numpy(image)[None], TrainConfig(person_weight=5.0))
    plain, _ = training_loss(logits, torch.from_numpy(mask)[None], torch.from_numpy(image)[None], TrainConfig())
    ce = F.cross_entropy(logits, torch.from_numpy(mask)[None], reduction="none")[0]
    w = torch.where(torch.from_numpy(person), 5.0, 1.0)
    expected_ce = float((ce * w).sum() / w.sum())
    plain_ce = float(ce.mean())
    assert float(weighted) - float(plain) == pytest.approx(0.5 * (expected_ce - plain_ce), abs=1e-5)
    with pytest.raises(InputError, match="person_weight"):
        TrainConfig(person_weight=0)
