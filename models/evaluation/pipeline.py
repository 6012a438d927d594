"""Evaluating a whole pipeline: first-stage retrieval from a corpus, then a re-ranking cascade.

A pipeline spec is the first stage, optionally with its K1, then the cascade's own spec
(:mod:`streamrank.models.scoring.cascade`): ``bm25``, ``hybrid:1000``,
``hybrid:1000>dense:100>ce:20``.

Latency per query is the first stage plus the cascade, as a live request would see it; the
one-time encoding of documents for the vector tiers is reported apart (``doc_encode_seconds``),
because in service documents are encoded once, when they arrive, and cached.

Examples
--------
>>> split_pipeline("hybrid:1000>dense:100>ce:20")
('hybrid', 1000, 'dense:100>ce:20')
>>> split_pipeline("bm25")
('bm25', 1000, None)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from streamrank.models.evaluation.first_stage import judged_queries, percentiles, recall_at_k
from streamrank.models.evaluation.metrics import mean_metrics
from streamrank.models.evaluation.rerank import Query, encode_documents
from streamrank.models.progress import ProgressReporter, SilentProgress
from streamrank.models.retrieval.first_stage import METHODS, FirstStage
from streamrank.models.scoring.cascade import Cascade, PipelineError
from streamrank.models.types import TextCandidate

DEFAULT_K1 = 1000


def split_pipeline(spec: str) -> tuple[str, int, str | None]:
    """(first-stage method, K1, cascade spec or None)."""
    head, _, rest = spec.partition(">")
    method, _, k1 = head.partition(":")
    if method not in METHODS:
        raise PipelineError(
            f"a pipeline starts with a first stage ({', '.join(METHODS)}), not {method!r}"
        )
    try:
        k = int(k1) if k1 else DEFAULT_K1
    except ValueError:
        raise PipelineError(f"K1 must be a whole number in {head!r}") from None
    return method, k, rest or None


def retrieve_all(
    stage: FirstStage, queries: dict[str, str], method: str, k1: int
) -> tuple[list[Query], list[float]]:
    """First-stage candidates (with their texts) for every query, and the time each took."""
    retrieved, latencies = [], []
    for qid, text in queries.items():
        started = time.perf_counter()
        hits = stage.retrieve(text, k1, method)  # type: ignore[arg-type]
        candidates = []
        for hit in hits:
            doc = stage.get(hit.doc_id)
            candidates.append(TextCandidate(hit.doc_id, doc.content if doc else None, hit.score))
        latencies.append(1000 * (time.perf_counter() - started))
        retrieved.append(Query(qid, text, candidates))
    return retrieved, latencies


def evaluate_pipeline(
    stage: FirstStage,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    spec: str,
    cascade_factory: Any = None,
    progress: ProgressReporter | None = None,
) -> dict[str, Any]:
    """Metrics of one pipeline over the judged queries.

    ``cascade_factory(spec) -> Cascade`` builds the re-ranking part (the real models by
    default, with the default fusion); returns ``ndcg@10``, ``mrr@10``, ``recall@100``,
    ``recall@1000`` (first stage), ``fusion`` (how the tiers' scores were combined),
    ``pairs_scored``, ``latency_ms`` (p50/p95/p99, first stage + cascade per query) and
    ``doc_encode_seconds``.
    """
    method, k1, cascade_spec = split_pipeline(spec)
    selected = judged_queries(queries, qrels)
    retrieved, first_ms = retrieve_all(stage, selected, method, k1)
    first_ranking = {query.qid: [c.doc_id for c in query.candidates] for query in retrieved}
    result: dict[str, Any] = {"pipeline": spec, "queries": len(retrieved), "fusion": "none"}
    result["recall@100"] = _mean_recall(first_ranking, qrels, 100)
    result["recall@1000"] = _mean_recall(first_ranking, qrels, 1000)
    if cascade_spec is None:
        metrics = mean_metrics(first_ranking, qrels, k=10)
        result |= {
            "ndcg@10": round(metrics["ndcg@10"], 4),
            "mrr@10": round(metrics["mrr@10"], 4),
            "pairs_scored": 0,
            "latency_ms": percentiles(first_ms),
            "doc_encode_seconds": 0.0,
        }
        return result
    cascade = cascade_factory(cascade_spec)
    result["fusion"] = str(cascade.fusion)
    rankings, cascade_ms, pairs, encode_s = rerank_all(cascade, retrieved, progress)
    metrics = mean_metrics(rankings, qrels, k=10)
    result |= {
        "ndcg@10": round(metrics["ndcg@10"], 4),
        "mrr@10": round(metrics["mrr@10"], 4),
        "pairs_scored": pairs,
        "latency_ms": percentiles([a + b for a, b in zip(first_ms, cascade_ms, strict=True)]),
        "doc_encode_seconds": round(encode_s, 2),
    }
    return result


def rerank_all(
    cascade: Cascade, queries: list[Query], progress: ProgressReporter | None = None
) -> tuple[dict[str, list[str]], list[float], int, float]:
    """Rankings, cascade milliseconds per query, cross-encoder pairs, and encoding seconds."""
    progress = progress or SilentProgress()
    rankings: dict[str, list[str]] = {}
    latencies, pairs = [], 0
    encode_s = encode_documents(cascade, queries, progress)
    with progress.stage(f"re-ranking ({cascade.spec})", len(queries)) as advance:
        for query in queries:
            started = time.perf_counter()
            ranked = cascade.rank(query.text, query.candidates)
            latencies.append(1000 * (time.perf_counter() - started))
            rankings[query.qid] = ranked.doc_ids
            pairs += ranked.pairs_scored
            advance(1)
    return rankings, latencies, pairs, encode_s


def _mean_recall(run: dict[str, list[str]], qrels: dict[str, dict[str, int]], k: int) -> float:
    values = [recall_at_k(ranking, qrels.get(qid, {}), k) for qid, ranking in run.items()]
    return round(sum(values) / len(values), 4) if values else 0.0


def load_stage(corpus: Path, index_dir: Path | None, method: str, model_dir: Path) -> FirstStage:
    """The corpus's first stage: loaded from ``index_dir`` or built there (densely if needed).

    Without ``index_dir`` the index lives in the cache under a key of the corpus file's
    content and the index options (:func:`default_index_dir`), so a corpus is never evaluated
    against another's documents because their folders share a name. Either way the index
    must record this corpus's sha256: a cached one that does not is rebuilt (a cache is
    disposable), a given one is refused (it is the caller's, and may hold updates).

    Raises
    ------
    streamrank.models.retrieval.first_stage.IndexMismatchError
        ``index_dir`` holds an index of another corpus.
    """
    from streamrank.models.retrieval.first_stage import (
        IndexMismatchError,
        build_index,
        corpus_sha256,
        default_index_dir,
        verify_index_corpus,
    )

    encoder = None
    if method != "bm25":
        from streamrank.models.scoring.bi_encoder import load_bi_encoder

        encoder = load_bi_encoder(model_dir)
    digest = corpus_sha256(corpus)
    cached = index_dir is None
    index_dir = index_dir or default_index_dir(corpus, encoder, digest)
    missing = not (index_dir / "manifest.json").exists()
    if not missing:
        try:
            verify_index_corpus(index_dir, corpus, digest)
        except IndexMismatchError:
            if not cached:
                raise
            missing = True
    if missing or (encoder is not None and not (index_dir / "dense").exists()):
        build_index(corpus, index_dir, encoder=encoder, corpus_digest=digest)
    return FirstStage.load(index_dir, encoder=encoder)
