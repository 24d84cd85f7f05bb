"""Weak supervision on GlaS: CAM-only against the joint learner at a small oracle budget.

Trains on GlaS's official ``train`` split (85 images, image-level labels benign/malignant from
``labels.csv``) and reports testA and testB (from ``meta.csv``). Methods:

``cam_only``
    The classifier alone (:func:`hitlseg.weak.joint.cam_only`), its CAM above 0.5 as the glands,
    and the CAM refined by the dense CRF (``cam_crf_dice``).
``joint``
    :func:`hitlseg.weak.joint.weak_train`: ``--rounds`` rounds in which the simulated oracle gives
    the full masks of random training images, ``--budget`` of them in all, and neighbour
    pseudo-labels on the rest; figures after every round.
``no_pseudo``
    The same rounds without pseudo-labels (standard active learning, random choice).
``full``
    Every training mask (full supervision), one round of ``rounds * epochs`` epochs.
``all_foreground``
    The trivial mask (every pixel gland): GlaS's glands cover about half of each image, so this
    is the Dice any method must beat.

Prints one JSON line (and writes it to ``--out``): per method and round, testA/testB Dice of the
segmentation (gland), foreground Dice of the thresholded CAM, classification accuracy, seconds,
and the machine's load. Single-threaded unless ``--threads``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

from _emit import emit  # benchmarks/ is on sys.path when a script runs

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "glas"


def main(argv=None) -> int:
    """Run the methods named by ``--methods`` and print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(DEFAULT))
    parser.add_argument("--methods", default="all_foreground,cam_only,joint",
                        help="comma-separated: all_foreground, cam_only, joint, no_pseudo, full")
    parser.add_argument("--budget", type=float, default=0.1, help="fraction of the training images the oracle annotates")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup-epochs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10, help="joint epochs per round")
    parser.add_argument("--max-side", type=int, default=None)
    parser.add_argument("--norm", default="instance", help="normalisation of the network (instance, none, batch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from hitlseg.dataset import Dataset
    from hitlseg.weak.joint import WeakConfig, cam_only, weak_train
    from hitlseg.weak.labels import read_image_labels

    root = Path(args.dataset)
    dataset = Dataset.from_folder(root, max_side=args.max_side)
    labels = read_image_labels(dataset)
    with (root / "meta.csv").open(newline="") as handle:
        split = {row["id"]: row["split"] for row in csv.DictReader(handle)}
    train = [i for i in dataset.ids if split[i] == "train"]
    tests = {name: [i for i in dataset.ids if split[i] == name] for name in ("testA", "testB")}
    n_oracle = max(args.rounds, int(round(args.budget * len(train))))
    per_round = max(1, n_oracle // args.rounds)
    base = WeakConfig(rounds=args.rounds, per_round=per_round, warmup_epochs=args.warmup_epochs, epochs=args.epochs,
                      seed=args.seed, device=args.device, norm=args.norm)
    results = {}
    for method in args.methods.split(","):
        start = time.perf_counter()
        if method == "cam_only":
            results[method] = cam_only(dataset, labels, WeakConfig(**{**base.to_dict(), "cam_crf": True}),
                                       train_ids=train, eval_ids=tests)
        elif method in ("joint", "no_pseudo", "full"):
            config = base
            if method == "no_pseudo":
                config = WeakConfig(**{**base.to_dict(), "pseudo": False})
            elif method == "full":
                config = WeakConfig(**{**base.to_dict(), "pseudo": False, "rounds": 1, "per_round": len(train),
                                       "epochs": args.rounds * args.epochs})
            result = weak_train(dataset, labels, config, train_ids=train, eval_ids=tests)
            results[method] = [{k: v for k, v in row.items() if k != "new_oracle_ids"} for row in result.history]
        elif method == "all_foreground":  # the trivial mask: every pixel gland (reads the test masks only)
            from hitlseg.metrics import dice_score

            results[method] = {name: {"dice": sum(dice_score(m > -1, m > 0) for m in
                                                  (dataset.mask(i) for i in ids)) / len(ids)} for name, ids in tests.items()}
        else:
            parser.error(f"unknown method {method!r}")
        print(f"{method}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        if args.out:  # what is done so far, in case a later method is stopped
            Path(args.out).write_text(json.dumps({"partial": True, "results": results}) + "\n")
    emit({"benchmark": "weak_glas", "train": len(train), "tests": {k: len(v) for k, v in tests.items()},
          "oracle_images": per_round * args.rounds, "budget": args.budget, "rounds": args.rounds,
          "per_round": per_round, "warmup_epochs": args.warmup_epochs, "epochs": args.epochs,
          "max_side": args.max_side, "norm": args.norm, "seed": args.seed, "threads": args.threads,
          "load_average": list(os.getloadavg()), "results": results}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
