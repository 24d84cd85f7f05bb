"""The command line: info, evaluate, and clean errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from hitlseg import __version__
from hitlseg.cli import main
from tests.helpers import disk_mask, make_2d_dataset, write_png

EXPECTED = {
    "wbc1": (300, [3], [0, 1, 2]),
    "wbc2": (100, [3], [0, 1, 2]),
    "schisto": (17, [3], [0, 1]),
    "hippocampus": (260, [1], [0, 1, 2]),
    "brats-sample": (6, [2], [0, 1, 2, 3, 4]),
}


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "hitlseg", *map(str, args)], capture_output=True, text=True)


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and __version__ in result.stdout


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_info_on_shared_datasets(shared, name, capsys):
    assert main(["info", str(shared(name)), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    samples, channels, classes = EXPECTED[name]
    assert summary["samples"] == samples
    assert summary["channels"] == channels
    assert summary["classes"] == classes
    assert summary["with_masks"] == samples
    assert summary["with_markers"] == (5 if name == "schisto" else 0)


def test_info_text_lists_missing_masks(tmp_path, capsys):
    root = make_2d_dataset(tmp_path / "ds", n=3)
    (root / "masks" / "img01.png").unlink()
    assert main(["info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "samples:   3" in out and "no mask:   img01" in out


def test_evaluate_json_and_text(tmp_path, capsys):
    truth = tmp_path / "truth"
    pred = tmp_path / "pred"
    mask = disk_mask((20, 20), centers=((10, 10),), radius=5)
    write_png(truth / "a.png", mask)
    write_png(pred / "a.png", mask)
    shifted = np.roll(mask, 2, axis=1)
    write_png(truth / "b.png", mask)
    write_png(pred / "b.png", shifted)
    assert main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = {r["id"]: r for r in result["images"]}
    assert rows["a"]["mean_dice"] == 1.0
    inter = (mask.astype(bool) & shifted.astype(bool)).sum()
    assert rows["b"]["mean_dice"] == pytest.approx(2 * inter / (2 * mask.astype(bool).sum()))
    assert result["mean"]["mean_dice"] == pytest.approx((1 + rows["b"]["mean_dice"]) / 2)
    assert main(["evaluate", "--pred", str(pred), "--truth", str(truth)]) == 0
    assert "mean" in capsys.readouterr().out


def test_bad_input_exits_2_without_traceback(tmp_path):
    root = make_2d_dataset(tmp_path / "ds", n=2)
    (root / "images" / "img01.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    result = run_cli("info", root)
    assert result.returncode == 2
    assert "img01.png" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("info", tmp_path / "missing")
    assert result.returncode == 2 and "not found" in result.stderr


def test_marker_outside_image_is_named(tmp_path):
    root = make_2d_dataset(tmp_path / "ds", n=1)
    (root / "markers").mkdir()
    (root / "markers" / "img00-seeds.txt").write_text("1 64 64\n70 3 -1 1\n")
    result = run_cli("info", root)
    assert result.returncode == 2 and "img00-seeds.txt" in result.stderr and "outside" in result.stderr
    (root / "markers" / "img00-seeds.txt").write_text("1 32 32\n3 3 -1 1\n")
    result = run_cli("info", root)
    assert result.returncode == 2 and "img00-seeds.txt" in result.stderr


def test_the_command_line_starts_without_the_heavy_libraries():
    """Issue 14.2: building every command's parser imports no torch, scikit-*, SciPy, zarr, Dask, faiss or
    umap-learn/numba (``hitlseg --help`` took 3 s with torch, 0.4 s without)."""
    heavy = ("torch", "sklearn", "scipy", "skimage", "zarr", "distributed", "dask", "faiss", "fastapi", "umap", "numba",
             "pynndescent")
    code = ("import sys\nfrom hitlseg.cli import build_parser\nbuild_parser()\n"
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"imported while building the parser: {loaded}"


def test_a_closed_pipe_ends_the_command_quietly():
    """``hitlseg info DIR | head -1``: no 'Broken pipe' error line once the reader has gone."""
    from hitlseg.datasets import demo

    process = subprocess.Popen([sys.executable, "-m", "hitlseg", "info", str(demo().root)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # gone before the first line is written
    stderr = process.stderr.read()
    process.wait(120)
    assert "error" not in stderr.lower() and "Traceback" not in stderr, stderr
