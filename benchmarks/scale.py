"""Benchmark of hitlseg.parallel: pool throughput in-process vs a local Dask cluster, client memory, block-wise prediction.

Prints one JSON line (and writes it to ``--out``). Parts (``--parts``):

``pool``
    Descriptors (:func:`hitlseg.parallel.pool_descriptors`, a FLIM selection encoder from robot
    markers on 2 images) and predictions (:func:`hitlseg.parallel.predict_pool`, an untrained
    sU-Net: speed does not depend on training) of ``--n`` images: the bundled wbc1 images under
    the 8 flips/rotations of the square, cycled to reach ``n`` (images are made on the worker
    from the files, so the client never holds the pool). Each is run in-process and on a
    LocalCluster of ``--workers`` processes; throughput, the client's peak RSS during the run
    and its RSS after 1,000 images and at the end (growth, goal < 10%).
``session``
    Two rounds of :class:`hitlseg.selection.SelectionSession` over the same ``--n`` images: in
    memory (the pool loaded, stacked in the client) against streaming on the cluster (superpixels
    and descriptors as tasks, zarr stores); seconds to prepare and per round, the client's peak
    RSS, whether both give the same recommendations, descriptor difference.
``blocks``
    :func:`hitlseg.parallel.predict_blocks` of a ``--side`` x ``--side`` RGB image (wbc1 tiles)
    and a ``--depth``^3 volume (smooth noise), both written to zarr first chunk by chunk, read
    from zarr region by region; the client's RSS growth against the input's size.

Usage::

    python benchmarks/scale.py                    # n=400, 2048^2 image, 128^3 volume (a few minutes)
    python benchmarks/scale.py --n 5000 --side 4096 --depth 512
    python benchmarks/scale.py --parts session --n 1000 --task-images 1   # against the default 8

With a cluster, ``workers_peak_rss_mib`` is each worker process's peak resident memory
(``VmHWM``) after the part.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nets import emit  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _max_rss_mib() -> tuple[int, float]:
    """This process's peak RSS: VmHWM of its own address space (``ru_maxrss`` would carry the
    peak of the process a worker was forked from, across exec)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return os.getpid(), int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return os.getpid(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def workers_peak_rss(executor) -> list[float]:
    """Peak RSS (MiB) of every worker process of ``executor``'s cluster so far."""
    peaks = list(executor.client.run(_max_rss_mib).values())
    assert all(pid != os.getpid() for pid, _ in peaks), "client.run ran in the client"
    return sorted(round(v, 1) for _, v in peaks)


class PeakRSS:
    """Samples this process's RSS every 20 ms while the block runs."""

    def __enter__(self):
        self.start, self.peak, self._stop = rss_mib(), rss_mib(), threading.Event()

        def sample():
            while not self._stop.wait(0.02):
                self.peak = max(self.peak, rss_mib())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())


def augmented(image_id: str) -> np.ndarray:
    """Image ``K-T-NAME``: wbc1 image NAME under dihedral transform T (0..7); K tells copies apart."""
    from hitlseg.datasets import DEMO_ROOT
    from hitlseg.io import read_image

    _, t, name = image_id.split("-", 2)
    image = read_image(DEMO_ROOT / "images" / f"{name}.png")[0]
    t = int(t)
    image = np.rot90(image, t % 4, axes=(1, 2))
    if t >= 4:
        image = np.flip(image, 2)
    return np.ascontiguousarray(image)


