"""Selections, models, runs and events of the project store."""

from __future__ import annotations

import operator
import os
import re
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

from hitlseg.errors import ConflictError, InputError
from hitlseg.project._sql import _dumps, _loads, _now
from hitlseg.project.files import KIND_PATTERN, atomic_write

RUN_STATUSES = ("running", "done", "failed")


class RunStore:
    """Selections, models, runs and events of a :class:`~hitlseg.project.store.Project` (a mixin:
    it uses the project's ``root``, ``image_info``, ``_query``, ``_transaction``, ``_event`` and
    ``_files_lock``)."""

    # ------------------------------------------------------------------------------------------
    # selections
    # ------------------------------------------------------------------------------------------
    def add_selection(self, image_id: str, source: str) -> int:
        """Record that ``image_id`` was selected (by policy or person ``source``); returns its round (1, 2...).

        An image is selected at most once (:class:`InputError` otherwise).
        """
        self.image_info(image_id)
        if not isinstance(source, str) or not source.strip():
            raise InputError(f"source: expected a non-empty string naming the policy or person, got {source!r}")
        with self._transaction() as conn:
            previous = conn.execute("SELECT round FROM selections WHERE image_id = ?", (image_id,)).fetchone()
            if previous is not None:
                raise InputError(f"image {image_id!r} was already selected in round {previous[0]}")
            round_ = int(conn.execute("SELECT COALESCE(MAX(round), 0) FROM selections").fetchone()[0]) + 1
            conn.execute("INSERT INTO selections (round, image_id, source, created_at) VALUES (?, ?, ?, ?)",
                         (round_, image_id, source, _now()))
            self._event(conn, "image_selected", {"image_id": image_id, "round": round_, "source": source})
        return round_

    def selections(self) -> list[dict]:
        """Selected images in order: dicts with round, image_id, source, created_at."""
        return [dict(row) for row in self._query("SELECT round, image_id, source, created_at FROM selections ORDER BY round")]

    def selected_ids(self) -> list[str]:
        """Ids of the selected images, in order of selection."""
        return [row["image_id"] for row in self.selections()]

    # ------------------------------------------------------------------------------------------
    # models
    # ------------------------------------------------------------------------------------------
    def add_model(self, kind: str, source: bytes | str | Path, params: dict | None = None,
                  metrics: dict | None = None, *, suffix: str | None = None) -> int:
        """Store a model file (its bytes, or a copy of the file at ``source``) under ``models/``; returns its id.

        The file is named ``models/NNNN-<kind><suffix>``; ``suffix`` defaults to the source file's
        suffix, else ``.pt``.
        """
        if not isinstance(kind, str) or not KIND_PATTERN.match(kind):
            raise InputError(f"kind: {kind!r} is not a valid model kind (lower-case letters, digits, '_' or '-')")
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            write = lambda handle: handle.write(data)  # noqa: E731
            default_suffix = ".pt"
        elif isinstance(source, (str, Path)):
            source = Path(source)
            if not source.is_file():
                raise InputError(f"{source}: model file not found")
            default_suffix = "".join(source.suffixes[-2:]) if source.name.endswith(".nii.gz") else (source.suffix or ".pt")

            def write(handle, source=source):
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, handle, 1 << 20)
        else:
            raise InputError(f"model source: expected bytes or a file path, got {type(source).__name__}")
        suffix = suffix or default_suffix
        if not re.match(r"^\.[A-Za-z0-9][A-Za-z0-9._-]{0,15}$", suffix) or ".." in suffix:
            raise InputError(f"suffix: {suffix!r} is not a valid file suffix")
        params_text = _dumps(params, "model params")
        metrics_text = _dumps(metrics, "model metrics")
        written: Path | None = None
        with self._files_lock.shared():
            try:
                with self._transaction() as conn:
                    cursor = conn.execute(
                        "INSERT INTO models (kind, file, created_at, params, metrics) VALUES (?, ?, ?, ?, ?)",
                        (kind, f"pending/{os.getpid()}/{threading.get_ident()}", _now(), params_text, metrics_text),
                    )
                    model_id = int(cursor.lastrowid)
                    relative = f"models/{model_id:04d}-{kind}{suffix}"
                    written = atomic_write(self.root / relative, write)
                    conn.execute("UPDATE models SET file = ? WHERE id = ?", (relative, model_id))
                    self._event(conn, "model_added", {"model_id": model_id, "kind": kind})
            except BaseException:
                if written is not None:
                    written.unlink(missing_ok=True)
                raise
        return model_id

    @staticmethod
    def _model_dict(row: sqlite3.Row) -> dict:
        return {"id": int(row["id"]), "kind": row["kind"], "file": row["file"], "created_at": row["created_at"],
                "params": _loads(row["params"]), "metrics": _loads(row["metrics"])}

    def model(self, model_id: int) -> dict:
        """One model: id, kind, file (relative to the project), created_at, params, metrics."""
        rows = self._query("SELECT * FROM models WHERE id = ?", (self._check_id(model_id, "model id"),))
        if not rows:
            raise InputError(f"model id {model_id!r} is not in project {self.root}")
        return self._model_dict(rows[0])

    def model_path(self, model_id: int) -> Path:
        """Absolute path of a model's file."""
        return self.root / self.model(model_id)["file"]

    def list_models(self, kind: str | None = None) -> list[dict]:
        """Models, oldest first (only those of ``kind`` if given)."""
        if kind is None:
            rows = self._query("SELECT * FROM models ORDER BY id")
        else:
            rows = self._query("SELECT * FROM models WHERE kind = ? ORDER BY id", (kind,))
        return [self._model_dict(row) for row in rows]

    @staticmethod
    def _check_id(value, what: str) -> int:
        if isinstance(value, bool):
            raise InputError(f"{what}: expected an integer, got {value!r}")
        try:
            return operator.index(value)
        except TypeError:
            raise InputError(f"{what}: expected an integer, got {value!r}") from None

    # ------------------------------------------------------------------------------------------
    # runs and events
    # ------------------------------------------------------------------------------------------
    def start_run(self, kind: str, params: dict | None = None) -> int:
        """Record the start of a piece of work (training, descriptors...); returns the run id."""
        if not isinstance(kind, str) or not kind:
            raise InputError(f"run kind: expected a non-empty string, got {kind!r}")
        params_text = _dumps(params, "run params")
        with self._transaction() as conn:
            cursor = conn.execute("INSERT INTO runs (kind, status, started_at, params) VALUES (?, 'running', ?, ?)",
                                  (kind, _now(), params_text))
            run_id = int(cursor.lastrowid)
            self._event(conn, "run_started", {"run_id": run_id, "kind": kind})
        return run_id

    def finish_run(self, run_id: int, result: Any = None, error: str | None = None) -> None:
        """Mark a run ``done`` (with ``result``) or ``failed`` (with ``error``); a finished run is a conflict."""
        run_id = self._check_id(run_id, "run id")
        result_text = None if result is None else _dumps(result, "run result")
        status = "failed" if error is not None else "done"
        with self._transaction() as conn:
            row = conn.execute("SELECT status, kind FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise InputError(f"run id {run_id} is not in project {self.root}")
            if row["status"] != "running":
                raise ConflictError(f"run {run_id} already finished ({row['status']})")
            conn.execute("UPDATE runs SET status = ?, finished_at = ?, result = ?, error = ? WHERE id = ?",
                         (status, _now(), result_text, None if error is None else str(error), run_id))
            self._event(conn, "run_finished", {"run_id": run_id, "kind": row["kind"], "status": status})

    @staticmethod
    def _run_dict(row: sqlite3.Row) -> dict:
        return {"id": int(row["id"]), "kind": row["kind"], "status": row["status"], "started_at": row["started_at"],
                "finished_at": row["finished_at"], "params": _loads(row["params"]), "result": _loads(row["result"]),
                "error": row["error"]}

    def run(self, run_id: int) -> dict:
        """One run: id, kind, status, started_at, finished_at, params, result, error."""
        rows = self._query("SELECT * FROM runs WHERE id = ?", (self._check_id(run_id, "run id"),))
        if not rows:
            raise InputError(f"run id {run_id!r} is not in project {self.root}")
        return self._run_dict(rows[0])

    def runs(self, kind: str | None = None, status: str | None = None) -> list[dict]:
        """Runs, oldest first, optionally only one kind and/or status."""
        if status is not None and status not in RUN_STATUSES:
            raise InputError(f"status: {status!r} is not one of {', '.join(RUN_STATUSES)}")
        rows = self._query(
            "SELECT * FROM runs WHERE (? IS NULL OR kind = ?) AND (? IS NULL OR status = ?) ORDER BY id",
            (kind, kind, status, status),
        )
        return [self._run_dict(row) for row in rows]

    def record_event(self, kind: str, payload: dict | None = None) -> int:
        """Append an event to the project's log; returns its id (increasing)."""
        if not isinstance(kind, str) or not kind:
            raise InputError(f"event kind: expected a non-empty string, got {kind!r}")
        with self._transaction() as conn:
            return self._event(conn, kind, payload)

    def events(self, after: int = 0, kind: str | None = None, limit: int | None = None) -> list[dict]:
        """Events with id > ``after`` (oldest first): dicts with id, time, kind, payload."""
        rows = self._query(
            "SELECT * FROM events WHERE id > ? AND (? IS NULL OR kind = ?) ORDER BY id LIMIT ?",
            (self._check_id(after, "after"), kind, kind, -1 if limit is None else self._check_id(limit, "limit")),
        )
        return [{"id": int(r["id"]), "time": r["time"], "kind": r["kind"], "payload": _loads(r["payload"])} for r in rows]
