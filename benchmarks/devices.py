"""Every torch path of hitlseg on every device this machine has: one JSON line of timings.

On the bundled wbc1 demo (60 RGB images; no ../shared needed), per device (CPU, and CUDA when
``torch.cuda.is_available()``): FLIM fit on 5 robot-marked images, FLIM inference per image,
one selection round (descriptors of the whole pool), sU-Net training (a few epochs on full
masks), sU-Net inference per image, and the strokes learner (strokes + one self-training
iteration). Each path is given the device explicitly, and the JSON records where the result's
weights ended up, so a path that silently stays on the CPU shows. CUDA timings synchronise
before reading the clock; the first call on each device is a warm-up and is not timed.

    python benchmarks/devices.py [--epochs 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emit import emit  # noqa: E402

from hitlseg.datasets import demo  # noqa: E402
from hitlseg.flim import FLIMModel  # noqa: E402
from hitlseg.robot import Robot  # noqa: E402


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def devices() -> list[torch.device]:
    found = [torch.device("cpu")]
    if torch.cuda.is_available():
        found.append(torch.device("cuda"))
    return found


def bench(device: torch.device, data: dict, epochs: int) -> dict:
    from hitlseg.nets import SegModel, TrainConfig, train
    from hitlseg.pseudo import SelfTrainingConfig, default_strokes_config, learn_from_strokes
    from hitlseg.selection import SelectionSession

    images, masks, markers, marked = data["images"], data["masks"], data["markers"], data["marked"]
    probe = [images[i] for i in data["probe"]]
    out: dict = {}

    start = clock(device)
    flim = FLIMModel.fit([images[i] for i in marked], [markers[i] for i in marked], device=device)
    out["flim_fit_s"] = round(clock(device) - start, 3)
    out["flim_weights_on"] = str(flim.device)
    flim.predict(probe[0])
    start = clock(device)
    for image in probe:
        flim.predict(image)
    out["flim_predict_s_per_image"] = round((clock(device) - start) / len(probe), 4)

    session = SelectionSession(data["pool"], seed=0, device=device)
    start = clock(device)
    session.step(marked[0], markers[marked[0]])
    out["selection_round_s"] = round(clock(device) - start, 3)
    out["selection_device"] = str(session.device)

    model = SegModel.sunet(flim.encoder, flim.n_classes, seed=0)
    pairs = [(images[i], masks[i]) for i in marked]
    start = clock(device)
    train(model, pairs, config=TrainConfig(epochs=epochs, seed=0, device=str(device), crop_size=128))
    out["sunet_train_s_per_epoch"] = round((clock(device) - start) / epochs, 3)
    out["sunet_weights_on"] = str(next(model.net.parameters()).device)
    model.predict(probe[0])
    start = clock(device)
    for image in probe:
        model.predict(image)
    out["sunet_predict_s_per_image"] = round((clock(device) - start) / len(probe), 4)

    pool = [images[i] for i in data["unmarked"][:10]]
    start = clock(device)
    result = learn_from_strokes([images[i] for i in marked], [markers[i] for i in marked], pool,
                                encoder=flim.encoder, n_classes=flim.n_classes,
                                config=default_strokes_config(2, epochs=epochs, seed=0, device=str(device)),
                                self_training=SelfTrainingConfig(iterations=1, epochs=1), seed=0, device=str(device))
    out["strokes_learner_s"] = round(clock(device) - start, 3)
    out["strokes_weights_on"] = str(next(result.model.net.parameters()).device)
    if device.type == "cuda":
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of the sU-Net and strokes paths")
    parser.add_argument("--out", help="also write the JSON line here")
    args = parser.parse_args()
    dataset = demo()
    ids = dataset.ids
    images = {i: dataset.load(i).image for i in ids}
    masks = {i: dataset.load(i).mask for i in ids}
    rng = np.random.default_rng(0)
    marked = sorted(rng.choice(ids, 5, replace=False).tolist())
    robot = Robot(seed=0)
    markers = {i: robot.mark(masks[i], key=i) for i in marked}
    unmarked = [i for i in ids if i not in marked]
    data = {"images": images, "masks": masks, "markers": markers, "marked": marked, "unmarked": unmarked,
            "probe": unmarked[:10], "pool": {i: images[i] for i in ids}}
    result = {"benchmark": "devices", "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
              "cpu_count": os.cpu_count(), "load_average_start": list(os.getloadavg()),
              "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"}
    for device in devices():
        result[device.type] = bench(device, data, max(1, args.epochs))
    result["load_average_end"] = list(os.getloadavg())
    emit(result, args.out)


if __name__ == "__main__":
    main()
