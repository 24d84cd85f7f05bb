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
"""

from __future__ import annotations

import json
import operator
import os
import re
import shutil
import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hitlseg.plain import to_plain
from hitlseg.errors import ConflictError, InputError
from hitlseg.progress import Progress, report
from hitlseg.project.files import (
    KIND_PATTERN,
    FileLock,
    atomic_write,
    check_key,
    check_kind,
    copy_atomic,
    fsync_dir,
    is_temp_name,
    load_npy,
    safe_name,
    save_npy,
)
from hitlseg.project.schema import SCHEMA, SCHEMA_VERSION

DB_NAME = "project.sqlite"
LOCK_NAME = ".lock"
BUSY_TIMEOUT_MS = 30_000
RUN_STATUSES = ("running", "done", "failed")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _dumps(value, what: str) -> str:
    try:
        return json.dumps(to_plain({} if value is None else value), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what}: cannot be stored as JSON ({exc})") from exc


def _loads(text):
    return None if text is None else json.loads(text)


class Project:
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
    # markers
    # ------------------------------------------------------------------------------------------
    def _check_markers(self, image_id: str, markers, shape: tuple[int, ...]) -> np.ndarray:
        array = np.asarray(markers)
        what = f"markers of image {image_id!r}"
        if array.dtype.kind not in "biu":
            raise InputError(f"{what}: expected integer labels (uint8, 0 unmarked, c+1 for class c), got dtype {array.dtype}")
        if array.ndim != len(shape):
            raise InputError(f"{what}: expected a {len(shape)}D array of shape {shape}, got {array.ndim}D shape {array.shape}")
        if tuple(array.shape) != tuple(shape):
            raise InputError(f"{what}: shape {array.shape} differs from the image's spatial shape {shape}")
        if array.size and (int(array.min()) < 0 or int(array.max()) > 255):
            raise InputError(f"{what}: labels must lie in 0..255, got {int(array.min())}..{int(array.max())}")
        return np.ascontiguousarray(array, dtype=np.uint8)

    @staticmethod
    def _check_version(value, what: str) -> int:
        if value is None:
            return 0
        if isinstance(value, bool):
            raise InputError(f"{what}: expected a version number, got {value!r}")
        try:
            number = operator.index(value)
        except TypeError:
            raise InputError(f"{what}: expected a version number, got {value!r}") from None
        if number < 0:
            raise InputError(f"{what}: version numbers are 0 (none yet) or more, got {number}")
        return number

    def latest_version(self, image_id: str) -> int:
        """Latest marker version of an image (0 when it has none)."""
        self.image_info(image_id)
        row = self._query("SELECT MAX(version) FROM marker_versions WHERE image_id = ?", (image_id,))[0]
        return int(row[0] or 0)

    def latest_versions(self) -> dict[str, int]:
        """``{image_id: latest version}`` of every image that has markers, in image order."""
        rows = self._query(
            "SELECT m.image_id, MAX(m.version) FROM marker_versions m JOIN images i ON i.id = m.image_id "
            "GROUP BY m.image_id ORDER BY MIN(i.position)"
        )
        return {row[0]: int(row[1]) for row in rows}

    def save_markers(self, image_id: str, markers, base_version: int | None = None, author: str | None = None) -> int:
        """Save markers as a new version and return its number (1 for the first save).

        Parameters
        ----------
        image_id : str
            Image the markers belong to.
        markers : ndarray of integers in 0..255, shape = the image's spatial shape
            0 unmarked, c+1 for class c.
        base_version : int or None
            The version the markers were edited from (None or 0 when the image had none). When it
            is not the latest version, someone saved in between and the save is refused.
        author : str, optional
            Who saved (a person, or e.g. ``"robot"``).

        Raises
        ------
        ConflictError
            ``base_version`` is stale; ``exc.latest_version`` holds the version to reload.
        InputError
            Unknown image id, or markers of the wrong shape, dtype or range.
        """
        info = self.image_info(image_id)
        array = self._check_markers(image_id, markers, info["shape"])
        base = self._check_version(base_version, f"base_version for image {image_id!r}")
        if author is not None and not isinstance(author, str):
            raise InputError(f"author: expected a string, got {type(author).__name__}")
        labels, counts = np.unique(array, return_counts=True)
        class_counts = {str(int(label)): int(count) for label, count in zip(labels, counts) if label}
        n_marked = int(sum(class_counts.values()))
        written: Path | None = None
        with self._files_lock.shared():
            try:
                with self._transaction() as conn:
                    latest = int(conn.execute("SELECT MAX(version) FROM marker_versions WHERE image_id = ?",
                                              (image_id,)).fetchone()[0] or 0)
                    if base != latest:
                        error = ConflictError(
                            f"markers of image {image_id!r}: the save is based on version {base} but the latest "
                            f"version is {latest} (saved by someone else meanwhile); reload version {latest} and "
                            "apply your changes to it"
                        )
                        error.image_id, error.base_version, error.latest_version = image_id, base, latest
                        raise error
                    version = latest + 1
                    relative = f"arrays/markers/{safe_name(image_id)}/v{version:04d}.npy"
                    written = save_npy(self.root / relative, array)  # the file first ...
                    conn.execute(  # ... then the row that makes it visible, in the same transaction
                        "INSERT INTO marker_versions (image_id, version, created_at, author, file, n_marked, class_counts)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (image_id, version, _now(), author, relative, n_marked, json.dumps(class_counts)),
                    )
                    self._event(conn, "markers_saved", {"image_id": image_id, "version": version, "author": author,
                                                        "n_marked": n_marked})
            except BaseException:
                if written is not None:  # not committed: nobody else can own this version's file
                    written.unlink(missing_ok=True)
                raise
        return version

    def load_markers(self, image_id: str, version: int | None = None) -> tuple[np.ndarray, int]:
        """Markers of an image and their version: the latest by default.

        An image without markers (or ``version=0``) gives zeros of the image's shape and version 0.
        """
        info = self.image_info(image_id)
        number = None if version is None else self._check_version(version, f"version for image {image_id!r}")
        if number == 0:
            return np.zeros(info["shape"], np.uint8), 0
        if number is None:
            rows = self._query("SELECT version, file FROM marker_versions WHERE image_id = ? ORDER BY version DESC LIMIT 1",
                               (image_id,))
            if not rows:
                return np.zeros(info["shape"], np.uint8), 0
        else:
            rows = self._query("SELECT version, file FROM marker_versions WHERE image_id = ? AND version = ?",
                               (image_id, number))
            if not rows:
                latest = self.latest_version(image_id)
                raise InputError(f"markers of image {image_id!r}: no version {number} (latest is {latest})")
        path = self.root / rows[0]["file"]
        array = load_npy(path)
        if array.dtype != np.uint8 or tuple(array.shape) != info["shape"]:
            raise InputError(f"{path}: stored markers have dtype {array.dtype} and shape {array.shape}, "
                             f"expected uint8 of shape {info['shape']}")
        return array, int(rows[0]["version"])

    def marker_history(self, image_id: str) -> list[dict]:
        """Every saved version of an image's markers, oldest first.

        Each item: version, created_at, author, n_marked, class_counts (``{label: pixels}``), file.
        """
        self.image_info(image_id)
        rows = self._query("SELECT * FROM marker_versions WHERE image_id = ? ORDER BY version", (image_id,))
        return [
            {
                "version": int(row["version"]),
                "created_at": row["created_at"],
                "author": row["author"],
                "n_marked": int(row["n_marked"]),
                "class_counts": {int(k): int(v) for k, v in json.loads(row["class_counts"]).items()},
                "file": row["file"],
            }
            for row in rows
        ]

    # ------------------------------------------------------------------------------------------
    # generic arrays
    # ------------------------------------------------------------------------------------------
    def _array_path(self, kind: str, key: str) -> Path:
        return self.root / "arrays" / check_kind(kind) / f"{check_key(key)}.npy"

    def put_array(self, kind: str, key: str, array: np.ndarray) -> Path:
        """Store an array (superpixels, descriptors, predictions, saliency...) atomically, replacing any old one.

        ``kind`` is lower-case letters, digits, ``_`` or ``-``; ``key`` one plain name (often an
        image id): no path separators, no ``..``, no leading ``.`` (else :class:`InputError`).
        """
        path = self._array_path(kind, key)
        with self._files_lock.shared():
            return save_npy(path, np.asarray(array))

    def get_array(self, kind: str, key: str) -> np.ndarray:
        """An array stored by :meth:`put_array`; a missing one raises :class:`InputError`."""
        path = self._array_path(kind, key)
        if not path.is_file():
            raise InputError(f"project {self.root}: no {kind!r} array for key {key!r}")
        return load_npy(path)

    def has_array(self, kind: str, key: str) -> bool:
        """True when :meth:`put_array` stored ``kind``/``key``."""
        return self._array_path(kind, key).is_file()

    def array_keys(self, kind: str) -> list[str]:
        """Sorted keys stored under ``kind``."""
        folder = self.root / "arrays" / check_kind(kind)
        if not folder.is_dir():
            return []
        return sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".npy") and not is_temp_name(p.name))

    def delete_array(self, kind: str, key: str) -> bool:
        """Remove a stored array; returns whether there was one."""
        path = self._array_path(kind, key)
        with self._files_lock.shared():
            try:
                path.unlink()
            except FileNotFoundError:
                return False
        return True

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
