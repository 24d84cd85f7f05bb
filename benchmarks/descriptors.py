"""Benchmark of the selection descriptor: exact sorted superpixel means against the strided, resampled default.

Runs the selection protocol (``hitlseg experiment selection``: gtfree, alternate policy, robot
strokes, adaptive decoder; no sU-Net, no baseline) once per descriptor variant on the same splits
and prints one JSON line: per variant the validation Dice curve (mean over splits), the final
validation and test Dice of the adaptive decoder, the selection seconds, and the share of pool
images whose profile had to be brought to the pool's length (their superpixel count differs).
Variants are ``stride/fill``: ``1/zero`` is the paper's descriptor (every pixel, sorted means, a
shorter profile padded with zeros), ``2/quantile`` the default until this benchmark.

Usage::

    python benchmarks/descriptors.py                       # wbc1, 3 splits, 4 variants (~30 min on 2 cores)
    python benchmarks/descriptors.py --variants 2/quantile,1/zero --splits 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nets import dataset_root, emit  # noqa: E402  (../shared/datasets, wbc1 falling back to the bundled copy)


def profile_fill_share(dataset, fractions, seed: int) -> float:
    """Share of one split's training images whose superpixel count differs from the pool's largest."""
    from hitlseg.dataset import make_split
    from hitlseg.selection import compute_superpixels

    split = make_split(dataset.with_masks(), fractions, seed=seed)
    images = {i: dataset.load(i).image for i in split.train}
    labels = compute_superpixels(images)
    counts = np.array([len(np.unique(labels[i])) for i in split.train])
    return float((counts != counts.max()).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="wbc1")
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--variants", default="2/quantile,1/quantile,1/zero,1/edge")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()

    import torch

    from hitlseg.dataset import Dataset
    from hitlseg.experiments import ProtocolConfig, run_protocol

    load = os.getloadavg()
    dataset = Dataset.from_folder(dataset_root(args.dataset))
    report = {"benchmark": "descriptors", "dataset": args.dataset, "splits": args.splits, "images": args.images,
              "threads": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS"), "load_before": load,
              "variants": {}}
    fractions = ProtocolConfig().fractions
    report["filled_share"] = profile_fill_share(dataset, fractions, args.seed)
    for variant in args.variants.split(","):
        stride, fill = variant.split("/")
        config = ProtocolConfig(splits=args.splits, images=args.images, methods=("gtfree",), sunet=False,
                                baseline=False, stride=int(stride), fill=fill, seed=args.seed)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="hitlseg-descriptors-") as out:
            results = run_protocol(dataset, out, config)
        runs = [split["methods"]["gtfree"] for split in results["splits"]]
        entry = {
            "curve_val_dice": np.mean([r["curve_val_dice"] for r in runs], axis=0).tolist(),
            "val_dice": [r["adaptive"]["val"]["mean"] for r in runs],
            "test_dice": [r["adaptive"]["test"]["mean"] for r in runs],
            "selected": [r["selected"] for r in runs],
            "selection_seconds": [r["selection_seconds"] for r in runs],
            "wall_seconds": time.perf_counter() - started,
        }
        entry["val_mean"], entry["test_mean"] = float(np.mean(entry["val_dice"])), float(np.mean(entry["test_dice"]))
        report["variants"][variant] = entry
        print(f"# {variant}: val {entry['val_mean']:.4f} test {entry['test_mean']:.4f} "
              f"({entry['wall_seconds']:.0f} s)", file=sys.stderr, flush=True)
    report["load_after"] = os.getloadavg()
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
