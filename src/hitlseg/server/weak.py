"""The web app's image-level labels and class activation maps (:mod:`hitlseg.weak.project`).

A person gives an image its class in the marker editor (an event per change, never overwritten);
"Train classifier" trains a CAM classifier on the labelled images (a job; no mask or marker is
read), stored as a project model of kind ``cam`` (not a segmentation model: the Model view does
not list it); the editor then overlays the classifier's CAM of the predicted class, or of a
chosen one, and shows the class probabilities.
"""

from __future__ import annotations

import threading

import numpy as np

from hitlseg.errors import InputError
from hitlseg.progress import Progress, report
from hitlseg.server.reading import Skipped, with_warnings
from hitlseg.server.security import NotFoundError

KIND = "cam"
DEFAULT_EPOCHS = 20
MAX_EPOCHS = 500


class WeakService:
    """Labels, the latest CAM classifier (cached) and its maps."""

    def __init__(self, project, *, seed: int = 0, device=None):
        self.project, self.seed, self.device = project, int(seed), device
        self._lock = threading.Lock()
        self._cached: tuple[int, object, tuple[str, ...]] | None = None

    # -- labels ----------------------------------------------------------------------------------
    def summary(self) -> dict:
        """Classes with counts, every image's label, and the latest classifier's record."""
        from hitlseg.weak.project import image_labels

        labels = image_labels(self.project)
        counts: dict[str, int] = {}
        for name in labels.values():
            counts[name] = counts.get(name, 0) + 1
        record = self.latest()
        return {"classes": sorted(counts), "counts": dict(sorted(counts.items())), "labels": labels,
                "unlabelled": len(self.project) - len(labels),
                "model": None if record is None else {k: record[k] for k in ("id", "created_at", "params", "metrics")}}

    def set_label(self, image_id: str, label: str | None, author: str | None = None) -> dict:
        from hitlseg.weak.project import set_image_label

        return set_image_label(self.project, image_id, label, author)

    def check_train(self) -> None:
        """400 before any job when the labelled images do not make two classes."""
        from hitlseg.weak.project import image_labels, project_image_labels

        project_image_labels(image_labels(self.project))

    # -- the classifier --------------------------------------------------------------------------
    def latest(self) -> dict | None:
        models = self.project.list_models(kind=KIND)
        return models[-1] if models else None

    def train(self, epochs: int = DEFAULT_EPOCHS, progress: Progress = None) -> dict:
        """Train on every readable labelled image, store the model, return its record (the ``train-cam`` job)."""
        import tempfile
        from pathlib import Path

        from hitlseg.weak.cam import predict_labels
        from hitlseg.weak.project import image_labels, project_image_labels, save_classifier, train_project_classifier

        if not 1 <= int(epochs) <= MAX_EPOCHS:
            raise InputError(f"epochs: must be in 1..{MAX_EPOCHS}, got {epochs}")
        named = image_labels(self.project)
        skipped = Skipped()
        images = skipped.images(self.project, list(named), "training the classifier",
                                lambda d, t, m: report(progress, 0.2 * d / max(t, 1), 1, m))
        shapes = {image.ndim for image in images.values()}
        if len(shapes) > 1:
            raise InputError("train classifier: the labelled images mix 2D images and volumes")
        labels = project_image_labels({i: named[i] for i in images})

        def training(done, total, message):
            report(progress, 0.2 + 0.75 * done / max(total, 1), 1, message)

        model = train_project_classifier(images, labels, epochs=int(epochs), seed=self.seed, device=self.device,
                                         progress=training)
        predicted = predict_labels(model, list(images.values()))
        accuracy = float(np.mean(predicted == labels.of(list(images))))
        params = {"epochs": int(epochs), "seed": self.seed, "classes": list(labels.classes),
                  "images": len(images), "counts": labels.counts()}
        metrics = {"training_accuracy": accuracy}
        with tempfile.TemporaryDirectory() as folder:
            path = save_classifier(model, Path(folder) / "cam.pt", labels.classes, params)
            model_id = self.project.add_model(KIND, path, params, metrics)
        with self._lock:
            self._cached = (model_id, model, labels.classes)
        report(progress, 1, 1, "done")
        return with_warnings(self.project.model(model_id), skipped)

    def classifier(self):
        """``(model id, classifier, class names)`` of the latest classifier; 404 without one."""
        from hitlseg.weak.project import load_classifier

        record = self.latest()
        if record is None:
            raise NotFoundError("no image classifier yet: give images their class, then train the classifier")
        with self._lock:
            if self._cached is None or self._cached[0] != record["id"]:
                model, classes, _ = load_classifier(self.project.model_path(record["id"]), self.device)
                self._cached = (record["id"], model, classes)
            return self._cached

    def classify(self, image_id: str) -> dict:
        """The latest classifier's class probabilities of ``image_id``."""
        import torch

        model_id, model, classes = self.classifier()
        image = self.project.image(image_id)
        self._check_fits(model, image)
        device = next(model.parameters()).device
        with torch.no_grad():
            p = torch.softmax(model(torch.as_tensor(image, device=device)[None]), 1)[0].cpu().numpy()
        best = int(p.argmax())
        return {"image_id": image_id, "model_id": model_id, "class": classes[best],
                "probabilities": {c: float(v) for c, v in zip(classes, p)}}

    def cam_png(self, image_id: str, target: str | None, slice_index: int | None, axis: int,
                method: str = "cam") -> bytes:
        """PNG of the CAM (``method``) of class ``target`` (the predicted one by default) over the image."""
        from hitlseg.selection.heatmap import overlay, png_bytes
        from hitlseg.weak.cam import class_activation_map

        _, model, classes = self.classifier()
        if target is not None and target not in classes:
            raise InputError(f"class: {target!r} is not a class of the classifier ({', '.join(classes)})")
        image = self.project.image(image_id)
        self._check_fits(model, image)
        heat = class_activation_map(model, image, None if target is None else classes.index(target), method)
        return png_bytes(overlay(image, heat, alpha=0.5, slice_index=slice_index, axis=axis))

    @staticmethod
    def _check_fits(model, image: np.ndarray) -> None:
        if image.ndim != model.ndim + 1 or image.shape[0] != model.config["in_channels"]:
            raise InputError(f"image: shape {image.shape} does not fit the classifier "
                             f"({model.config['in_channels']} channels, {model.ndim}D)")
