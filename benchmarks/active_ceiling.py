"""What the correction loop's images could give at best: the learner on their ground-truth masks.

An oracle ceiling for ``hitlseg experiment active``: for a finished loop (``--loop DIR``, a
folder of ``OUT/loops/``), the strokes learner (:func:`hitlseg.pseudo.learn_from_strokes`, the
loop's round-0 recipe: fresh sU-Net, strokes expansion off, ``--iterations`` self-training
iterations over ``--pool`` unannotated training images) is trained on the loop's annotated
images with their *ground-truth* masks as accepted labels (``oracle``) and, beside it, with the
loop's own labels (``loop_labels``: the accepted masks of reviewed images, the strokes of the
others) retrained from scratch instead of warm-started. Test Dice (the learner's default
post-processing) on the protocol's split. A study's measurement: the product never reads masks
like this.

Usage: python benchmarks/active_ceiling.py --loop OUT/loops/split0-random --dataset ../shared/datasets/wbc1
                                           [--split 0] [--iterations 5] [--pool 60] [--only oracle|loop_labels]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main(argv=None) -> int:
    from hitlseg.dataset import Dataset, make_split, task_classes
    from hitlseg.experiments.scoring import average, score
    from hitlseg.pseudo import SelfTrainingConfig, learn_from_strokes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", required=True, type=Path)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--pool", type=int, default=60)
    parser.add_argument("--only", choices=("oracle", "loop_labels"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    state = json.loads((args.loop / "active.json").read_text())
    annotated = state["annotated"]
    data = np.load(args.loop / "markers.npz", allow_pickle=False)
    markers = {i: data[f"m{k}"] for k, i in enumerate(annotated)}
    accepted = {}
    if state.get("accepted"):
        data = np.load(args.loop / "accepted.npz", allow_pickle=False)
        accepted = {i: data[f"a{k}"] for k, i in enumerate(state["accepted"])}
    dataset = Dataset.from_folder(args.dataset)
    split = make_split(dataset.with_masks(), (0.6, 0.1, 0.3), seed=args.seed + args.split)
    loaded = {i: dataset.load(i) for i in split.train + split.test}
    images = {i: loaded[i].image for i in loaded}
    masks = {i: loaded[i].mask.astype(np.int64) for i in loaded}
    classes = list(range(1, task_classes({i: np.unique(masks[i]) for i in masks}) + 1))
    free = [i for i in split.train if i not in markers]
    rng = np.random.default_rng([args.seed, args.split, 7])
    pool = [free[int(k)] for k in sorted(rng.choice(len(free), size=min(args.pool, len(free)), replace=False))]

    variants = {"oracle": [masks[i].astype(np.uint8) for i in annotated],
                "loop_labels": [accepted.get(i) for i in annotated]}
    result = {"benchmark": "active_ceiling", "loop": str(args.loop), "annotated": len(annotated),
              "reviewed": len(accepted), "pool": len(pool), "iterations": args.iterations,
              "threads": os.environ.get("OMP_NUM_THREADS"), "loadavg_before": list(os.getloadavg()),
              "loop_final_test": state["rounds"][-1].get("evaluation", {}).get("mean"), "variants": {}}
    for name, labels in variants.items():
        if args.only and name != args.only:
            continue
        tick = time.perf_counter()
        model = learn_from_strokes([images[i] for i in annotated], [markers[i] for i in annotated],
                                   [images[i] for i in pool], n_classes=max(classes),
                                   self_training=SelfTrainingConfig(iterations=args.iterations), expand=False,
                                   accepted=labels, names=annotated, seed=args.seed).model
        test = average([score(model.predict(images[i]).labels, masks[i], classes) for i in split.test])
        result["variants"][name] = {"test_dice": test["mean"], "class": test["class"],
                                    "seconds": round(time.perf_counter() - tick, 1)}
        print(json.dumps({name: result["variants"][name]}), file=sys.stderr, flush=True)
    result["loadavg_after"] = list(os.getloadavg())
    line = json.dumps(result)
    print(line)
    if args.out:
        args.out.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
