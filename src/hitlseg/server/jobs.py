"""Background jobs: long work (learning filters, training) runs off the request, one job at a time.

A :class:`JobRunner` owns one daemon worker thread, so heavy jobs serialise (two trainings never
compete for the cores) and stopping the server never waits for a job. A job moves through
``queued -> running -> done | failed | cancelled``; while it runs, its ``progress(done, total,
message)`` callback (the library's progress convention) updates what ``GET /api/jobs/{id}``
shows, and checks for cancellation. Each job that starts is recorded in the project as a run
(:meth:`hitlseg.project.Project.start_run`, with the server's process id), finished with a
short result or the error message; runs left ``running`` by a server that was killed are marked
failed when the next server starts (:func:`fail_stale_runs`).

A job whose result (a dict) holds ``warnings`` (e.g. images skipped because their files cannot
be read, :mod:`hitlseg.server.reading`) shows them as the job's ``warnings`` and records them with
its run. A job failing on a storage error (:class:`OSError`, e.g. a full disk) fails with the
message of :func:`hitlseg.server.security.storage_error`.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from hitlseg.errors import InputError
from hitlseg.server.security import NotFoundError, storage_error

log = logging.getLogger("hitlseg.server")

STATES = ("queued", "running", "done", "failed", "cancelled")
KEEP_FINISHED = 200


class JobCancelled(Exception):
    """Raised inside a job's progress callback once the job was cancelled."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Job:
    """One piece of background work and what the page may know about it."""

    id: str
    kind: str
    params: dict
    state: str = "queued"
    done: int = 0
    total: int = 0
    message: str = ""
    result: Any = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    run_id: int | None = None
    created_at: str = field(default_factory=_now)
    started_at: str | None = None
    finished_at: str | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    function: Callable | None = field(default=None, repr=False)
    summary: Callable | None = field(default=None, repr=False)
    _started: float | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def to_dict(self, result: bool = True) -> dict:
        data = {
            "id": self.id,
            "kind": self.kind,
            "params": self.params,
            "state": self.state,
            "progress": {"done": self.done, "total": self.total, "message": self.message,
                         "fraction": (self.done / self.total) if self.total else None},
            "error": self.error,
            "warnings": list(self.warnings),
            "run_id": self.run_id,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "elapsed_s": (time.monotonic() - self._started) if self._started is not None and not self.finished else None,
        }
        if result:
            data["result"] = self.result
        return data


