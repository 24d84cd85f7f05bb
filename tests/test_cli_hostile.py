"""The command line on hostile input: out-of-range arguments, unusable devices, tampered model
files, outputs that cannot be written, images too small for the encoder.

Every case must end in one ``error:`` line on stderr and exit status 2, never a traceback.
Unwritable folders and full disks are simulated by making the writers raise (tests may run as
root, where a read-only folder does not stop writes).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hitlseg.cli import main
from hitlseg.errors import InputError
from tests.helpers import make_2d_dataset, write_png


def _error(capsys) -> str:
    """The single stderr line of a failed command."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert "error:" in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Four 40x40 images with masks, two of them with robot markers."""
    root = make_2d_dataset(tmp_path_factory.mktemp("hostile") / "ds", n=4, size=40)
    assert main(["robot", "mark", "--dataset", str(root), "--ids", "img00,img01", "--out", str(root / "markers")]) == 0
    return root


@pytest.fixture(scope="module")
def models(data, tmp_path_factory) -> dict[str, Path]:
    """A segmentation model (``train``, 1 epoch) and a FLIM model (``flim fit``) of :func:`data`."""
    folder = tmp_path_factory.mktemp("models")
    seg, flim = folder / "seg.pt", folder / "flim.pt"
    assert main(["train", "--dataset", str(data), "--epochs", "1", "--device", "cpu", "--out", str(seg), "--json"]) == 0
    assert main(["flim", "fit", "--images", str(data), "--device", "cpu", "--out", str(flim), "--json"]) == 0
    return {"seg": seg, "flim": flim}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A dataset of three 1x1 images with masks and markers."""
    root = tmp_path_factory.mktemp("tiny") / "one"
    for i in range(3):
        write_png(root / "images" / f"a{i}.png", np.full((1, 1, 3), 100 + 50 * i, np.uint8))
        write_png(root / "masks" / f"a{i}.png", np.full((1, 1), i % 2, np.uint8))
        write_png(root / "markers" / f"a{i}.png", np.full((1, 1), 1 + i % 2, np.uint8))
    return root


# --------------------------------------------------------------------------------------------
# 1. argument ranges
# --------------------------------------------------------------------------------------------

BAD_NUMBERS = [
    ("train", "--seed", "-1"), ("train", "--seed", "1e20"), ("train", "--seed", str(2**32)),
    ("train", "--lr", "inf"), ("train", "--lr", "nan"), ("train", "--lr", "0"), ("train", "--lr", "-0.1"),
    ("train", "--epochs", "0"), ("train", "--epochs", "-2"), ("train", "--batch-size", "0"),
    ("train", "--crop-size", "0"), ("train", "--self-training", "-1"),
    ("train", "--ncut-weight", "-1"), ("train", "--ncut-weight", "nan"), ("train", "--crf-weight", "inf"),
    ("flim fit", "--seed", "-1"), ("flim fit", "--seed", "1e20"),
    ("experiment selection", "--eval-limit", "-1"), ("experiment selection", "--epochs", "0"),
    ("experiment selection", "--self-training", "-1"), ("experiment selection", "--seed", "-1"),
    ("experiment active", "--eval-limit", "-1"), ("experiment active", "--rounds", "-1"),
    ("experiment active", "--budget", "nan"), ("experiment active", "--reference", "inf"),
    ("experiment active", "--pool-limit", "0"),
    ("serve", "--max-body-mb", "inf"), ("serve", "--max-body-mb", "nan"), ("serve", "--max-body-mb", "0"),
    ("serve", "--max-body-mb", "-1"), ("serve", "--seed", "-1"), ("serve", "--classes", "0"), ("serve", "--port", "-1"),
    ("demo", "--seed", "1e20"),
    ("select", "--k", "0"), ("select", "--perplexity", "inf"), ("select", "--superpixels", "0"),
    ("select", "--stop-threshold", "nan"), ("select", "--stop-patience", "0"),
    ("robot mark", "--seed", "-1"), ("robot mark", "--max-marked-fraction", "nan"),
    ("robot correct", "--seed", str(2**40)),
]


def _command(name: str, data: Path, tmp_path: Path) -> list[str]:
    """A valid command line of ``name`` on ``data``, writing under ``tmp_path``."""
    out = str(tmp_path / "out")
    return {
        "train": ["train", "--dataset", str(data), "--epochs", "1", "--out", str(tmp_path / "m.pt")],
        "flim fit": ["flim", "fit", "--images", str(data), "--out", str(tmp_path / "f.pt")],
        "experiment selection": ["experiment", "selection", "--dataset", str(data), "--out", out],
        "experiment active": ["experiment", "active", "--dataset", str(data), "--out", out],
        "serve": ["serve", str(tmp_path / "project"), "--no-browser"],
        "demo": ["demo", "--dir", str(tmp_path / "demo"), "--no-browser"],
        "select": ["select", "--dataset", str(data), "--robot", "--rounds", "1"],
        "robot mark": ["robot", "mark", "--dataset", str(data), "--ids", "img00", "--out", out],
        "robot correct": ["robot", "correct", "--dataset", str(data), "--predictions", str(tmp_path / "pred"),
                          "--ids", "img00", "--out", out],
    }[name]


@pytest.mark.parametrize("name, option, value", BAD_NUMBERS)
def test_numbers_out_of_range_name_the_option(data, tmp_path, capsys, name, option, value):
    assert main([*_command(name, data, tmp_path), option, value]) == 2
    line = _error(capsys)
    assert f"argument {option}:" in line and repr(value) in line
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_infinite_learning_rate_no_longer_trains(data, tmp_path, capsys):
    assert main(["train", "--dataset", str(data), "--epochs", "1", "--lr", "inf", "--out", str(tmp_path / "m.pt")]) == 2
    assert "--lr" in _error(capsys)
    assert not (tmp_path / "m.pt").exists()


def test_argument_types_accept_their_bounds():
    from hitlseg.cli import args

    assert args.seed("0") == 0 and args.seed(str(2**32 - 1)) == 2**32 - 1
    assert args.non_negative_int("0") == 0 and args.positive_int("1") == 1
    assert args.positive_float("1e-9") == 1e-9 and args.non_negative_float("0") == 0.0
    assert args.fraction("1") == 1.0 and args.port("0") == 0 and args.crop_size("8") == 8
    assert args.device("auto") == "auto" and args.device("cpu") == "cpu"


DEVICE_COMMANDS = ["train", "predict", "flim fit", "flim predict", "select"]


def _device_command(name: str, data: Path, models: dict, tmp_path: Path) -> list[str]:
    return {
        "train": ["train", "--dataset", str(data), "--epochs", "1", "--out", str(tmp_path / "m.pt")],
        "predict": ["predict", "--model", str(models["seg"]), "--images", str(data), "--out", str(tmp_path / "p")],
        "flim fit": ["flim", "fit", "--images", str(data), "--out", str(tmp_path / "f.pt")],
        "flim predict": ["flim", "predict", "--model", str(models["flim"]), "--images", str(data),
                         "--out", str(tmp_path / "p")],
        "select": ["select", "--dataset", str(data), "--robot", "--rounds", "1"],
    }[name]


@pytest.mark.parametrize("name", DEVICE_COMMANDS)
def test_unknown_device_is_refused(data, models, tmp_path, capsys, name):
    assert main([*_device_command(name, data, models, tmp_path), "--device", "bogus"]) == 2
    line = _error(capsys)
    assert "--device" in line and "bogus" in line and "unknown device" in line
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", DEVICE_COMMANDS)
def test_cuda_without_a_gpu_is_refused(data, models, tmp_path, capsys, monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main([*_device_command(name, data, models, tmp_path), "--device", "cuda"]) == 2
    line = _error(capsys)
    assert "--device" in line and "cuda: no CUDA GPU is available on this machine" in line
    assert not any(tmp_path.iterdir())


def test_missing_gpu_index_is_refused(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main(["train", "--dataset", str(data), "--device", "cuda:1", "--out", str(tmp_path / "m.pt")]) == 2
    line = _error(capsys)
    assert "cuda:1" in line and "no such GPU" in line and "cuda:0..cuda:0" in line


def test_library_resolves_only_devices_the_machine_has(monkeypatch):
    from hitlseg.flim import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("bogus")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(InputError, match="no CUDA GPU is available"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="no CUDA GPU is available"):
        resolve_device(torch.device("cuda", 0))


# --------------------------------------------------------------------------------------------
# 2. tampered model files
# --------------------------------------------------------------------------------------------


class _Mkdir:
    """Unpickling this object would create the folder ``path``: a stand-in for code run by a hostile file."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _drop(key):
    return lambda state: state.pop(key)


