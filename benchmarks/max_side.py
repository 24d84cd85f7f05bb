"""Benchmark of the working resolution (``--max-side``): time and test Dice against the images' own size.

Prints one JSON line. For each setting (the images' own size, then each ``--sides`` value) it runs
the shell workflow in its own processes: ``hitlseg train --encoder flim:robot`` on the split's
training masks, ``hitlseg predict`` of the test part (masks written back at each input's size) and
``hitlseg evaluate`` against the full-size masks. It reports training and prediction seconds, peak
resident memory of each process, and the test Dice per class.

Usage::

    python benchmarks/max_side.py                       # wbc2 (300 x 300), sides 150, epochs 10 (~6 min on 2 cores)
    python benchmarks/max_side.py --dataset schisto --sides 200,100

Datasets come from ``../shared/datasets``; wbc1 falls back to the bundled copy (120 x 120: too
small to show much). The split is ``hitlseg split --seed 0`` (60/10/30).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nets import dataset_root, emit  # noqa: E402

HITLSEG = [sys.executable, "-m", "hitlseg"]


def _run(argv: list[str]) -> tuple[dict, float, float]:
    """Run ``hitlseg ARGV --json``: its JSON, wall seconds and the peak RSS (GB) of that process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(HITLSEG + argv + ["--json"], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"hitlseg {' '.join(argv)} failed:\n{done.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest child so far: a smaller later process reports the earlier peak.
    return json.loads(done.stdout), seconds, max(peak, before) / 1e6


def run_setting(root: Path, split: Path, work: Path, side: int | None, epochs: int, seed: int) -> dict:
    tag = f"side{side}" if side else "native"
    model = work / f"{tag}.pt"
    args = ["train", "--dataset", str(root), "--split", str(split), "--encoder", "flim:robot", "--epochs", str(epochs),
            "--seed", str(seed), "--out", str(model)]
    if side:
        args += ["--max-side", str(side)]
    trained, train_seconds, train_peak = _run(args)
    pred = work / f"{tag}-pred"
    predicted, predict_seconds, predict_peak = _run(["predict", "--model", str(model), "--images", str(root),
                                                     "--split", str(split), "--out", str(pred)])
    scores, _, _ = _run(["evaluate", "--pred", str(pred), "--truth", str(root)])
    return {"max_side": side, "train_seconds": round(train_seconds, 1), "best_val_dice": trained["best_val_dice"],
            "predict_seconds_per_image": round(predict_seconds / max(1, predicted["images"]), 3),
            "test_images": predicted["images"], "test_dice": scores["mean"]["dice"], "test_mean_dice": scores["mean"]["mean_dice"],
            "peak_rss_gb_max_so_far": round(max(train_peak, predict_peak), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="wbc2")
    parser.add_argument("--sides", default="150", help="comma-separated working sides to compare with the native size")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the JSON line to this file")
    args = parser.parse_args()
    root = dataset_root(args.dataset)
    if root is None:
        raise SystemExit(f"dataset {args.dataset!r} not found in ../shared/datasets")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        split = work / "split.json"
        _run(["split", str(root), "--seed", str(args.seed), "--out", str(split)])
        settings = [None] + [int(s) for s in args.sides.split(",") if s]
        results = [run_setting(root, split, work, side, args.epochs, args.seed) for side in settings]
    emit({"benchmark": "max_side", "dataset": str(root), "epochs": args.epochs, "settings": results,
          "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
          "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpus": os.cpu_count()}, args.out)


if __name__ == "__main__":
    main()