def pool_part(args, report):
    import torch

    from hitlseg.dataset import Dataset
    from hitlseg.datasets import DEMO_ROOT
    from hitlseg.flim.fit import fit_encoder
    from hitlseg.flim.spec import default_arch
    from hitlseg.nets import SegModel
    from hitlseg.parallel import Executor, PoolSource, pool_descriptors, predict_pool
    from hitlseg.robot import markers_from_mask
    from hitlseg.selection import selection_arch

    dataset = Dataset.from_folder(DEMO_ROOT)
    names = dataset.ids
    ids = [f"{k // (8 * len(names))}-{(k // len(names)) % 8}-{names[k % len(names)]}" for k in range(args.n)]
    pool = PoolSource(ids, augmented, on_workers=True)
    marked = names[:2]
    images = [dataset.image(i)[0] for i in marked]
    markers = [markers_from_mask(dataset.mask(i), rng=np.random.default_rng(k)) for k, i in enumerate(marked)]
    encoder = fit_encoder(images, markers, selection_arch(), seed=0)
    model = SegModel.sunet(fit_encoder(images, markers, default_arch(), seed=0), 1, seed=0)
    model.net.eval()
    torch.set_num_threads(1)
    results = {}
    for mode in ("in_process", "dask"):
        executor = Executor(workers=args.workers) if mode == "dask" else Executor()
        with executor, tempfile.TemporaryDirectory() as folder:
            if mode == "dask":
                executor.client  # start the cluster outside the timing
            row = {}
            for task in ("descriptors", "predictions"):
                marks = {}

                def progress(done, total, message, marks=marks, task=task):
                    if task == "descriptors":  # nested scale: the descriptor pass is the second half
                        if not message.startswith("descriptors"):
                            return
                        done = (done / total - 0.5) * 2 * args.n
                    if done >= 1000 and "at_1000" not in marks:
                        marks["at_1000"] = rss_mib()

                with PeakRSS() as rss:
                    started = time.perf_counter()
                    if task == "descriptors":
                        pool_descriptors(pool, encoder, folder, executor=executor, progress=progress)
                    else:
                        predict_pool(model, pool, folder, executor=executor, dtype="float16", progress=progress)
                    seconds = time.perf_counter() - started
                row[task] = {"seconds": round(seconds, 2), "images_per_s": round(args.n / seconds, 2),
                             "client_rss_start_mib": round(rss.start, 1), "client_rss_peak_mib": round(rss.peak, 1),
                             "client_rss_end_mib": round(rss_mib(), 1)}
                if "at_1000" in marks:
                    row[task]["client_rss_at_1000_mib"] = round(marks["at_1000"], 1)
                    row[task]["growth_1000_to_end"] = round(rss_mib() / marks["at_1000"] - 1, 4)
            if mode == "dask":
                row["workers_peak_rss_mib"] = workers_peak_rss(executor)
            results[mode] = row
    results["throughput_ratio"] = {t: round(results["dask"][t]["images_per_s"] / results["in_process"][t]["images_per_s"], 3)
                                   for t in ("descriptors", "predictions")}
    report["pool"] = {"n": args.n, "workers": args.workers, **results}


def session_part(args, report):
    """Two selection rounds in memory and streaming on the cluster (see the module docstring)."""
    import torch

    from hitlseg.dataset import Dataset
    from hitlseg.datasets import DEMO_ROOT
    from hitlseg.parallel import Executor, PoolSource
    from hitlseg.robot import markers_from_mask
    from hitlseg.selection import SelectionSession

    torch.set_num_threads(1)
    dataset = Dataset.from_folder(DEMO_ROOT)
    names = dataset.ids
    ids = [f"{k // (8 * len(names))}-{(k // len(names)) % 8}-{names[k % len(names)]}" for k in range(args.n)]
    marked = [f"0-0-{names[0]}", f"0-0-{names[1]}"]  # untransformed copies: their masks are the files'
    markers = [markers_from_mask(dataset.mask(i.split("-", 2)[2]), rng=np.random.default_rng(k))
               for k, i in enumerate(marked)]
    out, kept = {}, {}
    for mode in ("in_memory", "streaming"):
        executor = Executor(workers=args.workers) if mode == "streaming" else None
        with (executor or Executor()), tempfile.TemporaryDirectory() as folder:
            if executor is not None:
                executor.client  # start the cluster outside the timing
            with PeakRSS() as rss:
                started = time.perf_counter()
                if executor is None:
                    pool = {i: augmented(i) for i in ids}
                    session = SelectionSession(pool, seed=0, projection="pca")
                else:
                    session = SelectionSession(PoolSource(ids, augmented, on_workers=True), seed=0, projection="pca",
                                               executor=executor, store=folder)
                prepare = time.perf_counter() - started
                rounds = []
                for image_id, marks in zip(marked, markers):
                    result = session.step(image_id, marks)
                    rounds.append({"seconds": round(result.timings["total"], 2),
                                   "features_s": round(result.timings["features"], 2),
                                   "closest": [i for i, _ in result.recommendation.closest]})
            row = {"prepare_s": round(prepare, 2), "rounds": rounds, "client_rss_start_mib": round(rss.start, 1),
                   "client_rss_peak_mib": round(rss.peak, 1), "client_rss_growth_mib": round(rss.peak - rss.start, 1)}
            if executor is not None:
                row["workers_peak_rss_mib"] = workers_peak_rss(executor)
            kept[mode] = session.descriptors
            out[mode] = row
            del session
            pool = None
    out["same_recommendations"] = all(a["closest"] == b["closest"]
                                      for a, b in zip(out["in_memory"]["rounds"], out["streaming"]["rounds"]))
    out["descriptor_max_abs_difference"] = float(np.abs(kept["in_memory"] - kept["streaming"]).max())
    for row in out["in_memory"]["rounds"] + out["streaming"]["rounds"]:
        row.pop("closest")
    report["session"] = {"n": args.n, "workers": args.workers, **out}


def write_zarr(path, shape, fill, chunk):
    """A zarr array of ``shape`` filled chunk by chunk by ``fill(slices)``."""
    import itertools

    import zarr

    array = zarr.create_array(str(path), shape=shape, chunks=chunk, dtype="float32")
    for start in itertools.product(*(range(0, n, c) for n, c in zip(shape, chunk))):
        region = tuple(slice(a, min(a + c, n)) for a, c, n in zip(start, chunk, shape))
        array[region] = fill(region)
    return array


