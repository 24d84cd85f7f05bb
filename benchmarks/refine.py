"""Benchmark of hitlseg.refine: live graph-cut speed, and what each refiner changes on real predictions.

Prints one JSON line (and writes it to ``--out``). Parts (``--parts``, comma-separated):

``live``
    Live mode speed: the time from a stroke to the graph-cut overlay
    (:meth:`hitlseg.refine.LiveGraphCut.segment`) on one schisto image (400x400 RGB) and one
    hippocampus volume, median over ``--strokes`` strokes added one at a time (the robot's strokes,
    connected pieces of its markers in a seeded order, both classes from the first step), with the
    time to open the image (the pairwise weights, computed once) and the peak memory. Baselines in
    the same run: every class's colour mixture refitted after every stroke (no per-class cache),
    and the 4-/6-neighbour graph (``connectivity=1``) against the default full one.
``quality``
    The Dice and HD95 change of each refiner on the strokes learner's test predictions: wbc1
    (seed-0 split; robot strokes on the 5 images the ground-truth-free selection picks), schisto
    (the 5 human-marked images; the other 12 are the test) and hippocampus (robot strokes on 5
    training volumes; ``--test-3d`` test volumes). The host is
    :func:`hitlseg.pseudo.learn_from_strokes` with ``--iterations`` self-training rounds (0: the
    strokes-only model; the default learner uses 5, which costs about 20 minutes per wbc1 split).
    Refiners: graph cut, dense CRF, Chan-Vese and geodesic level sets per object, with their
    default settings (none was tuned on test images); the active shape model (2D), learned from
    the host's confident objects of ``SHAPE_CLASS`` on up to 20 unmarked training images (the
    marked ones for schisto, which has no other; no masks); corrective learning trained on the host's predictions of 5 further training images
    and their masks (none for schisto; a person who has fully corrected 5 predictions; correction strokes alone
    mark only wrong pixels, from which the classifier would learn to flip everything).
``live_quality``
    Live graph cut from the robot's strokes alone, no network, on each test image (its own
    strokes), against the adaptive FLIM decoder trained on the same strokes of the same image.

Masks are read by the robot and for scoring only.

Usage::

    python benchmarks/refine.py                              # every part (~15 min on 2 cores)
    python benchmarks/refine.py --parts live
    python benchmarks/refine.py --parts quality --datasets wbc1,schisto --iterations 0
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nets import dataset_root, emit  # noqa: E402  (../shared/datasets, wbc1 falling back to the bundled copy)

PARTS = ("live", "quality", "live_quality")
#: Refiners of the quality part: name -> (method, options).
REFINERS = {
    "graphcut": ("graphcut", {}),
    "crf": ("crf", {}),
    "chan_vese": ("levelset", {"variant": "chan_vese", "per_object": True}),
    "geodesic": ("levelset", {"variant": "geodesic", "per_object": True}),
}


#: The blob-like class the shape model refines, per dataset (2D only).
SHAPE_CLASS = {"wbc1": 2, "schisto": 1}
#: Unmarked training images for the shape model (confident predictions) and for corrective learning.
SHAPE_IMAGES, CORRECTIVE_IMAGES = 20, 5


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- live


def stroke_sequence(markers: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """Markers after each of ``n`` strokes: the connected pieces of ``markers`` in a seeded order,
    the first step holding one piece of every marked label (a live cut needs two classes). While
    there are fewer pieces than strokes, the largest piece is cut in two across its longest extent
    (a long stroke drawn as two)."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(markers.ndim, markers.ndim)
    pieces = []
    for label in np.unique(markers[markers > 0]):
        components, count = ndimage.label(markers == label, structure)
        pieces += [(int(label), components == k) for k in range(1, count + 1)]
    while len(pieces) < n + len({label for label, _ in pieces}) - 1:
        largest = max(range(len(pieces)), key=lambda i: pieces[i][1].sum())
        label, piece = pieces[largest]
        points = np.argwhere(piece)
        if len(points) < 2:
            break
        spans = points.max(0) - points.min(0)
        axis = int(np.argmax(spans))
        cut = np.median(points[:, axis])
        first = points[points[:, axis] <= cut]
        if len(first) in (0, len(points)):
            break
        half = np.zeros_like(piece)
        half[tuple(first.T)] = True
        pieces[largest] = (label, half)
        pieces.append((label, piece & ~half))
    rng = np.random.default_rng(seed)
    order = [pieces[i] for i in rng.permutation(len(pieces))]
    first = {}
    for label, piece in order:
        first.setdefault(label, piece)
    rest = [(label, piece) for label, piece in order if piece is not first[label]]
    current = np.zeros_like(markers)
    for label, piece in first.items():
        current[piece] = label
    steps = [current.copy()]
    for label, piece in rest[: n - 1]:
        current[piece] = label
        steps.append(current.copy())
    return steps


