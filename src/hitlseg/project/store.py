"""The project store: a folder holding a SQLite database and array files.

Layout of a project folder ``DIR``::

    DIR/project.sqlite                  images, marker versions, selections, models, runs, events
    DIR/.lock                           flock separating writers from the garbage collector
    DIR/arrays/markers/<id>/v0001.npy   one uint8 file per saved marker version (never rewritten)
    DIR/arrays/<kind>/<key>.npy         generic arrays: superpixels, descriptors, predictions...
    DIR/models/0001-<kind>.pt           model files
    DIR/images/, DIR/masks/             copies of the inputs, only with ``copy=True``

Images are referenced in place by absolute path (the default): a project over a large pool costs
no disk space and the pool stays where it is. ``copy=True`` copies images and masks into the
project and stores their paths relative to ``DIR``, so the folder can be moved or shared.

Durability. Every file is written to a hidden temporary file, fsynced and renamed into place;
every database change is one SQLite transaction (WAL journal, ``synchronous=FULL``). A marker
save holds the database write lock (``BEGIN IMMEDIATE``) from the version check to the commit,
writes its array file first and inserts its row second, so a crash can leave an orphan file but
never a row whose file is missing or partial. :meth:`Project.open` removes orphans and temporary
files (:meth:`Project.collect_garbage`).

Concurrency. Marker versions make concurrent annotation safe: a save names the version it was
based on and is refused with :class:`~hitlseg.errors.ConflictError` when someone saved a newer
one meanwhile, so nobody silently overwrites another person's strokes. A :class:`Project` may be
shared by threads: each thread gets its own SQLite connection (``threading.local``), writers
serialise on SQLite's write lock (``busy_timeout`` 30 s), and several processes may open the same
project at once.

This module holds the core of :class:`Project` (opening, the database, images, garbage
collection); its markers, arrays, and selections/models/runs/events come from the mixins in
:mod:`~hitlseg.project.markers`, :mod:`~hitlseg.project.arrays` and :mod:`~hitlseg.project.runs`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np

from hitlseg.errors import InputError
from hitlseg.progress import Progress, report
from hitlseg.project._sql import _dumps, _now
from hitlseg.project.arrays import ArrayStore
from hitlseg.project.files import FileLock, copy_atomic, fsync_dir, is_temp_name, safe_name
from hitlseg.project.markers import MarkerStore
from hitlseg.project.runs import RUN_STATUSES, RunStore
from hitlseg.project.schema import SCHEMA, SCHEMA_VERSION

DB_NAME = "project.sqlite"
LOCK_NAME = ".lock"
BUSY_TIMEOUT_MS = 30_000


class Project(MarkerStore, ArrayStore, RunStore):
    """A project folder: images registered by id, versioned markers, arrays, models, runs, events.

    Create one with :meth:`init`, reopen it with :meth:`open`; use it as a context manager or
    call :meth:`close`. All methods take image *ids*; an unknown id raises
    :class:`~hitlseg.errors.InputError`.
    """

    def __init__(self, root: str | Path, *, _db_path: Path | None = None):
        """Private: use :meth:`init` or :meth:`open`."""
        self.root = Path(root).resolve()
        self.db_path = Path(_db_path) if _db_path is not None else self.root / DB_NAME
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._closed = False
        self._files_lock = FileLock(self.root / LOCK_NAME)
        self.removed_garbage: list[str] | None = []

    # ------------------------------------------------------------------------------------------
    # creating and opening
    # ------------------------------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        root: str | Path,
        images_dir: str | Path | None = None,
        masks_dir: str | Path | None = None,
        dataset=None,
        name: str | None = None,
        *,
        copy: bool = False,
        color: str | None = None,
        normalize: str | None = None,
        validate: bool = True,
        progress: Progress = None,
    ) -> "Project":
        """Create a project in ``root`` (created if missing) over a folder of images or a dataset.

        Parameters
        ----------
        root : path
            Project folder; refused when it already holds a project.
        images_dir : path, optional
            Folder of images (2D files or NIfTI volumes), one image per file, ids = file stems.
        masks_dir : path, optional
            Folder of ground-truth masks matched to images by stem (only with ``images_dir``).
        dataset : Dataset or path, optional
            Instead of ``images_dir``: a :class:`hitlseg.dataset.Dataset` or a dataset folder
            (``images/ masks/ markers/`` or one folder per case). Its marker files, if any, become
            version 1 of each image's markers (author ``"import"``).
        name : str, optional
            Project name (default: the folder name).
        copy : bool
            Copy images and masks into the project instead of referencing them in place.
        color, normalize : str, optional
            Preprocessing used by :meth:`image` (see :func:`hitlseg.io.read_image`); by default the
            dataset's, else ``"lab"`` and ``"percentile"``.
        validate : bool
            Decode every image and mask now (truncated files, wrong formats, non-finite values,
            label outliers by :func:`hitlseg.dataset.task_classes`) rather than only reading
            headers; off, such files are met by the command that first reads them.
        progress : callable, optional
            ``progress(done, total, message)`` while images are checked.
        """
        from hitlseg import __version__
        from hitlseg.dataset import Dataset, task_classes
        from hitlseg.io import peek_image, read_image, read_mask, read_markers
        from hitlseg.io.images import COLOR_MODES, NORMALIZATIONS

        root = Path(root)
        if (images_dir is None) == (dataset is None):
            raise InputError("project init: give either an images folder or a dataset, not both or neither")
        if masks_dir is not None and images_dir is None:
            raise InputError("project init: a masks folder goes with an images folder (a dataset brings its own masks)")
        if root.exists() and not root.is_dir():
            raise InputError(f"{root}: exists and is not a folder")
        if (root / DB_NAME).exists():
            raise InputError(f"{root}: already holds a hitlseg project ({DB_NAME}); open it instead of creating it again")
        if dataset is None:
            dataset = _folder_dataset(Path(images_dir), None if masks_dir is None else Path(masks_dir))
        elif not isinstance(dataset, Dataset):
            dataset = Dataset.from_folder(dataset)
        color = color or getattr(dataset, "color", None) or "lab"
        normalize = normalize or getattr(dataset, "normalize", None) or "percentile"
        if color not in COLOR_MODES:
            raise InputError(f"color: unknown mode {color!r} (use one of {', '.join(COLOR_MODES)})")
        if normalize not in NORMALIZATIONS:
            raise InputError(f"normalize: unknown method {normalize!r} (use one of {', '.join(NORMALIZATIONS)})")

        samples = list(dataset)
        rows, labels = [], {}
        for done, sample in enumerate(samples):
            report(progress, done, len(samples), sample.id)
            channels, shape = peek_image(sample.image_paths)
            if validate:  # decode now, so that no later command meets a file init accepted
                read_image(sample.image_paths, color=color, normalize=normalize)
            if sample.mask_path is not None:
                if validate:
                    mask, _ = read_mask(sample.mask_path)
                    mask_shape = mask.shape
                    labels[str(sample.mask_path)] = np.unique(mask)
                else:
                    _, mask_shape = peek_image(sample.mask_path)
                if tuple(mask_shape) != tuple(shape):
                    raise InputError(f"{sample.mask_path}: mask shape {tuple(mask_shape)} differs from image "
                                     f"{sample.image_paths[0]} shape {tuple(shape)}")
            rows.append((sample, channels, tuple(int(s) for s in shape)))
        task_classes(labels)
        report(progress, len(samples), len(samples), "")

        root.mkdir(parents=True, exist_ok=True)
        root = root.resolve()
        for folder in ("arrays", "arrays/markers", "models"):
            (root / folder).mkdir(exist_ok=True)
        (root / LOCK_NAME).touch()
        for stale in root.glob(f".{DB_NAME}.*"):  # a previous init that crashed
            stale.unlink()

        def place(path: Path, sample_id: str, folder: str) -> str:
            if not copy:
                return str(Path(path).resolve())
            from hitlseg.io import stem_of

            relative = Path(folder) / (path.name if stem_of(path) == sample_id else Path(safe_name(sample_id)) / path.name)
            copy_atomic(Path(path), root / relative)
            return relative.as_posix()

        created = _now()
        tmp = root / f".{DB_NAME}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            conn = sqlite3.connect(str(tmp), isolation_level=None)
            try:
                conn.executescript(SCHEMA)
                conn.execute("BEGIN")
                meta = {
                    "schema_version": str(SCHEMA_VERSION),
                    "name": name or root.name,
                    "created_at": created,
                    "hitlseg_version": __version__,
                    "color": color,
                    "normalize": normalize,
                    "copied": "1" if copy else "0",
                    "source": str(Path(dataset.root).resolve()),
                }
                conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
                for position, (sample, channels, shape) in enumerate(rows):
                    paths = [place(Path(p), sample.id, "images") for p in sample.image_paths]
                    mask = None if sample.mask_path is None else place(Path(sample.mask_path), sample.id, "masks")
                    conn.execute(
                        "INSERT INTO images (id, position, paths, mask_path, shape, channels, ndim, group_name, added_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (sample.id, position, json.dumps(paths), mask, json.dumps(list(shape)), int(channels),
                         len(shape), sample.group, created),
                    )
                conn.execute(
                    "INSERT INTO events (time, kind, payload) VALUES (?, ?, ?)",
                    (created, "project_created", _dumps({"images": len(rows), "source": meta["source"]}, "event")),
                )
                conn.execute("COMMIT")
            finally:
                conn.close()
            # Markers shipped with the dataset become version 1, still inside the temporary database.
            building = cls(root, _db_path=tmp)
            try:
                for sample, _, shape in rows:
                    if sample.markers_path is not None:
                        markers = read_markers(sample.markers_path, shape)
                        building.save_markers(sample.id, markers, None, author="import")
            finally:
                building.close()
            try:
                os.link(tmp, root / DB_NAME)  # fails if another init won the race
            except FileExistsError:
                raise InputError(f"{root}: already holds a hitlseg project ({DB_NAME})") from None
            except OSError:  # file systems without hard links
                if (root / DB_NAME).exists():
                    raise InputError(f"{root}: already holds a hitlseg project ({DB_NAME})") from None
                os.replace(tmp, root / DB_NAME)
            fsync_dir(root)
        finally:
            for stale in root.glob(f"{tmp.name}*"):
                stale.unlink()
        return cls.open(root)

    @classmethod
    def open(cls, root: str | Path, *, collect_garbage: bool = True) -> "Project":
        """Open an existing project; removes orphan and temporary files unless told not to.

        Raises :class:`~hitlseg.errors.InputError` for a folder that is not a project or whose
        schema version this hitlseg does not read.
        """
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"{root}: project folder not found")
        if not (root / DB_NAME).is_file():
            raise InputError(f"{root}: not a hitlseg project (no {DB_NAME}; create one with 'hitlseg project init')")
        blocked = [path for path in (root, root / DB_NAME) if not os.access(path, os.W_OK)]
        if blocked:  # SQLite's WAL and every save write here; without this check it says "unable to open"
            raise InputError(f"{blocked[0]}: the project is read-only (hitlseg writes its database, markers and "
                             "models in the project folder); make it writable, or copy the folder somewhere writable")
        project = cls(root)
        try:
            version = project._meta_value("schema_version")
            conn = project._conn()
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as exc:
            project.close()
            raise InputError(f"{root / DB_NAME}: not a hitlseg project database ({exc})") from exc
        if version is None or not version.isdigit():
            project.close()
            raise InputError(f"{root / DB_NAME}: not a hitlseg project database (no schema version)")
        if int(version) != SCHEMA_VERSION:
            project.close()
            newer = int(version) > SCHEMA_VERSION
            raise InputError(f"{root / DB_NAME}: schema version {version} is {'newer' if newer else 'older'} than the "
                             f"version {SCHEMA_VERSION} this hitlseg reads" + ("; upgrade hitlseg" if newer else ""))
        if collect_garbage:
            project.collect_garbage()
        return project

    def close(self) -> None:
        """Close every connection this object opened (in any thread)."""
        with self._guard:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def __enter__(self) -> "Project":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Project({str(self.root)!r})"

    # ------------------------------------------------------------------------------------------
    # database plumbing
    # ------------------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not self._closed:
            return conn
        with self._guard:
            if self._closed:
                raise InputError(f"{self.root}: project is closed")
            # check_same_thread=False only so that close() may close it from another thread;
            # each connection is used by the thread that opened it.
            conn = sqlite3.connect(
                f"{self.db_path.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None,
                timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous=FULL")
            self._connections.append(conn)
            self._local.conn = conn
        return conn

    @contextmanager
    def _transaction(self):
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: one writer at a time, across threads and processes."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _query(self, sql: str, params: Sequence = ()) -> list[sqlite3.Row]:
        return self._conn().execute(sql, params).fetchall()

    def _meta_value(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    @staticmethod
    def _event(conn: sqlite3.Connection, kind: str, payload: dict | None) -> int:
        cursor = conn.execute("INSERT INTO events (time, kind, payload) VALUES (?, ?, ?)",
                              (_now(), kind, _dumps(payload, f"event {kind!r} payload")))
        return int(cursor.lastrowid)

    def _resolve(self, stored: str) -> Path:
        path = Path(stored)
        return path if path.is_absolute() else self.root / path

    # ------------------------------------------------------------------------------------------
    # project metadata
    # ------------------------------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, str]:
        """The ``meta`` table: schema_version, name, created_at, color, normalize, copied, source."""
        return {row["key"]: row["value"] for row in self._query("SELECT key, value FROM meta")}

    @property
    def name(self) -> str:
        """Project name."""
        return self._meta_value("name") or self.root.name

    # ------------------------------------------------------------------------------------------
    # images
    # ------------------------------------------------------------------------------------------
    def image_ids(self) -> list[str]:
        """Image ids in registration (sorted) order."""
        return [row["id"] for row in self._query("SELECT id FROM images ORDER BY position")]

    def __contains__(self, image_id: object) -> bool:
        return isinstance(image_id, str) and bool(self._query("SELECT 1 FROM images WHERE id = ?", (image_id,)))

    def __len__(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM images")[0][0])

    def _image_dict(self, row: sqlite3.Row) -> dict:
        return {
            "id": row["id"],
            "paths": [str(self._resolve(p)) for p in json.loads(row["paths"])],
            "mask_path": None if row["mask_path"] is None else str(self._resolve(row["mask_path"])),
            "shape": tuple(json.loads(row["shape"])),
            "channels": int(row["channels"]),
            "ndim": int(row["ndim"]),
            "has_mask": row["mask_path"] is not None,
            "group": row["group_name"],
            "added_at": row["added_at"],
        }

    def image_info(self, image_id: str) -> dict:
        """Registration of one image: paths, mask_path, shape (spatial), channels, ndim, has_mask, group."""
        rows = self._query("SELECT * FROM images WHERE id = ?", (image_id,)) if isinstance(image_id, str) else []
        if not rows:
            raise InputError(f"image id {image_id!r} is not in project {self.root}")
        return self._image_dict(rows[0])

    def images(self) -> list[dict]:
        """:meth:`image_info` of every image, in order."""
        return [self._image_dict(row) for row in self._query("SELECT * FROM images ORDER BY position")]

    def image(self, image_id: str) -> np.ndarray:
        """The image as float32 ``(C, *spatial)``, read with the project's colour and normalisation."""
        from hitlseg.io import read_image

        info = self.image_info(image_id)
        meta = self.meta
        image, _ = read_image(info["paths"], color=meta.get("color", "lab"), normalize=meta.get("normalize", "percentile"))
        return image

    def mask(self, image_id: str) -> np.ndarray | None:
        """The ground-truth mask ``(*spatial)``, or None when the image has none."""
        from hitlseg.io import read_mask

        info = self.image_info(image_id)
        if info["mask_path"] is None:
            return None
        mask, _ = read_mask(info["mask_path"])
        if tuple(mask.shape) != info["shape"]:
            raise InputError(f"{info['mask_path']}: mask shape {mask.shape} differs from image shape {info['shape']}")
        return mask

    def dataset(self):
        """The project's images as a :class:`hitlseg.dataset.Dataset` (for the library's algorithms).

        Its samples carry no marker files: markers live in the project (:meth:`load_markers`).
        """
        from hitlseg.dataset import Dataset, Sample

        meta = self.meta
        samples = [
            Sample(info["id"], tuple(Path(p) for p in info["paths"]),
                   None if info["mask_path"] is None else Path(info["mask_path"]), None, info["group"])
            for info in self.images()
        ]
        return Dataset(Path(meta.get("source", self.root)), samples, color=meta.get("color", "lab"),
                       normalize=meta.get("normalize", "percentile"))

    # ------------------------------------------------------------------------------------------
    # maintenance and summary
    # ------------------------------------------------------------------------------------------
    def collect_garbage(self, timeout: float = 5.0) -> list[str] | None:
        """Remove what crashed writers left: temporary files, and marker/model files no row references.

        Runs under an exclusive file lock, so files of writers still at work (in any process) are
        never touched; returns the removed paths (relative), or None when writers kept the lock
        busy for ``timeout`` seconds. Called by :meth:`open`.
        """
        removed: list[str] = []
        with self._files_lock.exclusive(timeout) as acquired:
            if not acquired:
                self.removed_garbage = None
                return None
            referenced = {row[0] for row in self._query("SELECT file FROM marker_versions")}
            referenced |= {row[0] for row in self._query("SELECT file FROM models")}
            bases = ["arrays", "models"] + (["images", "masks"] if self.meta.get("copied") == "1" else [])
            for base in bases:  # images/, masks/: the files init copied (copy_atomic's temporaries)
                folder = self.root / base
                if not folder.is_dir():
                    continue
                for path in sorted(folder.rglob("*")):
                    if not path.is_file() and not path.is_symlink():
                        continue
                    relative = path.relative_to(self.root).as_posix()
                    managed = relative.startswith("arrays/markers/") or base == "models"
                    if is_temp_name(path.name) or (managed and relative not in referenced):
                        path.unlink(missing_ok=True)
                        removed.append(relative)
            markers = self.root / "arrays" / "markers"
            if markers.is_dir():
                for folder in markers.iterdir():
                    if folder.is_dir() and not any(folder.iterdir()):
                        folder.rmdir()
        self.removed_garbage = removed
        return removed

    def info(self) -> dict:
        """Summary: name, images (count, dimensions, masks), marked images with latest versions,
        selections, models and run counts."""
        images = self.images()
        runs = {status: 0 for status in RUN_STATUSES}
        for row in self._query("SELECT status, COUNT(*) FROM runs GROUP BY status"):
            runs[row[0]] = int(row[1])
        meta = self.meta
        return {
            "root": str(self.root),
            "name": self.name,
            "schema_version": int(meta["schema_version"]),
            "created_at": meta.get("created_at"),
            "source": meta.get("source"),
            "copied": meta.get("copied") == "1",
            "color": meta.get("color"),
            "normalize": meta.get("normalize"),
            "images": len(images),
            "dimensions": sorted({info["ndim"] for info in images}),
            "with_masks": sum(info["has_mask"] for info in images),
            "marked": self.latest_versions(),
            "marker_versions": int(self._query("SELECT COUNT(*) FROM marker_versions")[0][0]),
            "selections": self.selections(),
            "models": [{k: m[k] for k in ("id", "kind", "file", "created_at", "metrics")} for m in self.list_models()],
            "runs": runs,
            "events": int(self._query("SELECT COUNT(*) FROM events")[0][0]),
        }


def _folder_dataset(images_dir: Path, masks_dir: Path | None):
    """A :class:`Dataset` over a flat folder of images (ids = stems) and an optional masks folder."""
    from hitlseg.dataset import Dataset

    return Dataset.from_parts(images_dir, masks_dir)
