"""File plumbing of the project store: atomic writes, safe names, and the write/GC lock.

Every file the store writes goes to a hidden temporary file in the target's folder
(``.NAME.RANDOM.tmp``), is flushed and fsynced, then renamed over the target with
:func:`os.replace`; the folder is fsynced so the rename itself survives a power cut. A reader
therefore sees the old file or the new one, never a partial one; a crash leaves at most a hidden
``*.tmp`` file, which :meth:`hitlseg.project.Project.collect_garbage` removes.

The lock file ``DIR/.lock`` separates writers from the garbage collector across threads and
processes: every write holds a *shared* ``flock`` while its file exists but is not yet
committed, the collector takes it *exclusively*, so it never deletes a file that a live writer
is about to commit. The operating system drops the lock of a killed process.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import secrets
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from hitlseg.errors import InputError

try:  # POSIX; elsewhere the lock is a no-op and garbage collection assumes a single process
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

TMP_SUFFIX = ".tmp"
KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_KEY_LENGTH = 200


def is_temp_name(name: str) -> bool:
    """True for the hidden temporary files written by :func:`atomic_write`."""
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def temp_path(target: Path) -> Path:
    """A fresh hidden temporary path next to ``target``."""
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}{TMP_SUFFIX}")


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(target: Path, write) -> Path:
    """Call ``write(handle)`` on a temporary file, fsync it, then rename it over ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    try:
        with open(tmp, "xb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(target.parent)
    return target


def write_text(target: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically; a failure leaves neither half a file nor a temporary."""
    return atomic_write(Path(target), lambda handle: handle.write(text.encode("utf-8")))


def write_json(target: str | Path, data, indent: int | None = 1) -> Path:
    """Write ``data`` as JSON to ``target`` atomically."""
    import json

    return write_text(target, json.dumps(data, indent=indent))


def save_figure(figure, target: str | Path, **options) -> Path:
    """``figure.savefig`` to ``target`` atomically (the format from the suffix)."""
    target = Path(target)
    return atomic_write(target, lambda handle: figure.savefig(handle, format=target.suffix.lstrip(".") or "png",
                                                               **options))


def save_npy(target: Path, array: np.ndarray) -> Path:
    """Write ``array`` as ``.npy`` atomically (no pickled objects)."""
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise InputError(f"{target.name}: cannot store an array of Python objects (dtype {array.dtype})")
    return atomic_write(target, lambda handle: _write_npy(handle, array))


def _write_npy(handle, array: np.ndarray) -> None:
    """The ``.npy`` format through the Python file object.

    ``np.save`` hands a real file to ``ndarray.tofile``, whose short write on a full disk raises
    an OSError without ``errno`` ("N requested and M written"); written here, a full disk raises
    ``ENOSPC``, which the CLI and the server report as such (HTTP 507).
    """
    from numpy.lib import format as npy

    array = np.require(array, requirements="C")  # keeps 0-d arrays 0-d
    npy.write_array_header_1_0(handle, npy.header_data_from_array_1_0(array))
    if array.size:
        handle.write(memoryview(array.reshape(-1)).cast("B"))


def load_npy(path: Path) -> np.ndarray:
    """Read an ``.npy`` file written by :func:`save_npy`; damage raises :class:`InputError`."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: array file not found") from None
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: cannot read array file ({type(exc).__name__}: {exc})") from exc


def copy_atomic(source: Path, target: Path) -> Path:
    """Copy a file atomically (temporary copy, fsync, rename)."""

    def write(handle):
        with open(source, "rb") as src:
            shutil.copyfileobj(src, handle, 1 << 20)

    if not Path(source).is_file():
        raise InputError(f"{source}: file not found")
    return atomic_write(target, write)


def safe_name(text: str) -> str:
    """A file-system-safe folder name for an arbitrary id (the id itself when already safe)."""
    if SAFE_NAME.match(text):
        return text
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:60] or "id"
    return f"{cleaned}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def check_kind(kind: str) -> str:
    """Validate an array kind (``superpixels``, ``descriptors``...): lower-case letters, digits, ``_-``."""
    if not isinstance(kind, str) or not KIND_PATTERN.match(kind):
        raise InputError(f"kind: {kind!r} is not a valid array kind (lower-case letters, digits, '_' or '-', "
                         "starting with a letter)")
    if kind == "markers":
        raise InputError("kind: 'markers' is reserved for versioned markers (use save_markers)")
    return kind


def check_key(key: str) -> str:
    """Validate an array key: one plain file-name component, so no path can escape its folder.

    Refused: empty keys, keys longer than 200 characters, a leading ``.``, ``..`` anywhere,
    path separators (``/``, ``\\``), ``:``, and control characters.
    """
    if not isinstance(key, str) or not key:
        raise InputError(f"key: {key!r} must be a non-empty string")
    problems = []
    if len(key) > MAX_KEY_LENGTH:
        problems.append(f"longer than {MAX_KEY_LENGTH} characters")
    if key.startswith("."):
        problems.append("starts with '.'")
    if ".." in key:
        problems.append("contains '..'")
    if any(c in key for c in "/\\:"):
        problems.append("contains a path separator or ':'")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        problems.append("contains control characters")
    if key != key.strip():
        problems.append("starts or ends with white space")
    if problems:
        raise InputError(f"key: {key[:80]!r} is not a valid array key ({'; '.join(problems)})")
    return key


class FileLock:
    """``flock`` on ``DIR/.lock``: shared for writers, exclusive for the garbage collector."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @contextmanager
    def shared(self):
        """Hold a shared lock (blocks while a collector holds it exclusively)."""
        if fcntl is None:  # pragma: no cover
            yield
            return
        with open(self.path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    @contextmanager
    def exclusive(self, timeout: float):
        """Yield True holding an exclusive lock, or False when writers kept it for ``timeout`` s."""
        if fcntl is None:  # pragma: no cover
            yield True
            return
        with open(self.path, "a+b") as handle:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.01)
            try:
                yield True
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