def live_case(image: np.ndarray, mask: np.ndarray, n: int, seed: int, connectivity, cache: bool = True) -> dict:
    from hitlseg.metrics import dice_score
    from hitlseg.refine import LiveGraphCut
    from hitlseg.robot import Robot

    markers = np.zeros(mask.shape, np.uint8)
    for k in range(4):  # several draws of the robot: enough pieces for n strokes
        draw = Robot(seed=seed + k).mark(mask)
        markers[(markers == 0) & (draw > 0)] = draw[(markers == 0) & (draw > 0)]
    steps = stroke_sequence(markers, n, seed)
    before = peak_mb()
    t0 = time.perf_counter()
    live = LiveGraphCut(image, connectivity=connectivity)
    if not cache:  # the baseline: every class's colour mixture refitted after every stroke
        live._densities = None
    open_seconds = time.perf_counter() - t0
    times, labels = [], None
    for step in steps:
        t0 = time.perf_counter()
        labels = live.segment(step, n_labels=int(mask.max()) + 1)
        times.append(time.perf_counter() - t0)
    return {"shape": list(mask.shape), "strokes": len(steps), "open_s": open_seconds,
            "median_stroke_s": float(np.median(times)), "max_stroke_s": float(np.max(times)),
            "final_dice": float(dice_score(labels > 0, mask > 0)),
            "marked_fraction": float((steps[-1] > 0).mean()), "peak_mb": peak_mb(), "peak_mb_before": before}


def part_live(args) -> dict:
    from hitlseg.dataset import Dataset

    out = {}
    for name, index in (("schisto", 0), ("hippocampus", 0)):
        root = dataset_root(name)
        if root is None:
            out[name] = None
            continue
        dataset = Dataset.from_folder(root)
        sample = dataset.load(dataset.with_masks()[index])
        mask = sample.mask.astype(np.int64)
        if name == "hippocampus":
            mask = (mask > 0).astype(np.int64)  # one object class: the hippocampus (both parts)
        out[name] = {"id": sample.id}
        for connectivity, cache, key in ((None, True, "full"), (None, False, "full_refit_every_class"),
                                         (1, True, "axis_neighbours")):
            out[name][key] = live_case(sample.image, mask, args.strokes, args.seed, connectivity, cache)
            log(f"live {name} {key}: median {out[name][key]['median_stroke_s']:.3f} s per stroke")
    return out


# -------------------------------------------------------------------------------------- quality


def score_labels(labels, mask, classes, spacing=None) -> dict:
    from hitlseg.metrics import dice_per_class, hd95_per_class

    dice = dice_per_class(labels, mask, labels=classes)
    hd = hd95_per_class(labels, mask, labels=classes, spacing=spacing)
    return {"dice": {str(c): float(dice[c]) for c in classes}, "hd95": {str(c): float(hd[c]) for c in classes}}


def summarise(rows: list[dict], classes) -> dict:
    out = {}
    for key in ("dice", "hd95"):
        per_class = {}
        for c in classes:
            values = np.array([r[key][str(c)] for r in rows], dtype=float)
            finite = values[np.isfinite(values)]
            per_class[str(c)] = float(finite.mean()) if len(finite) else float("nan")
        out[key] = per_class
        out[f"mean_{key}"] = float(np.nanmean(list(per_class.values())))
    return out


