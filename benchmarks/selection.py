"""Benchmark of the selection loop: one JSON line of timings.

For wbc1 (300 RGB images; ../shared/datasets/wbc1, or the bundled copy when absent) and the
hippocampus volumes (260 3D MRI crops; skipped when absent): time to load the images, to compute
their superpixels once, to set up the session, then ``--rounds`` rounds driven by the robot, each
broken down into fit (FLIM filters from all markers so far), features (maps and descriptors of
the whole pool), recommend, projection (t-SNE) and total. The robot's marking time is reported
apart: it stands in for a person and is not part of the tool's round.

Usage: python benchmarks/selection.py [--rounds 3] [--only wbc1|hippocampus|pool] [--cache DIR] [--baseline]
                                     [--pool 10000] [--projection tsne|pca|umap]

``--pool N`` (default 10,000; 0 skips) times a round of an N-image pool on synthetic descriptors
(20 Gaussian clusters in 96 dimensions, as if the pool's descriptors were already computed):
the distances and recommendation, and the warm t-SNE from the previous round's layout, against
the round target of issue 14 (5 s); the same projection with openTSNE's Annoy neighbours (the
former path) is timed beside it.

``--baseline`` also times wbc1 with the former descriptor (stride 2, quantile fill) in the same run.
With t-SNE, every round also times the former projection (scikit-learn's Barnes-Hut t-SNE: 500
iterations from PCA, 300 from the previous layout, one thread) on the same descriptors:
``former_projection_s`` beside ``projection_s``.

``--projection umap`` (default tsne) runs the rounds and the large pool with UMAP (umap-learn).
umap-learn's import and the numba compilation of its first layout are timed apart, before anything
else (``umap_import_s``, ``umap_compile_s``), so ``projection_s`` is the per-round cost of a
running process. Each wbc1 round also runs a fresh UMAP layout of the same descriptors
(``fresh_projection_s``) and compares the trustworthiness (10 neighbours) of both
(``trustworthiness``, ``fresh_trustworthiness``), and how far the round's layout moved from the
previous round's (``moved``: mean displacement over the previous layout's RMS spread).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
BUDGET_S = 0.3  # wbc1 median round target on a 2-core machine (issue 14.5; an earlier issue set 1.5 s)


def _round(x: float) -> float:
    return round(float(x), 4)


def former_projection(descriptors, previous, seed: int) -> float:
    """Seconds of the scikit-learn t-SNE the selection view used before openTSNE, same settings."""
    import numpy as np
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(descriptors, dtype=np.float64)
    perplexity = min(30.0, (len(x) - 1) / 3.0)
    if previous is None:
        tsne = TSNE(2, perplexity=perplexity, init="pca", max_iter=500, random_state=seed, learning_rate="auto")
    else:
        tsne = TSNE(2, perplexity=perplexity, init=previous - previous.mean(0), max_iter=300, early_exaggeration=1.0,
                    random_state=seed, learning_rate="auto")
    tick = time.perf_counter()
    with threadpool_limits(limits=1):
        tsne.fit_transform(x)
    return time.perf_counter() - tick


def umap_startup(seed: int) -> dict:
    """Seconds of ``import umap`` and of the first (compiling) UMAP layout of this process, on 20 points."""
    import numpy as np

    from hitlseg.selection.projection import project

    tick = time.perf_counter()
    import umap

    import_s = time.perf_counter() - tick
    tick = time.perf_counter()
    project(np.random.default_rng(seed).normal(size=(20, 8)), "umap", seed=seed)
    return {"umap_version": umap.__version__, "umap_import_s": _round(import_s),
            "umap_compile_s": _round(time.perf_counter() - tick)}


def _moved(previous, coords) -> float:
    import numpy as np

    rms = np.sqrt(((previous - previous.mean(0)) ** 2).sum(1).mean())
    return float(np.linalg.norm(coords - previous, axis=1).mean() / rms)


def umap_round(descriptors, coords, previous, seed: int) -> dict:
    """A fresh UMAP layout of the round's descriptors beside the session's (warm) one (module notes)."""
    import numpy as np
    from sklearn.manifold import trustworthiness

    from hitlseg.selection.projection import project

    x = np.asarray(descriptors, dtype=np.float64)
    tick = time.perf_counter()
    fresh = project(x, "umap", seed=seed).coords
    fresh_s = time.perf_counter() - tick
    out = {"fresh_projection_s": _round(fresh_s),
           "trustworthiness": _round(trustworthiness(x, coords, n_neighbors=10)),
           "fresh_trustworthiness": _round(trustworthiness(x, fresh, n_neighbors=10))}
    if previous is not None:
        out["moved"] = _round(_moved(previous, coords))
    return out


def bench(name: str, root: Path | None, rounds: int, seed: int, cache_dir: Path | None,
          descriptor: dict | None = None, projection: str = "tsne") -> dict:
    import numpy as np

    from hitlseg.dataset import Dataset
    from hitlseg.datasets import demo
    from hitlseg.robot import Robot
    from hitlseg.selection import SelectionSession, SuperpixelCache, compute_superpixels

    load_before = os.getloadavg()
    tick = time.perf_counter()
    dataset = Dataset.from_folder(root) if root is not None else demo()
    images = {i: dataset.image(i)[0] for i in dataset.ids}
    load_s = time.perf_counter() - tick

    cache = SuperpixelCache(cache_dir / name if cache_dir else None)
    tick = time.perf_counter()
    superpixels = compute_superpixels(images, cache=cache)
    superpixels_s = time.perf_counter() - tick

    tick = time.perf_counter()
    session = SelectionSession(images, superpixel_cache=cache, seed=seed, projection=projection, **(descriptor or {}))
    setup_s = time.perf_counter() - tick

    robot = Robot(seed, policy="alternate")
    image_id = session.ids[int(np.random.default_rng(seed).integers(len(session.ids)))]
    per_round = []
    for index in range(rounds):
        tick = time.perf_counter()
        markers = robot.mark(dataset.mask(image_id), key=image_id)
        robot_s = time.perf_counter() - tick
        previous = session.rounds[-1].projection.coords if session.rounds else None
        result = session.step(image_id, markers)
        if projection == "tsne":
            extra = {"former_projection_s": _round(former_projection(session.descriptors, previous, seed))}
        elif projection == "umap":
            extra = umap_round(session.descriptors, result.projection.coords, previous, seed)
        else:
            extra = {}
        per_round.append({
            "round": result.round,
            "image_id": image_id,
            "n_maps": result.n_maps,
            "robot_s": _round(robot_s),
            **{f"{k}_s": _round(v) for k, v in result.timings.items()},
            **extra,
            "projection_note": result.projection.note,
            "normalized_radius": _round(result.stopping.normalized_radius),
            "loadavg_1min": round(os.getloadavg()[0], 2),
        })
        rec = result.recommendation
        image_id = robot.choose(rec.closest_ids, rec.most_distant_ids, index, exclude=session.selected)
    totals = [r["total_s"] for r in per_round]
    counts = [int(l.max()) + 1 for l in superpixels.values()]
    return {
        "dataset": name,
        "source": str(root) if root is not None else "bundled demo",
        "images": len(images),
        "shape_groups": len({im.shape for im in images.values()}),
        "superpixels_per_image": {"min": min(counts), "median": statistics.median(counts), "max": max(counts)},
        "descriptor_length_per_map": session.length,
        "stride": session.stride,
        "fill": session.fill,
        "projection": projection,
        "load_s": _round(load_s),
        "superpixels_s": _round(superpixels_s),
        "session_setup_s": _round(setup_s),
        "rounds": per_round,
        "median_round_s": _round(statistics.median(totals)),
        "max_round_s": _round(max(totals)),
        "loadavg_before": [round(x, 2) for x in load_before],
    }


POOL_BUDGET_S = 5.0  # a 10,000-image pool round (issue 14.5)


def large_pool(n: int, seed: int, projection: str = "tsne") -> dict:
    """One selection round of an ``n``-image pool on synthetic descriptors (see the module notes)."""
    import numpy as np
    import openTSNE
    from threadpoolctl import threadpool_limits

    from hitlseg.selection.projection import project
    from hitlseg.selection.recommend import recommend

    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (20, 96))
    before = centers[rng.integers(0, 20, n)] + rng.normal(0, 0.3, (n, 96))
    after = (before + rng.normal(0, 0.05, before.shape)).astype(np.float32)  # the next round's filters
    ids = [f"img{i:05d}" for i in range(n)]
    tick = time.perf_counter()
    previous = project(before.astype(np.float32), projection, seed=seed).coords
    fresh_s = time.perf_counter() - tick
    tick = time.perf_counter()
    rec = recommend(after, ids, [ids[0], ids[n // 2]], k=5)
    recommend_s = time.perf_counter() - tick
    tick = time.perf_counter()
    warm = project(after, projection, seed=seed, init=previous)
    projection_s = time.perf_counter() - tick
    total = recommend_s + projection_s
    out = {"images": n, "dims": 96, "projection": projection, "fresh_layout_s": _round(fresh_s),
           "recommend_s": _round(recommend_s), "warm_projection_s": _round(projection_s),
           "moved": _round(_moved(previous, warm.coords)), "projection_note": warm.note,
           "round_s": _round(total), "budget_s": POOL_BUDGET_S, "within_budget": total <= POOL_BUDGET_S,
           "closest": rec.closest_ids[:2]}
    if projection != "tsne":
        return out
    tick = time.perf_counter()
    with threadpool_limits(limits=1):
        affinities = openTSNE.affinity.PerplexityBasedNN(after.astype(np.float64), perplexity=30, method="annoy",
                                                         n_jobs=1, random_state=seed, verbose=False)
        openTSNE.TSNEEmbedding(previous - previous.mean(0), affinities, negative_gradient_method="fft", n_jobs=1,
                               random_state=seed, verbose=False).optimize(n_iter=50)
    out["former_annoy_warm_projection_s"] = _round(time.perf_counter() - tick)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["wbc1", "hippocampus", "pool"], default=None)
    parser.add_argument("--pool", type=int, default=10000, help="images of the synthetic large pool (0: skip it)")
    parser.add_argument("--cache", type=Path, default=None, help="superpixel cache folder (reused between runs)")
    parser.add_argument("--projection", choices=["tsne", "pca", "umap"], default="tsne",
                        help="projection of the rounds and the large pool (default tsne)")
    parser.add_argument("--baseline", action="store_true",
                        help="also time wbc1 with the former descriptor (stride 2, quantile fill), in the same run")
    args = parser.parse_args(argv)

    import torch

    out = {
        "benchmark": "selection",
        "cpu_count": os.cpu_count(),
        "torch_threads_default": torch.get_num_threads(),
        "round_threads": 1,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    out["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
    out["projection"] = args.projection
    if args.projection == "umap":
        out.update(umap_startup(args.seed))
    if args.only in (None, "wbc1"):
        root = SHARED / "wbc1"
        out["wbc1"] = bench("wbc1", root if root.is_dir() else None, args.rounds, args.seed, args.cache,
                            projection=args.projection)
        out["wbc1"]["budget_s"] = BUDGET_S
        out["wbc1"]["within_budget"] = out["wbc1"]["median_round_s"] <= BUDGET_S
        if args.baseline:
            out["wbc1_stride2_quantile"] = bench("wbc1", root if root.is_dir() else None, args.rounds, args.seed,
                                                 args.cache, {"stride": 2, "fill": "quantile"}, args.projection)
    if args.only in (None, "hippocampus"):
        root = SHARED / "hippocampus"
        out["hippocampus"] = (bench("hippocampus", root, args.rounds, args.seed, args.cache, projection=args.projection)
                              if root.is_dir()
                              else {"skipped": f"{root} not present"})
    if args.only in (None, "pool") and args.pool > 0:
        out["large_pool"] = large_pool(args.pool, args.seed, args.projection)
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
