"""Versioned markers of the project store: every save is a new version, stale saves are refused."""

from __future__ import annotations

import json
import operator
from pathlib import Path

import numpy as np

from hitlseg.errors import ConflictError, InputError
from hitlseg.project._sql import _now
from hitlseg.project.files import load_npy, safe_name, save_npy


class MarkerStore:
    """Marker versions of a :class:`~hitlseg.project.store.Project` (a mixin: it uses the
    project's ``root``, ``image_info``, ``_query``, ``_transaction``, ``_event`` and ``_files_lock``)."""

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
