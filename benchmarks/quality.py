"""Benchmark of hitlseg.quality: does the no-reference quality model rank real predictions?

Prints one JSON line (and writes it to ``--out``). For each dataset:

1. a quality model (:func:`hitlseg.quality.train_quality`) is trained on the masks of the
   training part only (degraded ``--samples-per-image`` times each; no prediction seen);
2. real models at several training stages segment the test part: the adaptive FLIM decoder
   and the strokes learner (:func:`hitlseg.pseudo.learn_from_strokes`, strokes only) after each
   of ``--stages`` epochs, all from robot strokes on ``--marked`` seeded training images
   (schisto: its 5 human-marked images, whose 12 others are the test);
3. figures: Pearson and Spearman correlation of predicted against true mean foreground Dice
   (and NMI) over all test predictions and per host, the mean absolute error, and the same
   correlations for the model-free baseline :func:`hitlseg.quality.expected_dice` (strokes
   learner only: the adaptive decoder gives saliency, not probabilities);
4. threshold choice (Galdran et al.'s use): on the strokes learner's probabilities, the test
   Dice of the threshold the quality model picks per image (:func:`hitlseg.quality.choose_threshold`)
   against a fixed 0.5 and Otsu's threshold, and the oracle's (best threshold per image by the
   true Dice) as the ceiling.

Splits: ``make_split(ids, seed=0)`` (wbc1, hippocampus: ``--train-3d`` / ``--test-3d`` volumes
of its parts). Masks of the test part are read for scoring only. Nothing was tuned on test images.

Usage::

    python benchmarks/quality.py                                  # wbc1 (~5 min on one core)
    python benchmarks/quality.py --datasets wbc1,schisto,hippocampus --out docs/results/quality/quality.json
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nets import dataset_root, emit  # noqa: E402  (../shared/datasets, wbc1 falling back to the bundled copy)


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def correlations(predicted, true) -> dict:
    from scipy.stats import spearmanr

    predicted, true = np.asarray(predicted, float), np.asarray(true, float)
    if len(predicted) < 3 or predicted.std() == 0 or true.std() == 0:
        return {"n": len(predicted), "pearson": None, "spearman": None, "mae": float(np.abs(predicted - true).mean())}
    return {"n": len(predicted), "pearson": float(np.corrcoef(predicted, true)[0, 1]),
            "spearman": float(spearmanr(predicted, true).statistic), "mae": float(np.abs(predicted - true).mean())}


def load_case(name: str, args):
    from hitlseg.dataset import Dataset, make_split
    from hitlseg.robot import Robot

    dataset = Dataset.from_folder(dataset_root(name))
    if name == "schisto":
        marked = [s.id for s in dataset if s.markers_path is not None]
        train_ids, test_ids = list(marked), [i for i in dataset.ids if i not in set(marked)]
    else:
        split = make_split(dataset.with_masks(), seed=args.seed)
        train_ids, test_ids = list(split.train), list(split.test)
        if name == "hippocampus":
            train_ids, test_ids = train_ids[: args.train_3d], test_ids[: args.test_3d]
        marked = sorted(np.random.default_rng([args.seed, 0]).choice(train_ids, args.marked, replace=False).tolist())
    loaded = {i: dataset.load(i) for i in train_ids + test_ids}
    images = {i: s.image for i, s in loaded.items()}
    masks = {i: s.mask.astype(np.int64) for i, s in loaded.items()}
    robot = Robot(seed=args.seed)
    markers = {i: loaded[i].markers if name == "schisto" else robot.mark(masks[i], key=i) for i in marked}
    k = int(max(m.max() for m in masks.values()))
    return train_ids, test_ids, images, masks, marked, markers, k


def hosts(name, images, markers, marked, test_ids, k, args):
    """Test predictions of every host: {host: {id: (labels, probabilities or None)}}."""
    from hitlseg.flim import FLIMModel
    from hitlseg.pseudo import SelfTrainingConfig, default_strokes_config, learn_from_strokes

    ndim = images[marked[0]].ndim - 1
    out, seconds = {}, {}
    t0 = time.perf_counter()
    flim = FLIMModel.fit([images[i] for i in marked], [markers[i] for i in marked], seed=args.seed, names=marked)
    out["adaptive"] = {i: (flim.predict(images[i]).mask.astype(np.int64), None) for i in test_ids}
    seconds["adaptive"] = time.perf_counter() - t0
    for epochs in args.stages:
        t0 = time.perf_counter()
        config = default_strokes_config(ndim, epochs=epochs, seed=args.seed)
        result = learn_from_strokes([images[i] for i in marked], [markers[i] for i in marked], encoder=flim.encoder,
                                    n_classes=k, config=config, self_training=SelfTrainingConfig(iterations=0),
                                    names=marked, seed=args.seed)
        predictions = {}
        for i in test_ids:
            p = result.model.predict(images[i])
            predictions[i] = (p.labels.astype(np.int64), p.probabilities)
        out[f"strokes_{epochs}ep"] = predictions
        seconds[f"strokes_{epochs}ep"] = time.perf_counter() - t0
        log(f"{name}: strokes learner {epochs} epochs in {seconds[f'strokes_{epochs}ep']:.0f} s")
    return out, seconds


def run_dataset(name: str, args) -> dict:
    from hitlseg.quality import choose_threshold, expected_dice, otsu_threshold, similarity, threshold_labels, train_quality

    t0 = time.perf_counter()
    train_ids, test_ids, images, masks, marked, markers, k = load_case(name, args)
    entry = {"train_images": len(train_ids), "test_images": len(test_ids), "marked": marked, "n_classes": k}
    t0 = time.perf_counter()
    qmodel = train_quality([images[i] for i in train_ids], [masks[i] for i in train_ids], n_classes=k,
                           epochs=args.epochs, samples_per_image=args.samples_per_image, seed=args.seed)
    entry["quality_model"] = {"seconds": time.perf_counter() - t0, "best_epoch": qmodel.info["best_epoch"],
                              "val_pearson_dice_on_degraded": qmodel.info["val_pearson_dice"],
                              "degraded_samples": qmodel.info["degraded_samples"]}
    log(f"{name}: quality model in {entry['quality_model']['seconds']:.0f} s, validation r (degraded masks) "
        f"{qmodel.info['val_pearson_dice']}")
    predictions, seconds = hosts(name, images, markers, marked, test_ids, k, args)
    entry["host_seconds"] = seconds
    rows = []
    for host, by_id in predictions.items():
        scored = qmodel.score_many([images[i] for i in test_ids], [by_id[i][0] for i in test_ids], test_ids)
        for i, s in zip(test_ids, scored):
            labels, probabilities = by_id[i]
            true = similarity(labels, masks[i], k)
            rows.append({"host": host, "id": i, "true_dice": true["dice"], "true_nmi": true["nmi"],
                         "pred_dice": s["dice"], "pred_nmi": s["nmi"],
                         "expected_dice": expected_dice(probabilities) if probabilities is not None else None})
    entry["all"] = {"dice": correlations([r["pred_dice"] for r in rows], [r["true_dice"] for r in rows]),
                    "nmi": correlations([r["pred_nmi"] for r in rows], [r["true_nmi"] for r in rows])}
    strokes_rows = [r for r in rows if r["expected_dice"] is not None]
    entry["strokes_hosts"] = {
        "quality_model": correlations([r["pred_dice"] for r in strokes_rows], [r["true_dice"] for r in strokes_rows]),
        "expected_dice_baseline": correlations([r["expected_dice"] for r in strokes_rows],
                                               [r["true_dice"] for r in strokes_rows])}
    entry["per_host"] = {}
    for host in predictions:
        mine = [r for r in rows if r["host"] == host]
        entry["per_host"][host] = {"true_mean_dice": float(np.mean([r["true_dice"] for r in mine])),
                                   "pred_mean_dice": float(np.mean([r["pred_dice"] for r in mine])),
                                   "dice": correlations([r["pred_dice"] for r in mine], [r["true_dice"] for r in mine])}
        log(f"{name} {host}: true {entry['per_host'][host]['true_mean_dice']:.3f}, predicted "
            f"{entry['per_host'][host]['pred_mean_dice']:.3f}, r {entry['per_host'][host]['dice']['pearson']}")
    log(f"{name} all: {entry['all']['dice']}")
    # threshold choice on the soft predictions of the strokes learner
    t0 = time.perf_counter()
    entry["thresholds"] = {}
    for host, by_id in predictions.items():
        if host == "adaptive":
            continue
        dice = {"fixed_0.5": [], "otsu": [], "quality": [], "oracle": []}
        chosen = []
        for i in test_ids:
            probabilities = by_id[i][1]
            pick = choose_threshold(qmodel, images[i], probabilities, name=i)
            chosen.append(pick["threshold"])
            dice["fixed_0.5"].append(similarity(threshold_labels(probabilities, 0.5), masks[i], k)["dice"])
            dice["otsu"].append(similarity(threshold_labels(probabilities, otsu_threshold(probabilities)), masks[i],
                                           k)["dice"])
            dice["quality"].append(similarity(pick["labels"], masks[i], k)["dice"])
            dice["oracle"].append(max(similarity(threshold_labels(probabilities, t), masks[i], k)["dice"]
                                      for t in pick["thresholds"]))
        means = {key: float(np.mean(v)) for key, v in dice.items()}
        entry["thresholds"][host] = {"mean_dice": means, "quality_minus_0.5": means["quality"] - means["fixed_0.5"],
                                     "quality_minus_otsu": means["quality"] - means["otsu"],
                                     "median_chosen_threshold": float(np.median(chosen))}
        log(f"{name} {host} thresholds: {means}")
    entry["threshold_seconds"] = time.perf_counter() - t0
    if args.rows:
        entry["rows"] = rows
    return entry


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="wbc1", help="comma-separated: wbc1, schisto, hippocampus")
    parser.add_argument("--epochs", type=int, default=15, help="quality model epochs")
    parser.add_argument("--samples-per-image", type=int, default=8, help="degraded masks per training mask")
    parser.add_argument("--stages", default="1,3,10,30", help="strokes-learner epochs of the hosts")
    parser.add_argument("--marked", type=int, default=5, help="robot-marked training images of the hosts")
    parser.add_argument("--train-3d", type=int, default=60)
    parser.add_argument("--test-3d", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", action="store_true", help="include every prediction's row in the JSON")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    args.stages = [int(s) for s in args.stages.split(",") if s]
    import torch

    report = {"benchmark": "quality", "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "load": os.getloadavg(), "settings": {k: v for k, v in vars(args).items() if k != "out"}}
    started = time.perf_counter()
    for name in [d for d in args.datasets.split(",") if d]:
        report[name] = run_dataset(name, args) if dataset_root(name) is not None else None
    report["seconds"] = time.perf_counter() - started
    report["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["load_after"] = os.getloadavg()
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
