"""Measuring a first stage on a judged collection: nDCG@10, recall@100/1000, latency.

Metrics follow trec_eval: nDCG with linear gain (``ndcg_cut_10``), the ideal ranking built from
every judgment of the query; recall counts documents graded above 0. Queries are those with at
least one relevant judgment and a text; a query that retrieves nothing scores 0 (it is not
dropped, which would flatter a retriever that fails on hard queries).

Examples
--------
>>> ndcg_at_k(["d2", "d1"], {"d1": 2, "d2": 0}, k=10)  # doctest: +ELLIPSIS
0.6309...
>>> recall_at_k(["d2", "d1"], {"d1": 1, "d3": 1}, k=1)
0.0
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamrank.models.evaluation.metrics import latency_percentiles, ndcg_at_k, recall_at_k
from streamrank.models.retrieval.corpus import Document, Qrels, read_corpus, relevant
from streamrank.models.retrieval.dense import Encoder
from streamrank.models.retrieval.first_stage import DEFAULT_K1, FirstStage, Fusion, Method

Run = dict[str, list[str]]
"""Query id -> retrieved document ids, best first."""


def judged_queries(queries: Mapping[str, str], qrels: Qrels) -> dict[str, str]:
    """The queries that can be evaluated: a text and at least one relevant judgment."""
    return {
        qid: queries[qid] for qid, judged in qrels.items() if qid in queries and relevant(judged)
    }


def run_first_stage(
    stage: FirstStage, queries: Mapping[str, str], method: Method = "bm25", k: int = DEFAULT_K1
) -> tuple[Run, list[float]]:
    """Retrieve for every query; returns the run and the per-query latencies in ms."""
    if queries:  # one untimed query: first calls pay for lazy set-up (delta postings, ORT)
        stage.retrieve(next(iter(queries.values())), k, method)
    run: Run = {}
    latencies: list[float] = []
    for qid, text in queries.items():
        started = time.perf_counter()
        hits = stage.retrieve(text, k, method)
        latencies.append((time.perf_counter() - started) * 1000)
        run[qid] = [hit.doc_id for hit in hits]
    return run, latencies


def percentiles(latencies_ms: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 in ms, rounded to 0.01 ms."""
    return latency_percentiles(latencies_ms, decimals=2)


def score_run(run: Run, qrels: Qrels) -> dict[str, float]:
    """Mean nDCG@10, recall@100 and recall@1000 over the queries of ``run``."""
    qids = list(run)
    if not qids:
        return {"ndcg@10": 0.0, "recall@100": 0.0, "recall@1000": 0.0}

    def mean(values: list[float]) -> float:
        return round(float(np.mean(values)), 4)

    return {
        "ndcg@10": mean([ndcg_at_k(run[q], qrels[q], 10) for q in qids]),
        "recall@100": mean([recall_at_k(run[q], qrels[q], 100) for q in qids]),
        "recall@1000": mean([recall_at_k(run[q], qrels[q], 1000) for q in qids]),
    }


def evaluate_first_stage(
    corpus: FirstStage | Sequence[Document] | str | Path,
    queries: Mapping[str, str],
    qrels: Qrels,
    method: Method = "bm25",
    *,
    k: int = DEFAULT_K1,
    encoder: Encoder | None = None,
    fusion: Fusion | None = None,
) -> dict[str, Any]:
    """Evaluate one first-stage method.

    Parameters
    ----------
    corpus
        A built :class:`FirstStage`, documents, or a ``corpus.jsonl`` path (indexed here; with
        an ``encoder`` also densely).
    queries, qrels
        Query texts and judgments; only judged queries with a relevant document are run.
    method
        ``bm25``, ``dense`` or ``hybrid``.
    k
        Candidates per query (K1).

    Returns
    -------
    dict
        ``method``, ``queries``, ``ndcg@10``, ``recall@100``, ``recall@1000`` and
        ``latency_ms`` (``p50``, ``p95``, ``p99`` per query, retrieval only).

    Examples
    --------
    >>> docs = [Document("d1", "Volga", "River in Russia."), Document("d2", "Alps", "Mountains.")]
    >>> result = evaluate_first_stage(docs, {"q": "russian river"}, {"q": {"d1": 1}})
    >>> result["ndcg@10"], result["queries"]
    (1.0, 1)
    """
    stage = _as_stage(corpus, encoder)
    if fusion is not None:
        stage.fusion = fusion
    if encoder is not None:
        stage.encoder = encoder
    selected = judged_queries(queries, qrels)
    run, latencies = run_first_stage(stage, selected, method, k)
    return {
        "method": method,
        "queries": len(run),
        **score_run(run, qrels),
        "latency_ms": percentiles(latencies),
    }


def _as_stage(
    corpus: FirstStage | Sequence[Document] | str | Path, encoder: Encoder | None
) -> FirstStage:
    if isinstance(corpus, FirstStage):
        return corpus
    docs = read_corpus(corpus).items if isinstance(corpus, str | Path) else list(corpus)
    return FirstStage.build(docs, encoder)
