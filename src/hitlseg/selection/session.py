"""The selection session: pool, selected images, markers and filters, one round per marked image.

A round (:meth:`SelectionSession.step`) takes the markers of the image just annotated and

1. refits the first-layer FLIM filters on every image marked so far (:func:`selection_arch`);
2. computes the chosen feature maps of the whole pool, in batches of images of one shape, and the
   descriptors (:mod:`hitlseg.selection.descriptors`);
3. updates the stopping signal (:class:`StoppingMonitor`), which measures the pool's diameter;
4. ranks the unselected images by distance to the selected set, leaving out near-duplicates of
   selected images (:func:`recommend`, with that diameter);
5. projects all descriptors to 2D (:func:`project`, warm-started from the previous layout).

Pool images are loaded once, at construction, with their superpixels (computed once, or taken from
a cache), and kept stacked per shape for the whole session.

With a distributed ``executor`` (:class:`hitlseg.parallel.Executor`) the session streams instead:
superpixels and each round's descriptors are per-image tasks on the Dask workers
(:func:`hitlseg.parallel.pool_descriptors`), stored in zarr under ``store``; the client keeps only
the descriptors, the marked images and a few recently read ones, so a pool of any length fits.
The descriptors equal the in-memory session's up to float32 rounding (batched channels-last
convolutions there, one image per task here).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from hitlseg.errors import InputError
from hitlseg.flim.decoders import saliency_maps
from hitlseg.flim.fit import fit_encoder, resolve_device
from hitlseg.flim.spec import ArchSpec, default_arch
from hitlseg.progress import Progress, report
from hitlseg.selection.descriptors import (
    FILLS,
    MAPS,
    SuperpixelIndex,
    activation_function,
    map_kernels,
    pooled_descriptors,
    shape_batches,
    stack,
)
from hitlseg.selection.heatmap import activation_map, overlay, png_bytes, save_png
from hitlseg.selection.projection import Projection, check_method, preload, project
from hitlseg.selection.recommend import (
    DISTANCES,
    DUPLICATE_TOLERANCE,
    NearDuplicate,
    Recommendation,
    check_duplicate_tolerance,
    recommend,
)
from hitlseg.selection.selectors import SelectionContext, raw_features
from hitlseg.selection.stopping import StoppingMonitor, StoppingSignal
from hitlseg.selection.superpixels import DEFAULT_COMPACTNESS, SuperpixelStore, compute_superpixels

__all__ = ["RoundResult", "SelectionSession", "selection_arch", "torch_threads"]

#: Feature-grid points per descriptor chunk (bounds memory: points x maps x 4 bytes).
CHUNK_POINTS = 1 << 21
#: Pool images a streaming session keeps after reading them (heatmaps, masks of the next image).
RECENT_IMAGES = 8


def selection_arch() -> ArchSpec:
    """One FLIM layer for the selection loop: the first layer of :func:`default_arch` (3x3 kernels)
    with 4 kernels per marker stroke and at most 64 kernels.

    Kernel consolidation keeps every candidate until the cap, so each marked image adds filters and
    the descriptor grows round by round (on the 300 wbc1 images with the robot of
    ``benchmarks/selection.py``, seed 0: 8, 16, 28, 37 and 44 object maps over the first five
    rounds), while the cap keeps a round's cost bounded.
    """
    base = default_arch()
    layer = replace(base.layers[0], kernels_per_marker=4, out_channels=64)
    return ArchSpec((layer,), base.stdev_factor)


@contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` intra-op torch threads (None: unchanged), restoring the setting after.

    The small tensor operations of FLIM fitting slow down by an order of magnitude or more when
    two threads compete with other processes for two cores (fitting this layer on three wbc1 images:
    15 ms with one thread, 0.6 s with two, on a 2-core machine with both cores busy; measured with a
    short timing script, December 2026); one thread is the robust default.
    """
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class RoundResult:
    """What one round gives the person (or the robot).

    Attributes
    ----------
    round : int
        1 for the first marked image.
    image_id : str
        The image marked in this round.
    selected : list of str
        Images selected so far, in order.
    recommendation : Recommendation
        Closest and most distant unselected images (empty lists when none remains), and the
        near-duplicates of selected images left out of them (:attr:`near_duplicates`).
    projection : Projection
        2D layout of every pool image (rows in ``pool`` order).
    pool : list of str
        Ids in row order of ``projection.coords`` and ``descriptors``.
    stopping : StoppingSignal
    timings : dict str -> float
        Seconds spent in ``fit``, ``features`` (maps and descriptors), ``recommend``,
        ``projection``, ``stopping`` and ``total``.
    n_maps : int
        Feature maps in the descriptor.
    notes : list of str
        Fallbacks taken (e.g. no object kernel, perplexity reduced).
    """

    round: int
    image_id: str
    selected: list[str]
    recommendation: Recommendation
    projection: Projection
    pool: list[str]
    stopping: StoppingSignal
    timings: dict[str, float]
    n_maps: int
    notes: list[str] = field(default_factory=list)

    @property
    def near_duplicates(self) -> list[NearDuplicate]:
        """Unselected images left out of the recommendations as near-duplicates of selected ones."""
        return self.recommendation.near_duplicates

    @property
    def coords(self) -> dict[str, tuple[float, float]]:
        """Projection coordinates by image id."""
        return {i: (float(x), float(y)) for i, (x, y) in zip(self.pool, self.projection.coords)}

    def to_dict(self, coords: bool = True) -> dict:
        """JSON-ready dictionary (``coords=False`` leaves out the per-image layout)."""
        data = {
            "round": self.round,
            "image_id": self.image_id,
            "selected": list(self.selected),
            "recommendation": self.recommendation.to_dict(),
            "stopping": self.stopping.to_dict(),
            "timings": dict(self.timings),
            "n_maps": self.n_maps,
            "notes": list(self.notes),
            "projection": {"method": self.projection.method, "perplexity": self.projection.perplexity,
                           "note": self.projection.note},
        }
        if coords:
            data["projection"]["coords"] = {i: list(c) for i, c in self.coords.items()}
        return data


