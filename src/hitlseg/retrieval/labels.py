"""Labels of images for learning a hash and for judging retrieval: multi-hot matrices over named tokens.

Sources
    * **masks** (ground truth, or predictions a person accepted): :func:`area_labels`, one token
      per class present, with its area level;
    * **markers** (what the person drew): :func:`marker_labels`, one token per class marked
      (marker value ``c + 1`` is class ``c``; background, marker 1, is no label);
    * **image-level labels**: :func:`image_labels` (a mapping id -> label or labels, or a CSV
      ``id,class`` as GlaS's ``labels.csv``), one token per label value.

Area levels (the relevance of a mask-labelled dataset such as wbc1)
    For class ``c``, ``a_c(x)`` is the fraction of the pixels of image ``x`` labelled ``c``; the
    class is present when ``a_c(x) > 0``. Its *area level* is ``1 + #{t : a_c(x) >= e_{c,t}}``,
    where ``e_{c,1} < ... < e_{c,L-1}`` are the ``t / L`` quantiles of ``a_c`` over the reference
    images in which ``c`` is present (``L = levels``, default 3: small, middle, large for that
    class). The image's tokens are ``"c@level"`` for every present class; two images share a token
    when a class is present in both at the same area level. On wbc1 every image holds both the
    cytoplasm (1) and the nucleus (2), so presence alone says nothing: the levels of the two areas
    (how large the white cell and its nucleus are, against the other images) carry the relevance.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hitlseg.errors import InputError

__all__ = ["LabelMatrix", "area_edges", "area_labels", "image_labels", "marker_labels", "read_label_csv"]


@dataclass
class LabelMatrix:
    """Multi-hot labels: ``matrix[i, t]`` is 1 when image ``ids[i]`` has token ``tokens[t]``."""

    ids: list[str]
    tokens: list[str]
    matrix: np.ndarray

    def rows(self, ids) -> np.ndarray:
        """The rows of ``ids`` (each must be labelled)."""
        where = {i: r for r, i in enumerate(self.ids)}
        missing = [i for i in ids if i not in where]
        if missing:
            raise InputError(f"labels: no label for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        return self.matrix[[where[i] for i in ids]]


def _matrix(ids, sets: list[set[str]], tokens=None) -> LabelMatrix:
    tokens = sorted(set().union(*sets)) if tokens is None else list(tokens)
    column = {t: c for c, t in enumerate(tokens)}
    matrix = np.zeros((len(ids), len(tokens)), dtype=np.float32)
    for row, found in enumerate(sets):
        for token in found:
            if token in column:
                matrix[row, column[token]] = 1
    return LabelMatrix(list(ids), tokens, matrix)


def _fractions(masks: Mapping[str, np.ndarray], n_classes: int) -> np.ndarray:
    out = np.zeros((len(masks), n_classes), dtype=np.float64)
    for row, (image_id, mask) in enumerate(masks.items()):
        mask = np.asarray(mask)
        if mask.size == 0 or not np.issubdtype(mask.dtype, np.integer) and mask.dtype != bool:
            raise InputError(f"mask {image_id!r}: expected integer labels")
        counts = np.bincount(mask.astype(np.int64).ravel().clip(0, n_classes), minlength=n_classes + 1)
        out[row] = counts[1 : n_classes + 1] / mask.size
    return out


def area_edges(masks: Mapping[str, np.ndarray], n_classes: int, levels: int = 3) -> np.ndarray:
    """Level edges ``(n_classes, levels - 1)``: quantiles of each class's area fraction where present."""
    if levels < 1:
        raise InputError(f"levels: must be a positive integer, got {levels}")
    fractions = _fractions(masks, n_classes)
    edges = np.zeros((n_classes, max(levels - 1, 0)))
    for c in range(n_classes):
        present = fractions[:, c][fractions[:, c] > 0]
        if len(present) and levels > 1:
            edges[c] = np.quantile(present, np.arange(1, levels) / levels)
    return edges


def area_labels(masks: Mapping[str, np.ndarray], n_classes: int | None = None, levels: int = 3,
                edges: np.ndarray | None = None) -> tuple[LabelMatrix, np.ndarray]:
    """Tokens ``"c@level"`` of each mask (module docstring) and the edges used.

    ``edges`` (from :func:`area_edges` on reference masks, e.g. the indexed pool) default to those
    of ``masks`` themselves.
    """
    if not masks:
        raise InputError("masks: none given")
    if n_classes is None:
        n_classes = max(1, max(int(np.max(m)) for m in masks.values()))
    if edges is None:
        edges = area_edges(masks, n_classes, levels)
    edges = np.asarray(edges)
    if edges.shape[0] != n_classes:
        raise InputError(f"edges: for {edges.shape[0]} classes, the masks have {n_classes}")
    fractions = _fractions(masks, n_classes)
    sets = []
    for row in fractions:
        sets.append({f"{c + 1}@{1 + int(np.sum(row[c] >= edges[c]))}" for c in range(n_classes) if row[c] > 0})
    tokens = [f"{c + 1}@{level}" for c in range(n_classes) for level in range(1, edges.shape[1] + 2)]
    return _matrix(list(masks), sets, tokens), edges


def marker_labels(markers: Mapping[str, np.ndarray]) -> LabelMatrix:
    """Token ``"c"`` for every object class ``c`` marked (marker value ``c + 1``) in each image."""
    sets = []
    for image_id, m in markers.items():
        values = np.unique(np.asarray(m))
        sets.append({str(int(v) - 1) for v in values if v >= 2})
    return _matrix(list(markers), sets)


def image_labels(labels: Mapping[str, object]) -> LabelMatrix:
    """Tokens from image-level labels: id -> a label or a collection of labels."""
    sets = []
    for image_id, value in labels.items():
        values = [value] if isinstance(value, (str, int, np.integer)) else list(value)
        sets.append({str(v) for v in values})
    return _matrix(list(labels), sets)


def read_label_csv(path: str | Path) -> dict[str, list[str]]:
    """Image-level labels from a CSV with columns ``id`` and ``class`` (or ``label``); several rows
    of one id give it several labels."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: labels file not found")
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            column = next((f for f in ("class", "label", "labels") if f in fields), None)
            if "id" not in fields or column is None:
                raise InputError(f"{path}: needs columns 'id' and 'class' (or 'label'), found {', '.join(fields) or 'none'}")
            out: dict[str, list[str]] = {}
            for row in reader:
                row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
                if row.get("id") and row.get(column):
                    out.setdefault(row["id"], []).append(row[column])
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text CSV file") from None
    if not out:
        raise InputError(f"{path}: no labelled image")
    return out
