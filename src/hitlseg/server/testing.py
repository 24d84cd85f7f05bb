"""Helpers for testing and scripting the server: small demo projects, a loopback client, jobs, a
server in a thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import numpy as np

from hitlseg.server.imaging import MARKER_ENCODING, decode_labels, encode_labels


def demo_project(root: str | Path, n: int = 12, ids=None, copy: bool = False):
    """A project in ``root`` over ``n`` images of the bundled WBC demo (or the given ``ids``)."""
    from hitlseg.datasets import demo
    from hitlseg.project import Project

    dataset = demo()
    chosen = list(ids) if ids is not None else dataset.ids[:n]
    return Project.init(root, dataset=dataset.subset(chosen), copy=copy)


def marked_demo_project(root: str | Path, n: int = 8, marked: int = 2) -> Path:
    """:func:`demo_project` over ``n`` images with the robot's strokes saved on the first ``marked``; returns ``root``."""
    from hitlseg.robot import Robot

    with demo_project(root, n=n) as project:
        for image_id in project.image_ids()[:marked]:
            project.save_markers(image_id, Robot(0).mark(project.mask(image_id), key=image_id), 0, author="robot")
    return Path(root)


def client(app, **options):
    """A Starlette ``TestClient`` addressing the app as ``http://127.0.0.1`` (a loopback host)."""
    import warnings

    with warnings.catch_warnings():  # recent Starlette prefers the httpx2 package; httpx works the same
        warnings.filterwarnings("ignore", message=".*httpx.*")
        from fastapi.testclient import TestClient

    options.setdefault("base_url", "http://127.0.0.1")
    return TestClient(app, **options)


def marker_body(markers: np.ndarray, base_version: int, author: str | None = None) -> dict:
    """The JSON body of ``PUT /api/images/{id}/markers``."""
    body = {"base_version": int(base_version), "shape": list(markers.shape), "encoding": MARKER_ENCODING,
            "data": encode_labels(markers)}
    if author is not None:
        body["author"] = author
    return body


def markers_of(payload: dict) -> np.ndarray:
    """The label array of a ``GET /api/images/{id}/markers`` answer."""
    return decode_labels(payload["data"], tuple(payload["shape"]))


def wait_job(http, job_id: str, timeout: float = 120.0, interval: float = 0.05) -> dict:
    """Poll ``GET /api/jobs/{id}`` until the job is finished; returns its last state."""
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['state']} after {timeout} s: {job['progress']}")
        time.sleep(interval)


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0):
    """Run ``app`` with uvicorn in a thread; yields its base URL and stops it afterwards."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
