"""FLIM: architecture spec, patch extraction, k-means, fitting, encoder, decoders, persistence, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hitlseg.errors import InputError
from hitlseg.flim import ArchSpec, FLIMModel, LayerSpec, default_arch, fit_encoder, read_arch
from hitlseg.flim import ops
from hitlseg.flim.kmeans import batched_kmeans
from hitlseg.metrics import dice_score
from hitlseg.robot import Robot
from tests.helpers import disk_mask, make_2d_dataset, rgb_from_mask

SMALL = ArchSpec((
    LayerSpec(kernel_size=3, kernels_per_marker=4, out_channels=8, pool="max", pool_size=3, pool_stride=2),
    LayerSpec(kernel_size=3, dilation=2, kernels_per_marker=4, out_channels=8, pool="avg", pool_size=3, pool_stride=1),
))


def lab_image(mask, seed=0):
    from hitlseg.io.color import rgb_to_normalized_lab

    return rgb_to_normalized_lab(np.moveaxis(rgb_from_mask(mask, seed), -1, 0) / 255.0)


@pytest.fixture(scope="module")
def disks():
    """Four 2D images of two-class disks with robot markers."""
    robot = Robot(seed=1)
    images, masks, markers = [], [], []
    for i in range(4):
        rng = np.random.default_rng(i)
        centers = [tuple(rng.integers(14, 50, 2)) for _ in range(2)]
        mask = disk_mask((64, 64), centers, radius=8, labels=[1, 1])
        images.append(lab_image(mask, i))
        masks.append(mask)
        markers.append(robot.mark(mask, key=i))
    return images, masks, markers


# -- spec ----------------------------------------------------------------------------------------

def test_arch_json_round_trip(tmp_path):
    arch = default_arch()
    path = arch.save(tmp_path / "arch.json")
    assert read_arch(path) == arch
    assert arch.total_stride == 4


def test_reads_flim_community_arch(tmp_path):
    community = {
        "stdev_factor": 0.05, "nlayers": 2,
        "layer1": {"conv": {"kernel_size": [5, 5, 0], "nkernels_per_marker": 3, "dilation_rate": [1, 1, 0],
                            "nkernels_per_image": 100, "noutput_channels": 16},
                   "relu": True, "pooling": {"type": "avg_pool", "size": [3, 3, 0], "stride": 2}},
        "layer2": {"conv": {"kernel_size": [3, 3, 0], "nkernels_per_marker": 2, "dilation_rate": [2, 2, 0],
                            "nkernels_per_image": 100, "noutput_channels": 8},
                   "relu": False, "pooling": {"type": "max_pool", "size": [3, 3, 0], "stride": 1}},
    }
    (tmp_path / "arch.json").write_text(json.dumps(community))
    arch = read_arch(tmp_path / "arch.json")
    assert arch.stdev_factor == 0.05
    assert arch.layers[0] == LayerSpec(5, 1, 3, 16, True, "avg", 3, 2)
    assert arch.layers[1] == LayerSpec(3, 2, 2, 8, False, "max", 3, 1)


@pytest.mark.parametrize("bad", [{"kernel_size": 4}, {"out_channels": 0}, {"pool": "median"}])
def test_bad_layer_spec(bad):
    with pytest.raises(InputError, match=next(iter(bad))):
        LayerSpec(**bad)


def test_bad_arch_file(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(InputError, match="a.json"):
        read_arch(tmp_path / "a.json")
    (tmp_path / "b.json").write_text('{"layers": [{"kernel_size": "big"}]}')
    with pytest.raises(InputError, match="b.json"):
        read_arch(tmp_path / "b.json")


# -- patches and k-means ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape, dilation", [((2, 12, 15), 1), ((2, 12, 15), 2), ((2, 7, 9, 8), 2)])
def test_patch_dot_kernel_equals_convolution(shape, dilation):
    rng = np.random.default_rng(0)
    features = torch.from_numpy(rng.normal(size=shape).astype(np.float32))
    spatial = shape[1:]
    coords = np.stack([rng.integers(0, s, 6) for s in spatial], 1)
    coords[0] = 0  # a border pixel, where reflect padding matters
    patches = ops.extract_patches(features, coords, 3, dilation)
    weight = patches.reshape((6, shape[0]) + (3,) * len(spatial))
    out = ops.conv(features[None], weight, None, dilation)[0]
    at_coords = out[(slice(None),) + tuple(torch.from_numpy(coords.T))]
    expected = patches @ patches.T  # kernel j at pixel i
    assert torch.allclose(at_coords.T, expected, atol=1e-4)


def test_kernel_larger_than_image():
    with pytest.raises(InputError, match="kernel"):
        ops.extract_patches(torch.zeros(1, 3, 3), np.array([[1, 1]]), 9, 1)


def test_batched_kmeans_recovers_clusters_and_is_seeded():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [10, 0], [0, 10]], np.float32)
    groups = [torch.from_numpy((centers[rng.integers(0, 3, 200)] + rng.normal(0, 0.5, (200, 2))).astype(np.float32))
              for _ in range(3)]
    groups.append(torch.ones(2, 2))  # fewer points than clusters: returned as they are
    found = batched_kmeans(groups, 3, seed=5)
    for result in found[:3]:
        distances = np.linalg.norm(centers[:, None] - result.numpy()[None], axis=-1)
        assert distances.min(1).max() < 0.3  # every true centre found
        assert sorted(distances.argmin(1)) == [0, 1, 2]
    assert torch.equal(found[3], groups[3])
    again = batched_kmeans(groups, 3, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(found, again))


def test_downsample_markers_drops_conflicts():
    markers = np.zeros((4, 4), np.uint8)
    markers[0, 0], markers[0, 1] = 1, 2  # same target at stride 2: ambiguous
    markers[2, 2] = 2
    out = ops.downsample_markers(markers, (2, 2), 2)
    assert out[0, 0] == 0 and out[1, 1] == 2


# -- fitting and the encoder ----------------------------------------------------------------------

def test_fit_is_deterministic_with_unit_norm_kernels(disks):
    images, _, markers = disks
    a = fit_encoder(images, markers, SMALL, seed=3)
    b = fit_encoder(images, markers, SMALL, seed=3)
    for la, lb in zip(a.layers, b.layers):
        assert torch.equal(la.weight, lb.weight) and torch.equal(la.kernel_classes, lb.kernel_classes)
        norms = la.weight.flatten(1).norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
        assert set(la.kernel_classes.tolist()) <= {0, 1}
    assert set(a.layers[0].kernel_classes.tolist()) == {0, 1}
    assert a.out_channels == [8, 8] and a.strides == [2, 2]


def test_normalisation_comes_from_marked_pixels(disks):
    images, _, markers = disks
    encoder = fit_encoder(images, markers, SMALL)
    values = np.concatenate([im[:, m > 0] for im, m in zip(images, markers)], axis=1)
    assert np.allclose(encoder.layers[0].mean.numpy(), values.mean(1), atol=1e-5)
    assert np.allclose(encoder.layers[0].std.numpy(), values.std(1) + SMALL.stdev_factor, atol=1e-5)


def test_folded_encoder_gives_identical_output(disks):
    images, _, markers = disks
    encoder = fit_encoder(images, markers, SMALL)
    x = torch.from_numpy(np.stack(images[:2]))
    assert torch.allclose(encoder(x), encoder.folded()(x), atol=1e-4)


def test_encoder_checks_channels(disks):
    images, _, markers = disks
    encoder = fit_encoder(images, markers, SMALL)
    with pytest.raises(InputError, match="3-channel"):
        encoder(torch.zeros(1, 1, 32, 32))


def test_3d_fit_and_predict():
    zz, yy, xx = np.mgrid[:20, :24, :24]
    mask = (((zz - 10) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2) <= 36).astype(np.uint8)
    rng = np.random.default_rng(0)
    image = (mask * 0.6 + 0.2 + rng.normal(0, 0.05, mask.shape)).astype(np.float32)[None]
    markers = Robot(seed=0).mark(mask)
    model = FLIMModel.fit([image], [markers], SMALL)
    assert model.encoder.ndim == 3
    assert model.decoder == "labels" and set(model.decoder_scores) == {"labels"}  # auto keeps labels in 3D
    only_background = np.where(markers == 1, 1, 0).astype(np.uint8)
    assert FLIMModel.fit([image], [only_background], SMALL).decoder == "weights"  # nothing else applies
    result = model.predict(image)
    assert result.saliency.shape == (1, 20, 24, 24) and result.mask.shape == mask.shape
    assert dice_score(result.mask, mask) > 0.8


@pytest.mark.parametrize("rule", ["weights", "labels", "mean", "gauss"])
def test_decoders_segment_disks(disks, rule):
    images, masks, markers = disks
    model = FLIMModel.fit(images[:2], markers[:2], SMALL)
    for image, mask in zip(images[2:], masks[2:]):
        result = model.predict(image, rule)
        assert result.saliency.shape == (1, 64, 64)
        assert 0 <= result.saliency.min() and result.saliency.max() <= 1
        assert dice_score(result.mask, mask) > 0.8


def test_multiclass_markers_give_one_map_per_class():
    mask = disk_mask((64, 64), ((20, 20), (44, 44)), radius=9, labels=[1, 2])
    image = lab_image(mask)
    model = FLIMModel.fit([image], [Robot(seed=0).mark(mask)], SMALL)
    assert model.n_classes == 2
    result = model.predict(image, "labels")
    assert result.saliency.shape == (2, 64, 64)
    assert set(np.unique(result.mask)) <= {0, 1, 2}
    assert dice_score(result.mask, mask) > 0.8
    assert set(np.unique(result.mask[mask > 0])) == {0, 1, 2} - ({0} if (result.mask[mask > 0] > 0).all() else set())
    assert (result.mask == 2).sum() > 20 and (result.mask == 1).sum() > 20


# -- bad input ------------------------------------------------------------------------------------

def test_bad_markers(disks):
    images, masks, markers = disks
    with pytest.raises(InputError, match="no marked pixel"):
        fit_encoder(images[:1], [np.zeros((64, 64), np.uint8)], SMALL)
    with pytest.raises(InputError, match="shape"):
        fit_encoder(images[:1], [np.zeros((60, 64), np.uint8)], SMALL, names=["cell-7"])
    with pytest.raises(InputError, match="2 marker arrays"):
        fit_encoder(images[:1], markers[:2], SMALL)
    only_background = np.where(markers[0] == 1, 1, 0).astype(np.uint8)
    model = FLIMModel.fit(images[:1], [only_background], SMALL)
    with pytest.raises(InputError, match="object markers"):
        model.predict(images[1], "labels")
    model.predict(images[1], "weights")  # needs no kernel classes


def test_marker_recall_pools_pixels_per_class():
    from hitlseg.flim.decoders import marker_recall

    markers = [np.array([[1, 1, 2, 2]]), np.array([[0, 1, 1, 0]])]
    masks = [np.array([[0, 1, 1, 0]]), np.array([[0, 0, 0, 0]])]
    # background marks: 4 pixels, 3 labelled 0; object marks: 2 pixels, 1 labelled 1
    assert marker_recall(masks, markers) == pytest.approx((3 / 4 + 1 / 2) / 2)
    with pytest.raises(InputError, match="no marked pixel"):
        marker_recall(masks, [np.zeros((1, 4), np.uint8)] * 2)


def test_auto_decoder_is_the_best_on_the_markers(disks, tmp_path):
    """``auto`` stores the rule of highest marker recall, and the scores by which it was chosen."""
    from hitlseg.flim.decoders import marker_recall

    images, _, markers = disks
    model = FLIMModel.fit(images[:2], markers[:2], SMALL)  # the default is auto
    assert set(model.decoder_scores) == {"weights", "labels", "mean", "gauss"}  # one object class
    assert model.decoder == max(model.decoder_scores, key=model.decoder_scores.get)
    recall = marker_recall([model.predict(i, model.decoder).mask for i in images[:2]], markers[:2])
    assert recall == pytest.approx(model.decoder_scores[model.decoder], abs=1e-6)
    assert np.array_equal(model.predict(images[3]).mask, model.predict(images[3], "auto").mask)
    loaded = FLIMModel.load(model.save(tmp_path / "auto.pt"))
    assert loaded.decoder == model.decoder and loaded.decoder_scores == model.decoder_scores
    only_background = np.where(markers[0] == 1, 1, 0).astype(np.uint8)
    assert FLIMModel.fit(images[:1], [only_background], SMALL).decoder == "weights"  # the only rule that applies
    fixed = FLIMModel.fit(images[:2], markers[:2], SMALL, decoder="gauss")
    assert fixed.decoder == "gauss" and fixed.decoder_scores == {}
    with pytest.raises(InputError, match="unknown rule 'best'"):
        FLIMModel.fit(images[:2], markers[:2], SMALL, decoder="best")


def test_multiclass_auto_leaves_out_the_one_map_rule():
    train = disk_mask((64, 64), ((20, 20), (44, 44)), radius=10, labels=[1, 2])
    model = FLIMModel.fit([two_colour_image(train)], [Robot(seed=0).mark(train)], SMALL)
    assert model.n_classes == 2 and "weights" not in model.decoder_scores and model.decoder != "weights"


def test_model_files_without_decoder_scores_still_load(disks):
    images, _, markers = disks
    state = FLIMModel.fit(images[:1], markers[:1], SMALL, decoder="labels").to_state()
    del state["decoder_scores"]
    assert FLIMModel.from_state(state).decoder_scores == {}
    state["decoder_scores"] = {"magic": 1.0}
    with pytest.raises(InputError, match="decoder_scores"):
        FLIMModel.from_state(state)


def test_kernel_larger_than_image_is_a_clear_error(disks):
    images, _, markers = disks
    arch = ArchSpec((LayerSpec(kernel_size=5, dilation=40, out_channels=4),))
    with pytest.raises(InputError, match="kernel"):
        fit_encoder(images[:1], markers[:1], arch)


# -- persistence and CLI --------------------------------------------------------------------------

def test_save_load_gives_identical_predictions(disks, tmp_path):
    images, _, markers = disks
    model = FLIMModel.fit(images[:2], markers[:2], SMALL, decoder="mean")
    path = model.save(tmp_path / "model.pt")
    loaded = FLIMModel.load(path)
    assert loaded.decoder == "mean" and loaded.encoder.arch == SMALL
    for rule in ("weights", "labels", "mean", "gauss"):
        a, b = model.predict(images[3], rule), loaded.predict(images[3], rule)
        assert np.array_equal(a.saliency, b.saliency) and np.array_equal(a.mask, b.mask)
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(InputError, match="junk.pt"):
        FLIMModel.load(tmp_path / "junk.pt")


def test_cli_fit_and_predict(tmp_path, capsys):
    from hitlseg.cli import main
    from hitlseg.io import read_mask, write_markers_text

    root = make_2d_dataset(tmp_path / "ds", n=4)
    (root / "markers").mkdir()
    robot = Robot(seed=0)
    for name in ("img00", "img01"):
        mask, _ = read_mask(root / "masks" / f"{name}.png")
        write_markers_text(root / "markers" / f"{name}-seeds.txt", robot.mark(mask))
    arch = SMALL.save(tmp_path / "arch.json")
    assert main(["flim", "fit", "--images", str(root), "--arch", str(arch), "--out", str(tmp_path / "m.pt"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == ["img00", "img01"] and summary["classes"] == 2
    assert main(["flim", "predict", "--model", str(tmp_path / "m.pt"), "--images", str(root / "images"),
                 "--out", str(tmp_path / "pred"), "--saliency"]) == 0
    capsys.readouterr()
    written = sorted(p.name for p in (tmp_path / "pred").iterdir())
    assert "img03.png" in written and "img03_saliency_class2.png" in written
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(root), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mean"]["mean_dice"] > 0.5


def test_cli_fit_with_predict_writes_what_fit_then_predict_writes(tmp_path, capsys, monkeypatch):
    """Issue 14.2: ``flim fit --predict DIR`` in one process; the fitted images are decoded once."""
    from hitlseg.cli import main
    from hitlseg.dataset import Dataset
    from hitlseg.io import read_mask, write_markers_text

    root = make_2d_dataset(tmp_path / "ds", n=4)
    (root / "markers").mkdir()
    for name in ("img00", "img01"):
        mask, _ = read_mask(root / "masks" / f"{name}.png")
        write_markers_text(root / "markers" / f"{name}-seeds.txt", Robot(seed=0).mark(mask))
    arch = str(SMALL.save(tmp_path / "arch.json"))
    assert main(["flim", "fit", "--images", str(root), "--arch", arch, "--out", str(tmp_path / "a.pt")]) == 0
    assert main(["flim", "predict", "--model", str(tmp_path / "a.pt"), "--images", str(root),
                 "--out", str(tmp_path / "two"), "--saliency"]) == 0
    capsys.readouterr()
    reads = []
    image = Dataset.image
    monkeypatch.setattr(Dataset, "image", lambda self, i: reads.append(i) or image(self, i))
    assert main(["flim", "fit", "--images", str(root), "--arch", arch, "--out", str(tmp_path / "b.pt"),
                 "--predict", str(tmp_path / "one"), "--saliency", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["predictions"] == {"folder": str(tmp_path / "one"), "masks": 4}
    assert sorted(reads) == ["img00", "img01", "img02", "img03"]  # each image decoded once
    one, two = sorted(p.name for p in (tmp_path / "one").iterdir()), sorted(p.name for p in (tmp_path / "two").iterdir())
    assert one == two and "img03_saliency_class2.png" in one
    for name in one:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert main(["flim", "fit", "--images", str(root), "--out", str(tmp_path / "c.pt"), "--saliency"]) == 2
    assert "pass --predict too" in capsys.readouterr().err and not (tmp_path / "c.pt").exists()


def test_cli_fit_without_markers_exits_2(tmp_path):
    from hitlseg.cli import main

    root = make_2d_dataset(tmp_path / "ds", n=2)
    assert main(["flim", "fit", "--images", str(root), "--out", str(tmp_path / "m.pt")]) == 2
    assert not (tmp_path / "m.pt").exists()


# -- real data ------------------------------------------------------------------------------------

@pytest.mark.shared
def test_schisto_human_markers(shared):
    from hitlseg.dataset import Dataset

    dataset = Dataset.from_folder(shared("schisto"))
    marked = [s.id for s in dataset if s.markers_path]
    loaded = {i: dataset.load(i) for i in dataset.ids}
    model = FLIMModel.fit([loaded[i].image for i in marked], [loaded[i].markers for i in marked])
    for rule in ("weights", "labels", "mean"):
        scores = [dice_score(model.predict(loaded[i].image, rule).mask, loaded[i].mask)
                  for i in dataset.ids if i not in marked]
        assert np.mean(scores) > 0.65, rule


def two_colour_image(mask, seed=0):
    """Lab image of ``mask``: pink background, dark-blue class 1, yellow class 2 (clearly apart)."""
    from hitlseg.io.color import rgb_to_normalized_lab

    rng = np.random.default_rng(seed)
    palette = np.array([[230, 180, 190], [60, 20, 140], [220, 200, 40]], dtype=float)
    rgb = np.clip(palette[mask] + rng.normal(0, 8, mask.shape + (3,)), 0, 255).astype(np.uint8)
    return rgb_to_normalized_lab(np.moveaxis(rgb, -1, 0) / 255.0)


@pytest.mark.parametrize("rule", ["labels", "mean", "gauss", "weights"])
def test_decoders_keep_class_identity(rule):
    """Disk A (class-1 colour) is predicted as class 1 and disk B (class-2 colour) as class 2.

    The model is fitted on one image and applied to another where the disks trade places, so the
    class follows the colour that was marked, not the position. ``weights`` has no kernel classes
    and gives one foreground map: both disks are class 1 there.
    """
    train = disk_mask((64, 64), ((20, 20), (44, 44)), radius=10, labels=[1, 2])
    model = FLIMModel.fit([two_colour_image(train)], [Robot(seed=0).mark(train)], SMALL)
    assert model.n_classes == 2
    test = disk_mask((64, 64), ((44, 44), (20, 20)), radius=10, labels=[1, 2])  # A and B swapped
    result = model.predict(two_colour_image(test, seed=1), rule)
    disk_a, disk_b = test == 1, test == 2

    def majority(region):
        return int(np.bincount(result.mask[region], minlength=3).argmax())

    assert (result.mask[test == 0] == 0).mean() > 0.9
    if rule == "weights":
        assert result.saliency.shape == (1, 64, 64) and set(np.unique(result.mask)) <= {0, 1}
        assert majority(disk_a) == 1 and majority(disk_b) == 1
        return
    assert result.saliency.shape == (2, 64, 64)
    assert majority(disk_a) == 1 and majority(disk_b) == 2
    assert (result.mask[disk_a] == 2).mean() < 0.1 and (result.mask[disk_b] == 1).mean() < 0.1
    # saliency map k is the map of class k + 1: it is higher on that class's disk
    assert result.saliency[0][disk_a].mean() > 2 * result.saliency[0][disk_b].mean() + 0.1
    assert result.saliency[1][disk_b].mean() > 2 * result.saliency[1][disk_a].mean() + 0.1
