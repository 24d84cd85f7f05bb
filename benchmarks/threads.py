"""Benchmark of the thread policy (:mod:`hitlseg.threads`): the same work idle and beside a busy process.

Prints one JSON line (and writes it to ``--out``). The work, in a fresh process per run: a FLIM
fit on 5 robot-marked images of the bundled wbc1 demo and the adaptive decoder's prediction of
40 images (compute only, reading excluded). Configurations:

``policy``
    :func:`hitlseg.threads.apply_thread_policy` as the command line applies it (threads = the
    available CPUs, ``OMP_WAIT_POLICY=PASSIVE``).
``torch_default``
    What ran before the policy: torch's defaults (threads = cores, OpenMP's default waiting).
``one_thread``
    The policy with ``--threads 1``.

Each runs idle and under load: ``--busy`` processes (default: the available CPUs) spinning in
pure Python beside it. Medians of ``--repeats`` runs; ``slowdown`` is loaded / idle.

Usage::

    python benchmarks/threads.py [--repeats 3] [--busy 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

from _emit import emit  # benchmarks/ is on sys.path when a script runs

WORK = r"""
import sys, time
if sys.argv[1] != "torch_default":
    from hitlseg.threads import apply_thread_policy
    apply_thread_policy(1 if sys.argv[1] == "one_thread" else None)
import torch
from hitlseg.datasets import demo
from hitlseg.flim import FLIMModel
from hitlseg.robot import Robot
dataset = demo()
ids = dataset.ids[:40]
images = {i: dataset.image(i)[0] for i in ids}
markers = [Robot(0).mark(dataset.mask(i, images[i].shape[1:]), key=i) for i in ids[:5]]
start = time.perf_counter()
model = FLIMModel.fit([images[i] for i in ids[:5]], markers, seed=0)
for i in ids:
    model.predict(images[i])
print(time.perf_counter() - start, torch.get_num_threads())
"""


def _spin(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x += 1


def _run(config: str) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY",
                                                             "HITLSEG_THREADS")}
    done = subprocess.run([sys.executable, "-c", WORK, config], capture_output=True, text=True, env=env, check=True)
    seconds, threads = done.stdout.split()
    return float(seconds), int(threads)


def measure(config: str, repeats: int, busy: int) -> dict:
    out = {}
    for state in ("idle", "loaded"):
        spinners = []
        if state == "loaded":
            stop_at = time.time() + 3600
            spinners = [multiprocessing.Process(target=_spin, args=(stop_at,), daemon=True) for _ in range(busy)]
            for process in spinners:
                process.start()
        try:
            runs = [_run(config) for _ in range(repeats)]
        finally:
            for process in spinners:
                process.terminate()
                process.join()
        out[f"{state}_s"] = round(statistics.median(r[0] for r in runs), 3)
        out["threads"] = runs[0][1]
    out["slowdown"] = round(out["loaded_s"] / out["idle_s"], 2)
    return out


def main(argv=None) -> int:
    from hitlseg.threads import available_cpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--busy", type=int, default=available_cpus(), help="busy processes beside the work")
    parser.add_argument("--configs", default="policy,torch_default,one_thread")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    result = {"load_average_before": [round(x, 2) for x in os.getloadavg()], "cpus": available_cpus(),
              "busy_processes": args.busy}
    for config in args.configs.split(","):
        result[config] = measure(config, args.repeats, args.busy)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
