"""Learning from strokes: partial labels in training, self-training over the pool, the CLI without masks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hitlseg.errors import InputError
from hitlseg.pseudo import IGNORE, SelfTrainingConfig, default_strokes_config, learn_from_strokes


@pytest.fixture(scope="module")
def demo_data():
    """Robot strokes on 3 demo images, 16 unmarked pool images and 14 held-out images (with masks for scoring)."""
    from hitlseg.datasets import demo
    from hitlseg.robot import Robot

    dataset = demo()
    ids = dataset.ids[:40]
    loaded = [dataset.load(i) for i in ids]
    robot = Robot(seed=0)
    marked = loaded[:3]
    return {
        "images": [s.image for s in marked],
        "markers": [robot.mark(s.mask, key=s.id) for s in marked],
        "pool": [s.image for s in loaded[10:26]],
        "pool_truth": [s.mask for s in loaded[10:26]],
        "held_out": [(s.image, s.mask) for s in loaded[26:]],
    }


def _dice(model, pairs):
    from hitlseg.metrics import mean_dice

    return float(np.mean([mean_dice(model.predict(image).labels, mask, labels=[1, 2]) for image, mask in pairs]))


def test_training_on_strokes_ignores_unmarked_pixels(demo_data):
    """Only marked pixels are targets: a model trained on strokes sees IGNORE elsewhere."""
    import hitlseg.nets

    captured = []
    real = hitlseg.nets.train

    def spy(model, samples, val, config, **options):
        captured.append([mask.copy() for _, mask in samples])
        return real(model, samples, val, config, **options)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hitlseg.nets, "train", spy)
        learn_from_strokes(demo_data["images"][:1], demo_data["markers"][:1], config=default_strokes_config(epochs=1),
                           self_training=SelfTrainingConfig(iterations=0))
    (target,) = captured[0]
    markers = demo_data["markers"][0]
    np.testing.assert_array_equal(target[markers == 0], IGNORE)
    np.testing.assert_array_equal(target[markers > 0], markers[markers > 0] - 1)


def test_self_training_improves_over_partial_labels(demo_data):
    """One marked image: pseudo-labels of 16 pool images beat the strokes alone, however long trained.

    Measured (one thread): strokes 20 epochs 0.478, strokes 36 epochs 0.515, 20 epochs + two
    self-training iterations of 8 epochs 0.857 mean Dice on 14 held-out images.
    """
    images, markers = demo_data["images"][:1], demo_data["markers"][:1]
    plain = learn_from_strokes(images, markers, config=default_strokes_config(epochs=20, seed=0),
                               self_training=SelfTrainingConfig(iterations=0))
    encoder = plain.model.net.encoder
    longer = learn_from_strokes(images, markers, encoder=encoder, config=default_strokes_config(epochs=36, seed=0),
                                self_training=SelfTrainingConfig(iterations=0))
    tuned = learn_from_strokes(images, markers, demo_data["pool"], encoder=encoder,
                               config=default_strokes_config(epochs=20, seed=0),
                               self_training=SelfTrainingConfig(iterations=2, epochs=8), truth=demo_data["pool_truth"])
    before = max(_dice(plain.model, demo_data["held_out"]), _dice(longer.model, demo_data["held_out"]))
    after = _dice(tuned.model, demo_data["held_out"])
    assert after > before + 0.1, (before, after)
    history = tuned.history
    assert [h["iteration"] for h in history] == [0, 1, 2]
    assert 0 < history[1]["machine_labelled"] <= history[2]["machine_labelled"] <= 1
    assert history[1]["pool_images"] == 5 and history[2]["pool_images"] == 8  # ceil(0.3 * 16), ceil(0.5 * 16)
    assert history[2]["changed"] is not None
    assert history[1]["pseudo_vs_truth"]["accuracy"] > 0.8
    assert set(history[2]["model_vs_truth"]["saliency"]) >= {"S", "E_max", "F_max", "MAE"}
    assert tuned.model.info["labels"] == "strokes" and len(tuned.model.info["self_training"]) == 3


def test_self_training_stops_when_pseudo_labels_settle(demo_data):
    result = learn_from_strokes(demo_data["images"][:2], demo_data["markers"][:2], demo_data["pool"][:4],
                                config=default_strokes_config(epochs=2, crf_weight=0.0),
                                self_training=SelfTrainingConfig(iterations=4, epochs=1, min_change=0.99))
    assert len(result.history) == 2 and "changed on" in result.stopped


def test_learner_rejects_bad_strokes(demo_data):
    image, markers = demo_data["images"][0], demo_data["markers"][0]
    background_only = np.where(markers == 1, 1, 0).astype(np.uint8)
    with pytest.raises(InputError, match="at least one object class"):
        learn_from_strokes([image], [background_only])
    with pytest.raises(InputError, match="at least one object class"):
        learn_from_strokes([image], [np.zeros_like(markers)])
    with pytest.raises(InputError, match="do not match"):
        learn_from_strokes([image], [markers[:10]])
    with pytest.raises(InputError, match="2 marker arrays for 1 images"):
        learn_from_strokes([image], [markers, markers])
    with pytest.raises(InputError, match="ignore value"):
        learn_from_strokes([image], [markers], n_classes=300)
    with pytest.raises(InputError, match="truth"):
        learn_from_strokes([image], [markers], [image], truth=[])
    with pytest.raises(InputError, match="min_change"):
        SelfTrainingConfig(min_change=1.5)
    mask = np.zeros(markers.shape, np.uint8)
    with pytest.raises(InputError, match=r"extra\[0\]: mask of shape"):
        learn_from_strokes([image], [markers], extra=[(image, mask[:10])])
    with pytest.raises(InputError, match=r"extra\[0\]: image of shape"):
        learn_from_strokes([image], [markers], extra=[(image[:1], mask)])
    with pytest.raises(InputError, match=r"extra\[0\]: mask labels must be 0..2"):
        learn_from_strokes([image], [markers], extra=[(image, mask + 3)])
    with pytest.raises(InputError, match=r"extra\[1\]: need an \(image, mask\) pair"):
        learn_from_strokes([image], [markers], extra=[(image, mask), image])


def test_train_accepts_ignore_and_checks_it():
    from hitlseg.flim.fit import fit_encoder
    from hitlseg.nets import SegModel, TrainConfig, train

    rng = np.random.default_rng(0)
    image = rng.random((3, 32, 32)).astype(np.float32)
    markers = np.zeros((32, 32), np.uint8)
    markers[4:8, 4:20], markers[20:24, 4:20] = 1, 2
    model = SegModel.sunet(fit_encoder([image], [markers], seed=0), 1)
    target = np.full((32, 32), IGNORE, np.int64)
    target[markers > 0] = markers[markers > 0] - 1
    result = train(model, [(image, target)], [], TrainConfig(epochs=2, ncut_weight=0.1, crf_weight=0.5))
    assert np.isfinite(result.history[-1]["loss"])
    with pytest.raises(InputError, match="no pixel has a label"):
        train(model, [(image, np.full((32, 32), IGNORE))], [], TrainConfig(epochs=1))
    bad = target.copy()
    bad[0, 0] = 7
    with pytest.raises(InputError, match="or 255"):
        train(model, [(image, bad)], [], TrainConfig(epochs=1))
    with pytest.raises(InputError, match="class_weights: need 2"):
        train(model, [(image, target)], [], TrainConfig(epochs=1, class_weights=[1, 2, 3]))
    for field, value in (("crf_weight", -1), ("ncut_weight", float("nan")), ("sigma_xy", 0), ("regularizer_scale", 2),
                         ("class_weights", "inverse")):
        with pytest.raises(InputError, match=field):
            TrainConfig(**{field: value})


# ------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def marked_dataset(tmp_path):
    """A demo subset with robot markers on 3 images; masks present on disk."""
    import shutil

    from hitlseg.cli import main
    from hitlseg.datasets import DEMO_ROOT

    root = tmp_path / "data"
    ids = sorted(p.stem for p in (DEMO_ROOT / "images").iterdir())[:14]
    for role in ("images", "masks"):
        (root / role).mkdir(parents=True)
        for i in ids:
            shutil.copy(DEMO_ROOT / role / f"{i}.png", root / role / f"{i}.png")
    split = {"train": ids[:10], "val": ids[10:12], "test": ids[12:], "seed": 0}
    (tmp_path / "split.json").write_text(json.dumps(split))
    assert main(["robot", "mark", "--dataset", str(root), "--ids", ",".join(ids[:3]), "--out", str(root / "markers")]) == 0
    return root, tmp_path / "split.json", ids


def test_cli_train_from_markers_never_opens_a_mask(marked_dataset, tmp_path, monkeypatch, capsys):
    import hitlseg.dataset
    import hitlseg.io

    from hitlseg.cli import main
    from hitlseg.nets import SegModel

    root, split, ids = marked_dataset
    for path in (root / "masks").iterdir():  # any attempt to decode a mask now fails loudly
        path.write_bytes(b"not a png")

    def forbidden(*args, **kwargs):
        raise AssertionError("a mask file was read")

    monkeypatch.setattr(hitlseg.dataset, "read_mask", forbidden)
    monkeypatch.setattr(hitlseg.io, "read_mask", forbidden)
    out = tmp_path / "model.pt"
    code = main(["train", "--dataset", str(root), "--labels", "markers", "--split", str(split), "--epochs", "3",
                 "--self-training", "1", "--out", str(out), "--json", "--synthetic", "1", "--generator-steps", "4"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["marked_images"] == ids[:3] and summary["pool_images"] == 7
    assert summary["iterations"] == 1 and 0 < summary["machine_labelled"] <= 1
    # synthesis from the accepted predictions (no mask either): 3 candidates per marked image
    assert summary["synthesis"]["candidates"] == 9 and 1 <= summary["synthesis"]["kept"] <= 3
    model = SegModel.load(out)
    assert model.kind == "sunet" and model.n_classes == 2 and model.info["labels"] == "strokes"
    assert model.info["synthesis"]["kept"] == summary["synthesis"]["kept"]
    assert len(model.info["synthesis"]["further_training"]) == 2  # warm-started: one self-training iteration
    # the adaptive decoder rule the strokes chose, for --postprocess agree (reads no mask either)
    assert model.flim_decoder in ("weights", "labels", "mean", "gauss") and model.postprocess == "agree"
    assert summary["postprocess"] == "agree" and summary["flim_decoder"] == model.flim_decoder
    predicted = tmp_path / "predicted"
    assert main(["predict", "--model", str(out), "--images", str(root), "--out", str(predicted),
                 "--postprocess", "agree"]) == 0
    assert len(list(predicted.glob("*.png"))) == len(list((root / "images").iterdir()))


def test_cli_train_from_markers_bad_input(marked_dataset, tmp_path, capsys):
    from hitlseg.cli import main

    root, split, ids = marked_dataset
    (root / "markers" / "ghost.png").write_bytes((root / "markers" / f"{ids[0]}.png").read_bytes())
    code = main(["train", "--dataset", str(root), "--labels", "markers", "--split", str(split), "--epochs", "1",
                 "--out", str(tmp_path / "m.pt")])
    assert code == 2 and "ghost" in capsys.readouterr().err
    (root / "markers" / "ghost.png").unlink()
    code = main(["train", "--dataset", str(root), "--labels", "markers", "--encoder", "flim:robot", "--epochs", "1"])
    assert code == 2 and "robot needs masks" in capsys.readouterr().err
    for path in (root / "markers").iterdir():
        path.unlink()
    code = main(["train", "--dataset", str(root), "--labels", "markers", "--split", str(split), "--epochs", "1"])
    assert code == 2 and "no training sample has markers" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_fresh_models_keep_agree_in_2d_only(demo_data):
    from hitlseg.defaults import STROKES_POSTPROCESS

    assert STROKES_POSTPROCESS == {2: "agree", 3: "none"}
    rng = np.random.default_rng(0)
    volume = rng.random((1, 16, 24, 24)).astype(np.float32)
    volume[:, 4:12, 8:16, 8:16] += 1.0
    markers = np.zeros((16, 24, 24), np.uint8)
    markers[8, 2, 2:20] = 1
    markers[8, 12, 9:15] = 2
    result = learn_from_strokes([volume], [markers], config=default_strokes_config(3, epochs=1, seed=0),
                                self_training=SelfTrainingConfig(iterations=0))
    assert result.model.postprocess == "none" and result.model.flim_decoder == "labels"
    # a continued 2D model keeps the rule it had
    images, strokes = demo_data["images"][:1], demo_data["markers"][:1]
    first = learn_from_strokes(images, strokes, config=default_strokes_config(epochs=1, seed=0), expand=False)
    assert first.model.postprocess == "agree"
    first.model.postprocess = "largest"
    further = learn_from_strokes(images, strokes, model=first.model, config=default_strokes_config(epochs=1, seed=0))
    assert further.model.postprocess == "largest"