def _set(key, value):
    return lambda state: state.__setitem__(key, value)


def _layer(key, value, index=0, encoder="encoder"):
    return lambda state: state[encoder]["layers"][index].__setitem__(key, value)


SEG_TAMPERING = {
    "no arch": _drop("arch"),
    "no weights": _drop("weights"),
    "kind is a number": _set("kind", 3),
    "n_classes is text": _set("n_classes", "2"),
    "n_classes is zero": _set("n_classes", 0),
    "window is a number": _set("window", 5),
    "info is a list": _set("info", [1, 2]),
    "weights are a list": _set("weights", [1.0]),
    "preprocessing unknown": _set("preprocessing", {"color": "xyz", "normalize": "none"}),
    "encoder layers are text": lambda state: state["flim_encoder"].__setitem__("layers", "x"),
    "encoder weight is a list": _layer("weight", [1.0], encoder="flim_encoder"),
    "weight of the wrong shape": lambda state: state["weights"].__setitem__(next(iter(state["weights"])), torch.zeros(3)),
}

FLIM_TAMPERING = {
    "no encoder": _drop("encoder"),
    "no decoder": _drop("decoder"),
    "n_classes is None": _set("n_classes", None),
    "preprocessing is text": _set("preprocessing", "lab"),
    "unknown decoder": _set("decoder", "nope"),
    "decoder layer out of range": _set("decoder_layer", 7),
    "weight is a list": _layer("weight", [1.0]),
    "mean of the wrong length": _layer("mean", torch.zeros(5), index=1),
    "std of zeros": lambda state: state["encoder"]["layers"][1]["std"].zero_(),
    "spec with an unknown key": _layer("spec", {"bogus": 1}),
    "kernel classes of floats": lambda state: state["encoder"]["layers"][0].__setitem__(
        "kernel_classes", state["encoder"]["layers"][0]["kernel_classes"].float()),
    "NaN weight": lambda state: state["encoder"]["layers"][0]["weight"].fill_(float("nan")),
    "empty arch": lambda state: state["encoder"].__setitem__("arch", {"layers": []}),
}


