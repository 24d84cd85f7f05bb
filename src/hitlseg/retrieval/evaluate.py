"""Retrieval quality and cost: mAP@k, NDCG@k, precision-recall, query time and index memory.

Relevance
    ``relevance[q, x]`` is the number of label tokens query ``q`` and database image ``x`` share
    (:mod:`hitlseg.retrieval.labels`: ``Y_q . Y_x`` of the multi-hot matrices), the multi-level
    similarity of order-sensitive hashing (Chen et al., MICCAI 2018). On wbc1 the tokens are each
    class present with its area level (``"1@2"``: cytoplasm of middle size), so
    ``relevance`` is 0, 1 or 2; on GlaS they are the image-level grade (0 or 1).
    A retrieved image is *relevant* (for mAP and precision-recall) when ``relevance >= 1``
    (``min_relevance``); NDCG uses the levels themselves.

mAP@k
    ``AP@k(q) = sum_{i<=k} P(i) rel_i / sum_{i<=k} rel_i`` with ``rel_i`` the 0/1 relevance of the
    ``i``-th retrieved image and ``P(i)`` the precision of the first ``i`` (the normalisation of
    the hashing literature, e.g. HashNet); 0 when none of the first ``k`` is relevant. mAP@k is
    the mean over queries.

NDCG@k
    ``DCG@k = sum_{i<=k} (2^{r_i} - 1) / log2(i + 1)`` with ``r_i`` the relevance level of the
    ``i``-th image, divided by the DCG of the best order of the whole database (1 when the
    database has nothing relevant to the query).
"""

from __future__ import annotations

import time

import numpy as np

from hitlseg.errors import InputError
from hitlseg.retrieval.index import check_k

__all__ = ["average_precision_at_k", "evaluate_rankings", "mean_average_precision", "ndcg_at_k",
           "precision_recall", "ranking_of", "relevance_matrix", "time_queries"]


def relevance_matrix(query_labels, database_labels) -> np.ndarray:
    """Shared tokens ``(n_queries, n_database)`` of two multi-hot matrices."""
    q, d = np.asarray(query_labels, dtype=np.float32), np.asarray(database_labels, dtype=np.float32)
    if q.ndim != 2 or d.ndim != 2 or q.shape[1] != d.shape[1]:
        raise InputError(f"labels: query and database matrices must share their columns, got {q.shape} and {d.shape}")
    return np.rint(q @ d.T).astype(np.int64)


def average_precision_at_k(relevant: np.ndarray, k: int) -> float:
    """AP@k of one ranked 0/1 relevance list (module docstring)."""
    k = check_k(k)
    rel = (np.asarray(relevant)[:k] > 0).astype(np.float64)
    if rel.sum() == 0:
        return 0.0
    precision = np.cumsum(rel) / np.arange(1, len(rel) + 1)
    return float((precision * rel).sum() / rel.sum())


def mean_average_precision(rankings: np.ndarray, relevance: np.ndarray, k: int, min_relevance: int = 1) -> float:
    """mAP@k of ``rankings`` (n_queries, >= k database rows, best first) under ``relevance``."""
    relevance = _padded(relevance)
    return float(np.mean([average_precision_at_k(relevance[q, r] >= min_relevance, k) for q, r in enumerate(rankings)]))


def ndcg_at_k(rankings: np.ndarray, relevance: np.ndarray, k: int) -> float:
    """Mean NDCG@k of ``rankings`` under the graded ``relevance`` (module docstring)."""
    k = check_k(k)
    relevance = _padded(relevance)
    scores = []
    for q, ranked in enumerate(rankings):
        gains = 2.0 ** relevance[q, ranked[:k]] - 1
        discounts = 1 / np.log2(np.arange(2, len(gains) + 2))
        ideal = np.sort(relevance[q])[::-1][:k]
        best = float(((2.0 ** ideal - 1) * discounts[: len(ideal)]).sum())
        scores.append(1.0 if best == 0 else float((gains * discounts).sum()) / best)
    return float(np.mean(scores))


def precision_recall(rankings: np.ndarray, relevance: np.ndarray, ks, min_relevance: int = 1) -> dict:
    """Mean precision and recall after the first ``k`` retrieved images, for each ``k`` of ``ks``."""
    binary = _padded(relevance) >= min_relevance
    totals = binary.sum(1)
    out = {"k": [], "precision": [], "recall": []}
    for k in ks:
        k = check_k(k)
        hits = np.array([binary[q, r[:k]].sum() for q, r in enumerate(rankings)], dtype=np.float64)
        out["k"].append(k)
        out["precision"].append(float(np.mean(hits / min(k, rankings.shape[1]))))
        out["recall"].append(float(np.mean(np.where(totals > 0, hits / np.maximum(totals, 1), 1.0))))
    return out


def ranking_of(index, query_vectors, k: int) -> np.ndarray:
    """Database rows ``(n_queries, k)`` the index returns for each query descriptor; -1 pads the
    lists an approximate search left shorter (counted as not relevant by the metrics here)."""
    rows = {i: r for r, i in enumerate(index.ids)}
    k = min(check_k(k), len(index))
    out = np.full((len(np.atleast_2d(query_vectors)), k), -1, dtype=np.int64)
    for q, hits in enumerate(index.search(query_vectors, k)):
        out[q, : len(hits)] = [rows[i] for i, _ in hits]
    return out


def _padded(relevance) -> np.ndarray:
    """``relevance`` with a zero column last, so that row -1 (padding) reads as not relevant."""
    relevance = np.asarray(relevance)
    return np.concatenate([relevance, np.zeros((len(relevance), 1), relevance.dtype)], axis=1)


def evaluate_rankings(rankings: np.ndarray, relevance: np.ndarray, k: int = 10) -> dict:
    """mAP@k (relevance >= 1), mAP@k with every query token shared, NDCG@k and chance mAP."""
    most = relevance.max(1, keepdims=True)
    strict = np.where(relevance >= np.maximum(most, 1), 1, 0)
    return {"map": mean_average_precision(rankings, relevance, k), "map_all_shared": mean_average_precision(rankings, strict, k),
            "ndcg": ndcg_at_k(rankings, relevance, k), "chance_precision": float((relevance >= 1).mean())}


def time_queries(index, queries, k: int = 10, repeats: int = 3) -> float:
    """Median seconds per query of ``index.search`` over ``queries`` (a batch, ``repeats`` times)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        index.search(queries, k)
        times.append((time.perf_counter() - start) / len(queries))
    return float(np.median(times))
