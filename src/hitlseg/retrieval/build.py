"""Indexes over a :class:`~hitlseg.dataset.Dataset`: read the images, describe them, index them."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hitlseg.errors import InputError
from hitlseg.progress import Progress, nested, report
from hitlseg.retrieval.index import RetrievalIndex

LABEL_SOURCES = ("masks", "markers")

__all__ = ["LABEL_SOURCES", "add_dataset", "describe_dataset", "index_dataset", "learning_labels"]


def describe_dataset(dataset, ids: Sequence[str], describer, regions: str | None = None,
                     progress: Progress = None) -> np.ndarray:
    """Descriptors of the samples ``ids``; ``regions="masks"`` pools each inside its mask (> 0)."""
    if not ids:
        raise InputError(f"{dataset.root}: no image to index (the pool is empty)")
    out = np.empty((len(ids), describer.dimension), dtype=np.float32)
    for row, sample_id in enumerate(ids):
        report(progress, row, len(ids), f"describing {sample_id}")
        image, _ = dataset.image(sample_id)
        mask = None
        if regions == "masks":
            mask = dataset.mask(sample_id, image.shape[1:])
            if mask is None:
                raise InputError(f"{sample_id}: --regions masks, but the sample has no mask")
        out[row] = describer.describe(image, mask, name=sample_id)
    report(progress, len(ids), len(ids), "described")
    return out


def learning_labels(dataset, ids: Sequence[str], source: str) -> np.ndarray:
    """Multi-hot labels of ``ids`` for the deep hash: ``"masks"`` (area tokens), ``"markers"``
    (classes marked) or the path of an image-level CSV (``id,class``)."""
    from hitlseg.retrieval import labels as L

    if source == "masks":
        masks = {}
        for i in ids:
            mask = dataset.mask(i)
            if mask is None:
                raise InputError(f"{i}: --labels masks, but the sample has no mask")
            masks[i] = mask
        return L.area_labels(masks)[0].matrix
    if source == "markers":
        markers = {}
        for i in ids:
            m = dataset.markers(i)
            if m is None:
                raise InputError(f"{i}: --labels markers, but the sample has no marker file")
            markers[i] = m
        return L.marker_labels(markers).matrix
    table = L.image_labels(L.read_label_csv(source))
    return table.rows(list(ids))


def index_dataset(dataset, ids: Sequence[str], describer, *, bits: int = 0, hash: str = "lsh",
                  labels: str | None = None, search: str = "exact", regions: str | None = None, seed: int = 0,
                  progress: Progress = None) -> RetrievalIndex:
    """Describe and index the samples ``ids`` (labels: a source of :func:`learning_labels`)."""
    if hash == "deep" and bits and labels is None:
        raise InputError("--labels: the deep hash learns from labels (masks, markers or an image-level CSV)")
    vectors = describe_dataset(dataset, ids, describer, regions, nested(progress, 0, 0.8, "descriptors"))
    matrix = learning_labels(dataset, ids, labels) if (bits and hash == "deep") else None
    index = RetrievalIndex.build(ids, vectors, bits=bits, hash=hash, labels=matrix, search=search, seed=seed,
                                 describer=describer, progress=nested(progress, 0.8, 1.0, "hash"))
    index.signature["regions"] = regions
    return index


def add_dataset(index: RetrievalIndex, dataset, ids: Sequence[str] | None = None,
                progress: Progress = None) -> list[str]:
    """Add the samples of ``dataset`` not yet in ``index`` (or exactly ``ids``); returns the ids added."""
    if index.describer is None:
        raise InputError("index: has no stored model, so new images cannot be described")
    if ids is None:
        ids = [i for i in dataset.ids if i not in index]
    if not ids:
        return []
    vectors = describe_dataset(dataset, ids, index.describer, index.signature.get("regions"), progress)
    index.add(ids, vectors)
    return list(ids)