def _tampered(source: Path, change, path: Path) -> Path:
    state = copy.deepcopy(torch.load(source, weights_only=True))
    change(state)
    torch.save(state, path)
    return path


def _predict(kind: str, model: Path, data: Path, out: Path) -> int:
    command = ["predict"] if kind == "seg" else ["flim", "predict"]
    return main([*command, "--model", str(model), "--images", str(data / "images"), "--out", str(out)])


@pytest.mark.parametrize("kind, change", [("seg", c) for c in SEG_TAMPERING] + [("flim", c) for c in FLIM_TAMPERING])
def test_tampered_model_file_is_named(data, models, tmp_path, capsys, kind, change):
    table = SEG_TAMPERING if kind == "seg" else FLIM_TAMPERING
    bad = _tampered(models[kind], table[change], tmp_path / "tampered-model.pt")
    assert _predict(kind, bad, data, tmp_path / "out") == 2
    line = _error(capsys)
    assert "tampered-model.pt" in line and "corrupt" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _unreadable_files(models: dict, folder: Path) -> dict[str, Path]:
    files = {"text": folder / "text.pt", "truncated": folder / "truncated.pt", "empty": folder / "empty.pt",
             "folder": folder / "folder.pt", "hostile pickle": folder / "hostile.pt", "other kind": folder / "other.pt"}
    files["text"].write_text("not a model\n")
    files["truncated"].write_bytes(models["seg"].read_bytes()[:600])
    files["empty"].write_bytes(b"")
    files["folder"].mkdir()
    torch.save({"format": "hitlseg-seg-model", "kind": _Mkdir(folder / "pwned")}, files["hostile pickle"])
    return files


