"""Turning numpy values, paths and tuples into plain Python values for JSON and safe ``torch.load``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def to_plain(value, *, json_floats: bool = False):
    """``value`` with numpy scalars/arrays, paths, tuples and sets made plain (dict keys become str).

    With ``json_floats``, NaN becomes None and infinities the strings ``"inf"``/``"-inf"``, which
    strict JSON cannot hold otherwise.
    """
    if isinstance(value, dict):
        return {str(k): to_plain(v, json_floats=json_floats) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_plain(v, json_floats=json_floats) for v in value]
    if isinstance(value, np.ndarray):
        return to_plain(value.tolist(), json_floats=json_floats)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Path):
        return str(value)
    if json_floats and isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value
