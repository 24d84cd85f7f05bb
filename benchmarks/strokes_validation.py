"""Validation of the strokes learner's post-processing on images that are never test images.

Prints one JSON line (and writes it to ``--out``). Two studies, the ones that chose
``hitlseg.defaults.STROKES_POSTPROCESS``:

``wbc1``
    :func:`strokes.run_split` with each split's validation images in the place of its test
    images (seed-0..N-1 splits, 30 validation images each): the ``expanded`` learner raw and with
    ``agree``.
``schisto``
    Leave one out over the 5 human-marked images: FLIM and the learner from the strokes of 4,
    the fifth's mask scored (adaptive decoder, raw, ``largest``, ``agree``); ``--expand`` uses the
    expanded learner. The 12 unmarked (test) images are not read.

Usage: python benchmarks/strokes_validation.py [--datasets wbc1,schisto] [--splits 3] [--expand] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import strokes  # noqa: E402
from nets import dataset_root, emit  # noqa: E402


def wbc1_validation(splits: int, seed: int) -> list[dict]:
    import hitlseg.dataset

    make_split = hitlseg.dataset.make_split

    def validation_as_test(*args, **kwargs):
        split = make_split(*args, **kwargs)
        return dataclasses.replace(split, test=split.val)

    hitlseg.dataset.make_split = validation_as_test  # run_split imports it at each call
    try:
        options = argparse.Namespace(seed=seed, quick=False, images=5, epochs=50, iterations=0, iteration_epochs=15,
                                     epochs_3d=30, iteration_epochs_3d=5, pool_limit_3d=40, pool_test=False,
                                     no_largest=True, no_agree=False)
        out = []
        for index in range(splits):
            result = strokes.run_split("wbc1", index, ["expanded"], options)
            out.append({"split": index, "validation_images": result["test"],
                        **{m: v["mean"] for m, v in result["methods"].items()}})
        return out
    finally:
        hitlseg.dataset.make_split = make_split


def schisto_leave_one_out(expand: bool, seed: int) -> list[dict]:
    import torch

    from hitlseg.dataset import Dataset
    from hitlseg.flim import FLIMModel
    from hitlseg.metrics import dice_per_class
    from hitlseg.nets.postprocess import largest_object
    from hitlseg.pseudo import SelfTrainingConfig, default_strokes_config, learn_from_strokes

    dataset = Dataset.from_folder(dataset_root("schisto"))
    marked = [s.id for s in dataset if s.markers_path is not None]
    loaded = {i: dataset.load(i) for i in marked}
    out = []
    for held in marked:
        kept = [i for i in marked if i != held]
        images, markers = [loaded[i].image for i in kept], [loaded[i].markers for i in kept]
        flim = FLIMModel.fit(images, markers, seed=seed, names=kept)
        torch.manual_seed(seed)
        model = learn_from_strokes(images, markers, [], encoder=flim.encoder, n_classes=1,
                                   config=default_strokes_config(2, epochs=50, seed=seed),
                                   self_training=SelfTrainingConfig(iterations=0), names=kept, seed=seed,
                                   expand=expand).model
        image, mask = loaded[held].image, loaded[held].mask.astype(np.int64)
        raw = model.predict(image, postprocess="none").labels

        def dice(labels):
            return float(dice_per_class(labels, mask, labels=[1])[1])

        out.append({"held_out": held, "adaptive": dice(flim.predict(image).mask), "raw": dice(raw),
                    "largest": dice(largest_object(raw)), "agree": dice(model.predict(image, postprocess="agree").labels)})
        print(f"# schisto held out {held}: {out[-1]}", file=sys.stderr, flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="wbc1,schisto")
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--expand", action="store_true", help="schisto: the expanded learner")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    report = {"benchmark": "strokes_validation", "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "load": list(os.getloadavg()), "settings": vars(args)}
    started = time.perf_counter()
    names = args.datasets.split(",")
    if "wbc1" in names:
        report["wbc1"] = wbc1_validation(args.splits, args.seed)
    if "schisto" in names:
        rows = schisto_leave_one_out(args.expand, args.seed)
        report["schisto"] = {"rows": rows, "mean": {k: float(np.mean([r[k] for r in rows]))
                                                    for k in ("adaptive", "raw", "largest", "agree")}}
    report["seconds"] = time.perf_counter() - started
    report["load_after"] = list(os.getloadavg())
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
