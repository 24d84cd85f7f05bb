"""Benchmark of the joint weak learner: seconds per oracle round of ``hitlseg.weak.joint.weak_train`` and peak memory.

Prints one JSON line (and writes it to ``--out``). One run of
:func:`hitlseg.weak.joint.weak_train` (``--rounds`` oracle rounds, the oracle's full masks of
random training images, ``--budget`` of them in all, neighbour pseudo-labels on the rest unless
``--no-pseudo``), then per round (``history``): ``train_seconds`` (choice, annotation,
pseudo-labels and training; round 1's includes the classifier warm-up of ``--warmup-epochs``
epochs), ``eval_seconds`` (the test groups' figures), ``seconds`` (both), the oracle and
pseudo-labelled images, and the test Dice per group; overall ``load_seconds`` (reading the
dataset), ``total_seconds``, ``peak_mb`` (``resource.getrusage`` ``ru_maxrss`` of this process),
torch's threads, ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` and ``os.getloadavg()`` before and
after.

The default dataset is the wbc1 copy bundled with hitlseg, labelled by the synthetic area rule
(:func:`hitlseg.weak.synthetic.labelled_copy`, ``large`` / ``small`` nucleus) in a temporary
folder, so it runs without ``../shared``; its seeded 20% hold-out is the test group, and the
first ``--train-images`` / ``--test-images`` of each part are used. ``--dataset`` names a folder
with ``labels.csv`` instead (GlaS: its ``meta.csv`` split, groups testA and testB). Timing, not
quality, is the point: the default settings are short. Single-threaded unless ``--threads``.

Usage::

    python benchmarks/weak.py                                   # bundled wbc1, ~2 min on one thread
    python benchmarks/weak.py --dataset ../shared/datasets/glas --max-side 388 --train-images 0 \\
        --test-images 0 --warmup-epochs 10 --epochs 10          # the GlaS study's joint setting
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit  # noqa: E402


def peak_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(root: Path, args) -> dict:
    from hitlseg.dataset import Dataset
    from hitlseg.weak.joint import WeakConfig, weak_train
    from hitlseg.weak.labels import read_image_labels
    from hitlseg.weak.splits import study_split

    started = time.perf_counter()
    dataset = Dataset.from_folder(root, max_side=args.max_side)
    labels = read_image_labels(dataset)
    train, groups, source = study_split(dataset, holdout=args.holdout, seed=args.seed)
    if args.train_images:
        train = train[: args.train_images]
    if args.test_images:
        groups = {name: ids[: args.test_images] for name, ids in groups.items()}
    load_seconds = time.perf_counter() - started
    n_oracle = max(args.rounds, int(round(args.budget * len(train))))
    per_round = max(1, n_oracle // args.rounds)
    config = WeakConfig(rounds=args.rounds, per_round=per_round, warmup_epochs=args.warmup_epochs, epochs=args.epochs,
                        norm=args.norm, pseudo=not args.no_pseudo, seed=args.seed, device=args.device)
    started = time.perf_counter()
    result = weak_train(dataset, labels, config, train_ids=train, eval_ids=groups)
    total = time.perf_counter() - started
    history = []
    for row in result.history:
        history.append({"round": row["round"], "oracle_images": row["oracle_images"], "pseudo_images": row["pseudo_images"],
                       "train_seconds": row["train_seconds"], "eval_seconds": row["seconds"] - row["train_seconds"],
                       "seconds": row["seconds"], "dice": {name: row[name]["dice"] for name in groups}})
    return {"split": source, "train": len(train), "tests": {k: len(v) for k, v in groups.items()},
            "shape": list(dataset.load(train[0]).image.shape), "oracle_images": per_round * args.rounds,
            "per_round": per_round, "load_seconds": load_seconds, "total_seconds": total, "history": history}


def main(argv=None) -> int:
    """Run the benchmark and print its JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help="folder with labels.csv (default: the bundled wbc1, labelled by the area rule)")
    parser.add_argument("--train-images", type=int, default=80, help="first N training images (0: all; default 80)")
    parser.add_argument("--test-images", type=int, default=20, help="first N images per test group (0: all; default 20)")
    parser.add_argument("--budget", type=float, default=0.1, help="fraction of the training images the oracle annotates")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup-epochs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5, help="joint epochs per round")
    parser.add_argument("--no-pseudo", action="store_true", help="no pseudo-labels (standard active learning)")
    parser.add_argument("--max-side", type=int, default=None)
    parser.add_argument("--norm", default="instance", help="normalisation of the network (instance, none, batch)")
    parser.add_argument("--holdout", type=float, default=0.2, help="test fraction without a meta.csv split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    report = {"benchmark": "weak", "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "mkl_num_threads": os.environ.get("MKL_NUM_THREADS"), "load_average": list(os.getloadavg()),
              "device": args.device, "budget": args.budget, "rounds": args.rounds, "warmup_epochs": args.warmup_epochs,
              "epochs": args.epochs, "pseudo": not args.no_pseudo, "max_side": args.max_side, "norm": args.norm,
              "seed": args.seed}
    if args.dataset:
        report["dataset"] = str(args.dataset)
        report.update(run(Path(args.dataset), args))
    else:
        from hitlseg.datasets import DEMO_ROOT
        from hitlseg.weak.synthetic import labelled_copy

        report["dataset"] = "bundled wbc1, area-rule labels"
        with tempfile.TemporaryDirectory() as folder:
            root, _ = labelled_copy(DEMO_ROOT, Path(folder) / "wbc1_labelled")
            report.update(run(root, args))
    report["peak_mb"] = peak_mb()
    report["load_average_after"] = list(os.getloadavg())
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
