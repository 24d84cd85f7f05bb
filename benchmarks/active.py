"""Benchmark of one active-learning round: pool scoring, each strategy's query, retraining.

Prints one JSON line (and writes it to ``--out``). Per dataset (all 300 wbc1 images, all 260
hippocampus volumes): a strokes-learner model from robot strokes on 5 images (trained briefly:
timing, not quality, is measured here), then

- ``scoring``: :func:`hitlseg.active.score_pool` over the pool, deterministic; with 5 MC-dropout
  passes; with a 3-member ensemble sharing the frozen encoder; each against the baseline of the
  same numbers computed image by image with ``SegModel.predict`` (MC: 5 full encoder + decoder
  passes per image);
- ``query``: seconds of each strategy's ``query(context, 1)`` on the scored context;
- ``round``: one :meth:`ActiveLoop.step` (scoring, query, corrective strokes, warm-started
  retraining with one self-training iteration on 60 pool images), split into its parts.

Usage::

    python benchmarks/active.py                       # wbc1 and hippocampus (~10 min on 2 cores)
    python benchmarks/active.py --datasets wbc1 --quick
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
from nets import dataset_root, emit  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(compute):
    started = time.perf_counter()
    value = compute()
    return value, time.perf_counter() - started


def naive_scores(model, images, ids, mc_passes, dropout, seed):
    """Baseline: one image at a time through ``SegModel.predict``; MC as full passes with dropout on the features."""
    import torch

    net = model.net
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for i in ids:
        probs = model.predict(images[i]).probabilities
        if mc_passes:
            members = []
            with torch.no_grad():
                x = torch.from_numpy(np.asarray(images[i], np.float32))[None]
                for _ in range(mc_passes):
                    feats = net.encoder.features(x)
                    feats = [f * (torch.rand(f.shape[:2], generator=generator) >= dropout).view(*f.shape[:2], *([1] * (f.ndim - 2))) / (1 - dropout)
                             for f in feats]
                    members.append(torch.softmax(net.decoder(x, feats), 1)[0].numpy())
            out[i] = (probs, np.stack(members))
        else:
            out[i] = probs
    return out


def run_dataset(name: str, args) -> dict:
    from hitlseg.active import (ActiveConfig, ActiveLoop, RobotAnnotator, build_context, make_strategy, score_pool)
    from hitlseg.dataset import Dataset
    from hitlseg.pseudo import SelfTrainingConfig, default_strokes_config, learn_from_strokes
    from hitlseg.robot import Robot

    root = dataset_root(name)
    if root is None:
        return {"skipped": f"../shared/datasets/{name} is not present"}
    dataset = Dataset.from_folder(root)
    ids = dataset.with_masks()[: (40 if args.quick else None)]
    loaded = {i: dataset.load(i) for i in ids}
    images = {i: s.image for i, s in loaded.items()}
    masks = {i: s.mask for i, s in loaded.items()}
    robot = Robot(seed=0)
    first = ids[:5]
    markers = {i: robot.mark(masks[i], key=i) for i in first}
    n_classes = max(int(m.max()) for m in masks.values())
    ndim = images[ids[0]].ndim - 1
    result, train_seconds = timed(lambda: learn_from_strokes(
        [images[i] for i in first], [markers[i] for i in first], n_classes=n_classes,
        config=default_strokes_config(ndim, epochs=3 if args.quick else 10), self_training=SelfTrainingConfig(iterations=0)))
    model = result.model
    pool = ids
    out = {"images": len(pool), "shape": list(images[ids[0]].shape), "model_seconds": train_seconds, "scoring": {}}
    for label, options in (("deterministic", {}), ("mc_dropout_5", {"mc_passes": 5}), ("ensemble_3", {"ensemble": 3})):
        if "ensemble" in options:
            import copy

            members = [model] + [copy.deepcopy(model, memo={id(model.net.encoder): model.net.encoder}) for _ in range(2)]
            scored, seconds = timed(lambda: score_pool(model, images, pool, ensemble=members, features=True))
            out["scoring"][label] = {"seconds": seconds}
            continue
        scored, seconds = timed(lambda: score_pool(model, images, pool, features=True, **options))
        _, naive = timed(lambda: naive_scores(model, images, pool, options.get("mc_passes", 0), 0.2, 0))
        out["scoring"][label] = {"seconds": seconds, "baseline_seconds": naive, "speedup": naive / seconds}
        if label == "mc_dropout_5":
            context = build_context(pool, first, scored, images=images, round_index=1)
            context.costs = {i: 10.0 + (k % 7) for k, i in enumerate(pool)}
    out["query"] = {}
    for strategy in ("random", "fg_random", "entropy", "bald", "consistency", "suggestive", "coreset", "knapsack", "dasl"):
        s = make_strategy(strategy, **({"budget": 60.0} if strategy == "knapsack" else {}))
        _, seconds = timed(lambda: s.query(context, 1))
        out["query"][strategy] = seconds
    config = ActiveConfig(strategy="entropy", rounds=1, epochs=2 if args.quick else 5,
                          self_training_epochs=2 if args.quick else 15, pool_limit=10 if args.quick else 60)
    loop = ActiveLoop(images, pool, RobotAnnotator(robot, masks), config, n_classes=n_classes, initial_model=model)
    loop.start(first, first_markers=markers)
    record = loop.step()
    out["round"] = {k: record[k] for k in ("scoring_seconds", "query_seconds", "train_seconds", "seconds", "pseudo_pool")}
    out["round"]["annotate_seconds"] = record["seconds"] - record["scoring_seconds"] - record["query_seconds"] - record["train_seconds"]
    out["peak_mb"] = peak_mb()
    return out


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="wbc1,hippocampus")
    parser.add_argument("--quick", action="store_true", help="40 images, short training: a smoke test")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    report = {"benchmark": "active", "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "load": list(os.getloadavg()), "quick": args.quick, "datasets": {}}
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        report["datasets"][name] = run_dataset(name, args)
        print(f"# {name}: {json.dumps(report['datasets'][name])}", file=sys.stderr, flush=True)
    report["load_after"] = list(os.getloadavg())
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
