"""Graph-cut segmentation (Boykov and Jolly): refinement of a prediction, and live segmentation from strokes.

Energy (a Potts model over the pixel grid)::

    E(L) = sum_p U_p(L_p) + smoothness * sum_{(p, q) in N} w_pq [L_p != L_q]
    w_pq = exp(-||I_p - I_q||^2 / (2 sigma^2)) / dist(p, q)

- **Unary terms** ``U_p(l)``: ``-log p_l`` of a model's probabilities (:func:`graphcut_refine`), or,
  for live segmentation from strokes without a network (:class:`LiveGraphCut`), ``-log`` of the
  posterior of a per-class Gaussian mixture fitted to the colours (or any per-pixel features,
  e.g. FLIM feature maps) of the marked pixels, with equal class priors. A GMM is what GrabCut
  (Rother et al. 2004) uses for the same job: it models a multimodal background (several
  tissues, debris) that a linear classifier cannot, it gives a likelihood rather than a hard
  vote (unlike k-NN), and fitting a few components to at most ``max_samples`` marked pixels per
  class and scoring every pixel takes a few tens of milliseconds for a 400x400 image.
- **Hard constraints**: marked pixels keep their class (the cost of any other label is raised
  by ``K = 1 + smoothness * max_p sum_q w_pq`` above their own, which no cut can pay; Boykov
  and Jolly 2001, section 2.3).
- **Pairwise terms**: contrast-sensitive Potts weights as above; ``sigma`` defaults to the
  root mean squared difference of axis neighbours (``2 sigma^2 = 2 <||I_p - I_q||^2>``, the
  GrabCut choice), so the weights mean the same whatever the image's scale or noise.
- **Neighbourhood**: ``connectivity`` as in :func:`scipy.ndimage.generate_binary_structure`:
  1 gives 4 neighbours in 2D and 6 in 3D; the default, the full neighbourhood (8 in 2D, 26 in
  3D), weighs diagonal edges by ``1 / sqrt(2)`` or ``1 / sqrt(3)`` and approximates Euclidean
  boundary length better (Boykov and Kolmogorov 2003), at twice (2D) or four times (3D) the edges.
- **Two labels**: one minimum cut, the exact minimiser (PyMaxflow, the Boykov-Kolmogorov
  algorithm). **More labels**: alpha-expansion (Boykov, Veksler and Zabih 2001): for each label
  alpha in turn, one minimum cut decides which pixels switch to alpha; the pairwise term of an
  expansion move is made graph-representable by the Kolmogorov-Zabih construction (Potts is a
  metric, so every move is submodular). Cycles over the labels repeat until none lowers the
  energy (or ``max_cycles``); the energy never increases and the result is within a factor 2
  of the optimum for Potts.

The grid edges are added per neighbour offset with ``add_grid_edges`` and weight arrays: no
Python loop over pixels.

References
----------
Y. Boykov and M.-P. Jolly, "Interactive graph cuts for optimal boundary & region segmentation
of objects in N-D images", ICCV 2001.
Y. Boykov, O. Veksler and R. Zabih, "Fast approximate energy minimization via graph cuts",
IEEE TPAMI 23(11), 2001.
V. Kolmogorov and R. Zabih, "What energy functions can be minimized via graph cuts?", IEEE TPAMI
26(2), 2004.
Y. Boykov and V. Kolmogorov, "Computing geodesics and minimal surfaces via graph cuts", ICCV 2003.
C. Rother, V. Kolmogorov and A. Blake, "GrabCut: interactive foreground extraction using
iterated graph cuts", SIGGRAPH 2004.
"""

from __future__ import annotations

import hashlib
import itertools
import warnings

import numpy as np
from scipy import ndimage

from hitlseg.errors import InputError
from hitlseg.refine._checks import (check_count, check_image, check_labels, check_markers, check_positive,
                                    check_probabilities)

__all__ = [
    "LiveGraphCut",
    "contrast_weights",
    "graphcut",
    "graphcut_refine",
    "live_graphcut",
    "neighbour_offsets",
    "potts_energy",
    "stroke_unary",
]

#: Smallest probability in ``-log p`` (unary terms are at most ``-log EPS``).
EPS = 1e-6


# ------------------------------------------------------------------------------ grid and weights


