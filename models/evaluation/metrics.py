"""Ranking metrics as trec_eval computes them: nDCG@k (linear gain), MRR@k, recall@k.

Every function takes one query's ranked document ids and its judgments ``{doc_id: grade}``.
Unjudged documents count as grade 0. nDCG is ``ndcg_cut``: gain = grade, discount
``1 / log2(rank + 1)``, the ideal ranking built from all judged documents of the query. MRR and
recall count a document as relevant when its grade is at least ``threshold`` (trec_eval's
default, 1).

Examples
--------
>>> judged = {"a": 3, "b": 1, "c": 0, "d": 2}
>>> round(ndcg_at_k(["c", "a", "x", "b"], judged, k=3), 4)
0.3975
>>> mrr_at_k(["c", "a"], judged, k=10)
0.5
>>> recall_at_k(["c", "a"], judged, k=10)
0.3333333333333333
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

Judgments = Mapping[str, int]


def dcg(grades: Sequence[float]) -> float:
    """Discounted cumulative gain of grades in rank order (linear gain).

    Examples
    --------
    >>> round(dcg([3, 2, 0]), 4)
    4.2619
    """
    return sum(g / math.log2(rank + 2) for rank, g in enumerate(grades) if g > 0)


def ndcg_at_k(ranking: Sequence[str], judged: Judgments, k: int = 10) -> float:
    """nDCG@k of one ranking; 0 when the query has no document with a positive grade."""
    ideal = dcg(sorted((g for g in judged.values() if g > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg([judged.get(doc, 0) for doc in ranking[:k]]) / ideal


def mrr_at_k(ranking: Sequence[str], judged: Judgments, k: int = 10, threshold: int = 1) -> float:
    """Reciprocal rank of the first relevant document in the top ``k`` (0 when there is none)."""
    for rank, doc in enumerate(ranking[:k], start=1):
        if judged.get(doc, 0) >= threshold:
            return 1.0 / rank
    return 0.0


def recall_at_k(
    ranking: Sequence[str], judged: Judgments, k: int = 10, threshold: int = 1
) -> float:
    """Share of the query's relevant documents that are in the top ``k``."""
    relevant = {doc for doc, grade in judged.items() if grade >= threshold}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def mean_metrics(
    rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Judgments], k: int = 10
) -> dict[str, float]:
    """``ndcg@k``, ``mrr@k`` and ``recall@k`` averaged over the queries that have judgments.

    Examples
    --------
    >>> mean_metrics({"q1": ["a", "b"], "q2": ["z"]}, {"q1": {"b": 1}, "q2": {"z": 2}}, k=10)
    {'ndcg@10': 0.8154648767857288, 'mrr@10': 0.75, 'recall@10': 1.0}
    """
    queries = [q for q in rankings if q in qrels]
    if not queries:
        return {f"ndcg@{k}": 0.0, f"mrr@{k}": 0.0, f"recall@{k}": 0.0}
    sums = {f"ndcg@{k}": 0.0, f"mrr@{k}": 0.0, f"recall@{k}": 0.0}
    for q in queries:
        sums[f"ndcg@{k}"] += ndcg_at_k(rankings[q], qrels[q], k)
        sums[f"mrr@{k}"] += mrr_at_k(rankings[q], qrels[q], k)
        sums[f"recall@{k}"] += recall_at_k(rankings[q], qrels[q], k)
    return {name: total / len(queries) for name, total in sums.items()}


def latency_percentiles(latencies_ms: Sequence[float], decimals: int = 3) -> dict[str, float]:
    """p50, p95 and p99 of per-query latencies in ms (linear interpolation), rounded.

    Examples
    --------
    >>> latency_percentiles([10.0, 20.0, 30.0, 40.0])
    {'p50': 25.0, 'p95': 38.5, 'p99': 39.7}
    """
    if not len(latencies_ms):
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    values = np.percentile(np.asarray(latencies_ms, dtype=float), [50, 95, 99])
    return {f"p{q}": round(float(v), decimals) for q, v in zip((50, 95, 99), values, strict=True)}
