"""Benchmark of hitlseg.synthesis (Mahapatra et al., MICCAI 2018) on wbc1: generator speed and realism.

Prints one JSON line:

- ``generator``: training seconds, seconds per step, images generated per second (full-size
  120 x 120 images), and the L1 curve;
- ``realism``: Fréchet distances (FID-like, Heusel et al. NeurIPS 2017, on the pixel-wise
  last-layer features of a FLIM encoder learned from robot markers on 5 training images)
  between the first half of the test images and (a) the second half (the real-vs-real
  baseline), (b) images generated for the second half's altered masks in their own style,
  (c) the same for unaltered masks (reconstructions), (d) the altered masks painted with the
  class means alone (no generator; what the generator adds is (d) - (b)); and the accuracy of a
  classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017) telling the second half's real
  images from (b), (c) and (d) by per-image FLIM feature statistics (0.5: indistinguishable),
  with the two real halves as the baseline;
- ``selection``: for one trained sU-Net, the MC-dropout uncertainty of all candidates and of the
  kept ones (``--model``-free: the sU-Net is trained here, 20 epochs on the training images used
  by the generator).

and writes ``docs/results/synthesis/grid.png``: real image, mask, altered mask and generated
image for a few test images. The generator never sees a test image. Without
``../shared/datasets/wbc1`` it prints ``{"skipped": ...}``.

With ``--experiment`` it instead trains sU-Nets on the full masks of 5 and 10 training images
of each seeded split (``make_split(seed=s)``) and reports test Dice of three arms: the first
training, the same fine-tuned on the real images only for the same epochs (a control for the
extra training), and fine-tuned on real + synthetic images (``train_with_synthesis``, 2 per real
image). The validation images choose epochs only; nothing is tuned on test images.
``--full-epochs E`` adds the full-data reference (the same sU-Net on every training image of the
split) and ``--summarise A.json B.json ... [--plot PNG]`` the fewest annotated images (and their
share of the training split) with which each arm reaches 95% and 100% of it, and a figure of test
Dice against annotated images.

Usage::

    OMP_NUM_THREADS=1 nice python benchmarks/synthesis.py [--steps 600] [--train 30]
    OMP_NUM_THREADS=1 nice python benchmarks/synthesis.py --experiment --sizes 5 10 --seeds 0
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _emit import emit  # noqa: E402

SHARED = REPO.parent / "shared" / "datasets"
RESULTS = REPO / "docs" / "results" / "synthesis"


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature rows ``a`` and ``b`` (the FID formula)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = np.real(linalg.sqrtm(cov_a @ cov_b))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def pixel_features(encoder, images, per_image: int = 200, seed: int = 0) -> np.ndarray:
    """Last-layer FLIM features at ``per_image`` random positions of each image, as rows."""
    import torch

    rng = np.random.default_rng(seed)
    rows = []
    with torch.no_grad():
        for image in images:
            f = encoder(torch.from_numpy(np.asarray(image, np.float32))[None])[0].flatten(1).T.numpy()
            rows.append(f[rng.choice(len(f), min(per_image, len(f)), replace=False)])
    return np.concatenate(rows).astype(np.float64)


def pooled_features(encoder, images) -> np.ndarray:
    """Per image, the mean and standard deviation of every FLIM layer's maps: one row each."""
    import torch

    rows = []
    with torch.no_grad():
        for image in images:
            maps = encoder.features(torch.from_numpy(np.asarray(image, np.float32))[None])
            rows.append(np.concatenate([np.r_[m[0].flatten(1).mean(1).numpy(), m[0].flatten(1).std(1).numpy()]
                                        for m in maps]))
    return np.asarray(rows, dtype=np.float64)


