"""Progress reporting convention.

Long work accepts ``progress``: a callable ``progress(done, total, message)`` or ``None``.
Algorithms call it; the CLI turns it into a progress bar and the server publishes it.

Work made of stages hands each stage a :func:`nested` callback, which maps the stage's own
``done / total`` into its share of the parent's; work made of many long parts (the experiment
protocols) reports through :class:`PartsProgress`, which adds the part, its stage's message and
an estimate of the time left.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Callable, Optional

from hitlseg.errors import InputError

Progress = Optional[Callable[[int, int, str], None]]

#: Steps of the scale on which :func:`nested` reports a share of the parent's work.
RESOLUTION = 1000


def report(progress: Progress, done: int, total: int, message: str = "") -> None:
    """Call ``progress(done, total, message)`` if a callback was given."""
    if progress is not None:
        progress(done, total, message)


def _join(label: str, message: str) -> str:
    return f"{label}: {message}" if label and message else (label or message)


def nested(progress: Progress, start: float = 0.0, stop: float = 1.0, label: str = "") -> Progress:
    """A callback for a stage that covers the share ``[start, stop]`` of work reporting to ``progress``.

    The stage's ``done / total`` is mapped into that share and reported as ``(k, RESOLUTION)``; its
    message is prefixed with ``label``. Returns None when ``progress`` is None, so that a stage
    can skip building messages nobody reads.

    Examples
    --------
    >>> seen = []
    >>> training = nested(lambda d, t, m: seen.append((d, t, m)), 0.5, 1.0, "sU-Net")
    >>> training(3, 10, "epoch 3/10")
    >>> seen
    [(650, 1000, 'sU-Net: epoch 3/10')]
    """
    if progress is None:
        return None
    if not 0 <= start <= stop <= 1:
        raise InputError(f"nested: the share must satisfy 0 <= start <= stop <= 1, got {start}, {stop}")

    def callback(done: int, total: int, message: str = "") -> None:
        share = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
        progress(int(round((start + (stop - start) * share) * RESOLUTION)), RESOLUTION, _join(label, message))

    return callback


def format_time_left(seconds: float | None) -> str:
    """``"about 40 s left"``, ``"about 12 min left"``, ``"about 2.5 h left"`` (None: not known yet)."""
    if seconds is None or not math.isfinite(seconds):
        return "time left: estimating"
    if seconds < 90:
        return f"about {max(1, round(seconds))} s left"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min left"
    return f"about {seconds / 3600:.1f} h left"


class PartsProgress:
    """Progress of work made of ``total`` long parts, each reporting its stages, with the time left.

    Every report reaches ``progress`` as ``(parts done, total, "NAME: STAGE MESSAGE · part i/N ·
    about T left")``. The time left is the time spent computing parts in this run divided by the
    work computed in this run (finished parts plus the share done of the current one, as its
    stages report it), times the work left. Parts found already finished (a resumed run) count as
    done, but neither as work nor as time. It assumes parts of similar cost; the estimate settles
    once a few parts have finished.

    Parameters
    ----------
    progress : callable, optional
        Receives every report.
    total : int
        Parts of the whole run.
    log : callable, optional
        Receives a line (the same text) at most every ``log_every`` seconds, and the lines given to
        :meth:`log` (such as a finished part's); for output that is not a terminal.
    log_every : float
        Seconds between two stage lines sent to ``log``.
    clock : callable
        Seconds (for tests).
    """

    def __init__(self, progress: Progress, total: int, *, log: Callable[[str], None] | None = None,
                 log_every: float = 60.0, clock: Callable[[], float] = time.perf_counter):
        if not log_every >= 0:
            raise InputError(f"log_every: must be a number of seconds >= 0, got {log_every!r}")
        self.progress, self.total, self._log, self.log_every, self.clock = progress, int(total), log, log_every, clock
        self.done = 0
        self.computed = 0
        self.seconds = 0.0
        self._name: str | None = None
        self._started = 0.0
        self._share = 0.0
        self._logged = clock()

    def seconds_left(self) -> float | None:
        """The estimate of the time left (None until some work was measured)."""
        running = self._name is not None
        share = self._share if running else 0.0
        work = self.computed + share
        spent = self.seconds + (self.clock() - self._started if running else 0.0)
        if work <= 0 or spent <= 0:
            return None
        return spent / work * max(self.total - self.done - share, 0.0)

    def time_left(self) -> str:
        """:meth:`seconds_left` in words (:func:`format_time_left`)."""
        return format_time_left(self.seconds_left())

    def log(self, line: str) -> None:
        """Send ``line`` to ``log`` (if given) and restart the interval between stage lines."""
        if self._log is not None:
            self._log(line)
        self._logged = self.clock()

    def _emit(self, message: str) -> None:
        line = f"{_join(self._name or '', message)} · part {min(self.done + 1, self.total)}/{self.total} · {self.time_left()}"
        report(self.progress, self.done, self.total, line)
        if self._log is not None and self.clock() - self._logged >= self.log_every:
            self.log(line)

    @contextmanager
    def part(self, name: str):
        """Time part ``name``; yields the callback its stages report to (``done / total`` = its share done).

        The part counts as finished only when the block ends without an exception.
        """
        self._name, self._started, self._share = name, self.clock(), 0.0

        def stage(done: int, total: int, message: str = "") -> None:
            share = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
            self._share = max(self._share, share)  # stages may restart their count; the share never falls
            self._emit(message)

        self._emit("")
        try:
            yield stage
        finally:
            finished, self._name = self.clock(), None
        self.seconds += finished - self._started
        self.computed += 1
        self.done += 1

    def skip(self) -> None:
        """A part found already finished."""
        self.done += 1
