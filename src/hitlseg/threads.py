"""One thread policy for the whole library, applied once when the command line or the server starts.

* intra-op threads (torch, OpenMP, BLAS): ``HITLSEG_THREADS``, else the CPUs this process may run
  on (``os.sched_getaffinity``); the command line's ``hitlseg --threads N`` overrides both;
* OpenMP threads that wait sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``): a spinning
  thread holds its core while another process needs it, and on a shared 2-core machine that made
  a FLIM fit many times slower than the same fit idle (``benchmarks/threads.py`` measures it);
* Dask workers run one thread each (:mod:`hitlseg.parallel`).

Variables a user already set (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OMP_WAIT_POLICY``) are
kept. The environment is set before torch is imported (the command line imports it only where a
command computes); where torch is already loaded, :func:`torch.set_num_threads` is called instead.
"""

from __future__ import annotations

import os
import sys

from hitlseg.errors import InputError

THREADS_ENV = "HITLSEG_THREADS"
_WAIT = "PASSIVE"
_applied: dict | None = None


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _parse(value, name: str) -> int:
    try:
        threads = int(str(value).strip())
    except ValueError:
        raise InputError(f"{name}: must be a positive integer, got {value!r}") from None
    if threads < 1:
        raise InputError(f"{name}: must be a positive integer, got {value!r}")
    return threads


def apply_thread_policy(threads: int | None = None, *, force: bool = False) -> dict:
    """Set the process's thread policy once; returns it (``threads``, ``wait_policy``, ``source``).

    Parameters
    ----------
    threads : int, optional
        Intra-op threads (``hitlseg --threads``); default ``$HITLSEG_THREADS``, else the CPUs
        available to the process. A user's ``OMP_NUM_THREADS`` wins over the default, not over
        an explicit ``threads``.
    force : bool
        Apply again even if a policy was applied already (tests, a server reconfigured).
    """
    global _applied
    if _applied is not None and not force and threads is None:
        return dict(_applied)
    if threads is not None:
        count, source = _parse(threads, "--threads"), "--threads"
    elif os.environ.get(THREADS_ENV, "").strip():
        count, source = _parse(os.environ[THREADS_ENV], THREADS_ENV), THREADS_ENV
    elif os.environ.get("OMP_NUM_THREADS", "").strip().isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        count, source = int(os.environ["OMP_NUM_THREADS"]), "OMP_NUM_THREADS"
    else:
        count, source = available_cpus(), "available CPUs"
    os.environ.setdefault("OMP_WAIT_POLICY", _WAIT)
    if source != "OMP_NUM_THREADS":
        os.environ["OMP_NUM_THREADS"] = str(count)
        os.environ["MKL_NUM_THREADS"] = str(count)
    torch = sys.modules.get("torch")
    if torch is not None:  # loaded already: the environment is read at its start, so tell it
        torch.set_num_threads(count)
    _applied = {"threads": count, "wait_policy": os.environ["OMP_WAIT_POLICY"], "source": source}
    return dict(_applied)


def thread_policy() -> dict | None:
    """The policy :func:`apply_thread_policy` set, or None before it ran."""
    return dict(_applied) if _applied is not None else None
