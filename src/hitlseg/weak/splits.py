"""Training images and test groups of a weak-supervision study: a dataset's own split, else a seeded hold-out.

A dataset may name its split in ``meta.csv`` beside ``images/`` (columns ``id`` and ``split``; GlaS:
``train`` / ``testA`` / ``testB``, the contest's official split): the ``train`` images are the
training pool and every other split value is a test group, reported apart. Without one,
:func:`holdout_ids` holds out a seeded fraction of the images with a mask.
"""

from __future__ import annotations

import csv
from pathlib import Path

from hitlseg.errors import InputError

META_FILE = "meta.csv"
TRAIN = "train"


def holdout_ids(dataset, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Training and held-out ids: ``fraction`` of the images with a mask, drawn with ``seed``."""
    import numpy as np

    if not 0 <= fraction < 1:
        raise InputError(f"--holdout: must be in [0, 1), got {fraction}")
    with_masks = dataset.with_masks()
    n = int(round(fraction * len(with_masks)))
    rng = np.random.default_rng([seed, 1700])
    held = sorted(with_masks[j] for j in rng.permutation(len(with_masks))[:n])
    chosen = set(held)
    return [i for i in dataset.ids if i not in chosen], held


def official_split(dataset) -> dict[str, list[str]] | None:
    """``{split value: ids}`` from ``DATASET/meta.csv`` (columns ``id``, ``split``), or None without one.

    Ids are in the dataset's order. Images of the dataset missing from the file, ids of the file
    that are not images, or no ``train`` value are errors naming the file.
    """
    path = Path(dataset.root) / META_FILE
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "id" not in reader.fieldnames or "split" not in reader.fieldnames:
            return None  # a meta.csv without a split column carries no split
        split = {row["id"]: (row["split"] or "").strip() for row in reader}
    missing = [i for i in dataset.ids if i not in split]
    if missing:
        raise InputError(f"{path}: {len(missing)} images of the dataset have no split ({', '.join(missing[:3])})")
    parts: dict[str, list[str]] = {}
    for i in dataset.ids:
        parts.setdefault(split[i], []).append(i)
    if TRAIN not in parts or len(parts) < 2:
        raise InputError(f"{path}: the split column needs '{TRAIN}' and at least one test value, found "
                         f"{', '.join(sorted(parts)) or 'none'}")
    return parts


def study_split(dataset, holdout: float = 0.2, seed: int = 0) -> tuple[list[str], dict[str, list[str]], str]:
    """Training ids, test groups ``{name: ids}`` and where they came from (``"meta.csv"`` or ``"holdout"``).

    The dataset's own split (:func:`official_split`) when it has one; else :func:`holdout_ids`
    (one group, ``"holdout"``). Test images without a mask are left out of the groups.
    """
    parts = official_split(dataset)
    masked = set(dataset.with_masks())
    if parts is not None:
        train = parts.pop(TRAIN)
        groups = {name: [i for i in ids if i in masked] for name, ids in parts.items()}
        source = META_FILE
    else:
        train, held = holdout_ids(dataset, holdout, seed)
        groups = {"holdout": held}
        source = "holdout"
    groups = {name: ids for name, ids in groups.items() if ids}
    if not groups:
        raise InputError(f"{dataset.root}: no test image with a mask (hold-out {holdout}); nothing to report on")
    return train, groups, source
