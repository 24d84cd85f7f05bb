"""2D projection of the pool's descriptors: t-SNE (openTSNE), UMAP (umap-learn) or PCA.

t-SNE through openTSNE (Policar et al., J Stat Softw 2024), with perplexity-based affinities on
the exact ``3 * perplexity`` nearest neighbours (found by faiss, as openTSNE's ``method="exact"``
would), Barnes-Hut gradients below 5,000 images (FFT-interpolated ones beyond), a fixed
``random_state`` and one thread unless asked.

* A fresh layout starts from PCA: 250 iterations of early exaggeration (12), then 250 more; up to
  1,000 images 40 and 80. On the 300 wbc1 images (descriptors of the robot's first five rounds,
  t-SNE seeds 0-2: 15 layouts) 500, 300 and 200 iterations (half of them exaggerated) gave mean KL
  divergence 0.411, 0.413 and 0.415 and mean trustworthiness (10 neighbours) 0.9836, 0.9837 and
  0.9841 in 0.52, 0.31 and 0.21 s (one thread, the other core busy). From PCA the clusters form
  early, so a short exaggeration suffices: 40 + 80 iterations gave KL 0.422 and trustworthiness
  0.9838 in 0.12 s, against 0.418 and 0.9837 in 0.22 s for 100 + 100 (same 15 layouts; idle
  machine, one thread); on 600 and 1,000 synthetic points (20 clusters in 96 dimensions, 6 layouts
  each) 0.9942 / 0.9920 against 0.9945 / 0.9921, KL 0.098 / 0.398 against 0.088 / 0.384, in 0.31 /
  0.63 s against 0.55 / 0.87 s (December 2026). Shorter exaggeration (30) or a learning rate
  above openTSNE's ``auto`` lost trustworthiness.
* A warm start from the previous round's layout (``init``) keeps that layout and runs 50
  iterations without exaggeration: the layout is already organised, so it only needs refining,
  and points move little between rounds (the person keeps their bearings). openTSNE is used for
  this reason: scikit-learn's t-SNE runs at least 250 iterations. On the bundled wbc1 pool (300
  images, round 2) the warm layout's KL divergence was 0.458 after 50 openTSNE iterations, 0.457
  after scikit-learn's 300 and 0.470 for a fresh 500-iteration layout; it took 0.18 s against
  0.56 s (2 cores under load, December 2026).

The perplexity must be below the number of points; it is reduced to ``(n - 1) / 3`` when the
request is too large for the pool, and :attr:`Projection.note` says so. Fewer than three points get a
trivial layout (a point at the origin, or two points on the x axis at their true distance).

UMAP (McInnes, Healy & Melville 2018, "UMAP: Uniform Manifold Approximation and Projection for
Dimension Reduction", arXiv:1802.03426) through umap-learn, ``method="umap"``: the fuzzy graph of the
exact ``min(15, n - 1)`` nearest neighbours (each point among them; found by faiss, as for t-SNE
beyond 1,000 images), a fixed ``random_state`` (umap-learn then optimises on one thread) and
:attr:`Projection.note` recording what ran.

* A fresh layout starts from UMAP's spectral initialisation (from PCA below four images, where the
  spectral one cannot be computed) and runs umap-learn's default epochs (500 up to 10,000 images,
  200 beyond).
* A warm start passes the previous layout as ``init``, rescaled to ``[0, 10]`` per axis (umap-learn
  rescales every initial layout so), and runs 50 epochs at learning rate 0.25 instead of 1. The
  result is then shifted and scaled per axis to the previous layout's mean and standard deviation,
  so points that did not move stay where the person saw them. On wbc1 (300 images, rounds 2-4 of
  the robot's loop) the warm layouts took 0.04-0.05 s against 0.30 s fresh, with trustworthiness
  (10 neighbours) 0.971-0.974 against 0.978-0.980 fresh, and moved by 0.08-0.24 of the previous
  layout's RMS spread (a fresh layout: 0.45-2.0); at learning rate 1 the trustworthiness was
  0.959-0.969 and points moved by 0.16-0.32. t-SNE's warm start keeps more (0.975-0.984, moves of
  0.02-0.18). A 10,000-image warm round took 1.4 s (t-SNE 2.5 s; idle 2 cores, December 2026).
* The first UMAP call of a process compiles umap-learn's numba kernels: about 6 s (``import
  umap`` about 1 s more; the very first import after installing, which fills numba's cache of
  pynndescent, about 20 s).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sklearn.decomposition import PCA
from threadpoolctl import ThreadpoolController

from hitlseg.defaults import PROJECTIONS
from hitlseg.errors import InputError

METHODS = PROJECTIONS
TSNE_ITERATIONS = 500
SMALL_POOL = 1000  # images: a fresh layout of at most this many runs SMALL_POOL_ITERATIONS
SMALL_POOL_ITERATIONS = 120
SMALL_POOL_EXAGGERATION = 40  # of SMALL_POOL_ITERATIONS (module notes)
EXAGGERATION_ITERATIONS = 250
WARM_ITERATIONS = 50
BARNES_HUT = 5000  # images; FFT-interpolated gradients beyond
UMAP_NEIGHBOURS = 15  # umap-learn's default n_neighbors (each point counted among its neighbours)
UMAP_WARM_EPOCHS = 50
UMAP_WARM_LEARNING_RATE = 0.25
_CONTROLLER = []  # one threadpoolctl controller (see _thread_limit)

__all__ = ["METHODS", "Projection", "check_method", "preload", "project"]


@dataclass
class Projection:
    """2D coordinates of every descriptor row, and how they were obtained.

    Attributes
    ----------
    coords : ndarray (n, 2), float64
    method : str
        ``"tsne"``, ``"umap"``, ``"pca"`` or ``"trivial"``.
    perplexity : float or None
        Perplexity used by t-SNE.
    note : str or None
        Why the request was changed (perplexity reduced, trivial layout), for the interface; for
        UMAP, what ran (neighbours, epochs, initial layout).
    """

    coords: np.ndarray
    method: str
    perplexity: float | None = None
    note: str | None = None

    def to_dict(self, ids=None) -> dict:
        """JSON-ready dictionary; with ``ids``, coordinates keyed by image id."""
        coords = self.coords.tolist() if ids is None else {i: list(map(float, c)) for i, c in zip(ids, self.coords)}
        return {"method": self.method, "perplexity": self.perplexity, "note": self.note, "coords": coords}


def check_method(method) -> str:
    """``method`` when it is one of :data:`METHODS` whose library is installed, else an InputError.

    UMAP's umap-learn is the optional extra ``hitlseg[umap]`` (in ``dev``, so ``make test`` has it);
    its absence is found without importing it.
    """
    if method not in METHODS:
        raise InputError(f"projection: unknown method {method!r} (use one of {', '.join(METHODS)})")
    if method == "umap":
        import importlib.util

        if importlib.util.find_spec("umap") is None:
            raise InputError("projection: 'umap' needs the umap-learn package, which is not installed "
                             "(pip install 'hitlseg[umap]', or use tsne or pca)")
    return method


def preload(method: str, compile: bool = False) -> None:
    """Import the libraries of ``method`` now (openTSNE and faiss for t-SNE: 0.1-0.2 s; umap-learn
    about 1 s), so that a session's first round does not wait for them.

    With ``compile``, UMAP also lays out a few random points, so that umap-learn's numba
    compilation (about 6 s, once per process) happens now too: the web app does this while it
    prepares the selection loop in the background.
    """
    if check_method(method) == "tsne":
        import faiss  # noqa: F401
        import openTSNE  # noqa: F401
    elif method == "umap":
        import umap  # noqa: F401

        if compile:
            project(np.random.default_rng(0).normal(size=(12, 2)), "umap", max_iter=2)
    if method != "pca" and not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())


def _thread_limit(threads: int):
    """``threadpool_limits(threads)`` through one cached controller, made after openTSNE, faiss and
    umap are imported: ``threadpool_limits`` rescans every loaded library at each call (4.5 ms, 23 ms
    the first time with torch loaded), the cached controller takes 0.1 ms."""
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=threads)


def _check(descriptors) -> np.ndarray:
    x = np.asarray(descriptors, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"descriptors: expected a 2D array (n_images, n_features), got shape {x.shape}")
    if len(x) == 0:
        raise InputError("descriptors: no image to project")
    if not np.all(np.isfinite(x)):
        raise InputError("descriptors: contain NaN or infinite values")
    return x


def _pca(x: np.ndarray, seed: int) -> np.ndarray:
    n_components = min(2, x.shape[0], x.shape[1])
    coords = PCA(n_components=n_components, svd_solver="full", random_state=seed).fit_transform(x)
    if n_components < 2:
        coords = np.column_stack([coords, np.zeros((len(x), 2 - n_components))])
    # PCA's signs are arbitrary; fix them so the largest |value| of each axis is positive
    signs = np.sign(coords[np.abs(coords).argmax(0), np.arange(2)])
    return coords * np.where(signs == 0, 1.0, signs)


def project(descriptors, method: str = "tsne", perplexity: float = 30.0, seed: int = 0, init=None,
            max_iter: int | None = None, n_threads: int | None = 1) -> Projection:
    """Project descriptors to 2D.

    Parameters
    ----------
    descriptors : ndarray (n, d)
    method : {"tsne", "pca", "umap"}
    perplexity : float
        Requested t-SNE perplexity (reduced to ``(n - 1) / 3`` when too large, with a note).
    seed : int
        ``random_state`` of t-SNE, UMAP and PCA: the same input and seed give the same layout.
    init : ndarray (n, 2), optional
        Previous layout to start t-SNE (no early exaggeration) or UMAP (fewer epochs, result in
        the previous layout's frame) from; ignored when its shape does not match or it is
        degenerate.
    max_iter : int, optional
        t-SNE iterations; default 500 from PCA, the first 250 exaggerated (up to 1,000 images 120,
        the first 40; with ``max_iter`` the first half, at most 250), 50 from a warm start. UMAP epochs; default umap-learn's (500 up to 10,000 images, 200
        beyond), 50 from a warm start.
    n_threads : int or None
        Threads for t-SNE, the nearest neighbours and the BLAS pool (None: one). UMAP's
        optimisation runs on one thread (umap-learn's rule for a seeded layout).

    Returns
    -------
    Projection
    """
    check_method(method)
    if isinstance(perplexity, bool) or not isinstance(perplexity, (int, float, np.number)) or not perplexity > 0:
        raise InputError(f"perplexity: must be a positive number, got {perplexity!r}")
    if max_iter is not None and (isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 2):
        raise InputError(f"max_iter: t-SNE and UMAP need at least 2 iterations, got {max_iter!r}")
    x = _check(descriptors)
    n = len(x)
    if n < 3:
        coords = np.zeros((n, 2))
        if n == 2:
            half = float(np.linalg.norm(x[1] - x[0])) / 2
            coords[:, 0] = [-half, half]
        return Projection(coords, "trivial", None, f"{n} image(s): too few for a {method} projection, trivial layout")
    if np.ptp(x, axis=0).max() == 0:
        return Projection(np.zeros((n, 2)), "trivial", None, "all descriptors are equal: every image at the origin")
    if method == "pca":
        return Projection(_pca(x, seed), "pca")
    warm = _warm_layout(init, n)
    threads = 1 if n_threads is None else int(n_threads)
    if method == "umap":
        import umap  # noqa: F401  (loaded before the controller is made)

        with _thread_limit(threads):
            coords, note = _umap(x, int(seed), warm, max_iter, threads)
        return Projection(coords, "umap", None, note)

    note = None
    used = float(perplexity)
    limit = (n - 1) / 3.0
    if used > limit:
        used = limit
        note = f"perplexity {perplexity:g} is too large for {n} images; reduced to {used:.3g}"
    if warm is not None:
        warm = warm - warm.mean(0)
    preload("tsne")  # loaded before the controller is made
    with _thread_limit(threads):
        coords = _tsne(x, used, int(seed), warm, max_iter, threads)
    return Projection(coords, "tsne", used, note)


def _warm_layout(init, n: int) -> np.ndarray | None:
    """``init`` as a float64 (n, 2) layout, or None when absent, misshapen or degenerate."""
    if init is None:
        return None
    init = np.asarray(init, dtype=np.float64)
    if init.shape == (n, 2) and np.all(np.isfinite(init)) and np.std(init, axis=0).min() > 0:
        return init
    return None


def _umap(x: np.ndarray, seed: int, warm: np.ndarray | None, max_iter: int | None,
          threads: int) -> tuple[np.ndarray, str]:
    """UMAP layout of ``x`` (module notes) and the note saying what ran."""
    import warnings

    import umap

    # the exact neighbours come without umap-learn's search index, which only transform() needs; a
    # filter set once for this one message (catch_warnings would swap the process-wide filters
    # under the web app's other threads)
    warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]", category=UserWarning)

    n = len(x)
    k = min(UMAP_NEIGHBOURS, n - 1)
    neighbours, distances = _exact_neighbours(x, k - 1, threads)
    # umap-learn counts each point among its own neighbours, first, at distance 0
    neighbours = np.column_stack([np.arange(n), neighbours]).astype(np.int64)
    distances = np.column_stack([np.zeros(n), distances]).astype(np.float32)
    options = {"n_neighbors": k, "random_state": seed, "n_jobs": 1, "precomputed_knn": (neighbours, distances, None)}
    if warm is not None:
        low, high = warm.min(0), warm.max(0)
        options.update(init=(10.0 * (warm - low) / (high - low)).astype(np.float32), learning_rate=UMAP_WARM_LEARNING_RATE,
                       n_epochs=int(max_iter or UMAP_WARM_EPOCHS))
        start = f"{options['n_epochs']} epochs at learning rate {UMAP_WARM_LEARNING_RATE:g} from the previous layout"
    else:
        options.update(init="spectral" if n >= 4 else "pca", n_epochs=None if max_iter is None else int(max_iter))
        epochs = options["n_epochs"] or (500 if n <= 10000 else 200)  # umap-learn's default
        start = f"{epochs} epochs from a {'spectral' if n >= 4 else 'PCA'} layout"
    coords = np.asarray(umap.UMAP(**options).fit_transform(x), dtype=np.float64)
    if warm is not None:  # back to the previous layout's frame: same mean and spread per axis
        spread = coords.std(0)
        coords = (coords - coords.mean(0)) / np.where(spread > 0, spread, 1.0) * warm.std(0) + warm.mean(0)
    asked = "" if k == UMAP_NEIGHBOURS else f" (of {UMAP_NEIGHBOURS}: {n} images)"
    return coords, f"UMAP: {k} neighbours{asked}, {start}"


def _tsne(x: np.ndarray, perplexity: float, seed: int, warm: np.ndarray | None, max_iter: int | None,
          threads: int) -> np.ndarray:
    import openTSNE

    n = len(x)
    # The neighbours are always given: openTSNE's own choice of a neighbour method imports
    # pynndescent (and numba, 1.2 s) whenever it is installed, as umap-learn installs it, even for
    # method="exact" (openTSNE 1.0, affinity.get_knn_index); faiss finds the same exact neighbours.
    affinities = openTSNE.affinity.PerplexityBasedNN(
        perplexity=perplexity, knn_index=_nearest_neighbours(x, min(n - 1, int(3 * perplexity)), threads),
        n_jobs=threads, random_state=seed, verbose=False)
    options = {"negative_gradient_method": "bh" if n < BARNES_HUT else "fft", "n_jobs": threads,
               "random_state": seed, "verbose": False}
    if warm is not None:
        embedding = openTSNE.TSNEEmbedding(warm, affinities, **options)
        return np.asarray(embedding.optimize(n_iter=int(max_iter or WARM_ITERATIONS)), dtype=np.float64)
    if max_iter is None and n <= SMALL_POOL:
        total, early = SMALL_POOL_ITERATIONS, SMALL_POOL_EXAGGERATION
    else:
        total = int(max_iter or TSNE_ITERATIONS)
        early = min(EXAGGERATION_ITERATIONS, total // 2)
    start = openTSNE.initialization.pca(x, random_state=seed, verbose=False)
    embedding = openTSNE.TSNEEmbedding(start, affinities, **options)
    embedding = embedding.optimize(n_iter=early, exaggeration=12.0)
    return np.asarray(embedding.optimize(n_iter=total - early), dtype=np.float64)


def _nearest_neighbours(x: np.ndarray, k: int, threads: int):
    """The exact ``k`` nearest neighbours of every row (itself left out), as openTSNE's precomputed index.

    faiss's brute-force search rather than openTSNE's Annoy forest: on 10,000 synthetic 96-dimensional
    descriptors (one thread) it takes 1.1 s against Annoy's 4.1-4.8 s, and it is exact (the affinities
    differ from Annoy's by 4.5e-5 of their mass), so a 10,000-image round fits its 5 s budget.
    """
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    return PrecomputedNeighbors(*_exact_neighbours(x, k, threads))


def _exact_neighbours(x: np.ndarray, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and distances (n, k) of the exact ``k`` nearest neighbours of every row, itself left out (faiss)."""
    import faiss

    faiss.omp_set_num_threads(max(1, threads))
    data = np.ascontiguousarray(x, dtype=np.float32)
    index = faiss.IndexFlatL2(data.shape[1])
    index.add(data)
    squared, neighbours = index.search(data, k + 1)
    # drop each row itself (duplicates may come first, so find it), else the farthest of the k + 1
    itself = neighbours == np.arange(len(data))[:, None]
    order = np.argsort(itself, axis=1, kind="stable")[:, :k]
    neighbours = np.take_along_axis(neighbours, order, 1)
    distances = np.sqrt(np.maximum(np.take_along_axis(squared, order, 1), 0)).astype(np.float64)
    return neighbours, distances
