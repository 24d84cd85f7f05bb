"""Benchmark of learning from strokes: what a person without ground truth gets from a few marked images.

Prints one JSON line (and writes it to ``--out`` when given). Per dataset and method: test Dice
per class (mean and std over splits), training seconds, peak resident memory of the process and
the marked-pixel fraction of the marked images. Methods:

``adaptive``
    FLIM encoder from the strokes, adaptive decoder (no backpropagation).
``pseudo_sunet``
    The previous web-app learner: sU-Net trained on the adaptive decoder's masks of the marked
    images with the marked pixels set to their class (every pixel labelled).
``partial``
    sU-Net trained on the strokes only (partial CE + Dice over marked pixels).
``partial_ncut``, ``partial_crf``, ``partial_ncut_crf``
    ... plus the normalized-cut loss, the dense-CRF loss, or both (the learner's default).
``expanded``
    ``partial_ncut_crf``, then the strokes plus the pixels where a graph cut from them agrees with
    that model (:mod:`hitlseg.pseudo.expand`), and a fresh sU-Net trained on them.
``self_training``
    The learner before strokes expansion (:func:`hitlseg.pseudo.learn_from_strokes`): partial + both regularisers,
    then HISE pseudo-labels over the unmarked training images for ``--iterations`` rounds.
``expanded_self_training``
    The default learner in 2D: ``expanded``, then the self-training rounds.
``self_training_largest``
    The same model, predictions post-processed with ``largest`` (keep the largest object, fill
    its holes; :mod:`hitlseg.nets.postprocess`): what a person who states "one object per image"
    gets. Skipped with ``--no-largest``.
``METHOD_agree``
    Every sU-Net learner's model again, predictions post-processed with ``agree`` (keep the objects
    the FLIM adaptive decoder also finds on the same frozen encoder; :mod:`hitlseg.nets.postprocess`),
    the learner's default for 2D images since it was chosen on validation images
    (:data:`hitlseg.defaults.STROKES_POSTPROCESS`); the rows without the suffix are the raw labels.
    Skipped with ``--no-agree``.

Strokes: wbc1 and hippocampus get the simulated annotator's strokes (``Robot(seed).mark``) on 5
training images chosen by the ground-truth-free selection (``gtfree``, alternate policy, from the
protocol's seeded first image); schisto uses the 5 human-marked images and tests on the other 12.
Masks are read for the robot and for scoring only; the learners never see them. No setting was
tuned on test images (choices were made on wbc1's validation split).

``--pool-test`` adds the unmarked test images to the self-training pool (transductive: what
``hitlseg train --labels markers`` does on a folder whose unmarked images are the ones to
segment, e.g. schisto's 12). Their masks are still never read by the learner (only to report
pseudo-label accuracy); the rows are then not comparable to the inductive ones.

Usage::

    python benchmarks/strokes.py                         # wbc1 3 splits, schisto, hippocampus 1 split (~1 h on 2 cores)
    python benchmarks/strokes.py --datasets wbc1 --splits 1 --methods partial,self_training
    python benchmarks/strokes.py --quick                 # a smoke test (~1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nets import dataset_root, emit  # noqa: E402  (../shared/datasets, wbc1 falling back to the bundled copy)

METHODS = ("adaptive", "pseudo_sunet", "partial", "partial_ncut", "partial_crf", "partial_ncut_crf", "expanded",
           "self_training", "expanded_self_training")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dice_of(predict, pairs, classes) -> dict:
    from hitlseg.metrics import dice_per_class

    scores = [dice_per_class(predict(image), mask, labels=classes) for image, mask in pairs]
    per_class = {str(c): float(np.mean([s[c] for s in scores])) for c in classes}
    return {"dice": per_class, "mean": float(np.mean(list(per_class.values())))}


def run_split(name: str, split_index: int, methods, args) -> dict:
    """Every method on one split of one dataset."""
    import torch

    from hitlseg.dataset import Dataset, make_split
    from hitlseg.experiments.active import gtfree_first_images
    from hitlseg.flim import FLIMModel
    from hitlseg.nets import SegModel, TrainConfig, train
    from hitlseg.pseudo import SelfTrainingConfig, default_strokes_config, learn_from_strokes
    from hitlseg.robot import Robot

    root = dataset_root(name)
    dataset = Dataset.from_folder(root)
    seed = args.seed + split_index
    if name == "schisto":
        marked = [s.id for s in dataset if s.markers_path is not None]
        train_ids = list(marked)
        test_ids = [i for i in dataset.ids if i not in set(marked)]
    else:
        split = make_split(dataset.with_masks(), seed=seed)
        train_ids, test_ids = list(split.train), list(split.test)
        if args.quick:
            train_ids, test_ids = train_ids[:30], test_ids[:15]
    loaded = {i: dataset.load(i) for i in train_ids + test_ids}
    images = {i: s.image for i, s in loaded.items()}
    masks = {i: s.mask.astype(np.int64) for i, s in loaded.items()}
    started = time.perf_counter()
    if name == "schisto":
        markers = {i: loaded[i].markers for i in marked}
        selection_seconds = 0.0
    else:
        first = str(np.random.default_rng([args.seed, split_index]).choice(train_ids))
        marked, markers = gtfree_first_images(images, masks, train_ids, first, Robot(seed=args.seed), args.images,
                                               args.seed)
        selection_seconds = time.perf_counter() - started
    classes = sorted({int(c) for i in train_ids + test_ids for c in np.unique(masks[i]) if c > 0})
    n_classes = max(classes)
    test_pairs = [(images[i], masks[i]) for i in test_ids]
    pool_ids = [i for i in train_ids if i not in set(marked)]
    if args.pool_test:  # transductive: the unmarked images to segment are the pool (see the module docstring)
        pool_ids += [i for i in test_ids if i not in set(pool_ids)]
    ndim = images[marked[0]].ndim - 1
    limit = args.pool_limit_3d if ndim == 3 else None
    if limit and len(pool_ids) > limit:  # evenly spread, as the web app does
        pool_ids = [pool_ids[i] for i in sorted(set(np.linspace(0, len(pool_ids) - 1, limit).round().astype(int)))]
    marked_images = [images[i] for i in marked]
    marked_markers = [markers[i] for i in marked]
    marked_fraction = float(sum((m > 0).sum() for m in marked_markers) / sum(m.size for m in marked_markers))
    flim = FLIMModel.fit(marked_images, marked_markers, seed=args.seed, names=marked)
    epochs = 3 if args.quick else (args.epochs_3d if ndim == 3 else args.epochs)
    iteration_epochs = 2 if args.quick else (args.iteration_epochs_3d if ndim == 3 else args.iteration_epochs)
    out = {"split": split_index, "marked": marked, "marked_fraction": marked_fraction, "pool": len(pool_ids),
           "test": len(test_ids), "selection_seconds": selection_seconds, "methods": {}}

    def record(method, predict, seconds, extra=None):
        out["methods"][method] = {**dice_of(predict, test_pairs, classes), "train_seconds": seconds, **(extra or {})}
        print(f"# {name} split {split_index} {method}: test mean Dice {out['methods'][method]['mean']:.4f} "
              f"({seconds:.1f} s)", file=sys.stderr, flush=True)

    for method in methods:
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        if method == "adaptive":
            record(method, lambda image: flim.predict(image).mask, 0.0)
            continue
        model = SegModel.sunet(flim.encoder, n_classes, seed=args.seed)
        if method == "pseudo_sunet":
            pairs = []
            for image, marks in zip(marked_images, marked_markers):
                mask = flim.predict(image).mask.astype(np.int64)
                mask[marks > 0] = marks[marks > 0].astype(np.int64) - 1
                pairs.append((image, mask))
            train(model, pairs, [], TrainConfig(epochs=epochs, seed=args.seed))
            record(method, lambda image: model.predict(image).labels, time.perf_counter() - t0)
            continue
        weights = {"partial": {"ncut_weight": 0.0, "crf_weight": 0.0}, "partial_ncut": {"crf_weight": 0.0},
                   "partial_crf": {"ncut_weight": 0.0}, "partial_ncut_crf": {}, "expanded": {}, "self_training": {},
                   "expanded_self_training": {}}[method]
        config = default_strokes_config(ndim, epochs=epochs, seed=args.seed, **weights)
        iterations = (1 if args.quick else args.iterations) if method.endswith("self_training") else 0
        expand = method.startswith("expanded")  # graph cut where it agrees with the strokes model
        pool = [images[i] for i in pool_ids] if iterations else []
        evaluate = (lambda m: dice_of(lambda image: m.predict(image, postprocess="none").labels, test_pairs, classes)) \
            if iterations else None
        result = learn_from_strokes(marked_images, marked_markers, pool, encoder=flim.encoder, n_classes=n_classes,
                                    config=config, self_training=SelfTrainingConfig(iterations=iterations,
                                                                                   epochs=iteration_epochs),
                                    names=marked, pool_names=pool_ids if iterations else None,
                                    truth=[masks[i] for i in pool_ids] if iterations else None,
                                    evaluate=evaluate, seed=args.seed, expand=expand)
        extra = {}
        if expand:
            extra["expanded_fraction"] = result.history[0].get("expanded_fraction")
        if iterations:
            extra["iterations"] = [{k: v for k, v in h.items() if k != "chosen"} for h in result.history]
            extra["stopped"] = result.stopped
        record(method, lambda image: result.model.predict(image, postprocess="none").labels, time.perf_counter() - t0,
               extra)
        if not args.no_agree:  # the same model, objects the FLIM adaptive decoder also finds
            record(f"{method}_agree", lambda image: result.model.predict(image, postprocess="agree").labels,
                   time.perf_counter() - t0, {"flim_decoder": result.model.flim_decoder})
        if method == "self_training" and not args.no_largest:  # the same model, one object per image stated
            record("self_training_largest", lambda image: result.model.predict(image, postprocess="largest").labels,
                   time.perf_counter() - t0)
    out["peak_mb"] = peak_mb()
    return out


def summarise(splits: list[dict]) -> dict:
    methods = list(splits[0]["methods"])
    summary = {}
    for method in methods:
        runs = [s["methods"][method] for s in splits]
        classes = list(runs[0]["dice"])
        summary[method] = {
            "mean_dice": float(np.mean([r["mean"] for r in runs])), "std": float(np.std([r["mean"] for r in runs])),
            "dice_per_class": {c: float(np.mean([r["dice"][c] for r in runs])) for c in classes},
            "dice_per_class_std": {c: float(np.std([r["dice"][c] for r in runs])) for c in classes},
            "train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
        }
    return summary


def write_report(report: dict, folder: Path) -> Path:
    """``folder/report.md`` (a table per dataset) and ``self_training_DATASET.png`` (per iteration:
    the model's test Dice, the pseudo-labels' accuracy and Dice against ground truth, the share of
    pool pixels machine-labelled), from the benchmark's JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# Learning from strokes", "", f"Settings: `{json.dumps(report['settings'])}`; torch threads "
             f"{report['threads']}, load before {[round(x, 2) for x in report['load']]}.", ""]
    for name, entry in report["datasets"].items():
        if entry is None:
            continue
        splits = entry["splits"]
        lines += [f"## {name}", "", f"{len(splits)} split(s); marked images per split: "
                  + "; ".join(", ".join(s["marked"]) for s in splits)
                  + f"; marked pixels {np.mean([s['marked_fraction'] for s in splits]):.2%} of those images; "
                  f"pool {splits[0]['pool']} unmarked images, test {splits[0]['test']} images.", "",
                  "| method | test mean Dice (± std over splits) | per class | train s |", "|---|---|---|---|"]
        for method, row in entry["summary"].items():
            per_class = " / ".join(f"{v:.3f}" for v in row["dice_per_class"].values())
            lines.append(f"| {method} | {row['mean_dice']:.3f} ± {row['std']:.3f} | {per_class} | {row['train_seconds']:.0f} |")
        lines.append("")
        runs = [s["methods"]["self_training"]["iterations"] for s in splits if "self_training" in s["methods"]]
        if not runs:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for index, history in enumerate(runs):
            t = [h["iteration"] for h in history]
            style = dict(alpha=0.8, label=None if index else "model test Dice")
            ax.plot(t, [h["evaluation"]["mean"] for h in history], "o-", color="C0", **style)
            pseudo = [(h["iteration"], h["pseudo_vs_truth"]) for h in history if h.get("pseudo_vs_truth")]
            if pseudo:
                ax.plot([p[0] for p in pseudo], [p[1]["accuracy"] for p in pseudo], "s--", color="C1",
                        label=None if index else "pseudo-label pixel accuracy")
                ax.plot([p[0] for p in pseudo], [np.mean(list(p[1]["dice"].values())) for p in pseudo], "^--", color="C2",
                        label=None if index else "pseudo-label mean Dice (labelled pixels)")
            ax.plot(t, [h["machine_labelled"] for h in history], "x:", color="C3",
                    label=None if index else "share of pool pixels machine-labelled")
        ax.set_xticks(sorted({h["iteration"] for history in runs for h in history}))
        ax.set_xlabel("self-training iteration (0: strokes only)")
        ax.set_ylim(0, 1)
        ax.set_title(f"{name}: self-training from strokes")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)
        figure = folder / f"self_training_{name}.png"
        fig.tight_layout()
        fig.savefig(figure, dpi=110)
        plt.close(fig)
        lines += [f"![self-training on {name}]({figure.name})", "", "| iteration | pool images | machine-labelled | "
                  "pseudo accuracy | test mean Dice |", "|---|---|---|---|---|"]
        for h in runs[0]:
            accuracy = h.get("pseudo_vs_truth", {}).get("accuracy")
            lines.append(f"| {h['iteration']} | {h['pool_images']} | {h['machine_labelled']:.1%} | "
                         f"{'–' if accuracy is None else f'{accuracy:.3f}'} | {h['evaluation']['mean']:.3f} |")
        lines.append("")
    path = folder / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="wbc1,schisto,hippocampus")
    parser.add_argument("--splits", type=int, default=3, help="splits of wbc1 (schisto has one; hippocampus --splits-3d)")
    parser.add_argument("--splits-3d", type=int, default=1)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=50, help="epochs on the strokes")
    parser.add_argument("--iterations", type=int, default=5, help="self-training iterations")
    parser.add_argument("--no-largest", action="store_true", help="skip the self_training_largest row")
    parser.add_argument("--no-agree", action="store_true", help="skip the METHOD_agree rows")
    parser.add_argument("--iteration-epochs", type=int, default=15)
    parser.add_argument("--epochs-3d", type=int, default=30, help="epochs on the strokes for volumes")
    parser.add_argument("--iteration-epochs-3d", type=int, default=5)
    parser.add_argument("--pool-limit-3d", type=int, default=40, help="unmarked volumes self-training may use")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool-test", action="store_true",
                        help="self-train on the unmarked test images too (transductive; masks never read)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--report", help="folder for report.md and the self-training plots")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; use {', '.join(METHODS)}")
    import torch

    report = {"benchmark": "strokes", "threads": torch.get_num_threads(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load": os.getloadavg(), "quick": args.quick,
              "settings": {k: v for k, v in vars(args).items() if k not in ("out", "report")}, "datasets": {}}
    for name in [d for d in args.datasets.split(",") if d]:
        if dataset_root(name) is None:
            report["datasets"][name] = None
            continue
        n = 1 if name == "schisto" else (args.splits_3d if name == "hippocampus" else args.splits)
        splits = [run_split(name, s, methods, args) for s in range(n)]
        report["datasets"][name] = {"summary": summarise(splits), "splits": splits}
    report["peak_mb"] = peak_mb()
    report["load_after"] = os.getloadavg()
    emit(report, args.out)
    if args.report:
        write_report(report, Path(args.report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
