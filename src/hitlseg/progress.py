"""Progress reporting convention.

Long work accepts ``progress``: a callable ``progress(done, total, message)`` or ``None``.
Algorithms call it; the CLI turns it into a progress bar and the server publishes it.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional, TypeVar

Progress = Optional[Callable[[int, int, str], None]]
T = TypeVar("T")


def report(progress: Progress, done: int, total: int, message: str = "") -> None:
    """Call ``progress(done, total, message)`` if a callback was given."""
    if progress is not None:
        progress(done, total, message)


def track(items: Iterable[T], total: int, progress: Progress, message: str = "") -> Iterator[T]:
    """Yield ``items`` while reporting ``done/total`` after each one."""
    report(progress, 0, total, message)
    for i, item in enumerate(items, 1):
        yield item
        report(progress, i, total, message)
