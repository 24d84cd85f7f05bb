"""Driver run by ``benchmarks/peer.py`` in its own process: pyflim fits on the marked images and
writes a saliency map of every image. Prints one JSON line of its compute times.

Use the peer at commit 93b57e0 ("adding decoder_3") or one like it: at 806da1d (October 2025)
``FLIMModel.run`` passes ``forward`` an argument it no longer takes and the default decoder calls
``torch.from_numpy`` on a tensor, so neither runs.

    python _peer_pyflim.py PYFLIM_CHECKOUT DATA_FOLDER OUT_FOLDER

DATA_FOLDER holds pyflim's layout (orig/, markers/, train.txt, all.txt), made by peer.py.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> None:
    checkout, data, out = (Path(a) for a in sys.argv[1:4])
    sys.path.insert(0, str(checkout))
    started = time.perf_counter()
    from pyflim import arch, data as flim_data, flim  # noqa: E402  (the peer's own modules)

    imported = time.perf_counter() - started
    architecture = arch.FLIMArchitecture(str(checkout / "arch.json"))
    compose = flim_data.transforms.Compose([flim_data.ToTensor()])
    train = flim_data.FLIMData(str(data / "orig") + "/", images_list=str(data / "train.txt"),
                               marker_folder=str(data / "markers") + "/", orig_ext=".png", marker_ext="-seeds.txt",
                               transform=compose)
    model = flim.FLIMModel(architecture, adaptation_function="robust_weights", device="cpu", filter_by_size=False)
    tick = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - tick
    every = flim_data.FLIMData(str(data / "orig") + "/", images_list=str(data / "all.txt"), orig_ext=".png",
                               transform=compose)
    tick = time.perf_counter()
    model.run(every, str(out) + "/")
    run_s = time.perf_counter() - tick
    print(json.dumps({"import_s": imported, "fit_s": fit_s, "predict_s": run_s, "images": len(every)}))


if __name__ == "__main__":
    main()