def load_case(name: str, args):
    """Train ids, test ids, loaded samples, the marked ids and their strokes for one dataset."""
    from hitlseg.dataset import Dataset, make_split
    from hitlseg.experiments.active import gtfree_first_images
    from hitlseg.robot import Robot

    dataset = Dataset.from_folder(dataset_root(name))
    if name == "schisto":
        marked = [s.id for s in dataset if s.markers_path is not None]
        train_ids, test_ids = list(marked), [i for i in dataset.ids if i not in set(marked)]
    else:
        split = make_split(dataset.with_masks(), seed=args.seed)
        train_ids, test_ids = list(split.train), list(split.test)
        if name == "hippocampus":
            train_ids, test_ids = train_ids[: args.train_3d], test_ids[: args.test_3d]
    loaded = {i: dataset.load(i) for i in train_ids + test_ids}
    images = {i: s.image for i, s in loaded.items()}
    masks = {i: s.mask.astype(np.int64) for i, s in loaded.items()}
    if name == "schisto":
        markers = {i: loaded[i].markers for i in marked}
    else:
        first = str(np.random.default_rng([args.seed, 0]).choice(train_ids))
        marked, markers = gtfree_first_images(images, masks, train_ids, first, Robot(seed=args.seed), 5, args.seed)
    classes = sorted({int(c) for i in train_ids + test_ids for c in np.unique(masks[i]) if c > 0})
    return train_ids, test_ids, images, masks, marked, markers, classes


def learned_refiners(name, host, train_ids, marked, images, masks, args) -> dict:
    """The shape model and the corrective model of one dataset, from unmarked training images."""
    from hitlseg.refine import CorrectiveModel, ShapeModel

    pool = [i for i in train_ids if i not in set(marked)]
    rng = np.random.default_rng([args.seed, 15])
    pool = [pool[i] for i in rng.permutation(len(pool))]
    out = {}
    if name in SHAPE_CLASS and images[train_ids[0]].ndim == 3:
        t0 = time.perf_counter()
        shape_ids = pool[:SHAPE_IMAGES] or list(marked)  # schisto has no unmarked training image
        probabilities = [host.predict(images[i]).probabilities for i in shape_ids]
        try:
            model = ShapeModel.fit_predictions(probabilities, SHAPE_CLASS[name])
        except Exception as exc:  # noqa: BLE001 (too few confident shapes: reported, not fatal)
            log(f"quality {name}: no shape model ({exc})")
        else:
            out["shape"] = ("shape", {"model": model})
            log(f"quality {name}: shape model from {model.n_shapes} confident objects in {time.perf_counter() - t0:.0f} s")
    corrective_ids = pool[SHAPE_IMAGES:SHAPE_IMAGES + CORRECTIVE_IMAGES]
    if not corrective_ids:
        log(f"quality {name}: no unmarked training image left for corrective learning")
        return out
    t0 = time.perf_counter()
    probabilities = [host.predict(images[i]).probabilities for i in corrective_ids]
    model = CorrectiveModel.fit([images[i] for i in corrective_ids], probabilities, [masks[i] for i in corrective_ids],
                                seed=args.seed)
    out["corrective"] = ("corrective", {"model": model})
    log(f"quality {name}: corrective model from {len(corrective_ids)} corrected images in {time.perf_counter() - t0:.0f} s")
    return out


def part_quality(args) -> dict:
    from hitlseg.flim import FLIMModel
    from hitlseg.pseudo import SelfTrainingConfig, default_strokes_config, learn_from_strokes
    from hitlseg.refine import refine

    out = {}
    for name in args.datasets:
        if dataset_root(name) is None:
            out[name] = None
            continue
        train_ids, test_ids, images, masks, marked, markers, classes = load_case(name, args)
        ndim = images[marked[0]].ndim - 1
        t0 = time.perf_counter()
        flim = FLIMModel.fit([images[i] for i in marked], [markers[i] for i in marked], seed=args.seed, names=marked)
        pool_ids = [i for i in train_ids if i not in set(marked)] if args.iterations else []
        config = default_strokes_config(ndim, epochs=args.epochs_3d if ndim == 3 else args.epochs, seed=args.seed)
        result = learn_from_strokes([images[i] for i in marked], [markers[i] for i in marked],
                                    [images[i] for i in pool_ids], encoder=flim.encoder, n_classes=max(classes),
                                    config=config, self_training=SelfTrainingConfig(iterations=args.iterations),
                                    names=marked, pool_names=pool_ids or None, seed=args.seed)
        train_seconds = time.perf_counter() - t0
        log(f"quality {name}: host trained in {train_seconds:.0f} s")
        methods = dict(REFINERS)
        methods.update(learned_refiners(name, result.model, train_ids, marked, images, masks, args))
        rows = {"host": [], **{r: [] for r in methods}}
        seconds = {r: 0.0 for r in methods}
        for sample_id in test_ids:
            image, mask = images[sample_id], masks[sample_id]
            prediction = result.model.predict(image)
            rows["host"].append(score_labels(prediction.labels, mask, classes))
            for key, (method, options) in methods.items():
                t0 = time.perf_counter()
                labels = refine(image, prediction.probabilities, method, **options)
                seconds[key] += time.perf_counter() - t0
                rows[key].append(score_labels(labels, mask, classes))
        entry = {"marked": marked, "test": len(test_ids), "host_iterations": args.iterations,
                 "host_train_seconds": train_seconds, "methods": {}}
        for key, values in rows.items():
            entry["methods"][key] = summarise(values, classes)
            if key in seconds:
                entry["methods"][key]["seconds_per_image"] = seconds[key] / len(test_ids)
            log(f"quality {name} {key}: mean Dice {entry['methods'][key]['mean_dice']:.4f}, "
                f"mean HD95 {entry['methods'][key]['mean_hd95']:.2f}")
        out[name] = entry
    return out


