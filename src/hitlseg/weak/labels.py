"""Image-level labels of a dataset: ``labels.csv`` (``id,class``) beside ``images/``.

The file has a header line ``id,class`` and then one line per image: the image id (its file
stem; a file name such as ``001.png`` stands for its stem) and the name of its class, e.g.::

    id,class
    001,benign
    002,malignant

Blank lines and lines starting with ``#`` are skipped. Class names are sorted and numbered
0, 1, ... in that order (so ``benign`` is 0 and ``malignant`` 1 above). Every image of the
dataset needs a label, no line may name an image the dataset does not hold, and, when the
classes are declared, each declared class needs at least one image: anything else raises
:class:`hitlseg.errors.InputError` naming the file and the line.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from hitlseg.errors import InputError

LABELS_FILE = "labels.csv"
ID_COLUMNS = ("id", "image", "name", "file")
CLASS_COLUMNS = ("class", "label")


def _shown(items: Sequence[str], limit: int = 5) -> str:
    items = list(items)
    return ", ".join(map(str, items[:limit])) + (f" and {len(items) - limit} more" if len(items) > limit else "")


@dataclass(frozen=True)
class ImageLabels:
    """The class of each image of a dataset.

    Attributes
    ----------
    classes : tuple of str
        Class names, sorted; class ``i`` is ``classes[i]``.
    labels : dict
        Image id -> class index (int).
    path : Path or None
        The file the labels were read from.
    """

    classes: tuple[str, ...]
    labels: dict
    path: Path | None = None

    @property
    def ids(self) -> list[str]:
        """Labelled image ids, sorted."""
        return sorted(self.labels)

    @property
    def n_classes(self) -> int:
        """Number of image classes."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self.labels

    def __getitem__(self, sample_id: str) -> int:
        try:
            return self.labels[sample_id]
        except KeyError:
            where = f"{self.path}: " if self.path is not None else ""
            raise InputError(f"{where}image {sample_id!r} has no image-level label") from None

    def of(self, ids: Sequence[str]) -> np.ndarray:
        """Class indices of ``ids`` (int64)."""
        return np.array([self[i] for i in ids], dtype=np.int64)

    def counts(self) -> dict[str, int]:
        """Class name -> number of images (every class listed, in class order)."""
        found = Counter(self.labels.values())
        return {name: int(found.get(index, 0)) for index, name in enumerate(self.classes)}

    def subset(self, ids: Sequence[str]) -> "ImageLabels":
        """The labels of ``ids`` (each must be labelled), with the same classes."""
        return ImageLabels(self.classes, {i: self[i] for i in ids}, self.path)

    def to_dict(self) -> dict:
        """``path``, ``classes`` and ``counts`` as plain values (what ``hitlseg info`` reports)."""
        return {"path": None if self.path is None else str(self.path), "classes": list(self.classes),
                "counts": self.counts()}


def labels_path(dataset) -> Path:
    """Where the image-level labels of ``dataset`` (a :class:`hitlseg.dataset.Dataset` or a folder) are."""
    root = Path(getattr(dataset, "root", dataset))
    return root / LABELS_FILE


def has_image_labels(dataset) -> bool:
    """Whether ``dataset`` has a ``labels.csv``."""
    return labels_path(dataset).is_file()


def read_image_labels(dataset, path: str | Path | None = None, *, classes: Sequence[str] | None = None,
                      allow_missing: bool = False) -> ImageLabels:
    """Read the image-level labels of ``dataset`` from ``labels.csv``.

    Parameters
    ----------
    dataset : Dataset
        The images the labels are for (:attr:`Dataset.ids` and :attr:`Dataset.root`).
    path : str or Path, optional
        The CSV file; ``dataset.root / "labels.csv"`` by default.
    classes : sequence of str, optional
        Declared class names: a line with another class is an error, and so is a declared class
        no image has. The class order is still sorted.
    allow_missing : bool
        Accept images of the dataset without a line (they are left out of the labels).

    Returns
    -------
    ImageLabels

    Raises
    ------
    InputError
        The file is missing or unreadable, has no ``id,class`` header, a malformed line, an id
        given twice, an id that is not an image of the dataset, images without a label, fewer
        than one class, or a declared class with no image.

    Examples
    --------
    >>> from hitlseg.datasets import demo  # doctest: +SKIP
    >>> labels = read_image_labels(demo())  # doctest: +SKIP
    >>> labels.classes, labels.counts()  # doctest: +SKIP
    """
    from hitlseg.io import stem_of

    path = Path(path) if path is not None else labels_path(dataset)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: image-level labels file not found (expected a CSV 'id,class' beside images/)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the labels file ({exc})") from None
    ids = list(dataset.ids)
    known = set(ids)
    rows = [(n, [cell.strip() for cell in row]) for n, row in enumerate(csv.reader(io.StringIO(text)), 1)]
    rows = [(n, row) for n, row in rows if any(row) and not row[0].startswith("#")]
    if not rows:
        raise InputError(f"{path}: the labels file is empty (expected a header line 'id,class' and one line per image)")
    n, header = rows[0]
    if len(header) != 2 or header[0].lower() not in ID_COLUMNS or header[1].lower() not in CLASS_COLUMNS:
        raise InputError(f"{path}: line {n}: expected the header line 'id,class', got {','.join(header)!r}")
    labels: dict[str, str] = {}
    where: dict[str, int] = {}
    unknown: list[tuple[str, int]] = []
    declared = None if classes is None else [str(c).strip() for c in classes]
    if declared is not None and (not declared or len(set(declared)) != len(declared) or not all(declared)):
        raise InputError(f"classes: need distinct non-empty class names, got {list(classes)!r}")
    for n, row in rows[1:]:
        if len(row) != 2 or not row[0] or not row[1]:
            raise InputError(f"{path}: line {n}: expected 'id,class' (two non-empty cells), got {','.join(row)!r}")
        sample_id, name = row
        if sample_id not in known and stem_of(sample_id) in known:
            sample_id = stem_of(sample_id)
        if sample_id in labels:
            raise InputError(f"{path}: line {n}: image {sample_id!r} is labelled again (first on line {where[sample_id]})")
        if declared is not None and name not in declared:
            raise InputError(f"{path}: line {n}: class {name!r} is not one of the declared classes "
                             f"{', '.join(declared)}")
        if sample_id not in known:
            unknown.append((sample_id, n))
        labels[sample_id] = name
        where[sample_id] = n
    if unknown:
        listed = _shown([f"{i!r} (line {n})" for i, n in unknown])
        raise InputError(f"{path}: {len(unknown)} ids are not images of the dataset {dataset.root}: {listed}")
    missing = [i for i in ids if i not in labels]
    if missing and not allow_missing:
        raise InputError(f"{path}: {len(missing)} of {len(ids)} images of the dataset have no label: {_shown(missing)}")
    if not labels:
        raise InputError(f"{path}: the labels file labels no image")
    names = sorted(set(labels.values())) if declared is None else sorted(declared)
    empty = [c for c in names if c not in set(labels.values())]
    if empty:
        raise InputError(f"{path}: declared class {_shown(empty)} has no image")
    index = {name: i for i, name in enumerate(names)}
    return ImageLabels(tuple(names), {i: index[c] for i, c in sorted(labels.items())}, path)


def write_image_labels(path: str | Path, labels: dict[str, str]) -> Path:
    """Write ``{id: class name}`` as a ``labels.csv`` (header ``id,class``, ids sorted)."""
    path = Path(path)
    lines = ["id,class"] + [f"{i},{c}" for i, c in sorted(labels.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
