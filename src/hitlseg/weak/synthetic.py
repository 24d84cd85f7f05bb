"""A synthetic image-level label for datasets that have masks only (e.g. wbc1), for testing the weak protocols.

The rule is deterministic and derived from the masks alone, for experiments only (it is no
biological grade): an image is ``large`` when the pixels of mask label ``label`` (wbc1: 2, the
nucleus) cover a larger fraction of the image than the median fraction over the images, else
``small`` (a fraction equal to the median is ``small``). :func:`labelled_copy` writes such a
``labels.csv`` into a new folder whose ``images/`` and ``masks/`` are symbolic links to the
source's, so the source folder is never written to.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hitlseg.errors import InputError

LARGE, SMALL = "large", "small"


def area_fractions(dataset, label: int = 2) -> dict[str, float]:
    """Per image with a mask: the fraction of its pixels whose mask value is ``label``."""
    ids = dataset.with_masks()
    if not ids:
        raise InputError(f"{dataset.root}: no image has a mask; the area rule needs masks")
    return {i: float(np.mean(dataset.mask(i) == int(label))) for i in ids}


def area_labels(fractions: dict[str, float]) -> dict[str, str]:
    """``large`` above the median of ``fractions``, else ``small`` (see the module docstring)."""
    if not fractions:
        raise InputError("fractions: no image to label")
    median = float(np.median(list(fractions.values())))
    labels = {i: LARGE if f > median else SMALL for i, f in fractions.items()}
    if len(set(labels.values())) < 2:
        raise InputError(f"every image falls on one side of the median area fraction {median:.4f}; "
                         "the rule gives one class only")
    return labels


def labelled_copy(source: str | Path, out: str | Path, label: int = 2) -> tuple[Path, dict[str, str]]:
    """A folder ``out`` with ``images/`` and ``masks/`` linked to ``source``'s and a ``labels.csv`` by the area rule.

    Only images with a mask are labelled; ``out`` must not exist yet, or be an empty folder.
    Returns the folder and the labels.
    """
    from hitlseg.dataset import Dataset
    from hitlseg.weak.labels import LABELS_FILE, write_image_labels

    source, out = Path(source).resolve(), Path(out)
    for part in ("images", "masks"):
        if not (source / part).is_dir():
            raise InputError(f"{source}: no {part}/ folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out}: exists and is not an empty folder; name a new one")
    if out.resolve() == source or source in out.resolve().parents:
        raise InputError(f"{out}: inside the source dataset {source}; write the copy elsewhere")
    dataset = Dataset.from_folder(source)
    if len(dataset.with_masks()) != len(dataset.ids):
        raise InputError(f"{source}: {len(dataset.ids) - len(dataset.with_masks())} images have no mask; "
                         "every image needs one for the area rule")
    labels = area_labels(area_fractions(dataset, label))
    out.mkdir(parents=True, exist_ok=True)
    for part in ("images", "masks"):
        os.symlink(source / part, out / part, target_is_directory=True)
    write_image_labels(out / LABELS_FILE, labels)
    return out, labels