class JobRunner:
    """A queue of jobs run one after the other by a daemon thread, recorded as project runs."""

    def __init__(self, project):
        self.project = project
        self._jobs: dict[str, Job] = {}
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False

    # -- submitting --------------------------------------------------------------------------
    def submit(self, kind: str, function: Callable, params: dict | None = None, *, dedupe: bool = True,
               summary: Callable | None = None) -> Job:
        """Queue ``function(progress)``; returns the job (an unfinished job of the same kind when ``dedupe``).

        ``summary(result)`` gives the small result stored in the project's run (default: none).
        """
        with self._lock:
            if self._stopped:
                raise InputError("the server is stopping; no new job is accepted")
            if dedupe:
                for job in self._jobs.values():
                    if job.kind == kind and not job.finished:
                        return job
            job = Job(uuid.uuid4().hex[:12], kind, dict(params or {}), function=function, summary=summary)
            self._jobs[job.id] = job
            self._prune()
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="hitlseg-jobs", daemon=True)
                self._thread.start()
        self._queue.put(job)
        return job

    def _prune(self) -> None:
        finished = [j for j in self._jobs.values() if j.finished]
        for job in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[job.id]

    # -- looking -----------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise NotFoundError(f"job {job_id!r} not found (finished jobs are kept until the server restarts)")
        return job

    def list(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def active(self, kind: str | None = None) -> Job | None:
        """The unfinished job (of ``kind``), if any."""
        for job in self.list():
            if not job.finished and (kind is None or job.kind == kind):
                return job
        return None

    def wait(self, job_id: str, timeout: float = 60.0) -> Job:
        """Block until the job finishes (for scripts and tests); returns it."""
        job = self.get(job_id)
        deadline = time.monotonic() + timeout
        while not job.finished and time.monotonic() < deadline:
            time.sleep(0.02)
        return job

    @property
    def idle(self) -> bool:
        """True when no worker thread is alive (nothing uses the project on the runner's behalf)."""
        thread = self._thread
        return thread is None or not thread.is_alive()

    def cancel(self, job_id: str) -> Job:
        """Ask a job to stop: a queued job never starts; a running one stops at its next progress report."""
        job = self.get(job_id)
        with self._lock:
            job.cancel_event.set()
            if job.state == "queued":
                job.state, job.finished_at, job.error = "cancelled", _now(), "cancelled before it started"
        return job

    # -- running -----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.finished:  # cancelled while queued
                    continue
                job.state, job.started_at, job._started = "running", _now(), time.monotonic()
            self._run(job)

    def _run(self, job: Job) -> None:
        def progress(done: int, total: int, message: str = "") -> None:
            if job.cancel_event.is_set():
                raise JobCancelled()
            job.done, job.total, job.message = int(done), int(total), str(message or "")

        try:
            job.run_id = self.project.start_run(f"server:{job.kind}", {**job.params, "job": job.id, "pid": os.getpid()})
        except Exception:  # recording must not stop the work
            log.exception("could not record the start of job %s", job.id)
        error, result, state = None, None, "done"
        try:
            result = job.function(progress)
        except JobCancelled:
            state, error = "cancelled", "cancelled"
        except InputError as exc:
            state, error = "failed", str(exc)
        except OSError as exc:  # storage: a full disk, a read-only file system
            log.error("job %s (%s) failed:\n%s", job.id, job.kind, traceback.format_exc())
            state, error = "failed", storage_error(exc, f"job {job.kind}")[1]
        except Exception as exc:  # a bug: keep the server alive and say what happened
            log.error("job %s (%s) failed:\n%s", job.id, job.kind, traceback.format_exc())
            state, error = "failed", f"{type(exc).__name__}: {exc}"
        job.function = None
        warnings = [str(w) for w in result.get("warnings", [])] if isinstance(result, dict) else []
        if job.run_id is not None:  # recorded before the job shows as finished
            try:
                summary = job.summary(result) if (job.summary and state == "done") else None
                if warnings and (summary is None or isinstance(summary, dict)):
                    summary = {**(summary or {}), "warnings": warnings}
                self.project.finish_run(job.run_id, result=summary, error=error)
            except Exception:
                log.exception("could not record the end of job %s", job.id)
        job.result, job.error, job.warnings, job.finished_at = result, error, warnings, _now()
        job.state = state

    def start(self) -> None:
        """Accept jobs (again, after :meth:`stop`)."""
        with self._lock:
            was_stopped, thread = self._stopped, self._thread
            self._stopped = False
        if was_stopped and thread is not None:
            thread.join(timeout=30)  # the previous worker stops at its next progress report
            with self._lock:
                if self._thread is thread:
                    self._thread = None

    def stop(self, timeout: float = 10.0) -> bool:
        """Refuse new jobs, cancel the queued and the running one (which stops at its next progress report),
        and wait up to ``timeout`` seconds for the worker to end; returns whether it has ended."""
        with self._lock:
            self._stopped = True
            jobs = list(self._jobs.values())
            thread = self._thread
        for job in jobs:
            if not job.finished:
                self.cancel(job.id)
        self._queue.put(None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            return not thread.is_alive()
        return True


def fail_stale_runs(project) -> list[int]:
    """Mark failed the server runs still ``running`` whose process is gone (a killed server); returns their ids."""
    stale = []
    for run in project.runs(status="running"):
        if not str(run.get("kind", "")).startswith("server:"):
            continue
        pid = (run.get("params") or {}).get("pid")
        if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
            continue
        try:
            project.finish_run(run["id"], error="interrupted: the server stopped before the job finished")
            stale.append(run["id"])
        except InputError:  # finished meanwhile by someone else
            pass
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True
