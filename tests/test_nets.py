"""Segmentation networks: sU-Net (frozen FLIM encoder) and the U-Net baseline, 2D and 3D."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hitlseg.cli import main
from hitlseg.errors import InputError
from hitlseg.flim.fit import fit_encoder
from hitlseg.nets import SegModel, TrainConfig, make_arch, predict, predict_probabilities, segmentation_loss, train
from hitlseg.nets.infer import gaussian_weights, window_starts
from hitlseg.nets.unet import SegNet
from hitlseg.robot import markers_from_mask

SMALL = make_arch((16, 32))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is faster and immune to other processes competing for the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def synthetic(n: int, shape: tuple[int, ...], channels: int = 1, seed: int = 0, classes: int = 2):
    """Bright blobs on noise: class 1 a disk/sphere, class 2 its core (when ``classes`` is 2)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    pairs = []
    for _ in range(n):
        centre = rng.uniform(0.35, 0.65, len(shape)) * np.array(shape)
        radius = rng.uniform(0.2, 0.3) * min(shape)
        distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
        mask = (distance < radius).astype(np.uint8)
        if classes == 2:
            mask[distance < radius / 2] = 2
        image = rng.normal(0.2, 0.08, (channels,) + shape).astype(np.float32)
        for c in range(channels):
            image[c] += 0.3 * (mask > 0) + (0.25 if c % 2 == 0 else -0.1) * (mask == 2)
        pairs.append((image, mask))
    return pairs


def robot_flim(pairs, arch=SMALL):
    markers = [markers_from_mask(m, rng=i) for i, (_, m) in enumerate(pairs)]
    return fit_encoder([p[0] for p in pairs], markers, arch, seed=0)


# ------------------------------------------------------------------------------------ training


def test_training_reduces_loss_and_segments_2d():
    pairs = synthetic(24, (40, 40), channels=2)
    model = SegModel.unet(2, 2, 2, arch=SMALL, seed=0)
    result = train(model, pairs[:20], pairs[20:], TrainConfig(epochs=8, seed=0))
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 8
    assert losses[-1] < 0.7 * losses[0]
    assert result.best_val_dice is not None and result.best_val_dice > 0.8
    assert result.best_val_dice == max(h["val_dice"] for h in result.history)
    # the kept weights are those of the best epoch
    from hitlseg.nets import validation_dice

    assert validation_dice(model.net, pairs[20:], 2) == pytest.approx(result.best_val_dice)


def test_sunet_keeps_flim_encoder_frozen_and_trains_decoder():
    pairs = synthetic(6, (36, 36))
    encoder = robot_flim(pairs[:3])
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    model = SegModel.sunet(encoder, 2, seed=0)
    decoder_before = {k: v.clone() for k, v in model.net.decoder.state_dict().items()}
    trainable = {id(p) for p in model.net.trainable_parameters()}
    assert not trainable & {id(p) for p in encoder.parameters()} and not trainable & {id(b) for b in encoder.buffers()}
    result = train(model, pairs[:5], pairs[5:], TrainConfig(epochs=4))
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    after = model.net.encoder.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key  # bit-identical
    assert not model.net.encoder.training
    assert any(not torch.equal(v, model.net.decoder.state_dict()[k]) for k, v in decoder_before.items())


def test_3d_unet_and_sunet_train_and_predict():
    pairs = synthetic(4, (20, 24, 20), seed=3)
    for model in (SegModel.unet(1, 2, 3, arch=SMALL), SegModel.sunet(robot_flim(pairs[:2]), 2)):
        result = train(model, pairs[:3], pairs[3:], TrainConfig(epochs=3))
        assert result.history[-1]["loss"] < result.history[0]["loss"]
        prediction = model.predict(pairs[3][0])
        assert prediction.probabilities.shape == (3, 20, 24, 20)
        assert prediction.labels.shape == (20, 24, 20)
        np.testing.assert_allclose(prediction.probabilities.sum(0), 1.0, atol=1e-5)


def test_training_is_seeded_and_resume_gives_the_same_weights(tmp_path):
    pairs = synthetic(5, (32, 32), classes=1, seed=1)
    config = TrainConfig(epochs=3, seed=7)

    def weights(model):
        return {k: v.clone() for k, v in model.net.state_dict().items()}

    straight = SegModel.unet(1, 1, 2, arch=SMALL, seed=7)
    expected = train(straight, pairs[:4], pairs[4:], config)
    again = SegModel.unet(1, 1, 2, arch=SMALL, seed=7)
    train(again, pairs[:4], pairs[4:], config)
    checkpoint = tmp_path / "run.ckpt"
    with pytest.raises(_Stop):
        train(SegModel.unet(1, 1, 2, arch=SMALL, seed=7), pairs[:4], pairs[4:], config, checkpoint=checkpoint,
              progress=_interrupt_in_epoch(2))
    from hitlseg.flim.model import load_state

    assert load_state(checkpoint)["epoch"] == 1
    fresh = SegModel.unet(1, 1, 2, arch=SMALL, seed=123)  # another init: the checkpoint must override it
    result = train(fresh, pairs[:4], pairs[4:], config, checkpoint=checkpoint)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert [h["loss"] for h in result.history] == [h["loss"] for h in expected.history]
    assert result.best_epoch == expected.best_epoch
    for key, value in weights(straight).items():
        assert torch.equal(value, weights(again)[key]), key
        assert torch.equal(value, weights(fresh)[key]), key