def neighbour_offsets(ndim: int, connectivity: int | None = None) -> list[tuple[int, ...]]:
    """Half of the neighbourhood: one offset per undirected edge direction.

    Parameters
    ----------
    ndim : int
        2 or 3.
    connectivity : int, optional
        Largest number of coordinates that differ by one (1: 4/6 neighbours; ``ndim``, the
        default: 8/26 neighbours; 2 in 3D: 18).

    Returns
    -------
    list of tuple of int
        Offsets whose first nonzero coordinate is positive (2, 4, 3, 9 or 13 of them).
    """
    if ndim not in (2, 3):
        raise InputError(f"ndim: expected 2 or 3, got {ndim}")
    connectivity = ndim if connectivity is None else connectivity
    if isinstance(connectivity, bool) or not isinstance(connectivity, (int, np.integer)) \
            or not 1 <= connectivity <= ndim:
        raise InputError(f"connectivity: expected an integer in 1..{ndim} for a {ndim}D image "
                         f"(1: {4 if ndim == 2 else 6} neighbours, {ndim}: {8 if ndim == 2 else 26}), "
                         f"got {connectivity!r}")
    offsets = []
    for o in itertools.product((-1, 0, 1), repeat=ndim):
        nonzero = [v for v in o if v]
        if nonzero and nonzero[0] > 0 and len(nonzero) <= connectivity:
            offsets.append(o)
    return offsets


def _slices(offset, shape):
    """Regions of ``p`` and ``q = p + offset`` where both lie in the grid."""
    p = tuple(slice(max(0, -d), n - max(0, d)) for d, n in zip(offset, shape))
    q = tuple(slice(max(0, d), n - max(0, -d)) for d, n in zip(offset, shape))
    return p, q


def _structure(offset) -> np.ndarray:
    st = np.zeros((3,) * len(offset))
    st[tuple(1 + d for d in offset)] = 1.0
    return st


def contrast_weights(image, connectivity: int | None = None, sigma: float | None = None
                     ) -> tuple[list[tuple[int, ...]], np.ndarray, float]:
    """Boykov-Jolly pairwise weights ``exp(-||I_p - I_q||^2 / (2 sigma^2)) / dist(p, q)``.

    Parameters
    ----------
    image : array, shape (C, H, W) or (C, D, H, W)
        The image (any channels; the squared distance sums over them).
    connectivity : int, optional
        See :func:`neighbour_offsets`.
    sigma : float, optional
        Contrast scale; default the root mean squared difference of axis neighbours.

    Returns
    -------
    offsets : list of tuple
        The edge directions.
    weights : numpy.ndarray of float64, shape (len(offsets), *spatial)
        ``weights[k][p]`` is the weight of the edge ``(p, p + offsets[k])``; 0 where
        ``p + offsets[k]`` is outside the grid.
    sigma : float
        The contrast scale used.
    """
    image = check_image(image)
    spatial = image.shape[1:]
    offsets = neighbour_offsets(len(spatial), connectivity)
    diffs = []
    for o in offsets:
        p, q = _slices(o, spatial)
        d = image[(slice(None),) + p].astype(np.float64) - image[(slice(None),) + q]
        diffs.append(np.einsum("c...,c...->...", d, d))
    if sigma is None:
        axis = [k for k, o in enumerate(offsets) if sum(map(abs, o)) == 1]
        total = sum(float(diffs[k].sum()) for k in axis)
        count = sum(diffs[k].size for k in axis)
        sigma = float(np.sqrt(total / count)) if count and total > 0 else 1.0
    else:
        sigma = check_positive(sigma, "sigma")
    weights = np.zeros((len(offsets),) + tuple(spatial))
    for k, (o, d2) in enumerate(zip(offsets, diffs)):
        p, _ = _slices(o, spatial)
        weights[k][p] = np.exp(-d2 / (2.0 * sigma * sigma)) / np.sqrt(sum(v * v for v in o))
    return offsets, weights, sigma


def potts_energy(labels, unary, offsets, weights, smoothness: float) -> float:
    """``sum_p U_p(L_p) + smoothness * sum_k sum_p weights[k][p] [L_p != L_{p + offsets[k]}]``.

    Parameters
    ----------
    labels : array of int, shape (*spatial)
    unary : array, shape (n_labels, *spatial)
    offsets, weights
        From :func:`contrast_weights`.
    smoothness : float
        Weight of the pairwise term.
    """
    labels = np.asarray(labels)
    spatial = labels.shape
    e = float(np.take_along_axis(np.asarray(unary, dtype=np.float64), labels[None].astype(np.intp), 0).sum())
    pair = 0.0
    for o, w in zip(offsets, weights):
        p, q = _slices(o, spatial)
        pair += float(w[p][labels[p] != labels[q]].sum())
    return e + smoothness * pair


