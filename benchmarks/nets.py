"""Benchmark of the segmentation networks: sU-Net (frozen FLIM encoder) vs the all-backprop U-Net.

Prints one JSON line. For wbc1 (2D, RGB, classes cytoplasm/nucleus) with its default split
(``make_split(ids, seed=0)``) and hippocampus (3D MRI, classes anterior/posterior), each model
reports: epochs, training seconds, best validation Dice, test Dice per class and their mean,
inference seconds per image, peak resident memory. The sU-Net's FLIM encoder is learned from
robot markers on 5 training images (its fitting time is reported apart).

Every (dataset, model) run happens in its own process, so peak memory is that run's own.

Usage::

    python benchmarks/nets.py                 # wbc1 10 epochs, hippocampus 3 epochs (~15 min on 2 cores)
    python benchmarks/nets.py --quick         # subsets and 2 epochs, a smoke test (~1 min)
    python benchmarks/nets.py --epochs 100 --epochs-3d 100 --device cuda   # the paper's setting

Datasets come from ``../shared/datasets`` (relative to the repository); wbc1 falls back to the
copy bundled with hitlseg. Without hippocampus its entry is ``null``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
QUICK = {"train": 30, "val": 8, "test": 20}


def dataset_root(name: str) -> Path | None:
    path = SHARED / name
    if path.is_dir():
        return path
    if name == "wbc1":
        from hitlseg.datasets import DEMO_ROOT

        return DEMO_ROOT
    return None


def emit(report: dict, out: str | None) -> None:
    """Print the benchmark's JSON line, and write it to ``out`` when given (shared by the benchmarks)."""
    line = json.dumps(report)
    print(line)
    if out:
        Path(out).write_text(line + "\n")


def run_one(name: str, kind: str, epochs: int, quick: bool, device: str | None, seed: int, crop: int | None) -> dict:
    """Train and evaluate one model on one dataset (in this process)."""
    import resource

    import numpy as np
    import torch

    from hitlseg.dataset import Dataset, make_split
    from hitlseg.nets import SegModel, TrainConfig, train
    from hitlseg.nets.workflow import evaluate_model, load_pairs, n_classes_of, robot_encoder

    root = dataset_root(name)
    dataset = Dataset.from_folder(root)
    split = make_split(dataset.ids, seed=0)
    train_ids, val_ids, test_ids = split.train, split.val, split.test
    if quick:
        train_ids, val_ids, test_ids = train_ids[: QUICK["train"]], val_ids[: QUICK["val"]], test_ids[: QUICK["test"]]
    started = time.perf_counter()
    train_pairs, val_pairs, test_pairs = (load_pairs(dataset, ids) for ids in (train_ids, val_ids, test_ids))
    load_seconds = time.perf_counter() - started
    n_classes = n_classes_of(train_pairs + val_pairs)
    channels, ndim = train_pairs[0][0].shape[0], train_pairs[0][0].ndim - 1
    result: dict = {"dataset": str(root), "model": kind, "ndim": ndim, "channels": channels, "n_classes": n_classes,
                    "train_images": len(train_pairs), "val_images": len(val_pairs), "test_images": len(test_pairs),
                    "epochs": epochs, "load_seconds": round(load_seconds, 2)}
    flim_seconds = 0.0
    if kind == "sunet":
        started = time.perf_counter()
        encoder, chosen = robot_encoder(train_pairs, seed=seed, device=device)
        flim_seconds = time.perf_counter() - started
        result["flim_images"] = [train_ids[i] for i in chosen]
        result["flim_seconds"] = round(flim_seconds, 2)
        model = SegModel.sunet(encoder, n_classes, seed=seed)
    else:
        model = SegModel.unet(channels, n_classes, ndim, seed=seed)
    result["trainable_parameters"] = sum(p.numel() for p in model.net.trainable_parameters())
    config = TrainConfig(epochs=epochs, seed=seed, device=device, crop_size=crop)
    result["crop_size"] = list(config.window(ndim))
    result["inference_window"] = list(config.inference_window(ndim))
    trained = train(model, train_pairs, val_pairs, config)
    result["train_seconds"] = round(trained.seconds, 1)
    result["train_seconds_with_flim"] = round(trained.seconds + flim_seconds, 1)
    result["seconds_per_epoch"] = round(float(np.mean([h["seconds"] for h in trained.history])), 2)
    result["loss_per_epoch"] = [round(h["loss"], 4) for h in trained.history]
    result["val_dice_per_epoch"] = [round(h["val_dice"], 4) for h in trained.history]
    result["best_epoch"] = trained.best_epoch
    result["val_dice"] = round(trained.best_val_dice, 4)
    test = evaluate_model(model, test_pairs, names=test_ids)
    result["test_dice_per_class"] = {str(c): round(v, 4) for c, v in test["dice"].items()}
    result["test_dice"] = round(test["mean_dice"], 4)
    result["inference_seconds_per_image"] = round(test["seconds_per_image"], 4)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["device"] = str(model.device)
    result["torch_threads"] = torch.get_num_threads()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs for wbc1 (default 10; the paper uses 100)")
    parser.add_argument("--epochs-3d", type=int, default=3, help="epochs for hippocampus (default 3)")
    parser.add_argument("--crop-3d", type=int, default=32,
                        help="training crop for hippocampus (default 32: foreground-biased 32^3 crops of the ~35x50x35 "
                             "volumes, about twice as fast per step; prediction runs on whole volumes)")
    parser.add_argument("--quick", action="store_true", help="subsets of 30/8/20 images and 2 epochs")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when present)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("wbc1", "hippocampus"), help="run one dataset")
    parser.add_argument("--run", nargs=2, metavar=("DATASET", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.epochs_3d = min(args.epochs, 2), min(args.epochs_3d, 2)

    if args.run:  # child process: one run, its JSON on stdout
        name, kind = args.run
        epochs = args.epochs if name == "wbc1" else args.epochs_3d
        crop = args.crop_3d if name == "hippocampus" else None
        print(json.dumps(run_one(name, kind, epochs, args.quick, args.device, args.seed, crop)))
        return 0

    started = time.perf_counter()
    load_before = os.getloadavg()
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # OpenMP threads that spin while waiting are fastest on an idle machine but many times slower
    # when other processes compete for the cores; passive waiting costs little and keeps the
    # figures meaningful on a shared machine. Set OMP_WAIT_POLICY=ACTIVE to measure the other way.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    report: dict = {"benchmark": "nets", "quick": args.quick, "cpus": os.cpu_count(),
                    "omp_wait_policy": env["OMP_WAIT_POLICY"], "epochs": {"wbc1": args.epochs, "hippocampus": args.epochs_3d}}
    for name in ("wbc1", "hippocampus"):
        if args.only and name != args.only:
            continue
        if dataset_root(name) is None:
            report[name] = None
            continue
        report[name] = {}
        for kind in ("sunet", "unet"):
            command = [sys.executable, __file__, "--run", name, kind, "--epochs", str(args.epochs),
                       "--epochs-3d", str(args.epochs_3d), "--crop-3d", str(args.crop_3d), "--seed", str(args.seed)]
            if args.quick:
                command.append("--quick")
            if args.device:
                command += ["--device", args.device]
            child = subprocess.run(command, capture_output=True, text=True, env=env)
            if child.returncode != 0:
                report[name][kind] = {"error": child.stderr.strip().splitlines()[-1:] or ["failed"]}
                continue
            report[name][kind] = json.loads(child.stdout.strip().splitlines()[-1])
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    report["load_average_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
