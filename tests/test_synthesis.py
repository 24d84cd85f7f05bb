"""hitlseg.synthesis: mask alterations, the mask-conditioned generator, informative selection, synthetic files,
and ``hitlseg train --synthetic``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from hitlseg.errors import InputError
from hitlseg.io.color import rgb_to_normalized_lab
from hitlseg.synthesis import (GeneratorConfig, Synthesizer, add_object, elastic, grow, is_synthetic, objects,
                               random_alteration, read_manifest, remove_object, rotate, scale, select_informative,
                               shrink, synthesize_for_training, synthetic_ids, train_generator, translate,
                               write_synthetic)
from tests.helpers import cli_run, make_2d_dataset


def cells_2d() -> np.ndarray:
    """Two cells (cytoplasm 1) with a nucleus (2) each, on background."""
    mask = np.zeros((64, 64), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    for cy, cx in ((18, 18), (44, 42)):
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= 81] = 1
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= 16] = 2
    return mask


def cells_3d() -> np.ndarray:
    mask = np.zeros((20, 40, 40), np.uint8)
    zz, yy, xx = np.mgrid[:20, :40, :40]
    for cz, cy, cx in ((10, 12, 12), (10, 28, 27)):
        d = (zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2
        mask[d <= 36] = 1
        mask[d <= 6] = 2
    return mask


def assert_valid(out: np.ndarray, mask: np.ndarray) -> None:
    assert out.shape == mask.shape and out.dtype == mask.dtype
    assert np.array_equal(np.unique(out), np.unique(mask))


def nuclei_enclosed(mask: np.ndarray) -> bool:
    """Every nucleus pixel's neighbours are nucleus or cytoplasm (never background)."""
    return not (ndi.binary_dilation(mask == 2) & (mask == 0)).any()


def cell_centres(mask: np.ndarray) -> np.ndarray:
    """Centroids of the two largest cells (nearest-neighbour rotation may leave single-pixel tips apart)."""
    labels, count = ndi.label(mask > 0)
    sizes = np.bincount(labels.ravel())[1:]
    largest = sorted(np.argsort(-sizes)[:2] + 1)
    return np.array(ndi.center_of_mass(mask > 0, labels, largest))


