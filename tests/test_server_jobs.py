"""Server: background jobs — one at a time, progress, failures as messages, cancellation, project runs,
and the jobs router."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from hitlseg.errors import InputError
from hitlseg.server import create_app
from hitlseg.server.jobs import JobRunner, fail_stale_runs
from hitlseg.server.testing import client, wait_job

PROJECT_IMAGES = 2


def test_jobs_run_one_at_a_time_with_progress(project):
    runner = JobRunner(project)
    running = []
    overlap = []
    gate = threading.Event()

    def work(progress, name):
        running.append(name)
        overlap.append(len(running))
        progress(1, 4, f"{name} started")
        gate.wait(5)
        progress(4, 4, f"{name} done")
        running.remove(name)
        return {"name": name}

    first = runner.submit("a", lambda p: work(p, "a"), {"x": 1})
    second = runner.submit("b", lambda p: work(p, "b"))
    deadline = time.monotonic() + 5
    while first.state != "running" or first.message != "a started":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert (first.done, first.total) == (1, 4) and second.state == "queued"
    data = first.to_dict()
    assert data["progress"] == {"done": 1, "total": 4, "message": "a started", "fraction": 0.25}
    gate.set()
    assert runner.wait(second.id, 10).state == "done"
    assert first.result == {"name": "a"} and second.result == {"name": "b"}
    assert overlap == [1, 1]  # never two at once
    runs = project.runs()
    assert [(r["kind"], r["status"]) for r in runs] == [("server:a", "done"), ("server:b", "done")]
    assert runs[0]["params"]["x"] == 1 and runs[0]["params"]["pid"] == os.getpid()
    runner.stop()


def test_failures_become_messages(project):
    runner = JobRunner(project)

    def bad_input(progress):
        raise InputError("markers of image 'x': no marked pixel")

    def bug(progress):
        return 1 / 0

    one = runner.wait(runner.submit("bad", bad_input).id)
    two = runner.wait(runner.submit("bug", bug).id)
    assert one.state == "failed" and one.error == "markers of image 'x': no marked pixel"
    assert two.state == "failed" and two.error.startswith("ZeroDivisionError")
    assert [r["error"] for r in project.runs()] == [one.error, two.error]
    assert runner.wait(runner.submit("ok", lambda p: 5).id).result == 5  # the worker survived
    runner.stop()


def test_cancel_and_dedupe(project):
    runner = JobRunner(project)
    started = threading.Event()

    def endless(progress):
        started.set()
        while True:
            progress(0, 0, "working")
            time.sleep(0.01)

    job = runner.submit("loop", endless)
    assert runner.submit("loop", endless) is job  # an unfinished job of the same kind is reused
    queued = runner.submit("later", lambda p: 1)
    assert started.wait(5)
    runner.cancel(queued.id)
    runner.cancel(job.id)
    assert runner.wait(job.id, 5).state == "cancelled"
    assert queued.state == "cancelled" and queued.error == "cancelled before it started"
    assert project.runs(kind="server:loop")[0]["status"] == "failed"
    assert project.runs(kind="server:later") == []  # never started
    runner.stop()
    with pytest.raises(InputError, match="stopping"):
        runner.submit("after", lambda p: 1)


def test_runs_of_a_killed_server_are_marked_failed(project):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    gone = project.start_run("server:train-sunet", {"pid": pid})
    alive = project.start_run("server:learn", {"pid": os.getppid()})
    other = project.start_run("benchmark", {"pid": pid})
    assert fail_stale_runs(project) == [gone]
    assert project.run(gone)["status"] == "failed" and "interrupted" in project.run(gone)["error"]
    assert project.run(alive)["status"] == "running" and project.run(other)["status"] == "running"


def test_jobs_router(project):
    with client(create_app(project, prepare=False)) as http:
        assert http.get("/api/jobs").json() == {"jobs": []}
        missing = http.get("/api/jobs/nope")
        assert missing.status_code == 404 and "nope" in missing.json()["error"]
        assert http.post("/api/jobs/nope/cancel").status_code == 404
        runner = http.app.state.hitlseg.jobs
        gate = threading.Event()
        job = runner.submit("wait", lambda progress: (progress(0, 1, "waiting"), gate.wait(5), "ok")[-1])
        listed = http.get("/api/jobs").json()["jobs"]
        assert [j["id"] for j in listed] == [job.id] and "result" not in listed[0]
        gate.set()
        done = wait_job(http, job.id)
        assert done["state"] == "done" and done["result"] == "ok" and done["run_id"] is not None
        slow = runner.submit("slow", lambda progress: [progress(0, 1, "") or time.sleep(0.01) for _ in range(1000)])
        assert http.post(f"/api/jobs/{slow.id}/cancel").status_code == 200
        assert wait_job(http, slow.id)["state"] == "cancelled"
