"""Weak supervision from image-level labels: ``labels.csv`` (:mod:`hitlseg.weak.labels`), class
activation maps (:mod:`hitlseg.weak.cam`), neighbour pseudo-labels (:mod:`hitlseg.weak.neighbours`)
and the joint classification + segmentation learner with an oracle (:mod:`hitlseg.weak.joint`).

Names are imported on first use, so reading ``labels.csv`` (``hitlseg info``) loads no torch.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "hitlseg.weak.cam": ("METHODS", "CamClassifier", "activation_maps", "class_activation_map", "predict_labels",
                         "train_classifier"),
    "hitlseg.weak.labels": ("LABELS_FILE", "ImageLabels", "has_image_labels", "labels_path", "read_image_labels",
                            "write_image_labels"),
    "hitlseg.weak.neighbours": ("nearest_oracle", "neighbour_pseudo_labels", "neighbour_vote", "pooled_descriptor"),
    "hitlseg.weak.joint": ("JointNet", "WeakConfig", "WeakResult", "cam_only", "load_weak", "weak_train"),
}
_MODULE_OF = {name: module for module, names in _NAMES.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'hitlseg.weak' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
