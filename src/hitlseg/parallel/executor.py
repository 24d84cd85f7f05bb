"""Run a pure function over many items, in this process or as Dask tasks.

:class:`Executor` is the one execution layer: ``Executor()`` runs in-process; ``workers=N``
starts a :class:`distributed.LocalCluster` (lazily, on the first map over a pool large enough to
be worth it); ``scheduler=ADDRESS`` (or the environment variable ``HITLSEG_SCHEDULER``) joins an
existing cluster. Scheduling, retries after a lost worker and data movement are Dask's; this
module only bounds the tasks in flight (so the client's memory stays flat however long the pool
is), ships large shared objects (models, FLIM encoders) to every worker once per map with
``client.scatter(broadcast=True)``, and counts finished tasks for ``progress``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from hitlseg import __version__
from hitlseg.errors import InputError
from hitlseg.progress import Progress, report

__all__ = ["ENV_SCHEDULER", "Executor", "add_execution_arguments", "executor_from_args"]

#: Environment variable naming a scheduler address to join when none is given.
ENV_SCHEDULER = "HITLSEG_SCHEDULER"
#: Seconds to wait for a scheduler (``timeout`` of :class:`Executor`).
DEFAULT_TIMEOUT = 5.0
#: Pools with fewer items than this run in-process even when a local cluster was asked for.
SMALL_POOL = 16


def _worker_version() -> str:
    import hitlseg

    return hitlseg.__version__


def _call(function: Callable, args: tuple, shared: Mapping[str, Any], threads: int | None):
    """Run one task with ``threads`` torch threads (the same setting in-process and on workers, so
    the numbers are the same)."""
    from hitlseg.selection.session import torch_threads

    with torch_threads(threads):
        return function(*args, **shared)


def _positive(value, name: str, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name}: must be a positive integer, got {value!r}")
    return value


class Executor:
    """Maps a pure function over items, in-process or through a Dask client.

    Parameters
    ----------
    workers : int, optional
        Start a local cluster of this many worker processes (one thread each).
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``) to join; default
        ``$HITLSEG_SCHEDULER`` when ``workers`` is not given either.
    client : distributed.Client, optional
        An existing client (tests, notebooks); not closed by :meth:`close`.
    window : int, optional
        Tasks in flight at most (default: 4 per worker thread, 8 at least).
    threads : int or None
        Torch threads of every task (default 1; None leaves torch's setting alone).
    timeout : float, optional
        Seconds to wait for a scheduler before giving up with :class:`InputError` (default
        :data:`DEFAULT_TIMEOUT`).
    small_pool : int
        Maps over fewer items than this run in-process (a local cluster is not started for them).
    check_versions : bool
        Refuse workers running another hitlseg version than this process.
    """

    def __init__(self, workers: int | None = None, scheduler: str | None = None, *, client=None,
                 window: int | None = None, threads: int | None = 1, timeout: float | None = None,
                 small_pool: int = SMALL_POOL, check_versions: bool = True):
        self.workers = _positive(workers, "workers")
        if scheduler is None and workers is None and client is None:
            scheduler = os.environ.get(ENV_SCHEDULER) or None
        if scheduler is not None and not isinstance(scheduler, str):
            raise InputError(f"scheduler: expected an address such as tcp://host:8786, got {scheduler!r}")
        if scheduler is not None and workers is not None:
            raise InputError("workers and scheduler: give one (start a local cluster, or join an existing one)")
        self.scheduler = scheduler
        self.window = _positive(window, "window")
        self.threads = _positive(threads, "threads")
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        if not timeout > 0:
            raise InputError(f"timeout: must be a positive number of seconds, got {timeout!r}")
        self.timeout = float(timeout)
        self.small_pool = int(small_pool)
        self.check_versions = bool(check_versions)
        self._client = client
        self._own_client = False
        self._cluster = None
        if client is not None:
            self._check_workers(client)
        elif scheduler is not None:  # join now, so that a wrong address fails before any work
            self._connect()

    # -- cluster ---------------------------------------------------------------------------------
    @property
    def distributed(self) -> bool:
        """Whether maps (over pools of at least ``small_pool`` items) go to Dask."""
        return self._client is not None or self.workers is not None or self.scheduler is not None

    @property
    def description(self) -> str:
        if self._client is not None and not self._own_client:
            return "dask client"
        if self.scheduler is not None:
            return f"dask scheduler {self.scheduler}"
        if self.workers is not None:
            return f"local dask cluster of {self.workers} workers"
        return "in-process"

    def _connect(self):
        from distributed import Client

        if self.scheduler is not None:
            try:
                client = Client(self.scheduler, timeout=self.timeout, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                raise InputError(f"scheduler: cannot reach a Dask scheduler at {self.scheduler!r} within "
                                 f"{self.timeout:g} s ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        else:
            from distributed import LocalCluster

            env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one core per worker process
            self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                         dashboard_address=None, env=env)
            client = Client(self._cluster, set_as_default=False)
        self._client, self._own_client = client, True
        try:
            self._check_workers(client)
        except InputError:
            self.close()
            raise
        return client

    def _check_workers(self, client) -> None:
        if not self.check_versions:
            return
        found = client.run(_worker_version)
        other = {address: v for address, v in found.items() if v != __version__}
        if other:
            address, version = next(iter(other.items()))
            raise InputError(f"scheduler: {len(other)} worker(s) run hitlseg {version} (e.g. {address}), this "
                             f"process runs {__version__}; install the same version on every worker")

    @property
    def client(self):
        """The Dask client (connecting or starting the local cluster on first use); None in-process."""
        if not self.distributed:
            return None
        return self._client if self._client is not None else self._connect()

    def close(self) -> None:
        """Close the client and the local cluster this executor started."""
        if self._own_client and self._client is not None:
            self._client.close()
            self._client, self._own_client = None, False
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):
        raise TypeError("an Executor stays on the client; pass the work it maps, not the executor")

    # -- mapping ---------------------------------------------------------------------------------
    def map(self, function: Callable, items: Iterable[tuple[Any, tuple]], *, shared: Mapping[str, Any] | None = None,
            total: int | None = None, progress: Progress = None, message: str = "tasks",
            window: int | None = None, small_pool: int | None = None) -> Iterator[tuple[Any, Any]]:
        """Run ``function(*args, **shared)`` for every ``(key, args)`` of ``items``; yield ``(key, result)``.

        Results come as tasks finish (in ``items`` order in-process, in any order on Dask).
        ``items`` is consumed lazily: at most :attr:`window` tasks are in flight, so a pool is
        never held whole. ``shared`` values (models, encoders, a dataset) reach every worker once
        for the whole map. ``progress(done, total, message)`` counts finished tasks.

        A task that raises stops the map with its exception; a task whose worker died is
        retried elsewhere by Dask (``distributed.scheduler.allowed-failures`` times).
        ``small_pool`` overrides the executor's for this map (1: heavy tasks such as large blocks
        go to the cluster however few they are).
        """
        shared = dict(shared or {})
        items = iter(items)
        client = None
        if self.distributed:
            threshold = self.small_pool if small_pool is None else int(small_pool)
            first = []
            for item in items:  # a short pool runs in-process, without starting a cluster
                first.append(item)
                if len(first) >= threshold:
                    break
            small = len(first) < threshold and self._client is None
            items = _chain(first, items)
            if not small:
                client = self.client
        if client is None:
            yield from self._map_here(function, items, shared, total, progress, message)
        else:
            yield from self._map_dask(client, function, items, shared, total, progress, message, window)

    def _map_here(self, function, items, shared, total, progress, message):
        done = 0
        report(progress, 0, total or 0, message)
        for key, args in items:
            result = _call(function, tuple(args), shared, self.threads)
            done += 1
            report(progress, done, max(total or 0, done), message)
            yield key, result

    def _map_dask(self, client, function, items, shared, total, progress, message, window=None):
        from distributed import as_completed

        window = window or self.window or max(8, 4 * _threads_of(client))
        scattered = {name: client.scatter(value, broadcast=True, hash=False) if not _small(value) else value
                     for name, value in shared.items()}
        keys: dict = {}
        pending = as_completed(loop=client.loop)
        done = 0
        report(progress, 0, total or 0, message)

        def submit_next() -> bool:
            for key, args in items:
                future = client.submit(_call, function, tuple(args), scattered, self.threads, pure=False)
                keys[future.key] = key
                pending.add(future)
                return True
            return False

        try:
            for _ in range(window):
                if not submit_next():
                    break
            for future in pending:
                key = keys.pop(future.key)
                result = future.result()  # re-raises the task's exception
                future.release()
                done += 1
                report(progress, done, max(total or 0, done), message)
                submit_next()
                yield key, result
        finally:
            for future in list(pending.futures):
                future.cancel()
            for value in scattered.values():
                if hasattr(value, "release"):
                    value.release()


def _small(value) -> bool:
    """Plain options travel inline with each task; everything else is scattered once."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, dict):  # options; an empty one cannot be scattered at all
        return len(value) <= 8 and all(isinstance(k, str) and _small(v) for k, v in value.items())
    return isinstance(value, tuple) and len(value) <= 8 and all(_small(v) for v in value)


def _chain(first, rest):
    yield from first
    yield from rest


def _threads_of(client) -> int:
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:  # noqa: BLE001 - a scheduler that cannot answer now: a small window
        return 1


# -- command line ---------------------------------------------------------------------------------

def add_execution_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--workers N`` and ``--scheduler ADDRESS`` (where the per-image work runs)."""
    group = parser.add_argument_group("execution")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_workers_arg, default=None, metavar="N",
                       help="run per-image work on a local Dask cluster of N worker processes "
                            "(default: in this process)")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help=f"join a running Dask scheduler, e.g. tcp://host:8786 (default: ${ENV_SCHEDULER} if set)")


def _workers_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def executor_from_args(args: argparse.Namespace) -> Executor:
    """The :class:`Executor` asked for by :func:`add_execution_arguments`' options (use it in a ``with``)."""
    return Executor(workers=getattr(args, "workers", None), scheduler=getattr(args, "scheduler", None))
