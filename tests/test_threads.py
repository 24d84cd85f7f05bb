"""The library-wide thread policy (issue 14.3): applied once at start, overridable, user variables kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from hitlseg import threads
from hitlseg.errors import InputError


@pytest.fixture
def fresh(monkeypatch):
    """No policy applied yet, the thread variables unset; torch's thread count restored afterwards."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", threads.THREADS_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "_applied", None)
    before = torch.get_num_threads()
    yield monkeypatch
    torch.set_num_threads(before)


def test_default_is_the_available_cpus_with_sleeping_waits(fresh):
    policy = threads.apply_thread_policy()
    assert policy == {"threads": threads.available_cpus(), "wait_policy": "PASSIVE", "source": "available CPUs"}
    assert os.environ["OMP_NUM_THREADS"] == str(threads.available_cpus()) and torch.get_num_threads() == policy["threads"]


def test_applied_once_then_overridden_by_an_explicit_count(fresh):
    fresh.setenv(threads.THREADS_ENV, "1")
    assert threads.apply_thread_policy()["source"] == threads.THREADS_ENV and torch.get_num_threads() == 1
    fresh.setenv(threads.THREADS_ENV, "2")
    assert threads.apply_thread_policy()["threads"] == 1  # once: a later call without a count changes nothing
    assert threads.apply_thread_policy(2) == {"threads": 2, "wait_policy": "PASSIVE", "source": "--threads"}
    assert torch.get_num_threads() == 2 and threads.thread_policy()["threads"] == 2


def test_a_users_variables_are_kept(fresh):
    fresh.setenv("OMP_NUM_THREADS", "1")
    fresh.setenv("OMP_WAIT_POLICY", "ACTIVE")
    policy = threads.apply_thread_policy()
    assert policy == {"threads": 1, "wait_policy": "ACTIVE", "source": "OMP_NUM_THREADS"}
    assert "MKL_NUM_THREADS" not in os.environ


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_bad_counts_are_named(fresh, value):
    with pytest.raises(InputError, match="--threads: must be a positive integer"):
        threads.apply_thread_policy(value)
    fresh.setenv(threads.THREADS_ENV, value)
    with pytest.raises(InputError, match=threads.THREADS_ENV):
        threads.apply_thread_policy()


def test_the_command_line_sets_the_policy_before_torch_starts(tmp_path):
    """In a fresh process: ``hitlseg --threads 1`` reaches torch and OpenMP."""
    from hitlseg.datasets import demo

    code = ("import os, sys\nfrom hitlseg.cli import main\n"
            f"status = main(['--threads', '1', 'info', {str(demo().root)!r}])\n"
            "import torch\nprint(status, torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'], file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "0 1 PASSIVE"
    bad = subprocess.run([sys.executable, "-m", "hitlseg", "--threads", "0", "info", "x"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--threads: must be a positive integer" in bad.stderr
