"""Serving one request: the cascade over a request's candidates, as a ``Ranking`` message.

The :class:`Reranker` is what the rerank agent calls, in an executor thread. It fills in texts
the producer left out from the feature store, runs the cascade within the latency budget
(scores come from the Redis score cache where a head query was seen before; cross-encoder
calls of concurrent requests are merged by :class:`models.batching.CrossRequestBatcher`), and
returns the ranking together with the impression the learner will join clicks against.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from models.batching import CrossRequestBatcher
from models.cascade import Cascade, CascadeResult
from models.confidence import ConfidenceRule
from models.factory import build_cascade
from streams.caches import RedisScoreCache, RedisVectorCache
from streams.config import Settings
from streams.events import Candidates, RankedItem, Ranking
from streams.feature_store import FeatureStore
from streams.state import key


def cascade_for(settings: Settings, client: redis.Redis, pipeline: str | None = None) -> Cascade:
    """The configured cascade, with the shared Redis caches and cross-request batching."""
    return build_cascade(
        pipeline or settings.pipeline,
        settings.model_dir,
        max_length=settings.max_length,
        confidence=ConfidenceRule(
            skip_if_margin_at_least=settings.skip_ce_if_margin_at_least,
            skip_if_top_score_below=settings.skip_ce_if_top_score_below,
        ),
        score_cache=RedisScoreCache(client, key(settings, "score:"), settings.score_cache_ttl_s),
        vector_cache=RedisVectorCache(client, key(settings, "vec:"), settings.vector_cache_ttl_s),
        predict_wrapper=lambda predict: (
            CrossRequestBatcher(predict, max_wait_s=settings.batch_wait_ms / 1000).predict
        ),
    )


class Reranker:
    """Ranks ``candidates`` requests with one cascade; safe to call from several threads."""

    def __init__(self, cascade: Cascade, feature_store: FeatureStore, settings: Settings) -> None:
        self.cascade = cascade
        self.feature_store = feature_store
        self.settings = settings

    @property
    def version(self) -> str:
        return self.cascade.model_version

    def rank(self, request: Candidates) -> tuple[Ranking, dict[str, Any]]:
        """The ranking to publish and the impression to record."""
        started = time.perf_counter()
        candidates = self.with_stored_texts(request)
        lookup_ms = (time.perf_counter() - started) * 1000
        budget_s = self.settings.latency_budget_ms / 1000 - lookup_ms / 1000
        result = self.cascade.rank(request.query, candidates, deadline_s=max(budget_s, 0.0))
        ranking = self.to_ranking(request, result, lookup_ms)
        return ranking, self.impression(request, result)

    def with_stored_texts(self, request: Candidates) -> list:
        """The candidates, with the feature store's text for those that came without one."""
        missing = [c.doc_id for c in request.candidates if not c.text]
        if not missing:
            return list(request.candidates)
        stored = dict(zip(missing, self.feature_store.texts(missing), strict=True))
        return [
            c
            if c.text or stored[c.doc_id] is None
            else c.model_copy(update={"text": stored[c.doc_id]})
            for c in request.candidates
        ]

    def to_ranking(self, request: Candidates, result: CascadeResult, lookup_ms: float) -> Ranking:
        timings = {"lookup": lookup_ms, **result.timings_ms}
        retrieve_ms = request.context.get("retrieve_ms")
        if isinstance(retrieve_ms, int | float):
            timings = {"retrieve": float(retrieve_ms), **timings}
        reasons = [result.degraded_reason] if result.degraded_reason else []
        reasons += [f"{tier} skipped: {why}" for tier, why in result.skipped.items()]
        return Ranking(
            request_id=request.request_id,
            model_version=result.model_version,
            items=[
                RankedItem(
                    doc_id=item.doc_id,
                    score=float(item.score),
                    position=item.position,
                    flags=list(item.flags),
                )
                for item in result.items
            ],
            timings_ms=timings,
            degraded=result.degraded,
            degraded_reason="; ".join(reasons) or None,
            user_id=request.user_id,
            session_id=request.session_id,
        )

    def impression(self, request: Candidates, result: CascadeResult) -> dict[str, Any]:
        """What was served, for joining clicks: positions, scores, features, model version."""
        first_stage = {c.doc_id: c for c in request.candidates}
        shown = result.items[: max(request.k, 10)]
        return {
            "request_id": request.request_id,
            "query": request.query,
            "user_id": request.user_id,
            "session_id": request.session_id,
            "model_version": result.model_version,
            "served_at": time.time(),
            "items": [
                {
                    "doc_id": item.doc_id,
                    "position": item.position,
                    "score": float(item.score),
                    "stage": item.stage,
                    "first_stage_score": first_stage[item.doc_id].first_stage_score,
                    "features": dict(first_stage[item.doc_id].features),
                }
                for item in shown
            ],
        }