@pytest.mark.parametrize("kind", ["seg", "flim"])
def test_unreadable_model_files_are_named(data, models, tmp_path, capsys, kind):
    files = _unreadable_files(models, tmp_path)
    files["other kind"] = models["flim" if kind == "seg" else "seg"]
    for what, path in files.items():
        assert _predict(kind, path, data, tmp_path / "out") == 2, what
        line = _error(capsys)
        assert path.name in line, what
    assert not (tmp_path / "pwned").exists()


def test_train_refuses_a_tampered_flim_encoder(data, models, tmp_path, capsys):
    bad = _tampered(models["flim"], FLIM_TAMPERING["no encoder"], tmp_path / "enc.pt")
    assert main(["train", "--dataset", str(data), "--encoder", f"flim:{bad}", "--out", str(tmp_path / "m.pt")]) == 2
    assert "enc.pt" in _error(capsys)


# --------------------------------------------------------------------------------------------
# 3. outputs that cannot be written
# --------------------------------------------------------------------------------------------


def test_file_output_that_is_a_folder_is_refused_before_work(data, tmp_path, capsys, monkeypatch):
    from hitlseg.nets import workflow

    folder = tmp_path / "existing"
    folder.mkdir()
    monkeypatch.setattr(workflow, "load_pairs", lambda *a, **k: pytest.fail("train loaded data before checking --out"))
    assert main(["train", "--dataset", str(data), "--epochs", "1", "--out", str(folder)]) == 2
    assert "existing" in (line := _error(capsys)) and "folder" in line
    assert main(["train", "--dataset", str(data), "--epochs", "1", "--labels", "markers", "--out", str(folder)]) == 2
    assert "existing" in _error(capsys)
    assert main(["train", "--dataset", str(data), "--checkpoint", str(folder), "--out", str(tmp_path / "m.pt")]) == 2
    assert "--checkpoint" in _error(capsys)
    assert main(["flim", "fit", "--images", str(data), "--out", str(folder)]) == 2
    assert "existing" in _error(capsys)
    assert list(folder.iterdir()) == []


def test_folder_output_that_is_a_file_is_refused(data, models, tmp_path, capsys):
    file = tmp_path / "a-file"
    file.write_text("x")
    commands = [
        ["predict", "--model", str(models["seg"]), "--images", str(data), "--out", str(file)],
        ["flim", "predict", "--model", str(models["flim"]), "--images", str(data), "--out", str(file)],
        ["predict", "--model", str(models["seg"]), "--images", str(data), "--out", str(file / "below")],
        ["experiment", "selection", "--dataset", str(data), "--out", str(file)],
        ["experiment", "active", "--dataset", str(data), "--out", str(file)],
        ["select", "--dataset", str(data), "--robot", "--rounds", "1", "--cache", str(file)],
        ["robot", "mark", "--dataset", str(data), "--ids", "img00", "--out", str(file)],
    ]
    for command in commands:
        assert main(command) == 2, command
        assert "a-file" in _error(capsys), command
    assert file.read_text() == "x"


def test_unwritable_folder_is_refused_before_work(data, tmp_path, capsys, monkeypatch):
    from hitlseg import validate
    from hitlseg.nets import workflow

    monkeypatch.setattr(validate, "_writable", lambda folder: False)
    monkeypatch.setattr(workflow, "load_pairs", lambda *a, **k: pytest.fail("train loaded data before checking --out"))
    assert main(["train", "--dataset", str(data), "--out", str(tmp_path / "new" / "m.pt")]) == 2
    assert "not writable" in _error(capsys)
    assert main(["flim", "fit", "--images", str(data), "--out", str(tmp_path / "f.pt")]) == 2
    assert "not writable" in _error(capsys)


def _raising(error: OSError, after: int = 0, partial: bool = False):
    """A writer ``(obj, path, ...)`` that raises ``error`` (with the path) from call ``after + 1`` on.

    With ``partial``, it first leaves a few bytes in the file, as a write cut short does.
    """
    calls = []

    def write(original, obj, target, *args, **kwargs):
        calls.append(target)
        if len(calls) <= after:
            return original(obj, target, *args, **kwargs)
        if partial:
            Path(target).write_bytes(b"\x89PNG partial")
        raise type(error)(error.errno, error.strerror, str(target))

    return write