class _Stop(Exception):
    pass


def _interrupt_in_epoch(epoch):
    def progress(done, total, message):
        if message.startswith(f"epoch {epoch}/"):
            raise _Stop

    return progress


def test_loss_is_mean_of_cross_entropy_and_dice():
    target = torch.tensor([[[0, 1], [2, 1]]])
    perfect = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float() * 50
    assert float(segmentation_loss(perfect, target)) < 1e-3
    uniform = torch.zeros(1, 3, 2, 2)
    ce = float(torch.log(torch.tensor(3.0)))
    dice = np.mean([(2 * 2 / 3 + 1) / (4 / 3 + 2 + 1), (2 * 1 / 3 + 1) / (4 / 3 + 1 + 1)])
    assert float(segmentation_loss(uniform, target)) == pytest.approx(0.5 * (ce + 1 - dice), rel=1e-5)
    ignored = torch.tensor([[[0, 1], [2, -1]]])
    assert torch.isfinite(segmentation_loss(uniform, ignored))


def test_random_crops_for_large_images():
    pairs = synthetic(3, (64, 48), classes=1)
    model = SegModel.unet(1, 1, 2, arch=SMALL)
    shapes = []
    model.net.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape[2:])) if module.training else None)
    train(model, pairs[:2], pairs[2:], TrainConfig(epochs=1, crop_size=32))
    assert set(shapes) == {(32, 32)}


# ------------------------------------------------------------------------------------ inference


def test_sliding_window_blends_exactly_for_a_pointwise_network():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(2, 3, 1)
    image = np.random.default_rng(0).random((2, 50, 37)).astype(np.float32)
    whole = predict_probabilities(net, image)
    for blend in ("gaussian", "uniform"):
        windowed = predict_probabilities(net, image, window=(16, 16), overlap=0.5, blend=blend)
        np.testing.assert_allclose(windowed, whole, atol=1e-5)
    assert window_starts(50, 16, 0.5) == [0, 8, 16, 24, 32, 34]
    weights = gaussian_weights((9, 9))
    assert weights[4, 4] == 1.0 and weights.min() > 0


def test_sliding_window_close_to_whole_image():
    pairs = synthetic(4, (48, 48))
    model = SegModel.unet(1, 2, 2, arch=SMALL, norm="batch")
    train(model, pairs[:3], [], TrainConfig(epochs=2))
    image = pairs[3][0]
    whole = predict(model.net, image)
    windowed = predict(model.net, image, window=32, overlap=0.5)
    assert windowed.probabilities.shape == whole.probabilities.shape == (3, 48, 48)
    assert np.abs(windowed.probabilities - whole.probabilities).mean() < 0.05
    assert (windowed.labels == whole.labels).mean() > 0.95


def test_save_load_gives_identical_predictions(tmp_path):
    pairs = synthetic(4, (32, 32), channels=3)
    for model in (SegModel.sunet(robot_flim(pairs[:2]), 2), SegModel.unet(3, 2, 2, arch=SMALL)):
        train(model, pairs[:3], pairs[3:], TrainConfig(epochs=1))
        model.window = (24, 24)
        model.preprocessing = {"color": "rgb", "normalize": "minmax"}
        path = model.save(tmp_path / f"{model.kind}.pt")
        loaded = SegModel.load(path)
        assert loaded.kind == model.kind and loaded.window == (24, 24) and loaded.preprocessing == model.preprocessing
        for image, _ in pairs:
            a, b = model.predict(image), loaded.predict(image)
            assert np.array_equal(a.probabilities, b.probabilities)
            assert np.array_equal(a.labels, b.labels)
        if model.kind == "sunet":
            for key, value in model.net.encoder.state_dict().items():
                assert torch.equal(value, loaded.net.encoder.state_dict()[key])


# ------------------------------------------------------------------------------------ bad input


