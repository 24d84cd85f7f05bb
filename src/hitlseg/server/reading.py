"""Reading project images for the server's jobs: one unreadable image is skipped, not fatal.

A corrupt, truncated or deleted image file makes the readers raise
:class:`~hitlseg.errors.InputError`. The jobs that read many images (preparing the selection
loop, learning filters, training, evaluating, proposing, retraining) skip such an image: a
warning goes to the ``hitlseg.server`` logger and into the job's result (``warnings``, also shown
by ``GET /api/jobs/{id}``), and the job carries on with the other images. When nothing usable is
left the job fails with a message naming the skipped images.
"""

from __future__ import annotations

import logging

import numpy as np

from hitlseg.errors import InputError
from hitlseg.progress import report

log = logging.getLogger("hitlseg.server")


class Skipped:
    """The images one job skipped, with the reason (the first one per image)."""

    def __init__(self):
        self.reasons: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.reasons)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.reasons

    def add(self, image_id: str, error: Exception | str, while_: str) -> None:
        """Record (and log) that ``image_id`` was skipped ``while_`` doing something, because of ``error``."""
        if image_id in self.reasons:
            return
        self.reasons[image_id] = f"{while_}: {error}"
        log.warning("image %r skipped while %s: %s", image_id, while_, error)

    def image(self, project, image_id: str, while_: str) -> np.ndarray | None:
        """``project.image(image_id)``, or None (recorded) when the file cannot be read."""
        if image_id in self.reasons:
            return None
        try:
            return project.image(image_id)
        except InputError as exc:
            self.add(image_id, exc, while_)
            return None

    def images(self, project, ids, while_: str, progress=None) -> dict[str, np.ndarray]:
        """``{image_id: image}`` of the readable images among ``ids``, in order; the others are recorded.

        Parameters
        ----------
        project : Project
        ids : iterable of str
        while_ : str
            What the images are read for (named in the warnings), e.g. ``"training"``.
        progress : callable, optional
            ``progress(done, total, message)`` after each image.
        """
        ids = list(ids)
        images = {}
        for done, image_id in enumerate(ids):
            report(progress, done, len(ids), "loading images")
            image = self.image(project, image_id, while_)
            if image is not None:
                images[image_id] = image
        report(progress, len(ids), len(ids), "loading images")
        return images

    def messages(self) -> list[str]:
        """One warning per skipped image, for a job's result."""
        return [f"image {image_id!r} skipped ({reason})" for image_id, reason in self.reasons.items()]

    def summary(self, limit: int = 5) -> str:
        """The skipped images and reasons in one line (the first ``limit``)."""
        shown = "; ".join(f"{image_id!r}: {reason}" for image_id, reason in list(self.reasons.items())[:limit])
        more = f" and {len(self) - limit} more" if len(self) > limit else ""
        return shown + more


def with_warnings(result: dict, *skipped: Skipped) -> dict:
    """``result`` with the ``warnings`` of the skipped images added (when there are any)."""
    messages = []
    for group in skipped:
        messages += [m for m in group.messages() if m not in messages]
    if messages:
        result = {**result, "warnings": list(result.get("warnings", [])) + messages}
    return result
