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


def _ranged(parse, accept, expected: str, name: str, doc: str):
    """An argparse type: ``parse`` the text, then refuse values ``accept`` rejects ("must be EXPECTED")."""

    def check(text: str):
        value = parse(text)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
        return value

    check.__name__, check.__doc__ = name, doc
    return check


positive_int = _ranged(_integer, lambda v: v >= 1, "a positive integer", "positive_int", "An integer >= 1.")
non_negative_int = _ranged(_integer, lambda v: v >= 0, "an integer >= 0", "non_negative_int", "An integer >= 0.")
seed = _ranged(_integer, lambda v: 0 <= v <= SEED_MAX, f"an integer in 0..{SEED_MAX}", "seed",
               "A random seed: an integer in 0 .. 2**32 - 1 (what numpy and torch accept).")
port = _ranged(_integer, lambda v: 0 <= v <= PORT_MAX, f"in 0..{PORT_MAX}", "port",
               "A TCP port: an integer in 0 .. 65535 (0: any free port).")
positive_float = _ranged(_number, lambda v: v > 0, "a positive number", "positive_float", "A finite number > 0.")
non_negative_float = _ranged(_number, lambda v: v >= 0, "a number >= 0", "non_negative_float", "A finite number >= 0.")
fraction = _ranged(_number, lambda v: 0 < v <= 1, "a number in (0, 1]", "fraction", "A number in (0, 1].")


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


def max_side(text: str) -> int:
    """A working resolution: the longest image side in pixels, an integer >= 16."""
    from hitlseg.io.resample import MIN_SIDE

    value = _integer(text)
    if value < MIN_SIDE:
        raise argparse.ArgumentTypeError(f"must be an integer >= {MIN_SIDE}, got {text!r}")
    return value
