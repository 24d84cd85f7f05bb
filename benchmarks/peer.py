"""hitlseg against the public FLIM-Python ("pyflim", LIDS-UNICAMP/flim-python-demo) on the same markers.

Builds nothing of the peer: given a checkout (``--pyflim PATH``, or ``$PYFLIM``; commit 93b57e0, see
``_peer_pyflim.py`` for why not the newest), it runs both
tools alternately on the schisto images with the 5 human-marked ones (``../shared/datasets/schisto``,
the peer's own demo data with 7 more images), each in a fresh process, and prints one JSON line:

* whole process (imports, reading, fit, segmenting all 17 images, writing) per thread setting:
  pyflim's driver (``_peer_pyflim.py``) against ``hitlseg flim fit --predict``, medians of
  ``--repeat`` alternating runs, their ratio and each process's peak memory;
* compute only (fit; segmenting the images, reading included), as each driver times itself;
* Dice and F-beta (beta^2 = 0.3) on the 12 unmarked images: pyflim's saliency binarised by Otsu
  and by its own adaptive rule (2 x mean), against hitlseg's masks with its default decoder.

pyflim imports torchvision at module level but its fit and run use none of it beyond
``transforms.Compose``; torchvision has no CPU build here, so when it is missing the peer's process
gets a shim package that provides ``Compose`` alone (every other name raises) and the JSON says so.
The peer pins NumPy 1.26 (its ``flim-python-env.yml``) and fails on NumPy 2; ``--peer-python``
names the interpreter of an environment that has its requirements (default: this one).
Without a checkout, or without the dataset, it prints ``{"skipped": ...}`` and exits 0.

    python benchmarks/peer.py --pyflim PATH [--peer-python PY] [--repeat 3] [--threads 1,default] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCHISTO = REPO.parent / "shared" / "datasets" / "schisto"

SHIM = {
    "torchvision/__init__.py": "from . import transforms, utils  # noqa: F401\n",
    "torchvision/utils.py": "def __getattr__(name):\n    raise AttributeError(f'torchvision shim: {name} is not provided')\n",
    "torchvision/transforms/__init__.py": (
        "from . import functional  # noqa: F401\n\n\n"
        "class Compose:\n    def __init__(self, transforms):\n        self.transforms = list(transforms)\n\n"
        "    def __call__(self, sample):\n        for transform in self.transforms:\n            sample = transform(sample)\n"
        "        return sample\n\n\n"
        "def __getattr__(name):\n    raise AttributeError(f'torchvision shim: transforms.{name} is not provided')\n"),
    "torchvision/transforms/functional.py": (
        "def __getattr__(name):\n    raise AttributeError(f'torchvision shim: functional.{name} is not provided')\n"),
}


def layout(folder: Path, marked: list[str], ids: list[str]) -> Path:
    """The peer's data layout (orig/, markers/, train.txt, all.txt), by symbolic links to schisto."""
    (folder / "orig").mkdir(parents=True)
    (folder / "markers").mkdir()
    for name in ids:
        (folder / "orig" / f"{name}.png").symlink_to(SCHISTO / "images" / f"{name}.png")
    for name in marked:
        (folder / "markers" / f"{name}-seeds.txt").symlink_to(SCHISTO / "markers" / f"{name}-seeds.txt")
    (folder / "train.txt").write_text("".join(f"{n}.png\n" for n in marked))
    (folder / "all.txt").write_text("".join(f"{n}.png\n" for n in ids))
    return folder


