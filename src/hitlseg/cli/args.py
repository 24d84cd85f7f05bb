"""Argument types of the command line: range-checked numbers, seeds, ports and torch devices.

Each function is an argparse ``type=``: it returns the converted value or raises
:class:`argparse.ArgumentTypeError`, which the parser reports as
``hitlseg COMMAND: error: argument --NAME: MESSAGE`` (exit status 2, no traceback).
"""

from __future__ import annotations

import argparse
import math

SEED_MAX = 2**32 - 1
PORT_MAX = 65535


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def seed(text: str) -> int:
    """A random seed: an integer in 0 .. 2**32 - 1 (what numpy and torch accept)."""
    value = _integer(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..{SEED_MAX}, got {text!r}")
    return value


def port(text: str) -> int:
    """A TCP port: an integer in 0 .. 65535 (0: any free port)."""
    value = _integer(text)
    if not 0 <= value <= PORT_MAX:
        raise argparse.ArgumentTypeError(f"must be in 0..{PORT_MAX}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number in (0, 1]."""
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}")
    return value


def device(text: str) -> str:
    """A torch device this machine has: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Checked by :func:`hitlseg.flim.fit.device_problem`, the check the library's
    :func:`~hitlseg.flim.fit.resolve_device` applies too.
    """
    if text == "auto":
        return text
    from hitlseg.flim.fit import device_problem

    problem = device_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{text}: {problem}")
    return text


MIN_CROP = 8  # the smallest training crop hitlseg.nets.TrainConfig accepts


def crop_size(text: str) -> int:
    """A training crop size per axis: an integer >= 8."""
    value = _integer(text)
    if value < MIN_CROP:
        raise argparse.ArgumentTypeError(f"must be an integer >= {MIN_CROP}, got {text!r}")
    return value
