"""Results of a long run in a chunked zarr store, with a done-mask for resuming.

A store is a zarr group (a folder ``NAME.zarr``) holding, for ``n`` items (pool images or
blocks of one large image), one array per result field and a boolean ``done`` array. A result
is written first and marked done after, so an interrupted run leaves at worst an unmarked row
that the next run computes again, never a half-visible one (zarr's local store writes each chunk
file atomically, by rename). Fields of a fixed row shape (descriptors, scores) are one array
``(n, *row)`` chunked one row per chunk; per-image maps whose shape varies from image to image
are one array per item under ``FIELD/ROW``. The group's attributes record the item ids and the
parameters of the run; opening a store made by a different run raises :class:`InputError` before
anything is written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hitlseg import __version__
from hitlseg.errors import InputError

__all__ = ["FORMAT", "ResultStore", "StoredMapping", "fingerprint"]

FORMAT = "hitlseg-results"
#: Items per chunk of the done mask (one small file per this many items).
DONE_CHUNK = 1024
#: Deferred done marks written together (:meth:`ResultStore.write` with ``defer_done``).
DONE_BATCH = 64


def fingerprint(value) -> str:
    """A short hash of a model, an encoder or plain parameters (what a resumed run must match).

    Objects with ``to_state()`` (SegModel, FLIMEncoder) are hashed through their state; tensors
    and arrays by their bytes, shape and dtype.
    """
    digest = hashlib.sha1()

    def feed(v):
        if hasattr(v, "to_state") and callable(v.to_state):
            feed(v.to_state())
        elif isinstance(v, Mapping):
            for k in sorted(v, key=str):
                digest.update(str(k).encode())
                feed(v[k])
        elif isinstance(v, (list, tuple)):
            digest.update(b"[")
            for item in v:
                feed(item)
            digest.update(b"]")
        elif hasattr(v, "detach") and hasattr(v, "cpu"):
            feed(v.detach().cpu().numpy())
        elif isinstance(v, np.ndarray):
            digest.update(str((v.shape, v.dtype.str)).encode())
            digest.update(np.ascontiguousarray(v).tobytes())
        else:
            digest.update(repr(v).encode())

    feed(value)
    return digest.hexdigest()[:16]


def _plain(params: Mapping) -> dict:
    try:
        return json.loads(json.dumps(dict(params), sort_keys=True, default=str))
    except (TypeError, ValueError) as exc:
        raise InputError(f"store parameters: not plain values ({exc})") from None


class ResultStore:
    """A zarr group of per-item results and their done-mask (see the module docstring).

    Use :meth:`open`. ``ids[row]`` is the item of row ``row``.
    """

    def __init__(self, path: Path, group, ids: list[str]):
        self.path, self.group, self.ids = path, group, ids
        self._rows = {item: row for row, item in enumerate(ids)}
        # opened arrays and the done-mask kept here: each zarr open reads metadata from disk, and
        # per-item reads and writes were ~6 ms of it each (300-image pool: 6.0 of 8.4 s)
        self._nodes: dict = {}
        self._done_mask: np.ndarray | None = None
        self._unflushed: list[int] = []

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, path, ids: Sequence[str], kind: str, params: Mapping, *, resume: bool = True) -> "ResultStore":
        """Open the store at ``path`` for a run of ``kind`` over ``ids`` with ``params``, creating it if absent.

        An existing store is resumed when it was made by the same kind of run over the same ids
        with the same parameters (``resume=True``), otherwise :class:`InputError` names what
        differs, and nothing is written; ``resume=False`` starts it again (its old contents are
        removed).
        """
        import zarr

        path = Path(path)
        ids = [str(i) for i in ids]
        if len(set(ids)) != len(ids):
            raise InputError(f"{path}: item ids must be unique")
        params = _plain(params)
        if path.exists() and not resume:
            cls._check_is_store(path)
            shutil.rmtree(path)
        if path.exists():
            group = cls._check_is_store(path)
            attrs = dict(group.attrs)
            if attrs.get("kind") != kind:
                raise InputError(f"{path}: holds results of a {attrs.get('kind')!r} run, not {kind!r}; "
                                 f"choose another output folder")
            if attrs.get("ids") != ids:
                raise InputError(f"{path}: holds results for {len(attrs.get('ids') or [])} other items "
                                 f"(this run has {len(ids)}); choose another output folder or start again")
            stored = attrs.get("params") or {}
            changed = sorted(k for k in set(stored) | set(params) if stored.get(k) != params.get(k))
            if changed:
                raise InputError(f"{path}: was made with other parameters ({', '.join(changed)}); "
                                 f"choose another output folder or start again")
            done = group["done"]
            if done.shape != (len(ids),) or done.dtype != bool:
                raise InputError(f"{path}: its done-mask has shape {done.shape}, expected ({len(ids)},)")
            return cls(path, group, ids)
        path.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(str(path), mode="w-")
        group.create_array("done", shape=(len(ids),), chunks=(min(DONE_CHUNK, max(1, len(ids))),), dtype=bool,
                           fill_value=False)
        group.attrs.update({"format": FORMAT, "hitlseg_version": __version__, "kind": kind, "ids": ids,
                            "params": params})
        return cls(path, group, ids)

    @staticmethod
    def _check_is_store(path: Path):
        import zarr

        try:
            group = zarr.open_group(str(path), mode="r+")
        except Exception as exc:  # noqa: BLE001 - any reason it is no zarr group
            raise InputError(f"{path}: exists and is not a hitlseg result store ({type(exc).__name__}); "
                             f"choose another output folder") from None
        if group.attrs.get("format") != FORMAT or "done" not in group:
            raise InputError(f"{path}: exists and is not a hitlseg result store; choose another output folder")
        return group

    # -- state -----------------------------------------------------------------------------------
    def _node(self, name: str):
        """The group's array or subgroup ``name``, opened once."""
        if name not in self._nodes:
            self._nodes[name] = self.group[name]
        return self._nodes[name]

    @property
    def _done(self) -> np.ndarray:
        if self._done_mask is None:
            self._done_mask = np.asarray(self._node("done")[:], dtype=bool)
        return self._done_mask

    def _set_done(self, row: int, defer: bool = False) -> None:
        self._done[row] = True
        self._unflushed.append(row)
        if not defer or len(self._unflushed) >= DONE_BATCH:
            self.flush()

    def flush(self) -> None:
        """Write the done marks that :meth:`write` deferred (``defer_done=True``)."""
        if self._unflushed:
            rows = sorted(set(self._unflushed))
            self._unflushed = []
            done = self._node("done")
            for start in range(0, len(self.ids), DONE_CHUNK):  # one write per chunk of the mask touched
                if rows and rows[0] < start + DONE_CHUNK and rows[-1] >= start:
                    stop = min(start + DONE_CHUNK, len(self.ids))
                    done[start:stop] = self._done[start:stop]

    @property
    def done(self) -> np.ndarray:
        """Boolean mask of the finished rows (this object is the store's only writer)."""
        return self._done.copy()

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    def row(self, item: str) -> int:
        if item not in self._rows:
            raise InputError(f"{self.path}: no item {item!r}")
        return self._rows[item]

    def pending(self) -> list[str]:
        """Items not finished yet, in order."""
        done = self.done
        return [item for item, finished in zip(self.ids, done) if not finished]

    # -- writing ---------------------------------------------------------------------------------
    def write(self, item: str, values: Mapping[str, np.ndarray], *, ragged: Sequence[str] = (),
              defer_done: bool = False) -> None:
        """Store ``values`` (field -> array) of ``item``, then mark it done.

        Fields named in ``ragged`` get an array per item (``FIELD/ROW``); the others share one
        array ``(n, *row)`` created at the first write (a later row of another shape is refused).
        ``defer_done``: the done mark reaches the disk with the next :data:`DONE_BATCH` ones or at
        :meth:`flush` (an interruption before then only makes a rerun compute those items again).
        """
        row = self.row(item)
        for name, value in values.items():
            value = np.asarray(value)
            if name in ragged:
                if name not in self._nodes:
                    self._nodes[name] = self.group.require_group(name)
                self._nodes[name].create_array(str(row), data=value, chunks=value.shape or (1,), overwrite=True)
            else:
                self._stacked(name, value)[row] = value
        self._set_done(row, defer_done)

    def mark_done(self, item: str) -> None:
        """Mark ``item`` finished (after its results were written elsewhere in :attr:`group`)."""
        self._set_done(self.row(item))

    def _stacked(self, name: str, value: np.ndarray):
        if name in self._nodes or name in self.group:
            array = self._node(name)
            if tuple(array.shape[1:]) != value.shape or array.dtype != value.dtype:
                raise InputError(f"{self.path}: field {name!r} holds rows of shape {tuple(array.shape[1:])} "
                                 f"{array.dtype}, got {value.shape} {value.dtype}")
            return array
        self._nodes[name] = self.group.create_array(name, shape=(len(self.ids),) + value.shape,
                                                    chunks=(1,) + value.shape, dtype=value.dtype, fill_value=0)
        return self._nodes[name]

    # -- reading ---------------------------------------------------------------------------------
    def get(self, name: str, item: str) -> np.ndarray:
        """The stored ``name`` of ``item`` (which must be done)."""
        row = self.row(item)
        if not self._done[row]:
            raise InputError(f"{self.path}: item {item!r} is not finished")
        if name not in self._nodes and name not in self.group:
            raise InputError(f"{self.path}: no field {name!r}")
        node = self._node(name)
        return np.asarray(node[str(row)][...] if hasattr(node, "group_keys") else node[row])

    def stacked(self, name: str) -> np.ndarray:
        """A fixed-shape field of every item as one array ``(n, *row)`` (all items must be done)."""
        if not self.complete:
            raise InputError(f"{self.path}: {int((~self.done).sum())} item(s) not finished")
        return np.asarray(self._node(name)[:])

    def mapping(self, name: str) -> "StoredMapping":
        """A read-only mapping item -> array of field ``name``, read from disk on access."""
        return StoredMapping(self, name)


class StoredMapping(Mapping):
    """Items of a :class:`ResultStore` field as a lazy mapping (e.g. probabilities for active learning)."""

    def __init__(self, store: ResultStore, name: str):
        self.store, self.name = store, name
        done = store.done
        self._items = [item for item, finished in zip(store.ids, done) if finished]

    def __getitem__(self, item):
        if item not in self.store._rows:
            raise KeyError(item)
        return self.store.get(self.name, item)

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