def timed_process(command: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, peak resident MB and stdout of one process."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        tick = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - tick
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{command[0]} {command[1]} failed ({process.returncode}): {err.read().strip()[-2000:]}")
        return seconds, usage.ru_maxrss / 1024, out.read()


def peer_scores(out: Path, truth: dict[str, np.ndarray]) -> dict:
    from skimage.filters import threshold_otsu

    from hitlseg.io import read_mask
    from hitlseg.metrics import dice_score, f_measure

    otsu, adaptive, f_max = [], [], []
    for name, mask in truth.items():
        saliency = read_mask(out / f"{name}.png")[0].astype(np.float64) / 255.0
        fg = mask > 0
        threshold = threshold_otsu(saliency) if np.ptp(saliency) > 0 else 1.0
        otsu.append(dice_score(saliency > threshold, fg))
        adaptive.append(dice_score(saliency >= min(1.0, 2 * saliency.mean()), fg))
        f_max.append(f_measure(saliency, fg).maximum)
    return {"dice_otsu": round(float(np.mean(otsu)), 4), "dice_adaptive_2x_mean": round(float(np.mean(adaptive)), 4),
            "f_beta_max": round(float(np.mean(f_max)), 4)}


def hitlseg_scores(model_path: Path, out: Path, truth: dict[str, np.ndarray]) -> dict:
    from hitlseg.dataset import Dataset
    from hitlseg.flim import FLIMModel
    from hitlseg.io import read_mask
    from hitlseg.metrics import dice_score, f_measure

    model = FLIMModel.load(model_path)
    dataset = Dataset.from_folder(SCHISTO)
    dice, f_max = [], []
    for name, mask in truth.items():
        dice.append(dice_score(read_mask(out / f"{name}.png")[0] > 0, mask > 0))
        f_max.append(f_measure(model.predict(dataset.load(name).image).saliency.max(0), mask > 0).maximum)
    return {"decoder": model.decoder, "dice": round(float(np.mean(dice)), 4), "f_beta_max": round(float(np.mean(f_max)), 4)}


def run(checkout: Path, python: str, repeat: int, settings: list[str]) -> dict:
    from hitlseg.dataset import Dataset
    from hitlseg.io import read_mask

    dataset = Dataset.from_folder(SCHISTO)
    marked = [s.id for s in dataset if s.markers_path]
    truth = {i: read_mask(SCHISTO / "masks" / f"{i}.png")[0] for i in dataset.ids if i not in marked}
    result = {"images": len(dataset.ids), "marked": marked, "held_out": len(truth)}
    with tempfile.TemporaryDirectory(prefix="hitlseg-peer-") as tmp:
        tmp = Path(tmp)
        data = layout(tmp / "data", marked, dataset.ids)
        peer_path = [str(checkout)]
        check = subprocess.run([python, "-c", "import torchvision"], capture_output=True)
        if check.returncode != 0:
            for relative, text in SHIM.items():
                (tmp / "shim" / relative).parent.mkdir(parents=True, exist_ok=True)
                (tmp / "shim" / relative).write_text(text)
            peer_path.append(str(tmp / "shim"))
            result["torchvision"] = "absent: the peer ran with a shim providing transforms.Compose only"
        hitlseg = [str(Path(sys.executable).with_name("hitlseg"))]
        for setting in settings:
            env = dict(os.environ)
            env.pop("OMP_NUM_THREADS", None)
            env.pop("HITLSEG_THREADS", None)
            if setting != "default":
                env["OMP_NUM_THREADS"] = setting
            peer_env = {**env, "PYTHONPATH": os.pathsep.join(peer_path)}
            rows = {"pyflim": [], "hitlseg": []}
            for index in range(repeat):
                out_peer, out_ours = tmp / f"peer-{setting}-{index}", tmp / f"ours-{setting}-{index}"
                out_peer.mkdir()
                seconds, peak, stdout = timed_process(
                    [python, str(Path(__file__).with_name("_peer_pyflim.py")), str(checkout), str(data),
                     str(out_peer)], peer_env)
                rows["pyflim"].append({"process_s": seconds, "peak_mb": peak, **json.loads(stdout.splitlines()[-1])})
                seconds, peak, _ = timed_process(
                    hitlseg + ["flim", "fit", "--images", str(SCHISTO), "--out", str(tmp / f"model-{setting}.pt"),
                               "--predict", str(out_ours), "--json"], env)
                rows["hitlseg"].append({"process_s": seconds, "peak_mb": peak})
            medians = {tool: {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}
                       for tool, runs in rows.items()}
            medians["whole_process_ratio"] = round(medians["pyflim"]["process_s"] / medians["hitlseg"]["process_s"], 2)
            result[f"threads_{setting}"] = medians
        result["compute_only"] = compute_only(dataset, marked)
        result["compute_only"]["pyflim_fit_s"] = result[f"threads_{settings[0]}"]["pyflim"]["fit_s"]
        result["compute_only"]["pyflim_predict_s"] = result[f"threads_{settings[0]}"]["pyflim"]["predict_s"]
        result["quality"] = {"pyflim": peer_scores(tmp / f"peer-{settings[0]}-0", truth),
                             "hitlseg": hitlseg_scores(tmp / f"model-{settings[0]}.pt", tmp / f"ours-{settings[0]}-0", truth)}
    return result


def compute_only(dataset, marked: list[str]) -> dict:
    """hitlseg's own fit and prediction time in this process (reading included), one thread."""
    import torch

    from hitlseg.flim import FLIMModel

    torch.set_num_threads(1)
    tick = time.perf_counter()
    images = [dataset.load(i) for i in marked]
    model = FLIMModel.fit([s.image for s in images], [s.markers for s in images])
    fit_s = time.perf_counter() - tick
    tick = time.perf_counter()
    for name in dataset.ids:
        model.predict(dataset.load(name).image)
    return {"hitlseg_fit_s": round(fit_s, 3), "hitlseg_predict_s": round(time.perf_counter() - tick, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pyflim", default=os.environ.get("PYFLIM"), help="checkout of LIDS-UNICAMP/flim-python-demo")
    parser.add_argument("--peer-python", default=sys.executable,
                        help="interpreter of an environment with the peer's requirements (NumPy < 2)")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of each tool per thread setting")
    parser.add_argument("--threads", default="1,default", help="OMP_NUM_THREADS settings, comma-separated")
    parser.add_argument("--out", help="also write the JSON line here")
    args = parser.parse_args()
    result = {"benchmark": "peer", "cpu_count": os.cpu_count(), "load_average_start": list(os.getloadavg())}
    checkout = Path(args.pyflim) if args.pyflim else None
    if checkout is None or not (checkout / "pyflim" / "flim.py").is_file():
        result["skipped"] = "no pyflim checkout (pass --pyflim PATH to LIDS-UNICAMP/flim-python-demo)"
    elif not (SCHISTO / "markers").is_dir():
        result["skipped"] = f"{SCHISTO} not present"
    else:
        result["peer_python"] = args.peer_python
        result.update(run(checkout, args.peer_python, max(1, args.repeat), [s.strip() for s in args.threads.split(",") if s.strip()]))
    result["load_average_end"] = list(os.getloadavg())
    emit(result, args.out)


if __name__ == "__main__":
    main()