MASKS = {"2d": cells_2d, "3d": cells_3d}


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_geometric_alterations_keep_labels_and_change_the_intended_property(kind):
    mask = MASKS[kind]()
    rng = np.random.default_rng(0)
    area = (mask > 0).sum()
    up = scale(mask, rng, factor=1.2)
    down = scale(mask, rng, factor=0.8)
    assert_valid(up, mask)
    assert_valid(down, mask)
    assert (up > 0).sum() > 1.2 * area and (down > 0).sum() < 0.8 * area
    shift = [0] * (mask.ndim - 2) + [3, -4]
    moved = translate(mask, rng, shift=shift)
    assert_valid(moved, mask)
    np.testing.assert_allclose(np.array(ndi.center_of_mass(moved > 0)) - ndi.center_of_mass(mask > 0), shift, atol=1e-6)
    turned = rotate(mask, rng, degrees=30)
    assert_valid(turned, mask)
    assert (turned != mask).mean() > 0.02
    # the cells' centres turn about the foreground centroid by 30 degrees in the (H, W) plane
    before, after = cell_centres(mask), cell_centres(turned)
    angle = lambda p: np.degrees(np.arctan2(*(p[1] - p[0])[-2:]))  # noqa: E731
    assert abs(abs(angle(after) - angle(before)) - 30) < 3
    warped = elastic(mask, rng, alpha=4, sigma=4)
    assert_valid(warped, mask)
    assert 0 < (warped != mask).mean() < 0.3
    assert nuclei_enclosed(warped)


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_object_alterations_add_remove_grow_shrink(kind):
    mask = MASKS[kind]()
    rng = np.random.default_rng(1)
    cells = lambda m: ndi.label(m > 0)[1]  # noqa: E731
    removed = remove_object(mask, rng, label=1)
    assert_valid(removed, mask)
    assert cells(removed) == cells(mask) - 1 and ndi.label(removed == 2)[1] == 1  # the nucleus went with its cell
    small = np.zeros_like(mask)
    small[(slice(None),) * (mask.ndim - 2) + (slice(0, mask.shape[-2] // 2), slice(0, mask.shape[-1] // 2))] = \
        mask[(slice(None),) * (mask.ndim - 2) + (slice(0, mask.shape[-2] // 2), slice(0, mask.shape[-1] // 2))]
    added = add_object(mask if kind == "2d" else small, rng, label=1)
    reference = mask if kind == "2d" else small
    assert_valid(added, reference)
    assert cells(added) == cells(reference) + 1
    assert ((added > 0) & (reference > 0)).sum() == (reference > 0).sum()  # nothing painted over
    assert nuclei_enclosed(added)
    grown = grow(mask, rng, label=2, radius=2)
    assert_valid(grown, mask)
    assert (grown == 2).sum() > (mask == 2).sum() and (grown > 0).sum() == (mask > 0).sum()
    assert nuclei_enclosed(grown)
    shrunk = shrink(mask, rng, label=1, radius=2)
    assert_valid(shrunk, mask)
    assert (shrunk > 0).sum() < (mask > 0).sum()
    assert nuclei_enclosed(shrunk)


def test_remove_refuses_the_last_component_and_objects_know_their_surround():
    mask = np.zeros((32, 32), np.uint8)
    mask[4:20, 4:20] = 1
    mask[8:12, 8:12] = 2
    with pytest.raises(InputError, match="second component"):
        remove_object(mask, 0)
    surround = {o["label"]: o["surround"] for o in objects(mask)}
    assert surround == {1: 0, 2: 1}


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_random_alteration_is_seeded_valid_and_changes_the_mask(kind):
    mask = MASKS[kind]()
    for seed in range(4):
        out, applied = random_alteration(mask, np.random.default_rng(seed))
        assert_valid(out, mask)
        assert applied and not np.array_equal(out, mask)
        again, applied_again = random_alteration(mask, np.random.default_rng(seed))
        assert np.array_equal(out, again) and applied == applied_again


def test_alterations_refuse_non_integer_masks():
    with pytest.raises(InputError, match="integer labels"):
        random_alteration(np.zeros((8, 8), np.float32), 0)
    with pytest.raises(InputError, match="2D .* or 3D"):
        scale(np.zeros(8, np.uint8), 0)


# --------------------------------------------------------------------------------------------- generator


def tiny_pairs(n: int = 2, size: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        yy, xx = np.mgrid[:size, :size]
        cy, cx = rng.integers(10, size - 10, 2)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = 1
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= 6] = 2
        colours = np.array([[0.9, 0.7, 0.75], [0.5, 0.3, 0.6], [0.25, 0.1, 0.4]], np.float32)  # RGB
        rgb = np.clip(colours[mask].transpose(2, 0, 1) + 0.05 * np.sin(xx / 2.0 + i)[None], 0, 1)
        pairs.append((rgb_to_normalized_lab(rgb.astype(np.float32)), mask))  # as hitlseg reads RGB
    return pairs


@pytest.fixture(scope="module")
def synthesizer():
    return train_generator(tiny_pairs(), GeneratorConfig(steps=50, batch_size=2, crop=32, lr=1e-3, width=8, depth=2, seed=0))


def test_generator_overfits_a_tiny_set_and_generates_full_size_images(synthesizer, tmp_path):
    history = synthesizer.history
    assert history[-1]["l1"] < 0.6 * history[0]["l1"], history
    pairs = tiny_pairs()
    image, mask = pairs[0]
    big = np.pad(mask, ((0, 13), (0, 7)))  # any size: padded to the network's multiple and cropped back
    out = synthesizer.generate(big, image, mask)
    assert out.shape == (3,) + big.shape and out.dtype == np.float32 and np.isfinite(out).all()
    recon = synthesizer.generate(mask, image, mask)
    assert np.abs(recon - image).mean() < 0.1
    path = synthesizer.save(tmp_path / "gen.pt")
    assert path.stat().st_size < 2_000_000
    loaded = Synthesizer.load(path)
    np.testing.assert_allclose(loaded.generate(mask, image, mask), recon, atol=1e-5)
    assert loaded.config == synthesizer.config
    (tmp_path / "other.pt").write_bytes(b"not a model")
    with pytest.raises(InputError, match="other.pt"):
        Synthesizer.load(tmp_path / "other.pt")


def test_generator_input_errors_name_the_problem(synthesizer):
    image, mask = tiny_pairs()[0]
    with pytest.raises(InputError, match=r"pairs\[0\]: mask shape"):
        train_generator([(image, mask[:-1])], GeneratorConfig(steps=1))
    with pytest.raises(InputError, match="integer labels"):
        train_generator([(image, mask.astype(np.float32))], GeneratorConfig(steps=1))
    with pytest.raises(InputError, match="empty"):
        train_generator([], GeneratorConfig(steps=1))
    with pytest.raises(InputError, match="source_mask: shape"):
        synthesizer.generate(mask, image, mask[:-1])
    with pytest.raises(InputError, match="exceeds"):
        synthesizer.generate(mask * 3, image, mask)
    with pytest.raises(InputError, match="steps"):
        GeneratorConfig(steps=0)


def test_generator_continues_from_a_synthesizer():
    config = GeneratorConfig(steps=20, batch_size=2, crop=32, lr=1e-3, width=8, depth=2, seed=0)
    first = train_generator(tiny_pairs(), config)
    generator, weights = first.generator, {k: v.clone() for k, v in first.generator.state_dict().items()}
    more = train_generator(tiny_pairs(), GeneratorConfig(steps=30, batch_size=2, crop=32, lr=1e-3, seed=1), start=first)
    assert more.generator is generator  # trained in place, not a fresh network
    assert any(not np.allclose(weights[k], v) for k, v in more.generator.state_dict().items())
    assert more.config.steps == 50 and (more.config.width, more.config.depth) == (8, 2)
    steps = [h["step"] for h in more.history]
    assert steps == sorted(steps) and steps[-1] == 50 and more.seconds >= first.seconds
    assert more.history[-1]["l1"] < first.history[0]["l1"]
    volume = cells_3d()
    with pytest.raises(InputError, match="start: the synthesizer makes"):
        train_generator([(volume[None].astype(np.float32), volume)], GeneratorConfig(steps=1), start=first)


def test_generator_works_on_volumes():
    mask = cells_3d()
    image = (mask[None] / 2.0 + 0.05 * np.random.default_rng(0).normal(size=(1,) + mask.shape)).astype(np.float32)
    synthesizer = train_generator([(image, mask)], GeneratorConfig(steps=3, batch_size=1, crop=16, width=4, depth=2))
    altered, _ = random_alteration(mask, 0)
    out = synthesizer.generate(altered, image, mask)
    assert out.shape == image.shape and np.isfinite(out).all()
    assert 0 <= synthesizer.realism(out, altered) < 2
    with pytest.raises(InputError, match="3D"):
        synthesizer.generate(mask[0], image, mask)


# --------------------------------------------------------------------------------------------- selection


def test_select_informative_keeps_the_most_uncertain_passing_per_source():
    uncertainty = [0.1, 0.9, 0.5, 0.8, 0.3, 0.7]
    sources = [0, 0, 0, 1, 1, 1]
    assert select_informative(uncertainty, sources, 1) == [1, 3]
    assert select_informative(uncertainty, sources, 2, passing=[1, 0, 1, 1, 1, 1]) == [2, 0, 3, 5]
    assert select_informative(uncertainty, sources, 0) == []
    with pytest.raises(InputError, match="n_per_source"):
        select_informative(uncertainty, sources, -1)


def test_synthesize_for_training_keeps_the_top_scored_candidates(synthesizer):
    pairs = tiny_pairs(3)
    seen = []

    def fake_scorer(images):
        # uncertainty: the generated image's mean of channel 0; features: its channel means
        seen.append(len(images))
        return (np.array([float(i[0].mean()) for i in images]), np.array([i.reshape(3, -1).mean(1) for i in images]))

    result = synthesize_for_training(None, pairs, synthesizer, 2, np.random.default_rng(0), candidates=3,
                                     scorer=fake_scorer, realism_quantile=1.0)
    assert seen == [18, 3]  # the candidates, then the real images for the realism check
    assert len(result.candidates) == 18
    for source in range(3):
        group = [c for c in result.candidates if c["source"] == source]
        passing = sorted((c["uncertainty"] for c in group if c["realistic"]), reverse=True)
        kept = sorted((c["uncertainty"] for c in group if c["kept"]), reverse=True)
        assert kept == passing[:2]
    assert len(result.samples) == len(result.records) == sum(c["kept"] for c in result.candidates)
    for (image, mask), record in zip(result.samples, result.records):
        assert image.shape == (3, 32, 32) and mask.dtype == np.uint8
        assert record["alterations"] is not None and record["feature_distance"] is not None
    assert result.threshold is not None
    assert synthesize_for_training(None, pairs, synthesizer, 0, 0, scorer=fake_scorer).samples == []
    with pytest.raises(InputError, match="n_per_image"):
        synthesize_for_training(None, pairs, synthesizer, -1, 0, scorer=fake_scorer)
    with pytest.raises(InputError, match="model"):
        synthesize_for_training(None, pairs, synthesizer, 1, 0)


def test_mc_dropout_scorer_scores_with_a_segmentation_model(synthesizer):
    from hitlseg.nets import SegModel
    from hitlseg.synthesis import mc_dropout_scorer

    model = SegModel.unet(3, 2, 2, seed=0)
    images = [image for image, _ in tiny_pairs(3)]
    scores, features = mc_dropout_scorer(model, mc_passes=4)(images)
    assert scores.shape == (3,) and np.all(scores >= 0) and np.all(scores <= 1)
    assert features.shape[0] == 3


# --------------------------------------------------------------------------------------------- files


def test_synthetic_files_are_marked_and_recognised(tmp_path, synthesizer):
    pairs = tiny_pairs(2)
    records = [{"source": 0, "alterations": ["scale"], "uncertainty": 0.3},
               {"source": 1, "alterations": ["add", "rotate"], "uncertainty": 0.2}]
    folder = tmp_path / "synthetic"
    manifest = write_synthetic(folder, pairs, records, sources=["img00", "img01"], info={"generator": "test"})
    data = read_manifest(folder)
    assert manifest == folder / "synthetic.json" and data["synthetic"] is True
    assert [s["source"] for s in data["samples"]] == ["img00", "img01"]
    assert synthetic_ids(folder) == ["synthetic-0000", "synthetic-0001"]
    assert is_synthetic(folder)
    for sample in data["samples"]:
        for key in ("image", "mask"):
            path = folder / sample[key]
            assert is_synthetic(path)
            copy = tmp_path / "elsewhere" / path.name  # the file's own mark, without the manifest
            copy.parent.mkdir(exist_ok=True)
            copy.write_bytes(path.read_bytes())
            assert is_synthetic(copy)
    from hitlseg.dataset import Dataset

    loaded = Dataset.from_folder(folder).load("synthetic-0000")  # a readable dataset
    assert np.array_equal(loaded.mask, pairs[0][1])
    assert np.abs(loaded.image - pairs[0][0]).max() < 0.02  # CIELAB -> RGB PNG -> CIELAB
    real = make_2d_dataset(tmp_path / "real", n=1)
    assert not is_synthetic(real) and not is_synthetic(real / "images" / "img00.png")
    with pytest.raises(InputError, match="real images"):
        write_synthetic(real, pairs, records)
    write_synthetic(folder, pairs[:1], records[:1])  # extends the manifest
    assert len(synthetic_ids(folder)) == 3


def test_synthetic_volumes_are_marked(tmp_path):
    mask = cells_3d()
    image = (mask[None] / 2.0).astype(np.float32)
    folder = tmp_path / "vol"
    write_synthetic(folder, [(image, mask)], [{"source": 0}])
    sample = read_manifest(folder)["samples"][0]
    assert sample["image"].endswith(".nii.gz")
    copy = tmp_path / "copy.nii.gz"
    copy.write_bytes((folder / sample["mask"]).read_bytes())
    assert is_synthetic(copy)
    with pytest.raises(InputError, match="shape"):
        write_synthetic(tmp_path / "bad", [(image, mask[:-1])])


# --------------------------------------------------------------------------------------------- training


def test_train_synthetic_runs_end_to_end(tmp_path, capsys):
    from hitlseg.nets import SegModel

    root = make_2d_dataset(tmp_path / "data", n=4, size=48)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["img00", "img01"], "val": ["img02"], "test": ["img03"]}))
    out = tmp_path / "m.pt"
    code, stdout, err = cli_run(capsys, "train", "--dataset", root, "--split", split, "--encoder", "backprop",
                                "--epochs", "2", "--synthetic", "1", "--generator-steps", "5", "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    synthesis = summary["synthesis"]
    assert synthesis["candidates"] == 2 * 3
    assert len(synthesis["samples"]) == synthesis["kept"] <= 2
    assert {s["source"] for s in synthesis["samples"]} <= {"img00", "img01"}
    assert synthesis["model_kept"] in ("first", "fine-tuned")
    info = SegModel.load(out).info
    assert info["synthesis"]["generator_history"]
    code, _, err = cli_run(capsys, "train", "--dataset", root, "--split", split, "--synthetic", "-1", "--out", out)
    assert code == 2 and "--synthetic" in err
    # with --labels markers synthesis works from the accepted predictions: tests/test_strokes.py
