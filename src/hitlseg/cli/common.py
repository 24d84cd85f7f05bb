"""Helpers shared by the CLI commands: progress bars and JSON output."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager

from hitlseg.plain import to_plain


@contextmanager
def progress_bar(description: str, enabled: bool = True):
    """Yield a progress callback ``(done, total, message)`` drawing a tqdm bar on stderr."""
    from tqdm import tqdm

    bar = None

    def callback(done: int, total: int, message: str = "") -> None:
        nonlocal bar
        if not enabled:
            return
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            bar = tqdm(total=total, desc=description, file=sys.stderr, leave=False, dynamic_ncols=True, disable=None)
        bar.n = done
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    try:
        yield callback
    finally:
        if bar is not None:
            bar.close()


def print_json(data) -> None:
    """Print ``data`` as indented JSON (numpy values converted; NaN as null, inf as "inf")."""
    print(json.dumps(to_plain(data, json_floats=True), indent=2))
