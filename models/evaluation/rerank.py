"""Evaluate a re-ranking pipeline on a candidate file and TREC qrels (``streamrank eval rerank``).

The candidate file is the rank_llm layout of ``../shared/data/trec-dl-2019/``: a JSON list of
``{"query": str, "hits": [{"qid", "docid", "rank", "score", "content"}, ...]}`` in first-stage
order. Each query goes through :meth:`streamrank.models.scoring.cascade.Cascade.rank` on its
own, timed, like a live request; documents are encoded for the dense/ColBERT tiers once beforehand
(their one-time cost is ``doc_encode_seconds``, not part of the latency).

Under a deadline the first queries are ranked once, untimed, before the timed pass
(``warmup_queries``): a tier's cost model needs that many measured calls before its margin
is learned rather than the starting x1.1, and a running service is past that point after its
first twenty requests. Without the warm-up, a run of a few dozen queries would measure the
start-up margin on a large share of them.

Examples
--------
>>> latency_percentiles([10.0, 20.0, 30.0, 40.0])
{'p50': 25.0, 'p95': 38.5, 'p99': 39.7}
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamrank.models.assets.model_files import default_model_dir
from streamrank.models.evaluation.metrics import latency_percentiles, mean_metrics
from streamrank.models.progress import ProgressReporter, SilentProgress
from streamrank.models.scoring.budget import CostModel
from streamrank.models.scoring.cascade import Cascade, parse_pipeline
from streamrank.models.scoring.fusion import Fusion
from streamrank.models.types import TextCandidate


@dataclass(frozen=True)
class Query:
    """One query of a candidate file with its candidates in first-stage order."""

    qid: str
    text: str
    candidates: list[TextCandidate]


def load_candidates(path: str | Path) -> list[Query]:
    """Read a rank_llm candidate file."""
    queries = []
    for entry in json.loads(Path(path).read_text(encoding="utf-8")):
        hits = entry["hits"]
        qid = str(hits[0]["qid"]) if hits else str(entry.get("qid", len(queries)))
        candidates = [
            TextCandidate(str(h["docid"]), h.get("content"), float(h.get("score", 0.0)))
            for h in hits
        ]
        queries.append(Query(qid, entry["query"], candidates))
    return queries


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read TREC qrels (``qid iteration docid grade``)."""
    qrels: dict[str, dict[str, int]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) == 4:
            qrels.setdefault(fields[0], {})[fields[2]] = int(fields[3])
    return qrels


def encode_documents(
    cascade: Cascade, queries: list[Query], progress: ProgressReporter | None = None
) -> float:
    """Encode every document once for the vector tiers; returns the seconds it took."""
    progress = progress or SilentProgress()
    started = time.perf_counter()
    for name, tier in cascade.tiers.items():
        if not hasattr(tier, "ensure_vectors"):
            continue
        with progress.stage(f"encoding documents ({name})", len(queries)) as advance:
            for query in queries:
                tier.ensure_vectors(query.candidates)
                advance(1)
    return time.perf_counter() - started


def _main_tier(cascade: Cascade) -> str | None:
    names = [stage.tier for stage in cascade.stages]
    return "ce" if "ce" in names else (names[-1] if names else None)


