"""Benchmark of hitlseg.retrieval: retrieval quality of each descriptor and hash, and search cost.

Prints one JSON line (and writes it to ``--out``). Parts (``--parts``, comma-separated):

``quality``
    mAP@10 (relevant: at least one label token shared), mAP@10 with the query's every token
    shared, NDCG@10 (levels: tokens shared) and precision at 1/5/10 of every descriptor
    (``gtfree``, ``flim``) as float descriptors (exact L2, and IVF) and as 16/32/64-bit codes
    (LSH, ITQ, the learned deep hash), on

    * wbc1 (../shared/datasets, else the bundled copy): database = train + val parts of the
      seed-0 split, queries = its test part; relevance = class area levels
      (:mod:`hitlseg.retrieval.labels`, level edges from the database masks);
    * GlaS: database = the official ``train`` part, queries = ``testA`` + ``testB``; relevance =
      the image-level grade (benign / malignant, ``labels.csv``).

    The FLIM model is fitted on the robot's markers (:func:`hitlseg.robot.markers_from_mask`) on 3
    database images drawn with seed 0; the deep hash learns from the database's labels (the
    masks a person accepted, or the image-level labels). Masks and labels of query images are
    read for scoring only; no setting was tuned on them. ``encoder`` (a trained sU-Net's encoder)
    is not part of the default run: sU-Net training costs minutes per dataset.
``speed``
    Query time (median per query, 100 queries, k=10, one batch) and memory of ``--sizes``
    synthetic items: 64-bit codes in ``faiss.IndexBinaryFlat`` against exact float search of
    ``--dimension``-float vectors (``faiss.IndexFlatL2``) and IVF (``nlist`` = sqrt(n),
    ``nprobe`` = nlist / 4).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/retrieval.py                 # both parts (~3 min on one core)
    python benchmarks/retrieval.py --parts speed --sizes 10000,1000000
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nets import dataset_root, emit  # noqa: E402  (../shared/datasets, wbc1 falling back to the bundled copy)

PARTS = ("quality", "speed")
BITS = (16, 32, 64)
HASHES = ("lsh", "itq", "deep")
DESCRIPTORS = ("gtfree", "flim")


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def protocol(name: str):
    """(dataset, database ids, query ids, database labels, query labels, label source)."""
    from hitlseg.dataset import Dataset, make_split
    from hitlseg.retrieval import labels as L

    root = dataset_root(name)
    if root is None:
        return None
    dataset = Dataset.from_folder(root)
    if name == "glas":
        with (root / "meta.csv").open() as handle:
            split = {row["id"]: row["split"] for row in csv.DictReader(handle)}
        database = [i for i in dataset.ids if split.get(i) == "train"]
        queries = [i for i in dataset.ids if split.get(i) in ("testA", "testB")]
        table = L.image_labels(L.read_label_csv(root / "labels.csv"))
        return dataset, database, queries, table.rows(database), table.rows(queries), "image-level grade"
    split = make_split(dataset.ids, seed=0)
    database, queries = split.train + split.val, split.test
    masks = {i: dataset.mask(i) for i in database + queries}
    n_classes = max(int(m.max()) for m in masks.values())
    edges = L.area_edges({i: masks[i] for i in database}, n_classes)
    db, _ = L.area_labels({i: masks[i] for i in database}, n_classes, edges=edges)
    qs, _ = L.area_labels({i: masks[i] for i in queries}, n_classes, edges=edges)
    return dataset, database, queries, db.matrix, qs.matrix, "class area levels (3 per class)"


def robot_model(dataset, database, seed: int = 0):
    from hitlseg.flim.model import FLIMModel
    from hitlseg.robot import markers_from_mask

    chosen = sorted(np.random.default_rng(seed).choice(len(database), 3, replace=False).tolist())
    loaded = [dataset.load(database[i]) for i in chosen]
    markers = [markers_from_mask(s.mask, rng=np.random.default_rng([seed, i])) for i, s in zip(chosen, loaded)]
    return FLIMModel.fit([s.image for s in loaded], markers, seed=seed), [database[i] for i in chosen]


def scores(index, queries, relevance) -> dict:
    from hitlseg.retrieval import evaluate as E

    rankings = E.ranking_of(index, queries, 10)
    out = E.evaluate_rankings(rankings, relevance, 10)
    out["short_lists"] = int((rankings < 0).any(1).sum())  # IVF: queries given fewer than 10 images
    out["precision_at"] = dict(zip(("1", "5", "10"), E.precision_recall(rankings, relevance, [1, 5, 10])["precision"]))
    return {k: (round(v, 4) if isinstance(v, float) else {a: round(b, 4) for a, b in v.items()} if isinstance(v, dict) else v)
            for k, v in out.items()}


def quality(name: str, seed: int) -> dict | None:
    from hitlseg.retrieval import Describer, RetrievalIndex
    from hitlseg.retrieval import evaluate as E
    from hitlseg.retrieval.build import describe_dataset

    found = protocol(name)
    if found is None:
        return None
    dataset, database, queries, db_labels, q_labels, relevance_name = found
    relevance = E.relevance_matrix(q_labels, db_labels)
    started = time.perf_counter()
    model, marked = robot_model(dataset, database, seed)
    state = model.to_state()
    report = {"database": len(database), "queries": len(queries), "relevance": relevance_name,
              "robot_marked": marked, "fit_seconds": round(time.perf_counter() - started, 2),
              "chance_precision": round(float((relevance >= 1).mean()), 4), "descriptors": {}}
    for kind in DESCRIPTORS:
        describer = Describer.from_state(kind, state)
        tick = time.perf_counter()
        db = describe_dataset(dataset, database, describer)
        qv = describe_dataset(dataset, queries, describer)
        per_image = (time.perf_counter() - tick) / (len(database) + len(queries))
        entry = {"dimension": describer.dimension, "seconds_per_image": round(per_image, 4)}
        entry["float_exact"] = scores(RetrievalIndex.build(database, db), qv, relevance)
        entry["float_ivf"] = scores(RetrievalIndex.build(database, db, search="ivf"), qv, relevance)
        for bits in BITS:
            for method in HASHES:
                key = f"{method}{bits}"
                try:
                    tick = time.perf_counter()
                    index = RetrievalIndex.build(database, db, bits=bits, hash=method, seed=seed,
                                                 labels=db_labels if method == "deep" else None)
                    entry[key] = {**scores(index, qv, relevance), "fit_seconds": round(time.perf_counter() - tick, 2)}
                except Exception as exc:  # e.g. ITQ with more bits than dimensions: reported, not hidden
                    entry[key] = {"error": str(exc)}
        report["descriptors"][kind] = entry
        log(f"{name} {kind}: float mAP@10 {entry['float_exact'].get('map')}, "
            + ", ".join(f"{m}{b} {entry[f'{m}{b}'].get('map')}" for b in BITS for m in HASHES))
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def speed(sizes, dimension: int, seed: int) -> dict:
    import faiss

    rng = np.random.default_rng(seed)
    out = {}
    for n in sizes:
        entry = {}
        codes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
        qcodes = rng.integers(0, 256, (100, 8), dtype=np.uint8)
        binary = faiss.IndexBinaryFlat(64)
        binary.add(codes)
        entry["hamming64"] = {"seconds_per_query": _time(binary, qcodes), "memory_bytes": int(codes.nbytes)}
        del codes
        vectors = rng.standard_normal((n, dimension), dtype=np.float32)
        queries = rng.standard_normal((100, dimension), dtype=np.float32)
        flat = faiss.IndexFlatL2(dimension)
        flat.add(vectors)
        entry[f"float{dimension}_exact"] = {"seconds_per_query": _time(flat, queries), "memory_bytes": int(vectors.nbytes)}
        nlist = int(np.sqrt(n))
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(dimension), dimension, nlist)
        ivf.cp.seed = seed
        tick = time.perf_counter()
        ivf.train(vectors[rng.choice(n, min(n, 40 * nlist), replace=False)])
        ivf.add(vectors)
        ivf.nprobe = max(1, nlist // 4)
        truth = flat.search(queries, 10)[1]
        found = ivf.search(queries, 10)[1]
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)]))
        entry[f"float{dimension}_ivf"] = {"seconds_per_query": _time(ivf, queries), "build_seconds": round(time.perf_counter() - tick, 2),
                                          "recall_at_10": round(recall, 3), "nlist": nlist, "nprobe": ivf.nprobe}
        del vectors, flat, ivf
        out[str(n)] = entry
        log(f"speed {n}: {entry}")
    return out


def _time(index, queries, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        index.search(queries, 10)
        times.append((time.perf_counter() - tick) / len(queries))
    return float(f"{np.median(times):.3g}")


def main() -> None:
    import faiss
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--datasets", default="wbc1,glas")
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--dimension", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out")
    args = parser.parse_args()
    report = {"benchmark": "retrieval", "threads": torch.get_num_threads(), "faiss_threads": faiss.omp_get_max_threads(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load": os.getloadavg(),
              "settings": {k: v for k, v in vars(args).items() if k != "out"}}
    started = time.perf_counter()
    parts = args.parts.split(",")
    if "quality" in parts:
        report["quality"] = {name: quality(name, args.seed) for name in args.datasets.split(",")}
    if "speed" in parts:
        report["speed"] = speed([int(s) for s in args.sizes.split(",")], args.dimension, args.seed)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["peak_mb"] = round(peak_mb(), 1)
    report["load_after"] = os.getloadavg()
    emit(report, args.out)


if __name__ == "__main__":
    main()