def part_live_quality(args) -> dict:
    from hitlseg.flim import FLIMModel
    from hitlseg.metrics import dice_per_class
    from hitlseg.refine import LiveGraphCut
    from hitlseg.robot import Robot

    out = {}
    for name in ("schisto", "wbc1"):
        if dataset_root(name) is None:
            out[name] = None
            continue
        _, test_ids, images, masks, _, _, classes = load_case(name, args)
        if name == "wbc1":
            test_ids = test_ids[: args.live_images]
        robot = Robot(seed=args.seed)
        scores = {"live_graphcut": [], "adaptive": []}
        skipped = []
        seconds = {"live_graphcut": 0.0, "adaptive": 0.0}
        for sample_id in test_ids:
            image, mask = images[sample_id], masks[sample_id]
            marks = robot.mark(mask, key=sample_id)
            if len(np.unique(marks[marks > 0])) < 2:  # an image without the object: nothing to segment live
                skipped.append(sample_id)
                continue
            t0 = time.perf_counter()
            labels = LiveGraphCut(image).segment(marks, n_labels=max(classes) + 1)
            seconds["live_graphcut"] += time.perf_counter() - t0
            scores["live_graphcut"].append(dice_per_class(labels, mask, labels=classes))
            t0 = time.perf_counter()
            flim = FLIMModel.fit([image], [marks], seed=args.seed, names=[sample_id])
            predicted = flim.predict(image).mask
            seconds["adaptive"] += time.perf_counter() - t0
            scores["adaptive"].append(dice_per_class(predicted, mask, labels=classes))
        scored = len(test_ids) - len(skipped)
        entry = {"images": scored, "skipped_one_class": skipped}
        for key, values in scores.items():
            per_class = {str(c): float(np.mean([v[c] for v in values])) for c in classes}
            entry[key] = {"dice": per_class, "mean_dice": float(np.mean(list(per_class.values()))),
                          "seconds_per_image": seconds[key] / max(1, scored)}
            log(f"live_quality {name} {key}: mean Dice {entry[key]['mean_dice']:.4f}")
        out[name] = entry
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--datasets", default="wbc1,schisto,hippocampus", help="datasets of the quality part")
    parser.add_argument("--strokes", type=int, default=20, help="strokes per live-speed case")
    parser.add_argument("--iterations", type=int, default=0, help="self-training iterations of the host")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--epochs-3d", type=int, default=30)
    parser.add_argument("--train-3d", type=int, default=60, help="hippocampus training volumes the selection sees")
    parser.add_argument("--test-3d", type=int, default=20, help="hippocampus test volumes")
    parser.add_argument("--live-images", type=int, default=30, help="wbc1 test images of the live_quality part")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    parts = [p for p in args.parts.split(",") if p]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown parts {unknown}; use {', '.join(PARTS)}")
    import torch

    report = {"benchmark": "refine", "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "load": os.getloadavg(), "settings": {k: v for k, v in vars(args).items() if k != "out"}}
    runners = {"live": part_live, "quality": part_quality, "live_quality": part_live_quality}
    for part in parts:
        t0 = time.perf_counter()
        report[part] = runners[part](args)
        report[f"{part}_seconds"] = time.perf_counter() - t0
    report["peak_mb"] = peak_mb()
    report["load_after"] = os.getloadavg()
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
