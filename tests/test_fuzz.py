"""Fuzz suite: corrupt, huge and odd files through every reader and the file-reading CLI commands.

Asserted for every input: a reader returns a well-formed array or raises ``InputError``; a CLI
command exits 0 with a sane result or 2 with one ``hitlseg: error:`` line naming the file, never a
traceback, never exit 0 with a silently changed class count. A small seeded set runs in ``make
test``; ``HITLSEG_FUZZ=1`` runs a larger one (``HITLSEG_FUZZ_REPORT=FILE`` writes the counts).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import warnings
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import disk_mask, make_2d_dataset, rgb_from_mask, write_png
from hitlseg.errors import DataWarning, InputError

LARGE = os.environ.get("HITLSEG_FUZZ") == "1"
EXAMPLES = 400 if LARGE else 25
COUNTS: Counter = Counter()
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not LARGE, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def teardown_module(module):
    report = os.environ.get("HITLSEG_FUZZ_REPORT")
    if report:
        Path(report).write_text(json.dumps(dict(COUNTS), indent=2, sort_keys=True))


# ---- valid seeds of every format, then mutated ----------------------------------------------

def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _png16(array: np.ndarray) -> bytes:
    import png

    buffer = io.BytesIO()
    png.Writer(array.shape[1], array.shape[0], greyscale=True, bitdepth=16).write(buffer, array.tolist())
    return buffer.getvalue()


def _tiff(array: np.ndarray) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


def _nifti(array: np.ndarray, gz: bool) -> bytes:
    import gzip

    import nibabel as nib

    image = nib.Nifti1Image(array, np.eye(4))
    data = image.header.binaryblock + b"\0" * 4 + np.ascontiguousarray(array.transpose(2, 1, 0)).tobytes(order="F")
    return gzip.compress(data, mtime=0) if gz else data


def _bmp(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="BMP")
    return buffer.getvalue()


MASK = disk_mask((24, 20), ((12, 10),), radius=5)
SEEDS = {
    ".png": _png(rgb_from_mask(MASK)),
    ".tif": _tiff(np.arange(24 * 20, dtype=np.uint16).reshape(24, 20)),
    ".nii": _nifti(np.random.default_rng(0).random((6, 7, 5)).astype(np.float32), gz=False),
    ".nii.gz": _nifti(MASK[:6, :7, None].repeat(5, 2).astype(np.uint8), gz=True),
    ".bmp": _bmp(rgb_from_mask(MASK)),
    "16.png": _png16((np.arange(24 * 20).reshape(24, 20) * 50).astype(np.uint16)),
}


@st.composite
def mutated(draw, seed: bytes):
    """A seed file truncated, with bytes overwritten, with bytes inserted, or random bytes."""
    kind = draw(st.sampled_from(["truncate", "overwrite", "insert", "random", "header"]))
    data = bytearray(seed)
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind == "random":
        return draw(st.binary(max_size=600))
    if kind == "header":  # the first 400 bytes hold every format's sizes and types
        for _ in range(draw(st.integers(1, 6))):
            data[draw(st.integers(0, min(len(data), 400) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "insert":
        at = draw(st.integers(0, len(data)))
        return bytes(data[:at] + draw(st.binary(min_size=1, max_size=40)) + data[at:])
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


def _check_reader(reader, path: Path, what: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            warnings.simplefilter("ignore", UserWarning)  # decoders' own warnings about odd headers
            result = reader(path)
    except InputError as exc:
        assert str(path.name) in str(exc) or str(path) in str(exc), f"{what}: error does not name the file: {exc}"
        COUNTS[f"{what}: clear error"] += 1
        return
    array = result[0] if isinstance(result, tuple) else result
    if isinstance(array, np.ndarray):
        assert array.size > 0, f"{what}: empty array accepted"
        if np.issubdtype(array.dtype, np.floating):
            assert np.isfinite(array).all(), f"{what}: non-finite values returned"
    COUNTS[f"{what}: read"] += 1


@pytest.mark.parametrize("suffix", sorted(SEEDS))
def test_image_readers_refuse_corrupt_files_clearly(tmp_path, suffix):
    from hitlseg.io import peek_image, read_image, read_mask

    name = "f" + (".png" if suffix == "16.png" else suffix)

    @FUZZ
    @given(data=mutated(SEEDS[suffix]))
    def run(data):
        path = tmp_path / name
        path.write_bytes(data)
        COUNTS["image files tried"] += 1
        for reader, what in ((read_image, "read_image"), (read_mask, "read_mask"), (peek_image, "peek_image")):
            _check_reader(reader, path, what)

    run()


_NUMBER = st.one_of(st.integers(-3, 300), st.integers(-2**70, 2**70), st.sampled_from(["x", "1e3", "", "0x10", "∞"]))


@st.composite
def marker_text(draw):
    """FLIM marker text: a header and lines, each part sometimes malformed."""
    dims = draw(st.sampled_from([2, 3]))
    sizes = [draw(st.one_of(st.integers(1, 30), _NUMBER)) for _ in range(dims)]
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        fields = [draw(st.one_of(st.integers(0, 29), _NUMBER)) for _ in range(dims)]
        fields += [draw(st.one_of(st.integers(-1, 5), _NUMBER)), draw(st.one_of(st.integers(0, 3), _NUMBER))]
        if draw(st.booleans()):
            fields = fields[: draw(st.integers(0, len(fields)))]
        lines.append(" ".join(map(str, fields)))
    count = draw(st.one_of(st.just(len(lines)), _NUMBER))
    text = "\n".join([" ".join(map(str, [count] + sizes))] + lines) + "\n"
    if draw(st.booleans()):
        text = text.encode("utf-8", "replace")
        return text + draw(st.binary(max_size=30))
    return text.encode()


def test_marker_text_reader_refuses_malformed_files_clearly(tmp_path):
    from hitlseg.io import read_markers_text

    @FUZZ
    @given(data=marker_text())
    def run(data):
        path = tmp_path / "m.txt"
        path.write_bytes(data)
        COUNTS["marker files tried"] += 1
        _check_reader(read_markers_text, path, "read_markers_text")

    run()


@FUZZ
@given(st.dictionaries(st.text("abc", min_size=1, max_size=3), st.lists(st.integers(-2, 2**40), max_size=6),
                       max_size=5), st.one_of(st.none(), st.integers(-2, 300)))
def test_task_classes_never_accepts_a_label_outside_its_classes(labels, declared):
    from hitlseg.dataset import task_classes

    COUNTS["label sets tried"] += 1
    try:
        k = task_classes(labels, declared)
    except InputError:
        COUNTS["label sets: clear error"] += 1
        return
    values = {v for vs in labels.values() for v in vs}
    assert 1 <= k <= 254 and all(0 <= v <= k for v in values)
    if declared is None:
        assert {v for v in values if v > 0} in (set(), set(range(1, k + 1)))
    COUNTS["label sets: accepted"] += 1


# ---- every file-reading CLI command on corrupt datasets -------------------------------------

def _base_dataset(root: Path) -> Path:
    from hitlseg.io import write_markers_text
    from hitlseg.robot import markers_from_mask

    make_2d_dataset(root, n=3, size=48)
    for i in range(3):
        from hitlseg.io import read_mask

        mask = read_mask(root / "masks" / f"img{i:02d}.png")[0]
        write_markers_text(root / "markers" / f"img{i:02d}-seeds.txt",
                           markers_from_mask(mask, rng=np.random.default_rng(i)))
    (root / "split.json").write_text(json.dumps({"train": ["img00", "img01", "img02"], "val": [], "test": []}))
    return root


def _corrupt(root: Path, kind: str) -> str:
    """Corrupt one file of ``root``; returns the name the error must mention."""
    image, mask, markers = root / "images" / "img01.png", root / "masks" / "img01.png", root / "markers" / "img01-seeds.txt"
    if kind == "image garbage":
        image.write_bytes(os.urandom(300))
    elif kind == "image empty":
        image.write_bytes(b"")
    elif kind == "image truncated":
        image.write_bytes(image.read_bytes()[:200])
    elif kind == "image is a JPEG":
        from PIL import Image

        Image.open(image).convert("RGB").save(image, format="JPEG")
    elif kind == "image 1x1":
        write_png(image, np.zeros((1, 1, 3), np.uint8))
    elif kind == "image bomb":
        row = b"\0" + b"\0" * 3 * 3000
        image.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 3000, 3000, 8, 2, 0, 0, 0))
                          + _chunk(b"IDAT", zlib.compress(row * 3000, 9)) + _chunk(b"IEND", b""))
    elif kind == "mask stray 255":
        from hitlseg.io import read_mask

        values = read_mask(mask)[0]
        values[0, 0] = 255
        write_png(mask, values)
    elif kind == "mask wrong shape":
        write_png(mask, np.zeros((40, 48), np.uint8))
    elif kind == "mask colour":
        write_png(mask, rgb_from_mask(np.zeros((48, 48), np.uint8)))
    elif kind == "markers huge header":
        markers.write_text("1 1000000 1000000\n1 1 0 1\n")
    elif kind == "markers outside":
        markers.write_text("1 48 48\n60 1 0 1\n")
    elif kind == "markers binary":
        markers.write_bytes(b"\xff\xfe\x00garbage" * 10)
    elif kind == "markers label 999":
        markers.write_text("1 48 48\n3 3 0 999\n")
    else:
        raise AssertionError(kind)
    return "img01"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


CORRUPTIONS = ["image garbage", "image empty", "image truncated", "image is a JPEG", "image 1x1", "image bomb",
               "mask stray 255", "mask wrong shape", "mask colour", "markers huge header", "markers outside",
               "markers binary", "markers label 999"]
COMMANDS = {
    "info": lambda root, out: ["info", str(root)],
    "project init": lambda root, out: ["project", "init", "--dataset", str(root), str(out / "project")],
    "flim fit": lambda root, out: ["flim", "fit", "--images", str(root), "--out", str(out / "flim.pt")],
    "train": lambda root, out: ["train", "--dataset", str(root), "--split", str(root / "split.json"), "--epochs", "1",
                                "--out", str(out / "model.pt"), "--json"],
    "train markers": lambda root, out: ["train", "--dataset", str(root), "--split", str(root / "split.json"),
                                        "--labels", "markers", "--self-training", "0", "--epochs", "1",
                                        "--out", str(out / "strokes.pt"), "--json"],
    "select": lambda root, out: ["select", "--dataset", str(root), "--robot", "--rounds", "2", "--projection", "pca",
                                 "--json"],
    "flim predict": lambda root, out: ["flim", "predict", "--model", str(root.parent / "models" / "flim.pt"),
                                       "--images", str(root), "--out", str(out / "pred")],
    "predict": lambda root, out: ["predict", "--model", str(root.parent / "models" / "sunet.pt"), "--images", str(root),
                                  "--out", str(out / "pred"), "--json"],
    "evaluate": lambda root, out: ["evaluate", "--pred", str(root.parent / "clean_masks"), "--truth", str(root),
                                   "--json"],
    "robot mark": lambda root, out: ["robot", "mark", "--dataset", str(root), "--ids", "img00,img01,img02",
                                     "--out", str(out / "markers"), "--json"],
}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from hitlseg.cli import main

    folder = tmp_path_factory.mktemp("fuzz")
    root = _base_dataset(folder / "data")
    (folder / "models").mkdir()
    assert main(["flim", "fit", "--images", str(root), "--out", str(folder / "models" / "flim.pt")]) == 0
    assert main(["train", "--dataset", str(root), "--split", str(root / "split.json"), "--epochs", "1",
                 "--out", str(folder / "models" / "sunet.pt"), "--json"]) == 0
    return root


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_cli_commands_answer_corrupt_datasets_with_one_clear_line(base, tmp_path, capsys, monkeypatch, kind):
    from hitlseg.cli import main

    monkeypatch.setenv("HITLSEG_MAX_PIXELS", "4000000")
    root = tmp_path / "data"
    shutil.copytree(base, root)
    shutil.copytree(base.parent / "models", tmp_path / "models")
    shutil.copytree(base / "masks", tmp_path / "clean_masks")  # predictions for evaluate
    named = _corrupt(root, kind)
    for command, argv in COMMANDS.items():
        out = tmp_path / command.replace(" ", "_")
        out.mkdir()
        capsys.readouterr()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                code = main(argv(root, out))
            except SystemExit as exc:  # argparse
                code = exc.code
        captured = capsys.readouterr()
        COUNTS["cli runs"] += 1
        assert "Traceback" not in captured.err, f"{kind} / {command}: traceback\n{captured.err}"
        assert code in (0, 2), f"{kind} / {command}: exit {code}\n{captured.err}"
        if code == 2:
            errors = [line for line in captured.err.splitlines() if line.startswith("hitlseg: error:")]
            assert len(errors) == 1 and named in errors[0], f"{kind} / {command}: {captured.err!r}"
            COUNTS["cli: clear error"] += 1
            assert not [p for p in out.rglob("*") if p.is_file() and p.suffix in (".pt", ".sqlite")], \
                f"{kind} / {command}: output left after the error"
            continue
        COUNTS["cli: exit 0"] += 1
        _check_success(kind, command, out, captured.out)


def _check_success(kind: str, command: str, out: Path, stdout: str) -> None:
    """Exit 0 is only right when the command did not need the corrupt file, and the result is sane."""
    needs = {"info": {"image", "mask", "markers"}, "project init": {"image", "mask", "markers"},
             "flim fit": {"image", "markers"}, "train": {"image", "mask", "markers"},
             "train markers": {"image", "markers"}, "select": {"image"},  # select: masks of chosen images
             "flim predict": {"image"}, "predict": {"image"}, "evaluate": {"mask"}, "robot mark": {"mask"}}[command]
    part = kind.split()[0]
    assert part not in needs, f"{kind} / {command}: exit 0 although the command reads the {part}"
    if command.startswith("train"):
        from hitlseg.nets import SegModel

        model = SegModel.load(next(out.glob("*.pt")))
        assert model.n_classes == 2, f"{kind} / {command}: {model.n_classes} classes"
