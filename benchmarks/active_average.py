"""The warm-started model, the one retrained from scratch, and the average of their probabilities.

A study's measurement on finished loops of ``hitlseg experiment active`` with the refresh on
(``OUT/loops/splitN-STRATEGY`` holds ``model_warm.pt``, the last round's warm-started model, and
``model.pt``, the fresh one of :meth:`hitlseg.active.ActiveLoop.refresh`): mean Dice on the
split's validation and test images of each model (its own post-processing) and of the average of
their probabilities (labels post-processed with the fresh model's rule). It reads the masks; the
product never does this. Validation chooses; test is reported.

Usage: python benchmarks/active_average.py --dataset ../shared/datasets/wbc1 \\
           --loop OUT/loops/split0-entropy [--loop ...] [--out FILE]

The split of each loop is read from its name (``split<N>-``), with the protocol's fractions and
seed from ``OUT/config.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _emit import emit  # noqa: E402


def compare(loop: Path, dataset, cache: dict) -> dict:
    """Validation and test mean Dice of the warm, the fresh and the averaged model of one loop."""
    from hitlseg.dataset import make_split, task_classes
    from hitlseg.experiments.scoring import average, score
    from hitlseg.nets import SegModel
    from hitlseg.nets.infer import labels_from_probabilities

    match = re.match(r"split(\d+)-", loop.name)
    if match is None:
        raise SystemExit(f"{loop}: not a loop folder of a study (expected a name splitN-STRATEGY)")
    config = json.loads((loop.parents[1] / "config.json").read_text())
    split = make_split(dataset.with_masks(), tuple(config["fractions"]), seed=config["seed"] + int(match.group(1)))
    warm, fresh = SegModel.load(loop / "model_warm.pt"), SegModel.load(loop / "model.pt")
    tick = time.perf_counter()
    row = {"loop": str(loop), "split": int(match.group(1))}
    for part, ids in (("validation", split.val), ("test", split.test)):
        for i in ids:
            if i not in cache:
                sample = dataset.load(i)
                cache[i] = (sample.image, sample.mask.astype(np.int64))
        classes = list(range(1, task_classes({i: np.unique(cache[i][1]) for i in ids}) + 1))
        scores = {"warm": [], "fresh": [], "average": []}
        for i in ids:
            image, mask = cache[i]
            p_warm = warm.predict(image, postprocess="none").probabilities
            p_fresh = fresh.predict(image, postprocess="none").probabilities
            for name, model, p in (("warm", warm, p_warm), ("fresh", fresh, p_fresh),
                                   ("average", fresh, (p_warm + p_fresh) / 2)):
                scores[name].append(score(model.postprocess_labels(image, labels_from_probabilities(p)), mask, classes))
        row[part] = {name: round(average(values)["mean"], 4) for name, values in scores.items()}
    row["seconds"] = round(time.perf_counter() - tick, 1)
    return row


def main(argv=None) -> int:
    from hitlseg.dataset import Dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--loop", required=True, type=Path, action="append")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    dataset = Dataset.from_folder(args.dataset)
    result = {"benchmark": "active_average", "threads": os.environ.get("OMP_NUM_THREADS"),
              "loadavg_before": [round(x, 2) for x in os.getloadavg()], "loops": []}
    cache: dict = {}
    for loop in args.loop:
        result["loops"].append(compare(loop, dataset, cache))
        print(json.dumps(result["loops"][-1]), file=sys.stderr, flush=True)
    for part in ("validation", "test"):
        result[f"mean_{part}"] = {name: round(float(np.mean([r[part][name] for r in result["loops"]])), 4)
                                  for name in ("warm", "fresh", "average")}
    result["average_best_on_validation"] = sum(
        r["validation"]["average"] >= max(r["validation"]["warm"], r["validation"]["fresh"]) for r in result["loops"])
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