def test_bad_inputs_raise_clear_errors(tmp_path):
    pairs = synthetic(3, (32, 32), channels=3)
    model = SegModel.unet(3, 2, 2, arch=SMALL)
    with pytest.raises(InputError, match="training set is empty"):
        train(model, [], pairs)
    with pytest.raises(InputError, match="cell_7: has 1 channels, the network takes 3"):
        train(model, [(pairs[0][0][:1], pairs[0][1])], [], names={"train": ["cell_7"]})
    with pytest.raises(InputError, match="labels must be in 0..2"):
        train(model, [(pairs[0][0], pairs[0][1] * 2)], [])
    with pytest.raises(InputError, match="has no mask"):
        train(model, [(pairs[0][0], None)], [])
    with pytest.raises(InputError, match=r"gray\.png: has 1 channels, but the model was trained on 3-channel"):
        model.predict(pairs[0][0][:1], name="gray.png")
    with pytest.raises(InputError, match="model is 2D"):
        model.predict(np.zeros((3, 8, 8, 8), np.float32))
    with pytest.raises(InputError, match="epochs"):
        TrainConfig(epochs=0)
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(InputError, match="junk.pt"):
        SegModel.load(tmp_path / "junk.pt")
    with pytest.raises(InputError, match="not found"):
        SegModel.load(tmp_path / "missing.pt")


def test_network_arguments_are_checked():
    with pytest.raises(InputError, match="norm"):
        SegModel.unet(1, 1, 2, arch=SMALL, norm="group")
    with pytest.raises(InputError, match="n_classes"):
        SegNet(SegModel.unet(1, 1, 2, arch=SMALL).net.encoder, 0, frozen=False)


# ------------------------------------------------------------------------------------ CLI


