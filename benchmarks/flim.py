"""FLIM benchmark: fitting and inference time, peak memory, and Dice of the adaptive decoders.

Prints one JSON line. Uses ../shared/datasets (schisto with its human markers, wbc1 and
hippocampus with robot markers); parts whose dataset is absent are skipped.

    python benchmarks/flim.py [--quick]
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
import torch

from hitlseg.dataset import Dataset
from hitlseg.flim import DECODERS, FLIMModel
from hitlseg.metrics import dice_per_class, dice_score
from hitlseg.robot import Robot

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
RULES = DECODERS


def timed(function, repeat: int = 1):
    """Median seconds of ``repeat`` calls and the last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def evaluate(model, samples, classes) -> dict:
    """Mean binary Dice per decoder (and per-class Dice for multi-class data)."""
    out = {}
    for rule in RULES:
        binary, per_class = [], []
        for sample in samples:
            mask = model.predict(sample.image, rule).mask
            binary.append(dice_score(mask, sample.mask))
            if classes > 1 and rule != "weights":
                per_class.append(list(dice_per_class(mask, sample.mask, labels=range(1, classes + 1)).values()))
        out[rule] = {"dice_foreground": round(float(np.mean(binary)), 4)}
        if per_class:
            out[rule]["dice_per_class"] = [round(float(v), 4) for v in np.mean(per_class, 0)]
    return out


def schisto(repeat: int) -> dict:
    dataset = Dataset.from_folder(SHARED / "schisto")
    marked = [s.id for s in dataset if s.markers_path]
    samples = {i: dataset.load(i) for i in dataset.ids}
    images, markers = [samples[i].image for i in marked], [samples[i].markers for i in marked]
    fit_seconds, model = timed(lambda: FLIMModel.fit(images, markers), repeat)
    probe = samples[dataset.ids[0]].image
    model.predict(probe)  # warm up
    infer_seconds, _ = timed(lambda: model.predict(probe, "labels"), 5 * repeat)
    load_seconds, _ = timed(lambda: dataset.image(dataset.ids[0]), repeat)
    unmarked = [samples[i] for i in dataset.ids if i not in marked]
    return {
        "marked_images": len(marked),
        "marked_pixels": int(sum((m > 0).sum() for m in markers)),
        "fit_seconds": round(fit_seconds, 3),
        "inference_seconds_per_400x400_image": round(infer_seconds, 4),
        "read_seconds_per_16bit_png": round(load_seconds, 4),
        "test_images": len(unmarked),
        "dice": evaluate(model, unmarked, 1),
    }


def robot_marked(name: str, n_marked: int, limit: int | None, repeat: int) -> dict:
    dataset = Dataset.from_folder(SHARED / name)
    ids = dataset.ids
    rng = np.random.default_rng(0)
    marked = sorted(rng.choice(ids, n_marked, replace=False).tolist())
    rest = [i for i in ids if i not in marked]
    if limit:
        rest = rest[:limit]
    robot = Robot(seed=0)
    loaded = {i: dataset.load(i) for i in marked + rest}
    classes = int(max(loaded[i].mask.max() for i in marked))
    markers = [robot.mark(loaded[i].mask, key=i) for i in marked]
    fit_seconds, model = timed(lambda: FLIMModel.fit([loaded[i].image for i in marked], markers), repeat)
    probe = loaded[rest[0]].image
    model.predict(probe)
    infer_seconds, _ = timed(lambda: model.predict(probe, "labels"), 5 * repeat)
    return {
        "marked_images": marked,
        "marked_pixels": int(sum((m > 0).sum() for m in markers)),
        "fit_seconds": round(fit_seconds, 3),
        "inference_seconds_per_image": round(infer_seconds, 4),
        "image_shape": list(probe.shape),
        "test_images": len(rest),
        "dice": evaluate(model, [loaded[i] for i in rest], classes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="evaluate on fewer images, time once")
    args = parser.parse_args()
    repeat = 1 if args.quick else 3
    limit = 40 if args.quick else None
    result = {
        "benchmark": "flim",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    if (SHARED / "schisto").is_dir():
        result["schisto_human_markers"] = schisto(repeat)
    if (SHARED / "wbc1").is_dir():
        result["wbc1_robot_5_images"] = robot_marked("wbc1", 5, limit, repeat)
    if (SHARED / "hippocampus").is_dir():
        result["hippocampus_robot_3_volumes"] = robot_marked("hippocampus", 3, limit, repeat)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
