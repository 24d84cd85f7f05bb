"""Progress reporting convention.

Long work accepts ``progress``: a callable ``progress(done, total, message)`` or ``None``.
Algorithms call it; the CLI turns it into a progress bar and the server publishes it.
"""

from __future__ import annotations

from typing import Callable, Optional

Progress = Optional[Callable[[int, int, str], None]]


def report(progress: Progress, done: int, total: int, message: str = "") -> None:
    """Call ``progress(done, total, message)`` if a callback was given."""
    if progress is not None:
        progress(done, total, message)

