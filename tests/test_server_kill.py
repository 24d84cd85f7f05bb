"""Server crash safety: SIGKILL a running ``hitlseg serve`` in the middle of marker saves, restart it,
and find every acknowledged version, contiguous versions, and no half-written or orphan file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from hitlseg.project import Project
from hitlseg.project.files import is_temp_name
from hitlseg.server.testing import demo_project, marker_body, markers_of

pytestmark = [pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL"), pytest.mark.slow]

TRIALS = 5
IMAGES = ("001", "002")


def expected(image_id: str, version: int, shape) -> np.ndarray:
    """The markers the client saves as ``version`` of ``image_id`` (so any stored version can be checked)."""
    return np.random.default_rng([int(image_id), version]).integers(0, 4, shape, dtype=np.uint8)


class Server:
    """``python -m hitlseg serve PROJECT --port 0`` on loopback, its URL read from its first line."""

    def __init__(self, root: Path):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hitlseg", "serve", str(root), "--port", "0", "--no-browser"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.process.stdout.readline()
        assert " at http://127.0.0.1:" in line, line + self.process.stdout.read()
        self.url = line.split(" at ")[1].strip().rstrip("/")
        threading.Thread(target=self.process.stdout.read, daemon=True).start()  # keep the pipe drained
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/api/project", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not answer"
            time.sleep(0.05)

    def kill(self):
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        assert self.process.returncode == -signal.SIGKILL


def saver(url: str, image_id: str, shape, acknowledged: list, stop: threading.Event):
    """Save versions 1, 2, 3... of ``image_id`` until the server dies; record the acknowledged ones."""
    with httpx.Client(base_url=url, timeout=10) as http:
        version = http.get(f"/api/images/{image_id}/markers").json()["version"]
        while not stop.is_set():
            body = marker_body(expected(image_id, version + 1, shape), version, author="kill-test")
            try:
                response = http.put(f"/api/images/{image_id}/markers", json=body)
            except httpx.HTTPError:
                return  # the server died with this save in flight: committed or not, never half
            assert response.status_code == 200, response.text
            version = response.json()["version"]
            acknowledged.append(version)


def check_after_restart(url: str, acknowledged: dict, shapes: dict) -> None:
    """Through the restarted server: contiguous versions, every acknowledged one there and whole."""
    with httpx.Client(base_url=url, timeout=10) as http:
        for image_id, saved in acknowledged.items():
            history = http.get(f"/api/images/{image_id}/markers/history").json()["versions"]
            versions = [h["version"] for h in history]
            assert versions == list(range(1, len(versions) + 1))  # contiguous 1..N
            assert set(saved) <= set(versions)  # no acknowledged save was lost
            assert len(versions) <= saved[-1] + 1  # at most the one in flight besides
            for version in versions[-4:] + saved[:1]:  # stored versions load whole
                payload = http.get(f"/api/images/{image_id}/markers", params={"version": version}).json()
                np.testing.assert_array_equal(markers_of(payload), expected(image_id, version, shapes[image_id]))


def test_sigkill_during_marker_saves_loses_nothing(tmp_path):
    root = tmp_path / "project"
    with demo_project(root, n=4) as project:
        shapes = {i: tuple(project.image_info(i)["shape"]) for i in IMAGES}
    rng = np.random.default_rng(3)
    total = 0
    started = time.monotonic()
    server = Server(root)
    for _ in range(TRIALS):
        acknowledged = {i: [] for i in IMAGES}
        stop = threading.Event()
        clients = [threading.Thread(target=saver, args=(server.url, i, shapes[i], acknowledged[i], stop)) for i in IMAGES]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 10
        while min(len(a) for a in acknowledged.values()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(float(rng.uniform(0.0, 0.3)))  # kill at a random point of a save
        server.kill()
        stop.set()
        for thread in clients:
            thread.join(15)
        assert all(len(a) >= 3 for a in acknowledged.values()), acknowledged  # it really was saving
        total += sum(len(a) for a in acknowledged.values())

        server = Server(root)  # the restart (opening the project removes what the crash left behind) ...
        check_after_restart(server.url, acknowledged, shapes)  # ... and the next trial's victim
    server.kill()

    with Project.open(root) as project:
        for image_id in IMAGES:
            versions = [h["version"] for h in project.marker_history(image_id)]
            for version in versions:  # every version file is complete
                stored, _ = project.load_markers(image_id, version)
                np.testing.assert_array_equal(stored, expected(image_id, version, shapes[image_id]))
            files = sorted(p.name for p in (root / "arrays" / "markers" / image_id).iterdir())
            assert files == [f"v{v:04d}.npy" for v in versions]  # no orphan, no temporary file
        assert not [p for p in root.rglob("*") if is_temp_name(p.name)]
    assert total >= 6 * TRIALS
    assert time.monotonic() - started < 150
