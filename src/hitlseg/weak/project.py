"""Image-level labels kept in a project, and a CAM classifier trained on them (what the web app offers).

A label is a project event ``image_label`` (``{"image_id", "label", "author"}``; ``label`` None
removes it): the log is append-only, so no label a person set is ever overwritten in place, and
the latest event of an image is its label (:func:`image_labels`). :func:`import_labels_csv`
brings a dataset's ``labels.csv`` in. :func:`train_project_classifier` trains the classifier of
:func:`hitlseg.weak.joint.cam_only` (image labels only, no mask is read) on the labelled
images; :func:`save_classifier` / :func:`load_classifier` write and read its file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hitlseg.errors import InputError
from hitlseg.progress import Progress
from hitlseg.weak.cam import CamClassifier
from hitlseg.weak.labels import ImageLabels

LABEL_EVENT = "image_label"
#: Longest class name accepted.
MAX_LABEL = 64
#: Printable names without commas or line breaks (they are written to labels.csv).
LABEL_PATTERN = re.compile(r"^[^,\r\n\t\x00-\x1f]+$")
FORMAT = "hitlseg-cam-classifier"
FORMAT_VERSION = 1


def check_label(label) -> str | None:
    """``label`` stripped, or None (remove); an :class:`InputError` naming what is wrong otherwise."""
    if label is None:
        return None
    if not isinstance(label, str):
        raise InputError(f"label: expected a class name (text) or null, got {type(label).__name__}")
    name = label.strip()
    if not name:
        raise InputError("label: the class name is empty (send null to remove the image's label)")
    if len(name) > MAX_LABEL:
        raise InputError(f"label: class names have at most {MAX_LABEL} characters, got {len(name)}")
    if not LABEL_PATTERN.match(name):
        raise InputError(f"label: {name!r} holds a comma, tab or control character; use letters, digits, spaces, '-' or '_'")
    return name


def set_image_label(project, image_id: str, label: str | None, author: str | None = None) -> dict:
    """Record ``label`` as the class of ``image_id`` (None removes it); returns the event's payload."""
    if image_id not in project:
        raise InputError(f"image {image_id!r} is not in this project")
    payload = {"image_id": image_id, "label": check_label(label), "author": author}
    project.record_event(LABEL_EVENT, payload)
    return payload


def image_labels(project) -> dict[str, str]:
    """``{image_id: class name}`` of the project's labelled images (the latest event of each), in project order."""
    latest: dict[str, str | None] = {}
    for event in project.events(kind=LABEL_EVENT):
        payload = event["payload"] or {}
        latest[payload.get("image_id")] = payload.get("label")
    return {i: latest[i] for i in project.image_ids() if latest.get(i) is not None}


def import_labels_csv(project, path: str | Path, author: str = "labels.csv") -> int:
    """Record every line of a ``labels.csv`` (``id,class``, :mod:`hitlseg.weak.labels`); returns how many.

    Images of the project without a line keep their label; a line naming an image the project
    does not hold, or a malformed file, is an error naming the line (nothing is recorded then).
    """
    from hitlseg.weak.labels import read_image_labels

    read = read_image_labels(project.dataset(), path, allow_missing=True)
    names = {i: read.classes[k] for i, k in read.labels.items()}
    for name in set(names.values()):
        check_label(name)
    for image_id in project.image_ids():
        if image_id in names:
            project.record_event(LABEL_EVENT, {"image_id": image_id, "label": names[image_id], "author": author})
    return len(names)


def project_image_labels(labels: dict[str, str], ids: Sequence[str] | None = None) -> ImageLabels:
    """:class:`ImageLabels` of ``labels`` (restricted to ``ids``); at least 2 classes, each with an image."""
    chosen = {i: c for i, c in labels.items() if ids is None or i in set(ids)}
    classes = tuple(sorted(set(chosen.values())))
    if len(classes) < 2:
        have = f"only {classes[0]!r}" if classes else "none"
        raise InputError(f"image labels: a classifier needs images of at least 2 classes; the labelled images have {have}")
    index = {c: k for k, c in enumerate(classes)}
    return ImageLabels(classes, {i: index[c] for i, c in chosen.items()})


def train_project_classifier(images: dict[str, np.ndarray], labels: ImageLabels, *, epochs: int = 20,
                             widths: Sequence[int] = (16, 32, 64), norm: str = "instance", seed: int = 0, device=None,
                             progress: Progress = None) -> CamClassifier:
    """A CAM classifier (:func:`hitlseg.weak.joint.cam_only`'s) trained on ``images`` and their labels, in eval mode."""
    from hitlseg.nets.unet import BackpropEncoder, make_arch
    from hitlseg.weak.cam import train_classifier

    missing = [i for i in images if i not in labels]
    if missing:
        raise InputError(f"images: {len(missing)} have no image-level label ({', '.join(missing[:3])})")
    if not images:
        raise InputError("images: no labelled image to train on")
    first = next(iter(images.values()))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CamClassifier(BackpropEncoder(make_arch(widths), first.shape[0], first.ndim - 1, norm=norm),
                              labels.n_classes)
    model.config = {"widths": [int(w) for w in widths], "norm": norm, "in_channels": int(first.shape[0]),
                    "ndim": int(first.ndim - 1)}
    train_classifier(model, list(images.values()), labels.of(list(images)), epochs=epochs, seed=seed, device=device,
                     progress=progress)
    model.eval()
    return model


def save_classifier(model: CamClassifier, path: str | Path, classes: Sequence[str], info: dict | None = None) -> Path:
    """Write a classifier of :func:`train_project_classifier` with its class names (and ``info``)."""
    config = getattr(model, "config", None)
    if config is None:
        raise InputError("model: only classifiers made by train_project_classifier can be saved")
    if len(classes) != model.n_labels:
        raise InputError(f"classes: {len(classes)} names for a classifier of {model.n_labels} classes")
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": FORMAT, "version": FORMAT_VERSION, "config": config, "classes": list(classes),
                "info": dict(info or {}), "state": state}, path)
    return path


def load_classifier(path: str | Path, device=None) -> tuple[CamClassifier, tuple[str, ...], dict]:
    """The classifier, its class names and ``info`` from a file of :func:`save_classifier`."""
    from hitlseg.flim.fit import resolve_device
    from hitlseg.nets.unet import BackpropEncoder, make_arch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: cannot read the classifier file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path}: not a CAM classifier file of hitlseg")
    if data.get("version") != FORMAT_VERSION:
        raise InputError(f"{path}: classifier file version {data.get('version')!r}; this hitlseg reads {FORMAT_VERSION}")
    config, classes = data["config"], tuple(data["classes"])
    model = CamClassifier(BackpropEncoder(make_arch(config["widths"]), config["in_channels"], config["ndim"],
                                          norm=config["norm"]), len(classes))
    model.load_state_dict(data["state"])
    model.config = dict(config)
    model.to(resolve_device(device)).eval()
    return model, classes, dict(data.get("info") or {})