def _patch(monkeypatch, owner, name, writer):
    original = getattr(owner, name)
    monkeypatch.setattr(owner, name, lambda obj, target, *a, **k: writer(original, obj, target, *a, **k))


PERMISSION = PermissionError(13, "Permission denied")
FULL = OSError(28, "No space left on device")


@pytest.mark.parametrize("error", [PERMISSION, FULL], ids=["read-only", "full"])
def test_model_file_write_errors_are_one_line_and_leave_nothing(data, tmp_path, capsys, monkeypatch, error):
    _patch(monkeypatch, torch, "save", _raising(error, partial=True))
    out = tmp_path / "models"
    out.mkdir()
    assert main(["flim", "fit", "--images", str(data), "--device", "cpu", "--out", str(out / "f.pt")]) == 2
    line = _error(capsys)
    assert line == f"hitlseg: error: {out / 'f.pt'}: {error.strerror}"
    assert main(["train", "--dataset", str(data), "--epochs", "1", "--device", "cpu", "--out", str(out / "m.pt")]) == 2
    assert _error(capsys) == f"hitlseg: error: {out / 'm.pt'}: {error.strerror}"
    assert list(out.iterdir()) == []  # no model and no temporary file left


@pytest.mark.parametrize("command", ["predict", "flim predict"])
@pytest.mark.parametrize("error", [PERMISSION, FULL], ids=["read-only", "full"])
def test_mask_write_errors_keep_only_complete_files(data, models, tmp_path, capsys, monkeypatch, command, error):
    from PIL import Image

    _patch(monkeypatch, Image.Image, "save", _raising(error, after=1, partial=True))
    kind = "seg" if command == "predict" else "flim"
    out = tmp_path / "masks"
    assert _predict(kind, models[kind], data, out) == 2
    line = _error(capsys)
    assert line.startswith(f"hitlseg: error: {out}") and line.endswith(error.strerror)
    written = sorted(p.name for p in out.iterdir())
    assert written == ["img00.png"]  # the first mask, complete; no half-written or temporary file
    monkeypatch.undo()
    assert Image.open(out / "img00.png").size == (40, 40)


def test_os_error_without_a_file_name_and_memory_error(data, capsys, monkeypatch):
    import hitlseg.dataset

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hitlseg.dataset, "describe", full)
    assert main(["info", str(data)]) == 2
    assert _error(capsys) == "hitlseg: error: No space left on device"

    def exhausted(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(hitlseg.dataset, "describe", exhausted)
    assert main(["info", str(data)]) == 2
    assert "out of memory" in _error(capsys)


# --------------------------------------------------------------------------------------------
# 4. images too small for the encoder
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [["flim", "fit"], ["train"], ["train", "--encoder", "backprop"],
                                   ["train", "--labels", "markers"]], ids=" ".join)
def test_one_pixel_images_are_named_when_fitting(tiny, tmp_path, capsys, extra):
    if extra[0] == "flim":
        command = [*extra, "--images", str(tiny), "--out", str(tmp_path / "f.pt")]
    else:
        command = [extra[0], "--dataset", str(tiny), *extra[1:], "--epochs", "1", "--out", str(tmp_path / "m.pt")]
    assert main(command) == 2
    line = _error(capsys)
    assert f"{tiny}{os.sep}images{os.sep}a" in line and "1x1" in line and "too small" in line
    assert not any(p.suffix == ".pt" for p in tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["seg", "flim"])
def test_one_pixel_images_are_named_when_predicting(tiny, models, tmp_path, capsys, kind):
    assert _predict(kind, models[kind], tiny, tmp_path / "out") == 2
    line = _error(capsys)
    assert str(tiny / "images" / "a0.png") in line and "too small" in line


def test_minimum_image_size_of_the_default_encoder():
    from hitlseg.flim import default_arch
    from hitlseg.validate import image_fits, min_image_size

    arch = default_arch()
    assert min_image_size(arch) == 13  # reach 1, 2, 3 after strides 1, 2, 4
    assert image_fits((13, 13), arch) and not image_fits((12, 40), arch)
    assert image_fits((1, 20), arch, reflect=False, training=True)
    assert not image_fits((2, 2), arch, reflect=False, training=True)
