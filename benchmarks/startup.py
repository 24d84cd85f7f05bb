"""Benchmark of what a user waits for before any work: the command line's start-up and image reading.

Prints one JSON line (and writes it to ``--out``):

``startup``
    Median wall seconds of ``hitlseg --help`` and ``hitlseg info <bundled demo>`` (300 images read) in a
    fresh process, against ``python -c pass`` (the interpreter alone) and ``python -c "import
    torch"`` (what every command paid while the parser imported torch).
``reading``
    Median seconds per 16-bit PNG of the schisto images (``../shared/datasets/schisto``; else 17
    synthetic 400x400 RGB 16-bit images): :func:`hitlseg.io.images._read_png16` (libpng through
    imagecodecs) against pypng (the reader before it), and whether both give the same arrays.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _emit import emit  # benchmarks/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parents[1]
SCHISTO = REPO.parent / "shared" / "datasets" / "schisto" / "images"


def _wall(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


def startup(repeats: int) -> dict:
    from hitlseg.datasets import demo

    python = [sys.executable]
    return {
        "python_pass_s": _wall(python + ["-c", "pass"], repeats),
        "import_torch_s": _wall(python + ["-c", "import torch"], repeats),
        "help_s": _wall(python + ["-m", "hitlseg", "--help"], repeats),
        "info_demo_s": _wall(python + ["-m", "hitlseg", "info", str(demo().root)], repeats),
    }


def _png_files(folder: Path) -> tuple[list[Path], str]:
    if SCHISTO.is_dir():
        return sorted(SCHISTO.glob("*.png")), "schisto"
    import numpy as np
    import png

    rng = np.random.default_rng(0)
    files = []
    for index in range(17):
        path = folder / f"{index:03d}.png"
        png.from_array(rng.integers(0, 65536, size=(400, 1200)).astype(np.uint16), "RGB;16").save(str(path))
        files.append(path)
    return files, "synthetic 400x400 RGB 16-bit"


def reading(repeats: int) -> dict:
    import numpy as np

    from hitlseg.io.images import _read_png16, _read_png_pypng

    with tempfile.TemporaryDirectory() as folder:
        files, source = _png_files(Path(folder))
        timings = {"imagecodecs": [], "pypng": []}
        same = True
        for path in files:
            for name, reader in (("imagecodecs", _read_png16), ("pypng", _read_png_pypng)):
                times = []
                for _ in range(repeats if name == "imagecodecs" else 1):
                    start = time.perf_counter()
                    array = reader(path)
                    times.append(time.perf_counter() - start)
                timings[name].append(min(times))
                if name == "imagecodecs":
                    new = array
            same = same and bool(np.array_equal(new, array))
    new_s = statistics.median(timings["imagecodecs"])
    old_s = statistics.median(timings["pypng"])
    return {"source": source, "images": len(files), "imagecodecs_s_per_image": round(new_s, 4),
            "pypng_s_per_image": round(old_s, 4), "speedup": round(old_s / new_s, 1), "bit_exact": same}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    result = {
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "startup": startup(args.repeats),
        "reading": reading(args.repeats),
    }
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
