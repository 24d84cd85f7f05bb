"""The live-segmentation service of the marker editor: one :class:`hitlseg.refine.LiveGraphCut` per image.

The graph's pairwise weights are computed when an image is first segmented live and kept for the
last :data:`LIVE_CACHE` images; cuts of one image run one at a time (a graph object is not
re-entrant), cuts of different images in parallel.
"""

from __future__ import annotations

import threading

import numpy as np

from hitlseg.server.imaging import LRU

#: Images whose graphs are kept (a 400x400 RGB image's graph takes about 10 MB).
LIVE_CACHE = 4


class LiveService:
    """Live graph cuts of a project's images (:class:`hitlseg.refine.LiveGraphCut`, default settings)."""

    def __init__(self, project, classes: int):
        self.project = project
        self.classes = classes
        self._graphs = LRU(LIVE_CACHE)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, image_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(image_id, threading.Lock())

    def segment(self, image_id: str, markers: np.ndarray) -> np.ndarray:
        """Labels (uint8, 0..classes) of image ``image_id`` for ``markers`` (0 unmarked, c+1 class c)."""
        from hitlseg.refine import LiveGraphCut

        with self._lock(image_id):
            graph = self._graphs.get(image_id)
            if graph is None:
                graph = LiveGraphCut(self.project.image(image_id))
                self._graphs.put(image_id, graph)
            return graph.segment(markers, n_labels=self.classes + 1).astype(np.uint8)
