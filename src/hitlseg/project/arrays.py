"""Generic arrays of the project store: one ``.npy`` file per kind and key under ``arrays/``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hitlseg.errors import InputError
from hitlseg.project.files import check_key, check_kind, is_temp_name, load_npy, save_npy


class ArrayStore:
    """Arrays of a :class:`~hitlseg.project.store.Project` (a mixin: it uses the project's ``root``
    and ``_files_lock``)."""

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