# ------------------------------------------------------------------------------------- solvers


def _maxflow():
    try:
        import maxflow
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError("graph cut needs PyMaxflow: pip install PyMaxflow") from exc
    return maxflow


def _cut(cost0, cost1, edges, shape) -> np.ndarray:
    """Minimum cut of ``sum_p cost_{x_p}(p) + sum (edges)``; True where ``x_p = 1`` (the sink side).

    ``edges`` holds ``(offset, capacity, symmetric)``: an edge ``p -> p + offset`` of capacity
    ``capacity[p]``, cut (paid) when ``x_p = 0`` and ``x_{p+offset} = 1`` (both ways when symmetric).
    """
    maxflow = _maxflow()
    n = int(np.prod(shape))
    g = maxflow.Graph[float](n, n * len(edges) * 2)
    ids = g.add_grid_nodes(shape)
    for offset, capacity, symmetric in edges:
        g.add_grid_edges(ids, weights=capacity, structure=_structure(offset), symmetric=symmetric)
    net = cost1 - cost0  # only the difference matters; a node on the sink side pays its source capacity
    g.add_grid_tedges(ids, np.maximum(net, 0.0), np.maximum(-net, 0.0))
    g.maxflow()
    return g.get_grid_segments(ids)


def _hard_cost(weights, smoothness) -> float:
    """More than any pixel's pairwise terms can gain: ``1 + smoothness * 2 * sum_k max w_k``."""
    return 1.0 + smoothness * 2.0 * float(sum(float(w.max()) for w in weights))


def graphcut(unary, offsets, weights, smoothness: float = 1.0, markers=None, init=None, max_cycles: int = 5
             ) -> np.ndarray:
    """Minimise the Potts energy of :func:`potts_energy` by graph cut (alpha-expansion for 3+ labels).

    Parameters
    ----------
    unary : array, shape (n_labels, *spatial)
        ``unary[l][p]``: cost of label ``l`` at ``p`` (finite).
    offsets, weights
        Edge directions and weights (:func:`contrast_weights`).
    smoothness : float
        Weight of the pairwise term (>= 0).
    markers : array of int, shape (*spatial), optional
        Hard constraints: 0 free, ``l + 1`` forces label ``l``.
    init : array of int, optional
        Starting labeling of alpha-expansion (default: the unary minimum); marked pixels are
        set to their label.
    max_cycles : int
        Most cycles over the labels (alpha-expansion only).

    Returns
    -------
    numpy.ndarray of int64, shape (*spatial)
        Labels ``0..n_labels-1``; exact minimum for 2 labels, a local minimum w.r.t. expansion
        moves (within a factor 2 of the optimum) for more.
    """
    unary = np.asarray(unary, dtype=np.float64)
    if unary.ndim not in (3, 4) or unary.shape[0] < 2:
        raise InputError(f"unary: expected shape (n_labels >= 2, *spatial) in 2D or 3D, got {unary.shape}")
    if not np.isfinite(unary).all():
        raise InputError("unary: contains NaN or infinite values")
    n_labels, spatial = unary.shape[0], unary.shape[1:]
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(offsets),) + tuple(spatial):
        raise InputError(f"weights: expected shape {(len(offsets),) + tuple(spatial)}, got {weights.shape}")
    smoothness = check_positive(smoothness, "smoothness", allow_zero=True)
    max_cycles = check_count(max_cycles, "max_cycles")
    seeds = None if markers is None else check_markers(markers, spatial, n_labels)
    if seeds is not None and not seeds.any():
        seeds = None
    big = _hard_cost(weights, smoothness)
    fixed = seeds > 0 if seeds is not None else None

    if n_labels == 2:
        cost0, cost1 = unary[0].copy(), unary[1].copy()
        if fixed is not None:
            cost1[seeds == 1] = cost0[seeds == 1] + big
            cost0[seeds == 2] = cost1[seeds == 2] + big
        edges = [(o, smoothness * w, True) for o, w in zip(offsets, weights)]
        return _cut(cost0, cost1, edges, spatial).astype(np.int64)

    labels = np.argmin(unary, 0) if init is None else check_labels(init, spatial, n_labels, "init").copy()
    if fixed is not None:
        labels[fixed] = seeds[fixed] - 1
    energy = potts_energy(labels, unary, offsets, weights, smoothness)
    for _ in range(max_cycles):
        improved = False
        for alpha in range(n_labels):
            cost0 = np.take_along_axis(unary, labels[None], 0)[0]
            cost1 = unary[alpha].copy()
            if fixed is not None:
                locked = fixed & (seeds != alpha + 1)
                cost1[locked] = cost0[locked] + big
            edges = []
            for o, w in zip(offsets, weights):
                p, q = _slices(o, spatial)
                lp, lq, wpq = labels[p], labels[q], smoothness * w[p]
                a = wpq * (lp != lq)  # E(keep, keep); E(alpha, alpha) = 0
                b = wpq * (lp != alpha)  # E(keep, alpha)
                c = wpq * (lq != alpha)  # E(alpha, keep)
                cost1[p] += c - a
                cost1[q] -= c
                capacity = np.zeros(spatial)
                capacity[p] = np.maximum(b + c - a, 0.0)  # >= 0: Potts is a metric
                edges.append((o, capacity, False))
            switch = _cut(cost0, cost1, edges, spatial)
            if not switch.any():
                continue
            candidate = np.where(switch, alpha, labels)
            e = potts_energy(candidate, unary, offsets, weights, smoothness)
            if e < energy - 1e-9 * max(1.0, abs(energy)):
                labels, energy, improved = candidate, e, True
        if not improved:
            break
    return labels.astype(np.int64)


