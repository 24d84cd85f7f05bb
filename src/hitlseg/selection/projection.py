"""2D projection of the pool's descriptors: t-SNE (openTSNE) or PCA.

t-SNE through openTSNE (Policar et al., J Stat Softw 2024), with exact perplexity-based
affinities up to 1,000 images (beyond, on the exact ``3 * perplexity`` nearest neighbours found by
faiss), Barnes-Hut gradients below 5,000 images (FFT-interpolated ones beyond), a fixed
``random_state`` and one thread unless asked.

* A fresh layout starts from PCA: 250 iterations of early exaggeration (12), then 250 more.
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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from hitlseg.errors import InputError

METHODS = ("tsne", "pca")
TSNE_ITERATIONS = 500
EXAGGERATION_ITERATIONS = 250
WARM_ITERATIONS = 50
EXACT_AFFINITIES = 1000  # images; approximate nearest neighbours beyond
BARNES_HUT = 5000  # images; FFT-interpolated gradients beyond

__all__ = ["METHODS", "Projection", "project"]


@dataclass
class Projection:
    """2D coordinates of every descriptor row, and how they were obtained.

    Attributes
    ----------
    coords : ndarray (n, 2), float64
    method : str
        ``"tsne"``, ``"pca"`` or ``"trivial"``.
    perplexity : float or None
        Perplexity used by t-SNE.
    note : str or None
        Why the request was changed (perplexity reduced, trivial layout), for the interface.
    """

    coords: np.ndarray
    method: str
    perplexity: float | None = None
    note: str | None = None

    def to_dict(self, ids=None) -> dict:
        """JSON-ready dictionary; with ``ids``, coordinates keyed by image id."""
        coords = self.coords.tolist() if ids is None else {i: list(map(float, c)) for i, c in zip(ids, self.coords)}
        return {"method": self.method, "perplexity": self.perplexity, "note": self.note, "coords": coords}


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
    method : {"tsne", "pca"}
    perplexity : float
        Requested t-SNE perplexity (reduced to ``(n - 1) / 3`` when too large, with a note).
    seed : int
        ``random_state`` of t-SNE and PCA: the same input and seed give the same layout.
    init : ndarray (n, 2), optional
        Previous layout to start t-SNE from (warm start, no early exaggeration); ignored when its
        shape does not match or it is degenerate.
    max_iter : int, optional
        t-SNE iterations; default 500 from PCA (the first half, at most 250, exaggerated), 50
        from a warm start.
    n_threads : int or None
        Threads for t-SNE and the BLAS pool (None: one).

    Returns
    -------
    Projection
    """
    if method not in METHODS:
        raise InputError(f"projection: unknown method {method!r} (use one of {', '.join(METHODS)})")
    if isinstance(perplexity, bool) or not isinstance(perplexity, (int, float, np.number)) or not perplexity > 0:
        raise InputError(f"perplexity: must be a positive number, got {perplexity!r}")
    if max_iter is not None and (isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 2):
        raise InputError(f"max_iter: t-SNE needs at least 2 iterations, got {max_iter!r}")
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

    note = None
    used = float(perplexity)
    limit = (n - 1) / 3.0
    if used > limit:
        used = limit
        note = f"perplexity {perplexity:g} is too large for {n} images; reduced to {used:.3g}"
    warm = None
    if init is not None:
        init = np.asarray(init, dtype=np.float64)
        if init.shape == (n, 2) and np.all(np.isfinite(init)) and np.std(init, axis=0).min() > 0:
            warm = init - init.mean(0)
    threads = 1 if n_threads is None else int(n_threads)
    with threadpool_limits(limits=threads):
        coords = _tsne(x, used, int(seed), warm, max_iter, threads)
    return Projection(coords, "tsne", used, note)


def _tsne(x: np.ndarray, perplexity: float, seed: int, warm: np.ndarray | None, max_iter: int | None,
          threads: int) -> np.ndarray:
    import openTSNE

    n = len(x)
    if n <= EXACT_AFFINITIES:
        affinities = openTSNE.affinity.PerplexityBasedNN(x, perplexity=perplexity, method="exact", n_jobs=threads,
                                                         random_state=seed, verbose=False)
    else:
        affinities = openTSNE.affinity.PerplexityBasedNN(
            perplexity=perplexity, knn_index=_nearest_neighbours(x, min(n - 1, int(3 * perplexity)), threads),
            n_jobs=threads, random_state=seed, verbose=False)
    options = {"negative_gradient_method": "bh" if n < BARNES_HUT else "fft", "n_jobs": threads,
               "random_state": seed, "verbose": False}
    if warm is not None:
        embedding = openTSNE.TSNEEmbedding(warm, affinities, **options)
        return np.asarray(embedding.optimize(n_iter=int(max_iter or WARM_ITERATIONS)), dtype=np.float64)
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
    import faiss
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

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
    return PrecomputedNeighbors(neighbours, distances)