def run_cascade(
    cascade: Cascade,
    queries: list[Query],
    qrels: dict[str, dict[str, int]],
    deadline_s: float | None = None,
    progress: ProgressReporter | None = None,
) -> dict[str, Any]:
    """Rank every query with ``cascade``; metrics, throughput and latencies as a dict."""
    progress = progress or SilentProgress()
    rankings, latencies, degraded = {}, [], 0
    tier_ms, pairs = 0.0, 0
    main = _main_tier(cascade)
    warmup = queries[: warmup_calls(cascade)] if deadline_s is not None else []
    encode_s = encode_documents(cascade, queries, progress)
    if warmup:
        with progress.stage("warming up the cost models", len(warmup)) as advance:
            for query in warmup:
                cascade.rank(query.text, query.candidates, deadline_s)
                advance(1)
    with progress.stage(f"ranking ({cascade.spec})", len(queries)) as advance:
        for query in queries:
            started = time.perf_counter()
            result = cascade.rank(query.text, query.candidates, deadline_s)
            latencies.append(1000 * (time.perf_counter() - started))
            rankings[query.qid] = result.doc_ids
            degraded += result.degraded
            if main:
                tier_ms += result.timings_ms.get(main, 0.0)
                pairs += result.pairs_scored if main == "ce" else _scored(cascade, query)
            advance(1)
    metrics = mean_metrics(rankings, qrels, k=10)
    return {
        "queries": len(queries),
        **{name: round(value, 4) for name, value in metrics.items()},
        "pairs_scored": pairs,
        "pairs_per_second": round(pairs / (tier_ms / 1000), 1) if tier_ms else 0.0,
        "latency_ms": latency_percentiles(latencies),
        "doc_encode_seconds": round(encode_s, 3),
        "degraded_queries": degraded,
        "warmup_queries": len(warmup),
    }


def warmup_calls(cascade: Cascade) -> int:
    """Calls the cascade's cost models need before their margins are learned (0: none)."""
    costs = [getattr(tier, "cost", None) for tier in cascade.tiers.values()]
    return max((cost.min_calls for cost in costs if isinstance(cost, CostModel)), default=0)


def _scored(cascade: Cascade, query: Query) -> int:
    k = cascade.stages[-1].k
    with_text = sum(bool(c.text and c.text.strip()) for c in query.candidates)
    return min(k, with_text) if k else with_text


def evaluate_rerank(
    candidates_file: str | Path,
    qrels_file: str | Path,
    pipeline: str,
    max_length: int = 256,
    model_dir: str | Path | None = None,
    deadline_s: float | None = None,
    progress: ProgressReporter | None = None,
    fusion: Fusion | None = None,
) -> dict[str, Any]:
    """Evaluate ``pipeline`` on a candidate file against qrels.

    Parameters
    ----------
    candidates_file
        rank_llm JSON candidate lists.
    qrels_file
        TREC qrels.
    pipeline
        Pipeline spec, e.g. ``dense>ce:30`` (see :mod:`streamrank.models.scoring.cascade`).
    max_length
        Cross-encoder max tokens per pair.
    model_dir
        Model directory; default :func:`streamrank.models.assets.model_files.default_model_dir`.
    deadline_s
        Per-query latency budget (``None``: none).
    progress
        Told about each stage (encoding, warm-up, ranking); silent by default.
    fusion
        How the tiers' scores combine (:mod:`streamrank.models.scoring.fusion`); ``None``:
        the cascade's default.

    Returns
    -------
    dict
        ``queries``, ``ndcg@10``, ``mrr@10``, ``recall@10``, ``pairs_scored`` (cross-encoder
        pairs, or the last tier's when there is no cross-encoder), ``pairs_per_second`` (of
        that tier, over its own time), ``latency_ms`` (``p50``/``p95``/``p99`` per query),
        ``doc_encode_seconds`` (one-time document encoding, excluded from latency),
        ``degraded_queries``, ``warmup_queries`` (ranked untimed first, under a deadline),
        ``pipeline``, ``fusion``, ``max_length``, ``model_version``.
    """
    from streamrank.models.scoring.factory import build_cascade

    parse_pipeline(pipeline)  # fail on a bad spec before loading anything
    if model_dir is None:
        model_dir = default_model_dir()
    queries = load_candidates(candidates_file)
    qrels = load_qrels(qrels_file)
    cascade = build_cascade(pipeline, model_dir, max_length=max_length)
    if fusion is not None:
        cascade = cascade.with_fusion(fusion)
    report = run_cascade(cascade, queries, qrels, deadline_s, progress)
    return {
        **report,
        "pipeline": pipeline,
        "fusion": str(cascade.fusion),
        "max_length": max_length,
        "model_version": cascade.model_version,
    }