def two_sample_accuracy(real: np.ndarray, other: np.ndarray, seed: int = 0) -> float:
    """Cross-validated accuracy of a logistic regression telling ``real`` rows from ``other`` rows
    (a classifier two-sample test, Lopez-Paz & Oquab, ICLR 2017): 0.5 means indistinguishable."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([real, other])
    y = np.r_[np.zeros(len(real)), np.ones(len(other))]
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    return float(cross_val_score(classifier, x, y, cv=folds).mean())


def painted(mask, image, source_mask, n_classes):
    from hitlseg.synthesis.networks import class_statistics

    stats = class_statistics(image, source_mask, n_classes)
    return np.moveaxis(stats[:, 0][mask], -1, 0).astype(np.float32)


def write_grid(rows, path: Path, tile: int = 160) -> Path:
    """Columns of (real, mask, altered mask, generated) pictures as one PNG, each at most ``tile`` pixels a side."""
    from PIL import Image

    def fit(picture: np.ndarray, nearest: bool) -> np.ndarray:
        h, w = picture.shape[:2]
        factor = min(1.0, tile / max(h, w))
        if factor == 1.0:
            return picture
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        return np.asarray(Image.fromarray(picture).resize(size, Image.NEAREST if nearest else Image.LANCZOS))

    from hitlseg.io.color import normalized_lab_to_rgb
    from hitlseg.io.preview import colour_labels

    columns = []
    for image, mask, altered, generated in rows:
        columns.append([fit(np.rint(normalized_lab_to_rgb(image) * 255).astype(np.uint8), False),
                        fit(colour_labels(mask), True), fit(colour_labels(altered), True),
                        fit(np.rint(normalized_lab_to_rgb(generated) * 255).astype(np.uint8), False)])
    height = max(c[0].shape[0] for c in columns) + 4
    width = max(c[0].shape[1] for c in columns) + 4
    tiles = []
    for column in columns:
        pad = ((2, height - 2 - column[0].shape[0]), (2, width - 2 - column[0].shape[1]), (0, 0))
        tiles.append(np.concatenate([np.pad(t, pad, constant_values=255) for t in column]))
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(np.concatenate(tiles, axis=1))
    picture.save(path, optimize=True)
    if path.stat().st_size > 300_000:  # keep the figure small: a 256-colour palette
        picture.quantize(256).save(path, optimize=True)
    return path


def load_dataset(name: str, seed: int):
    from hitlseg.dataset import Dataset, make_split
    from hitlseg.nets.workflow import load_pairs

    root = SHARED / name
    dataset = Dataset.from_folder(root)
    split = make_split(dataset.ids, seed=seed)
    return dataset, split, load_pairs


def benchmark(args) -> dict:
    import torch

    from hitlseg.nets import SegModel, TrainConfig, train
    from hitlseg.nets.workflow import n_classes_of, robot_encoder
    from hitlseg.synthesis import GeneratorConfig, random_alteration, synthesize_for_training, train_generator

    dataset, split, load_pairs = load_dataset(args.dataset, args.seed)
    train_ids, test_ids = split.train[: args.train], split.test[: args.test]
    train_pairs, test_pairs = load_pairs(dataset, train_ids), load_pairs(dataset, test_ids)
    val_pairs = load_pairs(dataset, split.val[: args.test])
    n_classes = n_classes_of(train_pairs + val_pairs)
    encoder, _ = robot_encoder(train_pairs, seed=args.seed)
    config = GeneratorConfig(steps=args.steps, seed=args.seed, perceptual_weight=args.perceptual)
    synthesizer = train_generator(train_pairs, config, encoder=encoder if args.perceptual > 0 else None,
                                  n_classes=n_classes)
    result = {"dataset": str(SHARED / args.dataset), "seed": args.seed, "train_images": len(train_pairs),
              "test_images": len(test_pairs), "torch_threads": torch.get_num_threads(),
              "generator": {"config": config.to_dict(), "seconds": round(synthesizer.seconds, 1),
                            "seconds_per_step": round(synthesizer.seconds / config.steps, 4),
                            "l1": [round(h["l1"], 4) for h in synthesizer.history],
                            "file_bytes": None}}
    synthesizer.save(Path(args.tmp) / "synthesizer.pt")
    result["generator"]["file_bytes"] = (Path(args.tmp) / "synthesizer.pt").stat().st_size
    half = len(test_pairs) // 2
    first, second = test_pairs[:half], test_pairs[half:]
    rng = np.random.default_rng([args.seed, 1])
    altered = [random_alteration(mask, rng) for _, mask in second]
    started = time.perf_counter()
    generated = [synthesizer.generate(a, image, mask) for (a, _), (image, mask) in zip(altered, second)]
    seconds = time.perf_counter() - started
    result["generator"]["images_per_second"] = round(len(generated) / seconds, 1)
    reconstructed = [synthesizer.generate(mask, image, mask) for image, mask in second]
    means = [painted(a, image, mask, n_classes) for (a, _), (image, mask) in zip(altered, second)]
    feats = {name: pixel_features(encoder, images, seed=args.seed) for name, images in
             {"first": [i for i, _ in first], "second": [i for i, _ in second], "generated": generated,
              "reconstructed": reconstructed, "painted_means": means}.items()}
    result["realism"] = {
        "feature": "FLIM last layer, 200 random pixels per image",
        "real_vs_real": round(frechet_distance(feats["first"], feats["second"]), 3),
        "real_vs_generated_altered": round(frechet_distance(feats["first"], feats["generated"]), 3),
        "real_vs_reconstructed": round(frechet_distance(feats["first"], feats["reconstructed"]), 3),
        "real_vs_painted_means": round(frechet_distance(feats["first"], feats["painted_means"]), 3),
        "two_sample_feature": "per image mean and std of every FLIM layer's maps; 5-fold logistic regression",
        "two_sample_accuracy_generated_altered": round(two_sample_accuracy(
            pooled_features(encoder, [i for i, _ in second]), pooled_features(encoder, generated), args.seed), 3),
        "two_sample_accuracy_reconstructed": round(two_sample_accuracy(
            pooled_features(encoder, [i for i, _ in second]), pooled_features(encoder, reconstructed), args.seed), 3),
        "two_sample_accuracy_painted_means": round(two_sample_accuracy(
            pooled_features(encoder, [i for i, _ in second]), pooled_features(encoder, means), args.seed), 3),
        "two_sample_accuracy_real_halves": round(two_sample_accuracy(
            pooled_features(encoder, [i for i, _ in first]), pooled_features(encoder, [i for i, _ in second]),
            args.seed), 3),
        "reconstruction_l1": round(float(np.mean([np.abs(r - i).mean() for r, (i, _) in zip(reconstructed, second)])), 4),
        "alterations": [names for _, names in altered[:10]]}
    grid = RESULTS / ("grid.png" if args.dataset == "wbc1" else f"grid_{args.dataset}.png")
    write_grid([(image, mask, a, g) for (image, mask), (a, _), g in list(zip(second, altered, generated))[:8]],
               grid, args.tile)
    result["grid"] = str(grid.relative_to(REPO))
    result["grid_bytes"] = grid.stat().st_size
    model = SegModel.sunet(encoder, n_classes, seed=args.seed)
    train(model, train_pairs, val_pairs, TrainConfig(epochs=args.epochs, seed=args.seed))
    started = time.perf_counter()
    made = synthesize_for_training(model, train_pairs, synthesizer, 1, np.random.default_rng(args.seed), candidates=3)
    result["selection"] = {**made.summary(), "seconds": round(time.perf_counter() - started, 1),
                           "sunet_epochs": args.epochs}
    return result


def experiment(args) -> dict:
    import copy

    from hitlseg.nets import SegModel, TrainConfig, train
    from hitlseg.nets.workflow import evaluate_model, n_classes_of, robot_encoder
    from hitlseg.synthesis import GeneratorConfig, SynthesisConfig, train_with_synthesis

    runs, full = [], []
    for seed in args.seeds:
        dataset, split, load_pairs = load_dataset(args.dataset, seed)
        val_pairs, test_pairs = load_pairs(dataset, split.val), load_pairs(dataset, split.test)
        for size in args.sizes:
            started = time.perf_counter()
            train_pairs = load_pairs(dataset, split.train[:size])
            encoder, _ = robot_encoder(train_pairs, seed=seed)
            config = TrainConfig(epochs=args.epochs, seed=seed)
            model = SegModel.sunet(encoder, n_classes_of(train_pairs + val_pairs), seed=seed)
            first = train(model, train_pairs, val_pairs, config)
            run = {"seed": seed, "train_images": size, "epochs": args.epochs,
                   "first": {"val": first.best_val_dice, "test": evaluate_model(model, test_pairs)["mean_dice"]}}
            synth = SynthesisConfig(n_per_image=args.n_per_image, generator=GeneratorConfig(steps=args.steps))
            control = copy.deepcopy(model)
            fine = train(control, train_pairs, val_pairs, TrainConfig(epochs=max(1, args.epochs // 2), seed=seed))
            kept_control = fine.best_val_dice >= first.best_val_dice
            if not kept_control:  # the same rule as train_with_synthesis: keep the better model on validation
                control = model
            run["fine_tuned_real_only"] = {"val": max(fine.best_val_dice, first.best_val_dice),
                                           "test": evaluate_model(control, test_pairs)["mean_dice"],
                                           "model_kept": "fine-tuned" if kept_control else "first"}
            out = train_with_synthesis(model, train_pairs, val_pairs, config, synth, first_val_dice=first.best_val_dice)
            record = out["synthesis"]
            run["fine_tuned_with_synthetic"] = {
                "val": record.get("fine_tuned_val_dice"), "test": evaluate_model(model, test_pairs)["mean_dice"],
                "model_kept": record["model_kept"], "synthetic_images": len(out["samples"]),
                "candidates": record.get("candidates"), "realistic": record.get("realistic"),
                "generator_seconds": round(record["generator_seconds"], 1)}
            run["seconds"] = round(time.perf_counter() - started, 1)
            runs.append(run)
            print(run, file=sys.stderr, flush=True)
        if args.full_epochs:
            full.append(full_data_run(dataset, split, load_pairs, val_pairs, test_pairs, seed, args.full_epochs))
            print(full[-1], file=sys.stderr, flush=True)
    result = {"dataset": str(SHARED / args.dataset), "test_images": len(test_pairs), "runs": runs,
              "generator_steps": args.steps, "n_per_image": args.n_per_image}
    if full:
        result["full_data"] = full
    return result


def full_data_run(dataset, split, load_pairs, val_pairs, test_pairs, seed: int, epochs: int) -> dict:
    """The reference of full supervision: the same sU-Net (FLIM encoder from robot markers on 5 of
    the images) trained on the masks of every training image of the split."""
    from hitlseg.nets import SegModel, TrainConfig, train
    from hitlseg.nets.workflow import evaluate_model, n_classes_of, robot_encoder

    started = time.perf_counter()
    train_pairs = load_pairs(dataset, split.train)
    encoder, _ = robot_encoder(train_pairs[:5], seed=seed)
    model = SegModel.sunet(encoder, n_classes_of(train_pairs + val_pairs), seed=seed)
    history = train(model, train_pairs, val_pairs, TrainConfig(epochs=epochs, seed=seed))
    return {"seed": seed, "train_images": len(train_pairs), "epochs": epochs, "val": history.best_val_dice,
            "test": evaluate_model(model, test_pairs)["mean_dice"], "seconds": round(time.perf_counter() - started, 1)}


ARMS = ("first", "fine_tuned_real_only", "fine_tuned_with_synthetic")


def annotation_share(results: list[dict], fractions=(0.95, 1.0)) -> dict:
    """Mean test Dice per arm and number of annotated images, and per arm the fewest images whose
    mean (over the seeds run at that size) reaches each fraction of the full-data mean Dice, as a
    share of the split's training images (Mahapatra et al.'s "share of annotations needed")."""
    runs = [r for result in results for r in result["runs"]]
    full = [f for result in results for f in result.get("full_data", [])]
    sizes = sorted({r["train_images"] for r in runs})
    table = {arm: {str(size): float(np.mean([r[arm]["test"] for r in runs if r["train_images"] == size]))
                   for size in sizes} for arm in ARMS}
    seeds = {str(size): sorted(r["seed"] for r in runs if r["train_images"] == size) for size in sizes}
    out = {"mean_test_dice": table, "seeds": seeds}
    if not full:
        return out
    reference = float(np.mean([f["test"] for f in full]))
    train_images = full[0]["train_images"]
    out["full_data"] = {"mean_test_dice": reference, "train_images": train_images, "seeds": [f["seed"] for f in full]}
    for fraction in fractions:
        reached = {}
        for arm in ARMS:
            size = next((s for s in sizes if table[arm][str(s)] >= fraction * reference), None)
            reached[arm] = None if size is None else {"images": size, "share": size / train_images}
        out[f"reaches_{round(100 * fraction)}pct"] = reached
    return out


def plot_share(results: list[dict], summary: dict, path: Path) -> None:
    """Test Dice against the number of annotated images: each arm's mean over seeds, each run's
    value as a dot, and the full-data reference with its 95 % line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for result in results for r in result["runs"]]
    names = {"first": "first training", "fine_tuned_real_only": "+ fine-tuned on real images",
             "fine_tuned_with_synthetic": "+ fine-tuned on real + synthetic"}
    figure, axes = plt.subplots(figsize=(6, 4))
    for offset, arm in zip((-0.04, 0.0, 0.04), ARMS):
        sizes = sorted(int(k) for k in summary["mean_test_dice"][arm])
        line, = axes.plot(sizes, [summary["mean_test_dice"][arm][str(k)] for k in sizes], marker="o", label=names[arm])
        dots = [(r["train_images"], r[arm]["test"]) for r in runs]
        axes.scatter([k * (1 + offset) for k, _ in dots], [d for _, d in dots], s=10, color=line.get_color(), alpha=0.5)
    if "full_data" in summary:
        full = summary["full_data"]
        axes.axhline(full["mean_test_dice"], color="k", lw=1, label=f"all {full['train_images']} training images")
        axes.axhline(0.95 * full["mean_test_dice"], color="k", lw=1, ls="--", label="95 % of that")
    axes.set_xscale("log")
    axes.minorticks_off()
    axes.set_xticks(sorted({r["train_images"] for r in runs}), [str(k) for k in sorted({r["train_images"] for r in runs})])
    axes.set_xlabel("training images with full masks")
    axes.set_ylabel("test mean Dice")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="generator steps (default 600)")
    parser.add_argument("--train", type=int, default=30, help="training images for the generator (default 30)")
    parser.add_argument("--test", type=int, default=90, help="test images for the realism check (default 90)")
    parser.add_argument("--epochs", type=int, default=20, help="sU-Net epochs (default 20)")
    parser.add_argument("--perceptual", type=float, default=10.0, help="perceptual loss weight (default 10, 0: off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", default="wbc1", help="a dataset of ../shared/datasets (default wbc1; glas works)")
    parser.add_argument("--tile", type=int, default=160, help="longest side of a grid tile (default 160)")
    parser.add_argument("--experiment", action="store_true", help="the with/without synthesis experiment")
    parser.add_argument("--sizes", type=int, nargs="*", default=[5, 10],
                        help="training images per run (default 5 10; none: only --full-epochs)")
    parser.add_argument("--full-epochs", type=int, default=0,
                        help="also train on every training image of each split for this many epochs: the "
                             "full-data reference (default 0: not)")
    parser.add_argument("--summarise", nargs="+", metavar="JSON",
                        help="print the annotation share table of these --experiment outputs and exit")
    parser.add_argument("--plot", metavar="PNG", help="with --summarise: test Dice against annotated images, per arm")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--n-per-image", type=int, default=2)
    parser.add_argument("--tmp", default="/tmp", help="folder for the synthesizer file (its size is reported)")
    parser.add_argument("--out", help="also write the JSON line to this file")
    args = parser.parse_args(argv)
    if args.summarise:
        import json

        results = [json.loads(Path(f).read_text()) for f in args.summarise]
        summary = annotation_share(results)
        if args.plot:
            plot_share(results, summary, Path(args.plot))
            summary["plot"] = args.plot
        emit(summary, args.out)
        return 0
    if not (SHARED / args.dataset).is_dir():
        emit({"skipped": f"{SHARED / args.dataset} not found"}, args.out)
        return 0
    load = os.getloadavg()
    started = time.perf_counter()
    result = experiment(args) if args.experiment else benchmark(args)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["load_before"], result["load_after"] = [round(x, 2) for x in load], [round(x, 2) for x in os.getloadavg()]
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
