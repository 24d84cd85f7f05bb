"""A stopping signal for the selection loop (the method's stated open problem).

Per round, the *coverage radius* is the largest distance from any pool image to the selected set
(the k-center objective: every image lies within this distance of a selected one). It cannot grow
when an image is added in a fixed descriptor space; when it stops shrinking, new images add little
that the selected ones do not already cover.

Descriptors change every round (new markers give new filters and more maps), so radii of
different rounds are not in the same units: the raw radius grows with the descriptor length
(on 40 wbc1 demo images with the ``closest`` policy it rises from 47 to 81 over four rounds while
the selected set covers the pool better). The signal therefore uses the *normalised* radius: the
radius divided by the pool's *diameter* (largest distance between two pool images) in the same
round's descriptor space, a number in [0, 1]. This normalisation was chosen because

* it is unit-free: scaling every descriptor, or appending maps that spread the pool like the
  existing ones (so that all distances grow by one factor, as with a longer descriptor), leaves it
  unchanged, so rounds (and pools, and descriptor lengths) are comparable;
* within one round's descriptor space the diameter is fixed, so the normalised radius keeps the
  radius's guarantee: it never grows when an image is added;
* it is bounded: 1 means "no coverage at all" (one selected image at one end of the pool's widest
  pair) and 0 means every image is covered, which gives the threshold a fixed meaning. The radius
  with *zero* selected images, another natural scale, is undefined (infinite) for the k-center
  objective, and the median (or mean) pairwise distance is not an upper bound of the radius, so
  ratios to it have no fixed range (on the demo subset above they start near 3).

Both the radius and the diameter are maxima over the same pairwise distances, so an outlying image
weighs on both alike; the diameter is recorded next to the radius so that a log can be
re-normalised later.

The relative change between rounds is ``(previous - current) / previous`` of the normalised
radius (positive: the radius fell, the selected set covers the pool better). A stop is suggested
when its magnitude stays below ``threshold`` for ``patience`` consecutive rounds, from
``min_rounds`` selected images on: the radius has levelled off. A radius that *grows* by more than
the threshold (the new filters separate images that the selected ones do not cover) is not a
reason to stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.distance import pdist

from hitlseg.errors import InputError
from hitlseg.selection.recommend import distances_to_selected

__all__ = ["StoppingMonitor", "StoppingSignal", "coverage_radius"]


def coverage_radius(descriptors, selected_rows) -> tuple[float, float]:
    """Coverage radius of ``selected_rows`` over all rows, and the pool diameter.

    Returns
    -------
    radius : float
        ``max_i min_{s in selected} ||d_i - d_s||``.
    diameter : float
        ``max_{i, j} ||d_i - d_j||`` (0 for one image).
    """
    d = np.asarray(descriptors, dtype=np.float64)
    radius = float(distances_to_selected(d, selected_rows, "min").max())
    diameter = float(pdist(d).max()) if len(d) > 1 else 0.0
    return radius, diameter


@dataclass
class StoppingSignal:
    """One round's stopping figures.

    Attributes
    ----------
    radius : float
        Coverage radius in this round's descriptor units (not comparable across rounds).
    normalized_radius : float
        ``radius / diameter`` in [0, 1] (0 when all descriptors are equal): the figure to compare
        across rounds.
    relative_change : float or None
        ``(previous - current) / previous`` of the normalised radius (None in the first round):
        positive when the radius fell.
    stop : bool
        Whether stopping is suggested.
    reason : str
        Why (or why not), in words.
    diameter : float or None
        The pool's diameter in this round's descriptor units (the normalising scale).
    """

    radius: float
    normalized_radius: float
    relative_change: float | None
    stop: bool
    reason: str
    diameter: float | None = None

    @property
    def suggestion(self) -> str:
        """``"stop"`` or ``"continue"`` (the reason is in :attr:`reason`)."""
        return "stop" if self.stop else "continue"

    def to_dict(self) -> dict:
        return {"radius": self.radius, "diameter": self.diameter, "normalized_radius": self.normalized_radius,
                "relative_change": self.relative_change, "suggestion": self.suggestion, "stop": self.stop,
                "reason": self.reason}


@dataclass
class StoppingMonitor:
    """Tracks the normalised coverage radius over rounds and suggests when to stop.

    ``history`` holds the normalised radius of every round so far.

    Parameters
    ----------
    threshold : float
        Relative improvement below which a round counts as "no progress".
    patience : int
        Consecutive rounds without progress before a stop is suggested. Two by default: a round
        that takes an image close to the selected ones (policy ``closest``, or every other round
        of ``alternate``) hardly moves the radius by design, and should not end the loop alone.
    min_rounds : int
        Never suggest stopping with fewer selected images.
    """

    threshold: float = 0.05
    patience: int = 2
    min_rounds: int = 3
    history: list[float] = field(default_factory=list)
    _changes: list[float] = field(default_factory=list, repr=False)

    def __post_init__(self):
        if not isinstance(self.threshold, (int, float)) or isinstance(self.threshold, bool) or not 0 <= self.threshold < 1:
            raise InputError(f"stop_threshold: must be a number in [0, 1), got {self.threshold!r}")
        for name in ("patience", "min_rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name}: must be a positive integer, got {value!r}")

    def update(self, descriptors, selected_rows) -> StoppingSignal:
        """Record this round (descriptors of the whole pool, rows selected so far) and decide.

        Only changes measured in rounds with at least ``min_rounds`` selected images count toward
        a stop, so the earliest suggestion comes after ``min_rounds + patience - 1`` images.
        """
        radius, diameter = coverage_radius(descriptors, selected_rows)
        normalized = radius / diameter if diameter > 0 else 0.0
        n_selected = len(selected_rows)
        previous = self.history[-1] if self.history else None
        change = None
        if previous is not None:
            change = (previous - normalized) / previous if previous > 0 else 0.0
            if n_selected >= self.min_rounds:
                self._changes.append(change)
        self.history.append(normalized)
        recent = self._changes[-self.patience :]
        if normalized == 0.0:
            stop, reason = True, "every pool image is covered (radius 0)"
        elif len(recent) < self.patience:
            first = self.min_rounds + self.patience - 1
            stop, reason = False, f"too early: {n_selected} image(s) selected, a stop can be suggested from {first}"
        elif all(abs(c) < self.threshold for c in recent):
            stop, reason = True, f"coverage radius changed by less than {self.threshold:.0%} for {self.patience} round(s)"
        elif abs(recent[-1]) < self.threshold:
            stop, reason = False, (f"coverage radius changed by {abs(recent[-1]):.1%}; a stop needs {self.patience} "
                                   "such round(s) in a row")
        elif recent[-1] < 0:
            stop, reason = False, f"coverage radius grew by {-recent[-1]:.1%}: the new filters reveal uncovered images"
        else:
            stop, reason = False, f"coverage radius still shrinking (by {recent[-1]:.1%})"
        return StoppingSignal(radius, normalized, change, stop, reason, diameter)