# ------------------------------------------------------------------------------- entry points


def graphcut_refine(image, probabilities, markers=None, *, smoothness: float = 1.0, connectivity: int | None = None,
                    sigma: float | None = None, eps: float = EPS, max_cycles: int = 5) -> np.ndarray:
    """Refine a soft prediction by graph cut: unary ``-log p``, contrast-sensitive Potts smoothing.

    Parameters
    ----------
    image : array, shape (C, *spatial)
        The image the pairwise weights come from.
    probabilities : array, shape (K+1, *spatial)
        A model's class probabilities (summing to one).
    markers : array of int, shape (*spatial), optional
        Hard constraints (0 unmarked, ``c + 1`` for class ``c``).
    smoothness : float
        Weight of the pairwise term against ``-log p``.
    connectivity, sigma
        See :func:`contrast_weights`.
    eps : float
        Probabilities are clipped to at least ``eps`` before the log.
    max_cycles : int
        Alpha-expansion cycles (3+ classes).

    Returns
    -------
    numpy.ndarray of int64, shape (*spatial)
        Labels 0..K.

    References
    ----------
    Boykov and Jolly, ICCV 2001; Boykov, Veksler and Zabih, TPAMI 2001 (see the module docstring).
    """
    image = check_image(image)
    p = check_probabilities(probabilities, image.shape[1:])
    eps = check_positive(eps, "eps")
    offsets, weights, _ = contrast_weights(image, connectivity, sigma)
    unary = -np.log(np.clip(p, eps, 1.0))
    return graphcut(unary, offsets, weights, smoothness, markers, np.argmax(p, 0), max_cycles)


def _present_labels(markers: np.ndarray) -> np.ndarray:
    values = np.flatnonzero(np.bincount(markers.ravel()))
    return values[values > 0] - 1