def _load_pool(pool, progress: Progress) -> tuple[dict[str, np.ndarray], object | None]:
    from hitlseg.dataset import Dataset

    if isinstance(pool, Dataset):
        ids = pool.ids
        images = {}
        for done, image_id in enumerate(ids):
            report(progress, done, len(ids), "loading images")
            images[image_id] = pool.image(image_id)[0]
        report(progress, len(ids), len(ids), "loading images")
        return images, pool
    if isinstance(pool, Mapping):
        images = {}
        for image_id, image in pool.items():
            if not isinstance(image_id, str):
                raise InputError(f"pool: image ids must be strings, got {image_id!r}")
            images[image_id] = image
        return images, None
    raise InputError(f"pool: expected a Dataset or a mapping id -> image, got {type(pool).__name__}")


def _check_pool(images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if len(images) < 2:
        raise InputError(f"pool: needs at least 2 images to choose from, got {len(images)}")
    checked = {}
    for image_id, image in images.items():
        array = np.asarray(image)
        if array.ndim not in (3, 4):
            raise InputError(f"pool image {image_id!r}: expected (C, H, W) or (C, D, H, W), got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
            raise InputError(f"pool image {image_id!r}: expected finite numbers")
        checked[image_id] = np.ascontiguousarray(array, dtype=np.float32)
    channels = {a.shape[0] for a in checked.values()}
    ndims = {a.ndim for a in checked.values()}
    if len(ndims) > 1:
        raise InputError("pool: mixes 2D and 3D images")
    if len(channels) > 1:
        raise InputError(f"pool: images have different numbers of channels {sorted(channels)}")
    return checked


class _StreamedImages(Mapping):
    """Pool images read on demand (a streaming session): the marked ones are kept, a few recent ones cached."""

    def __init__(self, source, keep: int = RECENT_IMAGES):
        self.source, self.keep = source, keep
        self.kept: dict[str, np.ndarray] = {}
        self._recent: dict[str, np.ndarray] = {}

    def __getitem__(self, image_id: str) -> np.ndarray:
        if image_id in self.kept:
            return self.kept[image_id]
        if image_id not in self._recent:
            if image_id not in self.source.ids_set:
                raise KeyError(image_id)
            if len(self._recent) >= self.keep:
                self._recent.pop(next(iter(self._recent)))
            self._recent[image_id] = np.ascontiguousarray(self.source.image(image_id), dtype=np.float32)
        return self._recent[image_id]

    def hold(self, image_id: str) -> None:
        """Keep ``image_id`` for the whole session (it is marked: every later fit reads it)."""
        self.kept[image_id] = self[image_id]

    def __iter__(self):
        return iter(self.source.ids)

    def __len__(self) -> int:
        return len(self.source.ids)


def _check_first(source, image: np.ndarray) -> None:
    """What a streaming session can check before any task: the first image's layout."""
    array = np.asarray(image)
    if array.ndim not in (3, 4):
        raise InputError(f"pool image {source.ids[0]!r}: expected (C, H, W) or (C, D, H, W), got shape {array.shape}")


class SelectionSession:
    """Ground-truth-free interactive image selection over a pool of images.

    Parameters
    ----------
    pool : Dataset, mapping id -> ndarray (C, *spatial), or (streaming only) hitlseg.parallel.PoolSource
        The unlabeled images (at least 2; one channel count; all 2D or all 3D).
    arch : ArchSpec, optional
        FLIM architecture whose first layer is fitted each round (default :func:`selection_arch`;
        only layer 0 is used).
    n_superpixels : int, optional
        SLIC superpixels per image (default 20 in 2D, 40 in 3D).
    compactness : float
        SLIC compactness.
    superpixel_cache : SuperpixelStore, optional
        Where superpixels are looked up and stored (e.g. :class:`SuperpixelCache` with a folder).
    seed : int
        Seed of FLIM fitting and of the projection.
    maps : {"object", "all", "saliency"}
        Maps in the descriptor: kernels learned from object markers (default), every kernel, or
        the adaptive decoder's saliency maps (``labels`` rule; ``weights`` when only one class of
        kernels exists).
    stride : int
        Activations are evaluated every ``stride`` pixels for the descriptors (see
        :mod:`hitlseg.selection.descriptors`); 1 is exact, 2 (default) four (2D) or eight (3D)
        times cheaper and chose the same images on wbc1.
    fill : {"zero", "edge", "quantile"}
        How profiles are brought to the pool's superpixel count (see :mod:`descriptors`; default
        ``"zero"``, the paper's descriptor, measured better than resampling on wbc1).
    distance : {"min", "last"}
        Distance to the selected set used by the recommendations.
    duplicate_tolerance : float
        Unselected images closer than this fraction of the pool's descriptor diameter to a
        selected image are near-duplicates: left out of the recommendations and reported in
        ``recommendation.near_duplicates``; also the default of ``gtfree`` queries on
        :meth:`context` (default :data:`~hitlseg.selection.recommend.DUPLICATE_TOLERANCE`, see
        :mod:`hitlseg.selection.recommend`; 0 turns the rule off).
    k : int
        Length of each recommendation list.
    projection : {"tsne", "pca", "umap"}
        2D map of the pool (:func:`~hitlseg.selection.projection.project`; "umap" needs the
        ``hitlseg[umap]`` extra).
    perplexity : float
        t-SNE perplexity (reduced for small pools, with a note).
    stop_threshold, stop_patience : float, int
        Stopping is suggested when the normalised coverage radius changes by less than
        ``stop_threshold`` (relative) for ``stop_patience`` consecutive rounds
        (:class:`StoppingMonitor`).
    device : str, optional
        Torch device (default: CUDA when present).
    threads : int or None
        Torch intra-op threads during a round (default 1, see :func:`torch_threads`; None leaves
        torch's setting alone).
    progress : callable, optional
        ``progress(done, total, message)`` while loading images and computing superpixels (and,
        streaming, counting each round's descriptor tasks).
    executor : hitlseg.parallel.Executor, optional
        With a distributed executor the session streams (see the module docstring): images are
        read where the tasks run (on the workers for a Dataset pool on a shared file system),
        ``superpixel_cache`` is not used (``store`` keeps the superpixels, and a rerun over the
        same ``store`` reuses them). An in-process executor changes nothing.
    store : path, optional
        Folder of the streaming session's zarr stores (required with a distributed executor).
    """

    def __init__(self, pool, *, arch: ArchSpec | None = None, n_superpixels: int | None = None,
                 compactness: float = DEFAULT_COMPACTNESS, superpixel_cache: SuperpixelStore | None = None,
                 seed: int = 0, maps: str = "object", stride: int = 2, fill: str = "zero", distance: str = "min",
                 duplicate_tolerance: float = DUPLICATE_TOLERANCE, k: int = 5, projection: str = "tsne", perplexity: float = 30.0, stop_threshold: float = 0.05,
                 stop_patience: int = 2, device=None, threads: int | None = 1, progress: Progress = None,
                 executor=None, store=None):
        if maps not in MAPS:
            raise InputError(f"maps: unknown choice {maps!r} (use one of {', '.join(MAPS)})")
        if fill not in FILLS:
            raise InputError(f"fill: unknown rule {fill!r} (use one of {', '.join(FILLS)})")
        if distance not in DISTANCES:
            raise InputError(f"distance: unknown mode {distance!r} (use one of {', '.join(DISTANCES)})")
        self.duplicate_tolerance = check_duplicate_tolerance(duplicate_tolerance)
        check_method(projection)
        for name, value in (("k", k), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"{name}: must be a positive integer, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InputError(f"seed: must be a non-negative integer, got {seed!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads: must be a positive integer or None, got {threads!r}")
        if isinstance(perplexity, bool) or not isinstance(perplexity, (int, float)) or not perplexity > 0:
            raise InputError(f"perplexity: must be a positive number, got {perplexity!r}")
        if arch is not None and not isinstance(arch, ArchSpec):
            raise InputError(f"arch: expected an ArchSpec, got {type(arch).__name__}")
        self.arch = ArchSpec((arch.layers[0],), arch.stdev_factor) if arch is not None else selection_arch()
        self.seed = int(seed)
        self.maps, self.fill, self.distance, self.k, self.stride = maps, fill, distance, int(k), int(stride)
        self.projection_method, self.perplexity = projection, float(perplexity)
        self.device = resolve_device(device)
        self.threads = threads
        self.monitor = StoppingMonitor(threshold=stop_threshold, patience=stop_patience)

        self.executor = executor if executor is not None and executor.distributed else None
        self.progress = progress
        self.n_superpixels, self.compactness = n_superpixels, compactness
        if self.executor is not None:
            self._open_stream(pool, store)
        else:
            images, self.dataset = _load_pool(pool, progress)
            self.images = _check_pool(images)
            self.ids: list[str] = list(self.images)
            self.ndim = next(iter(self.images.values())).ndim - 1
            self.superpixels = compute_superpixels(self.images, n_superpixels, compactness, superpixel_cache, progress)
            #: Values per map in every descriptor: the largest superpixel count in the pool.
            self.length = max(int(labels.max()) + 1 for labels in self.superpixels.values())
            self._chunks = self._build_chunks()
        self._rows = {image_id: row for row, image_id in enumerate(self.ids)}

        self.selected: list[str] = []
        self.markers: dict[str, np.ndarray] = {}
        self.encoder = None
        self.descriptors: np.ndarray | None = None
        self.rounds: list[RoundResult] = []
        self._raw: np.ndarray | None = None
        preload(projection)  # while the pool is being set up, not at the person's first round

    @property
    def streaming(self) -> bool:
        """Whether superpixels and descriptors are computed as tasks on a Dask cluster."""
        return self.executor is not None

    def _open_stream(self, pool, store) -> None:
        """The streaming session's pool: ids, one image read to check the layout, the superpixels pass."""
        from pathlib import Path

        from hitlseg.dataset import Dataset
        from hitlseg.parallel.pool import PoolSource, as_pool, pool_superpixels

        if store is None:
            raise InputError("store: a session on a Dask cluster keeps superpixels and descriptors in a folder; "
                             "pass store=PATH")
        if not isinstance(pool, (Dataset, Mapping, PoolSource)):
            raise InputError(f"pool: expected a Dataset, a mapping id -> image or a PoolSource, got {type(pool).__name__}")
        self.dataset = pool if isinstance(pool, Dataset) else None
        source = as_pool(pool)
        if len(source.ids) < 2:
            raise InputError(f"pool: needs at least 2 images to choose from, got {len(source.ids)}")
        source.ids_set = set(source.ids)
        self.ids = list(source.ids)
        self.images = _StreamedImages(source)
        first = self.images[self.ids[0]]
        _check_first(source, first)
        self.ndim, self.channels = first.ndim - 1, first.shape[0]
        self.store = Path(store)
        self._source = source
        stored = pool_superpixels(source, self.store, executor=self.executor, n_superpixels=self.n_superpixels,
                                  compactness=self.compactness, progress=self.progress)
        self.superpixels = stored.mapping("superpixels")
        self.length = max(int(self.superpixels[i].max()) + 1 for i in self.ids)
        self._chunks = []

    def _build_chunks(self) -> list[tuple[list[str], list[torch.Tensor], SuperpixelIndex]]:
        """Pool images stacked by shape (reflect-padded once for the layer's reach), grouped into
        chunks of about :data:`CHUNK_POINTS` grid points with a prebuilt superpixel index."""
        from hitlseg.flim import ops

        reach = self.arch.layers[0].reach
        chunks, ids, batches, sizes, points = [], [], [], [], 0

        def flush():
            grids = [self._grid(i) for i in ids]
            index = SuperpixelIndex.build([self.superpixels[i] for i in ids], grids, sizes, self.device)
            chunks.append((list(ids), list(batches), index))

        for batch_ids in shape_batches(self.images):
            spatial = self.images[batch_ids[0]].shape[1:]
            if min(spatial) <= reach:
                raise InputError(f"{', '.join(batch_ids[:3])}: an image of size {'x'.join(map(str, spatial))} is too "
                                 f"small for the FLIM filters (they reach {reach} pixels to each side)")
            batch = ops.reflect_pad(stack(self.images, batch_ids, self.device), reach)
            if batch.dim() == 4:  # oneDNN convolves few-channel 2D images faster channels-last (about 2x
                # for twelve 120x120 wbc1 images and 64 kernels, one thread; measured December 2026)
                batch = batch.contiguous(memory_format=torch.channels_last)
            batches.append(batch)
            ids.extend(batch_ids)
            sizes.append(len(batch_ids))
            points += len(batch_ids) * int(np.prod(self._grid(batch_ids[0])))
            if points >= CHUNK_POINTS:
                flush()
                ids, batches, sizes, points = [], [], [], 0
        if ids:
            flush()
        return chunks

    def _grid(self, image_id: str) -> tuple[int, ...]:
        return tuple(-(-n // self.stride) for n in self.images[image_id].shape[1:])

    # -- state ---------------------------------------------------------------------------------
    @property
    def unselected(self) -> list[str]:
        chosen = set(self.selected)
        return [i for i in self.ids if i not in chosen]

    def _check_id(self, image_id) -> str:
        if not isinstance(image_id, str) or image_id not in self._rows:
            shown = ", ".join(self.ids[:3]) + (" ..." if len(self.ids) > 3 else "")
            raise InputError(f"image_id: {image_id!r} is not in the pool ({len(self.ids)} images: {shown})")
        return image_id

    def _check_markers(self, image_id: str, markers) -> np.ndarray:
        if markers is None:
            raise InputError(f"markers for {image_id!r}: missing")
        m = np.asarray(markers)
        shape = self.images[image_id].shape[1:]
        if m.shape != shape:
            raise InputError(f"markers for {image_id!r}: shape {m.shape} differs from the image's {shape}")
        if m.dtype == bool or not np.issubdtype(m.dtype, np.integer):
            raise InputError(f"markers for {image_id!r}: expected integer labels (0 unmarked, c+1 for class c), got {m.dtype}")
        if m.min() < 0 or m.max() > 254:
            raise InputError(f"markers for {image_id!r}: values must be in 0..254, got {int(m.min())}..{int(m.max())}")
        if not m.any():
            raise InputError(f"markers for {image_id!r}: no marked pixel (draw at least one stroke)")
        return m.astype(np.uint8)

    # -- one round -------------------------------------------------------------------------------
    def step(self, image_id: str, markers) -> RoundResult:
        """Add (or replace) the markers of ``image_id`` and run one round.

        Returns
        -------
        RoundResult
            Recommendations among the unselected images, the 2D projection of the pool, the
            stopping signal and per-stage timings.
        """
        start = time.perf_counter()
        image_id = self._check_id(image_id)
        markers = self._check_markers(image_id, markers)
        with torch_threads(self.threads):
            return self._round(image_id, markers, start)

    def _round(self, image_id: str, markers: np.ndarray, start: float) -> RoundResult:
        notes: list[str] = []
        timings: dict[str, float] = {}

        tick = time.perf_counter()
        marked = self.selected + ([image_id] if image_id not in self.markers else [])
        new_markers = {**self.markers, image_id: markers}
        encoder = fit_encoder([self.images[i] for i in marked], [new_markers[i] for i in marked], self.arch,
                              seed=self.seed, device=self.device, names=marked)
        timings["fit"] = time.perf_counter() - tick
        # the state changes only once fitting has succeeded
        self.selected, self.markers, self.encoder = marked, new_markers, encoder
        if self.streaming:
            self.images.hold(image_id)

        tick = time.perf_counter()
        self.descriptors, n_maps, more = self._descriptors()
        notes += more
        timings["features"] = time.perf_counter() - tick

        tick = time.perf_counter()
        signal = self.monitor.update(self.descriptors, [self._rows[i] for i in self.selected])
        timings["stopping"] = time.perf_counter() - tick

        tick = time.perf_counter()
        if self.unselected:
            recommendation = recommend(self.descriptors, self.ids, self.selected, self.k, self.distance,
                                       self.duplicate_tolerance, diameter=signal.diameter)
        else:
            recommendation = Recommendation([], [], {}, self.distance, duplicate_tolerance=self.duplicate_tolerance)
            notes.append("every pool image is selected")
        timings["recommend"] = time.perf_counter() - tick

        tick = time.perf_counter()
        previous = self.rounds[-1].projection.coords if self.rounds else None
        layout = project(self.descriptors, self.projection_method, self.perplexity, self.seed, init=previous,
                         n_threads=self.threads)
        if layout.note:
            notes.append(layout.note)
        timings["projection"] = time.perf_counter() - tick
        timings["total"] = time.perf_counter() - start

        result = RoundResult(len(self.rounds) + 1, image_id, list(self.selected), recommendation, layout,
                             list(self.ids), signal, timings, n_maps, notes)
        self.rounds.append(result)
        return result

    def _saliency_rule(self) -> str:
        present = set(int(c) for c in torch.unique(self.encoder.layers[0].kernel_classes))
        return "labels" if 0 in present and len(present) > 1 else "weights"

    def _maps(self, batch: torch.Tensor, stride: int, padded: bool = False) -> torch.Tensor:
        """The descriptor's maps of a batch (N, M, *grid)."""
        return self._map_function(stride, padded)(batch)

    def _map_function(self, stride: int, padded: bool = False):
        """:meth:`_maps` of the current filters as a function of the batch, set up once."""
        layer = self.encoder.layers[0]
        if self.maps == "saliency":
            features = activation_function(layer, None, stride, padded)
            rule = self._saliency_rule()
            return lambda batch: torch.stack([saliency_maps(f, layer.kernel_classes, rule) for f in features(batch)])
        kernels, _ = map_kernels(self.encoder, self.maps)
        return activation_function(layer, kernels, stride, padded)

    def _descriptors(self) -> tuple[np.ndarray, int, list[str]]:
        _, as_asked = map_kernels(self.encoder, "object" if self.maps == "object" else "all")
        notes = [] if as_asked else ["no kernel came from object markers: the descriptor uses every kernel"]
        if self.maps == "saliency" and self._saliency_rule() == "weights":
            notes.append("saliency: kernels of only one class; the 'weights' decoder is used")
        if self.streaming:
            from hitlseg.parallel.pool import pool_descriptors

            stored = pool_descriptors(self._source, self.encoder, self.store, executor=self.executor,
                                      n_superpixels=self.n_superpixels, compactness=self.compactness, maps=self.maps,
                                      stride=self.stride, fill=self.fill, length=self.length)
            out = np.ascontiguousarray(stored.stacked("descriptor"), dtype=np.float32)
            return out, out.shape[1] // self.length, notes
        out = None
        maps = self._map_function(self.stride, padded=True)
        for ids, batches, index in self._chunks:
            values = pooled_descriptors(batches, index, maps, self.length, self.fill)
            if out is None:
                out = np.empty((len(self.ids), values.shape[1]), dtype=np.float32)
            out[[self._rows[i] for i in ids]] = values
        assert out is not None
        return out, out.shape[1] // self.length, notes

    # -- views -----------------------------------------------------------------------------------
    def context(self, masks: Mapping[str, np.ndarray] | None = None) -> SelectionContext:
        """The :class:`SelectionContext` of the current state (``masks`` only for ``labeled``)."""
        if self._raw is None and not self.streaming:  # streaming: kcenter reads the images when asked
            self._raw = raw_features([self.images[i] for i in self.ids])
        return SelectionContext(list(self.ids), list(self.selected), self.descriptors, self._raw, self.images,
                                masks, self.encoder, self.duplicate_tolerance,
                                self.rounds[-1].stopping.diameter if self.rounds else None)

    def activation(self, image_id: str) -> np.ndarray:
        """Filter attention of ``image_id`` at image resolution, in [0, 1]: the mean of the
        descriptor's maps at full resolution (stride 1), min-max normalised."""
        image_id = self._check_id(image_id)
        if self.encoder is None:
            raise InputError("heatmap: no filters yet; mark an image first")
        image = self.images[image_id]
        with torch_threads(self.threads):
            maps = self._maps(torch.as_tensor(image[None], device=self.device), 1)[0]
            return activation_map(maps, image.shape[1:])

    def heatmap_array(self, image_id: str, *, slice_index: int | None = None, axis: int = 0, alpha: float = 0.5,
                      cmap: str = "jet", color: str = "auto") -> np.ndarray:
        """The heatmap overlay of ``image_id`` as a uint8 (H, W, 3) array (3D: one slice)."""
        activation = self.activation(image_id)
        return overlay(self.images[image_id], activation, alpha, cmap, color, slice_index, axis)

    def heatmap(self, image_id: str, **options) -> bytes:
        """PNG bytes of :meth:`heatmap_array` (options: slice_index, axis, alpha, cmap, color)."""
        return png_bytes(self.heatmap_array(image_id, **options))

    def save_heatmap(self, image_id: str, path, **options):
        """Write the heatmap PNG of ``image_id`` to ``path`` (for reports); returns the path."""
        return save_png(path, self.heatmap_array(image_id, **options))