def blocks_part(args, report):
    import torch

    from hitlseg.dataset import Dataset
    from hitlseg.datasets import DEMO_ROOT
    from hitlseg.flim.fit import fit_encoder
    from hitlseg.flim.spec import default_arch
    from hitlseg.nets import SegModel
    from hitlseg.parallel import Executor, predict_blocks
    from hitlseg.robot import markers_from_mask

    torch.set_num_threads(1)
    dataset = Dataset.from_folder(DEMO_ROOT)
    tiles = np.stack([dataset.image(i)[0] for i in dataset.ids[:16]])  # (16, 3, 120, 120)
    markers = [markers_from_mask(dataset.mask(i), rng=np.random.default_rng(k)) for k, i in enumerate(dataset.ids[:2])]
    model2d = SegModel.sunet(fit_encoder(list(tiles[:2]), markers, default_arch(), seed=0), 1, norm="batch", seed=0)

    def tile_fill(region):
        ys, xs = np.arange(region[1].start, region[1].stop), np.arange(region[2].start, region[2].stop)
        k = (ys[:, None] // 120 * 7 + xs[None, :] // 120) % 16
        return tiles[k, :, ys[:, None] % 120, xs[None, :] % 120].transpose(2, 0, 1)

    rng = np.random.default_rng(0)
    volume_small = rng.random((1, 24, 24, 24), dtype=np.float32)
    vmarkers = np.zeros((24, 24, 24), np.uint8)
    vmarkers[2:6, 2:6, 2:6], vmarkers[14:20, 14:20, 14:20] = 1, 2
    model3d = SegModel.sunet(fit_encoder([volume_small], [vmarkers], default_arch(), seed=0), 1, norm="batch", seed=0)

    def noise_fill(region):
        grid = np.meshgrid(*(np.arange(s.start, s.stop) for s in region), indexing="ij")
        return (0.5 + 0.25 * np.sin(grid[0] / 7.0) * np.cos(grid[1] / 5.0) * np.sin(grid[2] / 9.0))[None].astype(np.float32)

    out = {}
    with tempfile.TemporaryDirectory() as folder, Executor(workers=args.workers) as executor:
        executor.client
        cases = (("image", model2d, (3, args.side, args.side), (3, 512, 512), tile_fill, args.block2d),
                 ("volume", model3d, (1, args.depth, args.depth, args.depth), (1, 64, 64, 64),
                  lambda r: noise_fill(r[1:]), args.block3d))
        for name, model, shape, chunk, fill, block in cases:
            model.net.eval()
            write_zarr(Path(folder) / f"{name}.zarr", shape, fill, chunk)
            with PeakRSS() as rss:
                started = time.perf_counter()
                result = predict_blocks(model, Path(folder) / f"{name}.zarr", Path(folder) / f"{name}-out", block=block,
                                        halo=args.halo, executor=executor)
                seconds = time.perf_counter() - started
            n_out = model.n_classes + 1
            input_mib = np.prod(shape) * 4 / 2**20
            region = (block + 2 * args.halo) ** (len(shape) - 1) * shape[0] * 4 / 2**20
            out[name] = {"shape": list(shape), "block": block, "halo": args.halo, "blocks": len(result.store.ids),
                         "seconds": round(seconds, 2), "mvoxels_per_s": round(np.prod(shape[1:]) / seconds / 1e6, 3),
                         "input_mib": round(float(input_mib), 1),
                         "output_probabilities_mib": round(float(np.prod(shape[1:]) * n_out * 4 / 2**20), 1),
                         "region_mib": round(float(region), 2),
                         "client_rss_growth_mib": round(rss.peak - rss.start, 1)}
    report["blocks"] = {"workers": args.workers, **out}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="pool,blocks")
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--depth", type=int, default=128)
    parser.add_argument("--block2d", type=int, default=512)
    parser.add_argument("--block3d", type=int, default=128)
    parser.add_argument("--halo", type=int, default=48)
    parser.add_argument("--task-images", type=int, default=None,
                        help="images per task for superpixels and descriptors on the cluster (default: the library's)")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    import torch

    import hitlseg.parallel.pool as pool_module

    if args.task_images is not None:
        pool_module.TASK_IMAGES = args.task_images
    args.task_images = pool_module.TASK_IMAGES

    report = {"benchmark": "scale", "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "cpus": os.cpu_count(), "load": os.getloadavg(), "settings": {k: v for k, v in vars(args).items() if k != "out"}}
    parts = args.parts.split(",")
    if "pool" in parts:
        pool_part(args, report)
    if "session" in parts:
        session_part(args, report)
    if "blocks" in parts:
        blocks_part(args, report)
    report["load_after"] = os.getloadavg()
    emit(report, args.out)


if __name__ == "__main__":
    main()