def _write_2d_dataset(root: Path, n: int = 6, shape=(32, 32)):
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (image, mask) in enumerate(synthetic(n, shape, channels=3, seed=5)):
        rgb = np.clip(np.moveaxis(image, 0, -1) * 255, 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(root / "images" / f"im{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
    return root


def test_cli_train_predict_round_trip_2d(tmp_path, capsys):
    from PIL import Image

    data = _write_2d_dataset(tmp_path / "data", n=8)
    model = tmp_path / "m.pt"
    assert main(["train", "--dataset", str(data), "--encoder", "flim:robot", "--epochs", "2", "--out", str(model),
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "sunet" and summary["n_classes"] == 2 and summary["train"] == 5
    split_file = tmp_path / "m.split.json"
    assert split_file.is_file() and summary["split_file"] == str(split_file)
    loaded = SegModel.load(model)
    assert loaded.info["encoder"] == "flim:robot" and len(loaded.info["flim_images"]) == 5
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(model), "--images", str(data), "--out", str(out), "--probabilities"]) == 0
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == [f"im{i}.png" for i in range(8)]
    labels = np.asarray(Image.open(out / "im0.png"))
    assert labels.shape == (32, 32) and labels.max() <= 2
    assert (out / "probabilities" / "im0_class2.tif").is_file()
    # a plain folder of images and a split part work too
    out2 = tmp_path / "pred2"
    assert main(["predict", "--model", str(model), "--images", str(data / "images"), "--out", str(out2),
                 "--split", str(split_file), "--part", "test"]) == 0
    test_ids = json.loads(split_file.read_text())["test"]
    assert sorted(p.stem for p in out2.glob("*.png")) == sorted(test_ids)
    assert np.array_equal(np.asarray(Image.open(out2 / f"{test_ids[0]}.png")), np.asarray(Image.open(out / f"{test_ids[0]}.png")))
    # colour previews beside the label files, and the 'largest' post-processing
    from hitlseg.io.preview import class_color
    from hitlseg.nets.postprocess import largest_object

    out3 = tmp_path / "pred3"
    assert main(["predict", "--model", str(model), "--images", str(data), "--out", str(out3), "--preview",
                 "--postprocess", "largest"]) == 0
    plain = np.asarray(Image.open(out / "im0.png"))
    largest = np.asarray(Image.open(out3 / "im0.png"))
    assert np.array_equal(largest, largest_object(plain))
    colours = np.asarray(Image.open(out3 / "previews" / "im0.preview.png"))
    assert colours.shape == (32, 32, 3)
    for c in np.unique(largest):
        assert (colours[largest == c] == (class_color(c) if c else (0, 0, 0))).all()


def test_cli_errors(tmp_path, capsys):
    from PIL import Image

    data = _write_2d_dataset(tmp_path / "data", n=4)
    bad_split = tmp_path / "split.json"
    bad_split.write_text(json.dumps({"train": ["im0", "nope"], "val": ["im1"], "test": []}))
    assert main(["train", "--dataset", str(data), "--split", str(bad_split), "--encoder", "backprop", "--epochs", "1",
                 "--out", str(tmp_path / "m.pt")]) == 2
    assert "nope" in capsys.readouterr().err
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"train": [], "val": ["im1"], "test": []}))
    assert main(["train", "--dataset", str(data), "--split", str(empty), "--encoder", "backprop",
                 "--out", str(tmp_path / "m.pt")]) == 2
    assert "training set is empty" in capsys.readouterr().err
    assert main(["train", "--dataset", str(data), "--encoder", "flim", "--out", str(tmp_path / "m.pt")]) == 2
    assert "--encoder" in capsys.readouterr().err
    model = tmp_path / "m.pt"
    assert main(["train", "--dataset", str(data), "--encoder", "backprop", "--epochs", "1", "--out", str(model)]) == 0
    capsys.readouterr()
    gray = tmp_path / "gray"
    gray.mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(gray / "g.png")
    assert main(["predict", "--model", str(model), "--images", str(gray), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "g.png" in err and "3-channel" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "g.png").exists()


def test_cli_train_with_a_flim_model_file(tmp_path, capsys):
    from hitlseg.dataset import Dataset
    from hitlseg.flim import FLIMModel

    data = _write_2d_dataset(tmp_path / "data", n=6)
    dataset = Dataset.from_folder(data)
    samples = [dataset.load(i) for i in dataset.ids[:3]]
    markers = [markers_from_mask(s.mask, rng=0) for s in samples]
    flim = FLIMModel.fit([s.image for s in samples], markers, SMALL)
    flim.save(tmp_path / "flim.pt")
    assert main(["train", "--dataset", str(data), "--encoder", f"flim:{tmp_path / 'flim.pt'}", "--epochs", "1",
                 "--out", str(tmp_path / "s.pt")]) == 0
    model = SegModel.load(tmp_path / "s.pt")
    assert model.kind == "sunet" and model.preprocessing == flim.preprocessing
    for key, value in flim.encoder.state_dict().items():
        assert torch.equal(value, model.net.encoder.state_dict()[key]), key
    gray = FLIMModel.fit([s.image[:1] for s in samples], markers, SMALL)
    gray.save(tmp_path / "gray.pt")
    capsys.readouterr()
    assert main(["train", "--dataset", str(data), "--encoder", f"flim:{tmp_path / 'gray.pt'}", "--epochs", "1",
                 "--out", str(tmp_path / "g.pt")]) == 2
    assert "1-channel" in capsys.readouterr().err and not (tmp_path / "g.pt").exists()


def test_cli_nifti_geometry_preserved(tmp_path):
    import nibabel as nib

    affine = np.array([[0.0, -1.2, 0.0, 10.0], [0.9, 0.0, 0.0, -5.0], [0.0, 0.0, 1.5, 3.0], [0, 0, 0, 1]])
    root = tmp_path / "vols"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (image, mask) in enumerate(synthetic(4, (16, 20, 18), seed=2)):
        nib.save(nib.Nifti1Image(image[0].transpose(2, 1, 0) * 1000, affine), root / "images" / f"v{i}.nii.gz")
        nib.save(nib.Nifti1Image(mask.transpose(2, 1, 0), affine), root / "masks" / f"v{i}.nii.gz")
    model = tmp_path / "v.pt"
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["v0", "v1"], "val": ["v2"], "test": ["v3"]}))
    assert main(["train", "--dataset", str(root), "--split", str(split), "--encoder", "backprop", "--epochs", "1",
                 "--out", str(model)]) == 0
    assert not (tmp_path / "v.split.json").exists()  # a given split is not copied
    out = tmp_path / "out"
    assert main(["predict", "--model", str(model), "--images", str(root), "--out", str(out), "--probabilities"]) == 0
    for i in range(4):
        written = nib.load(out / f"v{i}.nii.gz")
        source = nib.load(root / "images" / f"v{i}.nii.gz")
        assert written.shape == source.shape
        np.testing.assert_allclose(written.affine, affine)
        assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2}
    probability = nib.load(out / "probabilities" / "v0_class1.nii.gz")
    np.testing.assert_allclose(probability.affine, affine)
    assert probability.get_fdata().max() <= 1.0 + 1e-6


# ------------------------------------------------------------------------------------ real data


@pytest.mark.shared
def test_wbc1_sunet_learns_quickly(shared):
    from hitlseg.dataset import Dataset, make_split
    from hitlseg.nets.workflow import evaluate_model, load_pairs, robot_encoder

    dataset = Dataset.from_folder(shared("wbc1"))
    split = make_split(dataset.ids, seed=0)
    train_pairs = load_pairs(dataset, split.train[:12])
    test_pairs = load_pairs(dataset, split.test[:6])
    encoder, chosen = robot_encoder(train_pairs, seed=0)
    assert len(chosen) == 5
    model = SegModel.sunet(encoder, 2)
    train(model, train_pairs, [], TrainConfig(epochs=3))
    assert evaluate_model(model, test_pairs)["mean_dice"] > 0.6