def stroke_unary(features: np.ndarray, markers: np.ndarray, *, n_labels: int | None = None, n_components: int = 3,
                 max_samples: int = 1000, eps: float = 1e-4, seed=0, cache: dict | None = None) -> np.ndarray:
    """Unary terms from strokes: ``-log`` posterior of per-class Gaussian mixtures (equal priors).

    Parameters
    ----------
    features : array, shape (F, *spatial)
        Per-pixel features (the image's channels, or feature maps such as FLIM's).
    markers : array of int, shape (*spatial)
        0 unmarked, ``c + 1`` for class ``c``; at least two classes marked.
    n_labels : int, optional
        Number of labels (default: the largest marked class + 1). A class without strokes gets
        the largest cost, ``-log eps``, everywhere.
    n_components : int
        Gaussian components per class (fewer when a class has few marked pixels: at most one per
        10 pixels; a class with a single marked pixel gets one Gaussian there with the
        covariance of the whole image). Full covariances up to 8 features, diagonal beyond.
    max_samples : int
        Marked pixels per class the mixture is fitted to (a seeded random subset).
    eps : float
        Posterior floor.
    seed : int
        For the subsets and the mixtures' initialisation (each class seeded by ``(seed, class)``,
        so that a class's mixture depends on its own strokes only).
    cache : dict, optional
        Per-class log-densities of earlier calls on the same ``features``, keyed by class and
        reused while the class's marked pixels are the same (live mode: a stroke changes one
        class, so only that one is refitted).

    Returns
    -------
    numpy.ndarray of float64, shape (n_labels, *spatial)
    """
    from sklearn.mixture import GaussianMixture

    features = check_image(features, "features")
    spatial = features.shape[1:]
    markers = check_markers(markers, spatial, n_labels)
    present = _present_labels(markers)
    if len(present) < 2:
        found = "no strokes" if len(present) == 0 else f"strokes of class {int(present[0])} only"
        raise InputError(f"markers: live graph cut needs strokes of at least two classes (e.g. background and "
                         f"an object), found {found}")
    n_labels = int(present.max()) + 1 if n_labels is None else n_labels
    n_components = check_count(n_components, "n_components")
    max_samples = check_count(max_samples, "max_samples", 2)
    seed = int(np.random.default_rng(seed).integers(2**31)) if isinstance(seed, np.random.Generator) else int(seed)
    x = features.reshape(features.shape[0], -1).T
    flat = markers.ravel()
    covariance = "full" if x.shape[1] <= 8 else "diag"
    x32 = x.astype(np.float32)
    loglik = np.full((n_labels, x.shape[0]), -np.inf)
    for label in present:
        marked = np.flatnonzero(flat == label + 1)
        key = (n_components, max_samples, seed, hashlib.blake2b(marked.tobytes(), digest_size=16).digest())
        if cache is not None and cache.get(int(label), (None,))[0] == key:
            loglik[label] = cache[int(label)][1]
            continue
        rng = np.random.default_rng([seed, int(label)])
        if len(marked) > max_samples:
            marked = marked[rng.choice(len(marked), max_samples, replace=False)]
        pts = x[marked].astype(np.float64)
        if len(pts) < 2:  # one marked pixel: a Gaussian at its value with the spread of the whole image
            loglik[label] = _broad_gaussian(x.astype(np.float64), pts[0])
        else:
            k = max(1, min(n_components, len(pts) // 10))
            gmm = GaussianMixture(k, covariance_type=covariance, reg_covar=1e-4, max_iter=30, tol=1e-3,
                                  random_state=int(rng.integers(2**31)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning of a short fit is harmless here
                gmm.fit(pts)
            loglik[label] = _mixture_log_density(gmm, x32)
        if cache is not None:
            cache[int(label)] = (key, loglik[label].copy())
    top = loglik.max(0)
    post = np.exp(loglik - top)
    post /= post.sum(0)
    return -np.log(np.clip(post, eps, 1.0)).reshape((n_labels,) + tuple(spatial))


def _mixture_log_density(gmm, x32: np.ndarray) -> np.ndarray:
    """``gmm.score_samples(x)`` in float32 from the fitted parameters.

    Written out because scikit-learn scores in float64 with per-call validation: 0.08 s per class
    for a 400x400 RGB image, half of a live stroke's budget; this takes a few milliseconds and
    agrees to ~1e-4 in log-density (float32 rounding), which does not move a cut.
    """
    logs = []
    for k in range(len(gmm.weights_)):
        mean = gmm.means_[k].astype(np.float32)
        if gmm.covariance_type == "full":
            chol = gmm.precisions_cholesky_[k].astype(np.float32)
            y = x32 @ chol - mean @ chol
            log_det = float(np.log(np.diag(gmm.precisions_cholesky_[k])).sum())
        else:  # diag: precisions_cholesky_ holds 1 / std per feature
            inv_std = gmm.precisions_cholesky_[k].astype(np.float32)
            y = (x32 - mean) * inv_std
            log_det = float(np.log(gmm.precisions_cholesky_[k]).sum())
        logs.append(np.log(gmm.weights_[k]) + log_det - 0.5 * (x32.shape[1] * np.log(2 * np.pi))
                    - 0.5 * np.einsum("ij,ij->i", y, y, dtype=np.float64))
    logs = np.stack(logs)
    top = logs.max(0)
    return top + np.log(np.exp(logs - top).sum(0))


def _broad_gaussian(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Log-density of a Gaussian at ``mean`` with the (regularised) covariance of all rows of ``x``."""
    from scipy.stats import multivariate_normal

    cov = np.atleast_2d(np.cov(x[:: max(1, len(x) // 10000)].T)) + 1e-4 * np.eye(x.shape[1])
    return multivariate_normal(mean, cov, allow_singular=True).logpdf(x)


def _keep_seeded(labels: np.ndarray, markers: np.ndarray) -> np.ndarray:
    """Objects (class >= 1) not connected to a stroke of their class become background."""
    out = labels.copy()
    structure = ndimage.generate_binary_structure(labels.ndim, labels.ndim)
    for label in np.unique(labels):
        if label == 0:
            continue
        components, n = ndimage.label(labels == label, structure)
        seeded = np.unique(components[markers == label + 1])
        keep = np.zeros(n + 1, bool)
        keep[seeded[seeded > 0]] = True
        out[(components > 0) & ~keep[components]] = 0
    return out


class LiveGraphCut:
    """Live segmentation of one image from strokes: a graph cut after every stroke, no network.

    The pairwise weights are computed once per image; each :meth:`segment` fits the per-class
    colour models to the current strokes (:func:`stroke_unary`) and solves one cut (two labels)
    or alpha-expansion (more).

    Parameters
    ----------
    image : array, shape (C, *spatial)
        The image (its channels are the default features and give the pairwise weights).
    features : array, shape (F, *spatial), optional
        Features for the unary model instead of the image's channels (e.g. FLIM feature maps
        upsampled to the image size).
    smoothness : float
        Weight of the pairwise term against the unary ``-log`` posteriors (at most ``-log 1e-4``).
    connectivity, sigma
        See :func:`contrast_weights`.
    keep : {"seeded", "all"}
        ``"seeded"``: an object region not connected to a stroke of its class becomes
        background (what a person marking each object expects: colour alike elsewhere is not
        taken); ``"all"``: the cut as it is.
    n_components, max_samples, seed
        See :func:`stroke_unary`.
    max_cycles : int
        Alpha-expansion cycles.

    Examples
    --------
    >>> live = LiveGraphCut(image)                # doctest: +SKIP
    >>> overlay = live.segment(markers)           # after each stroke
    """

    def __init__(self, image, *, features=None, smoothness: float = 2.0, connectivity: int | None = None,
                 sigma: float | None = None, keep: str = "seeded", n_components: int = 3, max_samples: int = 1000,
                 seed=0, max_cycles: int = 3):
        self.image = check_image(image)
        self.spatial = tuple(self.image.shape[1:])
        if features is None:
            self.features = self.image
        else:
            self.features = check_image(features, "features")
            if tuple(self.features.shape[1:]) != self.spatial:
                raise InputError(f"features: spatial shape {tuple(self.features.shape[1:])} does not match the "
                                 f"image's {self.spatial}")
        if keep not in ("seeded", "all"):
            raise InputError(f"keep: expected 'seeded' or 'all', got {keep!r}")
        self.smoothness = check_positive(smoothness, "smoothness", allow_zero=True)
        self.keep = keep
        self.n_components = check_count(n_components, "n_components")
        self.max_samples = check_count(max_samples, "max_samples", 2)
        self.seed = seed
        self.max_cycles = check_count(max_cycles, "max_cycles")
        self.offsets, self.weights, self.sigma = contrast_weights(self.image, connectivity, sigma)
        self._densities: dict = {}  # per-class colour log-densities, refitted only when the class's strokes change

    def unary(self, markers, n_labels: int | None = None) -> np.ndarray:
        """Unary terms ``(n_labels, *spatial)`` from the current strokes (:func:`stroke_unary`)."""
        return stroke_unary(self.features, markers, n_labels=n_labels, n_components=self.n_components,
                            max_samples=self.max_samples, seed=self.seed, cache=self._densities)

    def segment(self, markers, n_labels: int | None = None) -> np.ndarray:
        """Labels ``(*spatial)`` for the current strokes; marked pixels keep their class.

        Parameters
        ----------
        markers : array of int, shape (*spatial)
            0 unmarked, ``c + 1`` for class ``c``; strokes of at least two classes.
        n_labels : int, optional
            Number of classes including background (default: the largest marked class + 1).
        """
        markers = check_markers(markers, self.spatial, n_labels)
        unary = self.unary(markers, n_labels)
        labels = graphcut(unary, self.offsets, self.weights, self.smoothness, markers, None, self.max_cycles)
        if self.keep == "seeded":
            labels = _keep_seeded(labels, markers)
        return labels


def live_graphcut(image, markers, **options) -> np.ndarray:
    """One live graph cut from strokes: ``LiveGraphCut(image, **options).segment(markers)``."""
    n_labels = options.pop("n_labels", None)
    return LiveGraphCut(image, **options).segment(markers, n_labels)
