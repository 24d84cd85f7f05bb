"""Predicted quality of a model's segmentations in the web app (no ground truth read).

A quality model (:mod:`hitlseg.quality`, trained with ``hitlseg quality train``) is given to the
server (``hitlseg serve --quality-model FILE``); it scores the prediction of any stored model on
any image, and ranks all of a model's predictions worst first so the person can correct those
first (Galdran et al., MICCAI 2018, the use of a no-reference quality estimate).
"""

from __future__ import annotations

import threading
from pathlib import Path

from hitlseg.errors import InputError
from hitlseg.progress import Progress, report

NO_MODEL = ("no quality model: start the server with --quality-model FILE "
            "(train one with 'hitlseg quality train --dataset DIR --out FILE')")


class QualityService:
    """Scores of the predictions of ``models`` (a :class:`~hitlseg.server.training.ModelService`)."""

    def __init__(self, project, models, path: str | Path | None = None, device=None):
        self.project, self.models = project, models
        self.path = None if path is None else Path(path)
        self.model = None
        self._scores: dict[tuple[int, str], dict] = {}
        self._lock = threading.Lock()
        if self.path is not None:
            self.model = self._load(self.path, device)

    def _load(self, path: Path, device):
        from hitlseg.quality import QualityModel

        if not path.is_file():
            raise InputError(f"--quality-model: {path} is not a file")
        model = QualityModel.load(path, device=device)
        meta = self.project.meta
        project_reading = {"color": meta.get("color", "lab"), "normalize": meta.get("normalize", "percentile")}
        trained = {k: model.preprocessing.get(k) for k in project_reading}
        if trained != project_reading:
            raise InputError(f"--quality-model: {path.name} was trained on images read with {trained}, but this "
                             f"project reads them with {project_reading}")
        return model

    def info(self) -> dict:
        """Whether a quality model is loaded, and what it was trained on."""
        if self.model is None:
            return {"available": False, "reason": NO_MODEL}
        return {"available": True, "file": self.path.name, "n_classes": self.model.n_classes,
                "ndim": self.model.ndim, "channels": self.model.in_channels,
                "trained_on": self.model.info.get("samples")}

    def require(self):
        if self.model is None:
            raise InputError(NO_MODEL)
        return self.model

    def score(self, model_id: int, image_id: str) -> dict:
        """Predicted ``{"dice", "nmi"}`` of model ``model_id``'s segmentation of ``image_id`` (cached)."""
        quality = self.require()
        key = (int(model_id), image_id)
        with self._lock:
            cached = self._scores.get(key)
        if cached is None:
            labels = self.models.labels(model_id, image_id)
            image = self.project.image(image_id)
            if image.ndim - 1 != quality.ndim or image.shape[0] != quality.in_channels:
                raise InputError(f"{image_id}: the quality model takes {quality.ndim}D {quality.in_channels}-channel "
                                 f"images, this image is {image.ndim - 1}D with {image.shape[0]} channels")
            if int(labels.max()) > quality.n_classes:
                raise InputError(f"model {model_id} predicts class {int(labels.max())}, but the quality model "
                                 f"knows classes 0..{quality.n_classes}")
            cached = {k: round(float(v), 4) for k, v in quality.score(image, labels, image_id).items()}
            with self._lock:
                self._scores[key] = cached
        return {"model_id": int(model_id), "image_id": image_id, **cached}

    def ranking(self, model_id: int, progress: Progress = None) -> dict:
        """Every image's predicted quality under model ``model_id``, lowest predicted Dice first."""
        self.require()
        self.models.record(model_id)
        ids = self.project.image_ids()
        rows = []
        for done, image_id in enumerate(ids):
            report(progress, done, len(ids), f"scoring {image_id}")
            rows.append(self.score(model_id, image_id))
        report(progress, len(ids), len(ids), "done")
        rows.sort(key=lambda r: (r["dice"], r["image_id"]))
        mean = round(sum(r["dice"] for r in rows) / len(rows), 4) if rows else None
        return {"model_id": int(model_id), "ranking": rows, "mean_dice": mean}
