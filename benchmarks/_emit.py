"""The common tail of the benchmark scripts: one JSON line on stdout, and the same line in ``--out``."""

from __future__ import annotations

import json
from pathlib import Path


def emit(result: dict, out: str | None = None) -> None:
    """Print ``result`` as one JSON line; with ``out``, also write it there."""
    line = json.dumps(result)
    print(line)
    if out:
        Path(out).write_text(line + "\n")
