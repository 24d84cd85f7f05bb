"""Per-image work over a pool through an :class:`~hitlseg.parallel.executor.Executor`, streamed to zarr.

Each entry point maps one pure per-image function of the library over the pool's images and
writes every result to a :class:`~hitlseg.parallel.store.ResultStore` as it arrives, so the
client holds at most the executor's window of tasks and their results, whatever the pool's
length (a task is one image, or for superpixels and descriptors up to :data:`TASK_IMAGES` images
and :data:`TASK_BYTES` of input); a rerun over the same output resumes where the last one stopped. The numbers are those of the
functions they call, in-process or on Dask alike:

* :func:`pool_descriptors` - SLIC superpixels (:func:`hitlseg.selection.slic_superpixels`) and
  the ground-truth-free descriptor (:func:`hitlseg.selection.activation_maps` +
  :func:`hitlseg.selection.compute_descriptors`, as a :class:`~hitlseg.selection.SelectionSession`
  round computes them);
* :func:`predict_pool` - :meth:`hitlseg.nets.SegModel.predict` (or, with ``flips``,
  :func:`hitlseg.pseudo.pool_probabilities`);
* :func:`pool_pseudo_labels` - HISE tripartition and local consistency
  (:func:`hitlseg.pseudo.tripartition`, :func:`hitlseg.pseudo.local_consistency`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hitlseg.errors import InputError
from hitlseg.parallel.executor import Executor
from hitlseg.parallel.store import ResultStore, fingerprint
from hitlseg.progress import Progress, nested, report

__all__ = ["PoolSource", "as_pool", "image_descriptor", "image_prediction", "image_pseudo_labels", "image_superpixels",
           "pool_descriptors", "pool_pseudo_labels", "pool_superpixels", "predict_pool"]


class PoolSource:
    """Images addressed by id: ``ids`` and ``image(id) -> (C, *spatial)``.

    ``on_workers``: whether workers load the images themselves (the source is shipped to each
    worker once; it must reach the files, e.g. a :class:`~hitlseg.dataset.Dataset` on a shared
    file system) or the client loads each image and sends it with its task.
    """

    def __init__(self, ids: Sequence[str], load, on_workers: bool):
        self.ids, self._load, self.on_workers = [str(i) for i in ids], load, on_workers

    def image(self, image_id: str) -> np.ndarray:
        return np.asarray(self._load(image_id), dtype=np.float32)


def _dataset_image(dataset, image_id):
    return dataset.image(image_id)[0]


def as_pool(pool, on_workers: bool | None = None) -> PoolSource:
    """A :class:`PoolSource` from a Dataset (loaded on the workers by default), a mapping id -> image
    (loaded by the client, lazily if the mapping is lazy) or a PoolSource."""
    from functools import partial

    from hitlseg.dataset import Dataset

    if isinstance(pool, PoolSource):
        source = pool
    elif isinstance(pool, Dataset):
        source = PoolSource(pool.ids, partial(_dataset_image, pool), True)
    elif isinstance(pool, Mapping):
        bad = [i for i in pool if not isinstance(i, str)]
        if bad:
            raise InputError(f"pool: image ids must be strings, got {bad[0]!r}")
        source = PoolSource(list(pool), pool.__getitem__, False)
    else:
        raise InputError(f"pool: expected a Dataset, a mapping id -> image or a PoolSource, got {type(pool).__name__}")
    if not source.ids:
        raise InputError("pool: no image given")
    if on_workers is not None:
        source = PoolSource(source.ids, source._load, bool(on_workers))
    return source


#: Images per task at most when :func:`_run` batches (selection superpixels and descriptors), and
#: the bytes a batch may send with it: each image's task costs ~25 ms of scheduling and transfer on
#: 2 workers where its descriptor is ~1 ms of compute (``benchmarks/scale.py``, 120 x 120 images).
TASK_IMAGES = 8
TASK_BYTES = 8 * 2**20


def _on_image(function, image_id, image, *extra, pool=None, **shared):
    """Task body: the image (sent, or loaded here from the shipped pool) through ``function``."""
    if image is None:
        image = pool.image(image_id)
    return function(image_id, np.asarray(image, dtype=np.float32), *extra, **shared)


def _on_images(function, batch, pool=None, **shared):
    """Task body of a batch: ``[(image_id, image or None, extra), ...]`` through :func:`_on_image`."""
    return [(image_id, _on_image(function, image_id, image, *extra, pool=pool, **shared))
            for image_id, image, extra in batch]


def _nbytes(values) -> int:
    return sum(int(getattr(v, "nbytes", 0)) for v in values)


def _run(store: ResultStore, source: PoolSource, function, shared: dict, executor: Executor | None,
         progress: Progress, message: str, ragged: Sequence[str], extra=None, batch: bool = False) -> ResultStore:
    """Map ``function(image_id, image, **shared)`` over the pending images of ``store``; write each result.

    ``batch``: on a cluster, up to :data:`TASK_IMAGES` images per task (while what they send stays
    under :data:`TASK_BYTES`); for functions whose results are small. The numbers do not change.
    """
    executor = executor if executor is not None else Executor()
    pending = store.pending()
    shared = dict(shared)
    if source.on_workers:
        shared["pool"] = source
    size = TASK_IMAGES if batch and executor.distributed else 1

    def items():
        group, sent = [], 0
        for image_id in pending:
            image = None if source.on_workers else source.image(image_id)
            more = tuple(extra(image_id)) if extra is not None else ()
            weight = _nbytes((image, *more))
            if group and (len(group) == size or sent + weight > TASK_BYTES):
                yield group[0][0], (function, group)
                group, sent = [], 0
            group.append((image_id, image, more))
            sent += weight
        if group:
            yield group[0][0], (function, group)

    report(progress, 0, len(pending), message)
    small_pool = -(-executor.small_pool // size)  # the small-pool rule counts images, not tasks
    results = executor.map(_on_images, items(), shared=shared, total=-(-len(pending) // size), small_pool=small_pool)
    done = 0
    try:
        for _, rows in results:
            for image_id, values in rows:
                store.write(image_id, values, ragged=ragged, defer_done=True)
                done += 1
                report(progress, done, len(pending), message)  # counts stored results
    finally:
        store.flush()
    return store


# -- descriptors -------------------------------------------------------------------------------------

def image_superpixels(image_id: str, image: np.ndarray, *, n_segments, compactness) -> dict:
    """SLIC superpixels of one image (task body of :func:`pool_descriptors`' first pass)."""
    from hitlseg.selection.superpixels import slic_superpixels

    return {"superpixels": slic_superpixels(image, n_segments, compactness)}


def image_descriptor(image_id: str, image: np.ndarray, superpixels: np.ndarray, *, encoder, maps: str, stride: int,
                     length: int, fill: str) -> dict:
    """The selection descriptor of one image, as a :class:`~hitlseg.selection.SelectionSession`
    round computes it: first-layer activations of the chosen maps every ``stride`` pixels, sorted
    superpixel means brought to ``length`` values by ``fill``."""
    import torch

    from hitlseg.flim.decoders import saliency_maps
    from hitlseg.selection.descriptors import activation_maps, compute_descriptors, map_kernels

    layer = encoder.layers[0]
    channels = layer.in_channels
    if image.ndim - 1 != superpixels.ndim or image.ndim - 1 != layer.ndim or image.shape[0] != channels:
        raise InputError(f"pool image {image_id!r}: shape {image.shape} does not fit the filters "
                         f"({channels} channels, {superpixels.ndim}D) learned on the marked images")
    with torch.no_grad():
        x = torch.as_tensor(image[None], device=layer.kernel_classes.device)
        if maps == "saliency":
            present = set(int(c) for c in torch.unique(layer.kernel_classes))
            rule = "labels" if 0 in present and len(present) > 1 else "weights"
            features = torch.stack([saliency_maps(f, layer.kernel_classes, rule)
                                    for f in activation_maps(layer, x, None, stride)])
        else:
            kernels, _ = map_kernels(encoder, maps)
            features = activation_maps(layer, x, kernels, stride)
    return {"descriptor": compute_descriptors(features, [superpixels], length, fill)[0]}


def pool_descriptors(pool, encoder, output, *, executor: Executor | None = None, n_superpixels: int | None = None,
                     compactness: float | None = None, maps: str = "object", stride: int = 2, fill: str = "zero",
                     length: int | None = None, resume: bool = True, progress: Progress = None) -> ResultStore:
    """Ground-truth-free selection descriptors of every pool image, in a zarr store under ``output``.

    Two passes: superpixels of every image (``superpixels.zarr``, reused by later rounds with any
    encoder), then the descriptors (``descriptors-<encoder hash>.zarr``), whose length is the
    pool's largest superpixel count unless ``length`` is given (as in
    :class:`~hitlseg.selection.SelectionSession`; Soares et al., the FLIM-based image selection).

    Parameters
    ----------
    pool : Dataset, mapping id -> ndarray (C, *spatial), or PoolSource
    encoder : FLIMEncoder
        Its first layer's kernels give the maps (``maps`` as in the session).
    output : path
        Folder of the stores.
    executor : Executor, optional
        Where the work runs (default in-process).
    n_superpixels, compactness, maps, stride, fill, length
        As in :class:`~hitlseg.selection.SelectionSession`.
    resume : bool
        Continue the stores found in ``output`` (False: start them again).
    progress : callable, optional

    Returns
    -------
    ResultStore
        ``store.stacked("descriptor")``: float32 ``(n, M * length)``, rows in ``store.ids`` order.
    """
    import copy

    from hitlseg.flim.encoder import FLIMEncoder
    from hitlseg.selection.descriptors import FILLS, MAPS

    if not isinstance(encoder, FLIMEncoder):
        raise InputError(f"encoder: need a fitted FLIMEncoder, got {type(encoder).__name__}")
    if maps not in MAPS:
        raise InputError(f"maps: unknown choice {maps!r} (use one of {', '.join(MAPS)})")
    if fill not in FILLS:
        raise InputError(f"fill: unknown rule {fill!r} (use one of {', '.join(FILLS)})")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise InputError(f"stride: must be a positive integer, got {stride!r}")
    source = as_pool(pool)
    output = Path(output)
    superpixels = pool_superpixels(source, output, executor=executor, n_superpixels=n_superpixels,
                                   compactness=compactness, resume=resume, progress=nested(progress, 0.0, 0.5, "superpixels"))
    if length is None:
        length = max(int(superpixels.get("superpixels", i).max()) + 1 for i in source.ids)
    segments = _segments(n_superpixels, compactness)
    options = {"maps": maps, "stride": stride, "length": int(length), "fill": fill}
    params = {**options, **segments, "encoder": fingerprint(encoder)}
    store = ResultStore.open(output / f"descriptors-{params['encoder']}.zarr", source.ids, "descriptors", params,
                             resume=resume)
    # a CPU copy travels to the workers; the caller's encoder stays on its device
    shipped = copy.deepcopy(encoder).cpu()
    return _run(store, source, image_descriptor, {"encoder": shipped, **options}, executor,
                nested(progress, 0.5, 1.0, "descriptors"), "descriptors", ragged=(),
                extra=lambda image_id: (superpixels.get("superpixels", image_id),), batch=True)


def _segments(n_superpixels, compactness) -> dict:
    from hitlseg.selection.superpixels import DEFAULT_COMPACTNESS

    return {"n_segments": n_superpixels, "compactness": DEFAULT_COMPACTNESS if compactness is None else compactness}


def pool_superpixels(pool, output, *, executor: Executor | None = None, n_superpixels: int | None = None,
                     compactness: float | None = None, resume: bool = True, progress: Progress = None) -> ResultStore:
    """SLIC superpixels of every pool image in ``output/superpixels.zarr`` (the first pass of
    :func:`pool_descriptors`; reused by every later round, whatever the encoder).

    Returns
    -------
    ResultStore
        ``store.get("superpixels", id)``: int32 labels of the image's spatial shape.
    """
    source = as_pool(pool)
    segments = _segments(n_superpixels, compactness)
    superpixels = ResultStore.open(Path(output) / "superpixels.zarr", source.ids, "superpixels", segments, resume=resume)
    return _run(superpixels, source, image_superpixels, segments, executor, progress, "superpixels",
                ragged=("superpixels",), batch=True)


# -- predictions and pseudo-labels ---------------------------------------------------------------------

def image_prediction(image_id: str, image: np.ndarray, *, model, flips: bool, window, labels: bool,
                     dtype: str) -> dict:
    """Probabilities (and labels) of one image (task body of :func:`predict_pool`)."""
    from hitlseg.nets.infer import labels_from_probabilities
    from hitlseg.pseudo import pool_probabilities

    if flips:
        probabilities = pool_probabilities(model, image, flips=True, name=image_id)
        label_map = labels_from_probabilities(probabilities)
    else:
        prediction = model.predict(image, name=image_id, window=window)
        probabilities, label_map = prediction.probabilities, prediction.labels
    out = {"probabilities": probabilities.astype(dtype)}
    if labels:
        out["labels"] = label_map
    return out


def predict_pool(model, pool, output, *, executor: Executor | None = None, flips: bool = False, window="auto",
                 labels: bool = True, dtype: str = "float32", resume: bool = True,
                 progress: Progress = None) -> ResultStore:
    """Probabilities ``(K + 1, *spatial)`` (and labels) of every pool image for a SegModel, in
    ``output/predictions-<model hash>.zarr``.

    ``flips`` averages over flips (:func:`hitlseg.pseudo.pool_probabilities`, then the arg-max
    labels, without the model's post-processing); otherwise :meth:`SegModel.predict` with
    ``window``. ``dtype`` of the stored probabilities (``float16`` halves the store, as
    :func:`hitlseg.active.context.score_pool` keeps them). ``store.mapping("probabilities")`` is a
    lazy id -> array mapping of the results.
    """
    from hitlseg.nets import SegModel

    if not isinstance(model, SegModel):
        raise InputError(f"model: need a SegModel, got {type(model).__name__}")
    if dtype not in ("float32", "float16"):
        raise InputError(f"dtype: use float32 or float16, got {dtype!r}")
    source = as_pool(pool)
    options = {"flips": bool(flips), "window": window, "labels": bool(labels), "dtype": dtype}
    params = {**options, "model": fingerprint(model)}
    store = ResultStore.open(Path(output) / f"predictions-{params['model']}.zarr", source.ids, "predictions", params,
                             resume=resume)
    return _run(store, source, image_prediction, {"model": model.to("cpu"), **options}, executor, progress,
                "predicting the pool", ragged=("probabilities", "labels"))


def image_pseudo_labels(image_id: str, image: np.ndarray, *, model, delta: float, beta: float, flips: bool) -> dict:
    """HISE pseudo-label mask and local consistency of one image (task body of :func:`pool_pseudo_labels`)."""
    from hitlseg.pseudo import local_consistency, pool_probabilities, tripartition

    probabilities = pool_probabilities(model, image, flips=flips, name=image_id)
    return {"pseudo": tripartition(probabilities, delta),
            "consistency": np.float64(local_consistency(probabilities, beta))}


def pool_pseudo_labels(model, pool, output, *, delta: float, beta: float, flips: bool = True,
                       executor: Executor | None = None, resume: bool = True, progress: Progress = None) -> ResultStore:
    """HISE pseudo-labels (Zhang et al. 2020) of every pool image: the tripartition mask (``pseudo``,
    uint8, :data:`hitlseg.pseudo.IGNORE` in the uncertain band) and the local consistency
    ``tau_l`` (``consistency``), in ``output/pseudo-<model hash>.zarr``.

    Rank with ``hitlseg.pseudo.choose_images(dict(zip(store.ids, store.stacked("consistency"))), gamma)``.
    """
    from hitlseg.nets import SegModel
    from hitlseg.pseudo.labels import _check_unit

    if not isinstance(model, SegModel):
        raise InputError(f"model: need a SegModel, got {type(model).__name__}")
    options = {"delta": _check_unit(delta, "delta"), "beta": _check_unit(beta, "beta", high_open=False),
               "flips": bool(flips)}
    source = as_pool(pool)
    params = {**options, "model": fingerprint(model)}
    store = ResultStore.open(Path(output) / f"pseudo-{params['model']}.zarr", source.ids, "pseudo", params,
                             resume=resume)
    return _run(store, source, image_pseudo_labels, {"model": model.to("cpu"), **options}, executor, progress,
                "pseudo-labels", ragged=("pseudo",))
