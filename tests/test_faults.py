"""Faults: SIGKILL during project init and training, and a full disk; nothing acknowledged is lost,
nothing half-written remains."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import copy_demo, make_2d_dataset
from hitlseg.project.store import DB_NAME

HITLSEG = [sys.executable, "-m", "hitlseg"]


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp")]


def _kill_when(process: subprocess.Popen, ready, extra: float, timeout: float = 120.0) -> bool:
    """SIGKILL ``process`` ``extra`` seconds after ``ready()`` holds; False when it ended first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    time.sleep(extra)
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    process.wait()
    return True


def test_sigkill_during_init_leaves_no_half_project(tmp_path):
    from hitlseg.project import Project

    data = copy_demo(tmp_path / "data", 120)
    kills = 0
    for attempt, extra in enumerate([0.0, 0.02, 0.05, 0.1, 0.2]):
        root = tmp_path / f"project{attempt}"
        process = subprocess.Popen(HITLSEG + ["project", "init", "--dataset", str(data), "--copy", str(root)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        killed = _kill_when(process, lambda: (root / "images").exists(), extra)
        kills += killed
        if (root / DB_NAME).exists():  # init got as far as publishing the database: it is whole
            project = Project.open(root)
        else:
            assert killed, "init ended without a project"
            project = Project.init(root, dataset=data, copy=True)  # a second try succeeds over the leftovers
        try:
            assert len(project.images()) == 120
            assert project.image(project.images()[-1]["id"]).shape[0] == 3
        finally:
            project.close()
        assert _temp_files(root) == []
    assert kills >= 2, "init ended before most kills: the test no longer exercises a kill"


def test_sigkill_during_training_keeps_the_checkpoint_whole_and_writes_no_half_model(tmp_path):
    from hitlseg.nets import SegModel

    data = make_2d_dataset(tmp_path / "data", n=4, size=64)
    checkpoint, out = tmp_path / "train.ckpt", tmp_path / "model.pt"
    argv = HITLSEG + ["train", "--dataset", str(data), "--encoder", "flim:robot", "--epochs", "60",
                      "--checkpoint", str(checkpoint), "--out", str(out), "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    assert _kill_when(process, checkpoint.exists, 0.3), "training ended before it could be killed"
    assert not out.exists()
    # a kill mid-write may leave the checkpoint's temporary file (SIGKILL cannot be caught); it is
    # named by the dead writer's pid, and the next save removes it
    assert all(p.name.startswith(f".{checkpoint.name}.{process.pid}.") for p in _temp_files(tmp_path))
    from hitlseg.flim.model import load_state

    state = load_state(checkpoint)  # whole: written atomically
    assert 1 <= state["epoch"] < 60
    resumed = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    model = SegModel.load(out)
    assert model.n_classes == 2 and len(model.info["train"]["history"]) == 60
    assert _temp_files(tmp_path) == []


def test_a_save_removes_temporary_files_left_by_a_killed_writer_only(tmp_path):
    from hitlseg.flim.model import save_state

    target = tmp_path / "model.pt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f".model.pt.{int(dead.stdout)}.abc123.tmp"
    live = tmp_path / f".model.pt.{os.getpid()}.def456.tmp"  # a writer that is still running
    other = tmp_path / f".other.pt.{int(dead.stdout)}.abc123.tmp"
    for path in (orphan, live, other):
        path.write_bytes(b"half")
    save_state({"a": 1}, target)
    assert not orphan.exists() and live.exists() and other.exists() and target.exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (needs the right to mount; skipped elsewhere)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_full_disk_refuses_saves_with_507_and_keeps_every_acknowledged_version(small_disk):
    from hitlseg.server import create_app
    from hitlseg.server.testing import client, demo_project, marker_body, markers_of

    rng = np.random.default_rng(0)
    acknowledged: dict[tuple[str, int], np.ndarray] = {}
    with demo_project(small_disk / "project", n=3) as project, client(create_app(project, prepare=False)) as http:
        ids = project.image_ids()
        shape = project.image(ids[0]).shape[1:]
        versions = {i: 0 for i in ids}
        refused = None
        for attempt in range(200):
            image_id = ids[attempt % len(ids)]
            markers = rng.integers(0, 3, shape).astype(np.uint8)  # noise: does not compress
            answer = http.put(f"/api/images/{image_id}/markers", json=marker_body(markers, versions[image_id]))
            if answer.status_code != 200:
                refused = answer
                break
            versions[image_id] = answer.json()["version"]
            acknowledged[(image_id, versions[image_id])] = markers
        assert refused is not None, "the disk never filled"
        assert refused.status_code == 507 and "no space left on device" in refused.json()["error"], refused.text
        assert len(acknowledged) >= 3
        for (image_id, version), markers in acknowledged.items():
            served = http.get(f"/api/images/{image_id}/markers", params={"version": version})
            assert served.status_code == 200
            np.testing.assert_array_equal(markers_of(served.json()), markers)
        for image_id in ids:  # the refused save changed nothing
            assert http.get(f"/api/images/{image_id}/markers").json()["version"] == versions[image_id]
    assert _temp_files(small_disk) == []


def test_a_read_only_project_says_so(small_disk, capsys):
    from hitlseg.cli import main
    from hitlseg.server.testing import demo_project

    with demo_project(small_disk / "project", n=2):
        pass
    remounted = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True)
    if remounted.returncode != 0:
        pytest.skip(f"cannot remount read-only here: {remounted.stderr.decode().strip()}")
    assert main(["project", "info", str(small_disk / "project")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("hitlseg: error: ") and "the project is read-only" in error and "\n" not in error
