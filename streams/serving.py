"""Serving one request: the cascade over a request's candidates, as a ``Ranking`` message.

The :class:`Reranker` is what the rerank agent calls, in an executor thread. It fills in texts
the producer left out from the feature store, runs the cascade within the latency budget
(scores come from the Redis score cache where a head query was seen before; cross-encoder
calls of concurrent requests are merged by
:class:`streamrank.models.scoring.batching.CrossRequestBatcher`), lets the online ranker
(:mod:`streamrank.streams.online`) order the top of the cascade's list when online learning is on,
and returns the ranking together with the impression the learner will join clicks against.

With no clicks yet, the online ranker serves exactly the cascade's order (exploration aside).
Candidates without text keep their slots, as they do in the cascade.

The business rules come last (:func:`streamrank.models.scoring.rules.apply_rules`, the
worker's :class:`~streamrank.streams.state.rules_store.LiveRules`): stock, promoted boost,
bury list, diversity and pins re-order the final list, filtered items leave it, and the
ranking and the impression record which rules fired (``rules_fired``). Positions in both are
the served, post-rule ones; the online ranker's features in the impression are pre-rule, so
the learner never learns the rules' boosts. With no rules configured nothing changes.

Redis being away never stops a request. Every Redis call of the request path has a short
timeout and goes through one circuit breaker (:mod:`streamrank.streams.state.breaker`); when one
fails, the request is ranked by the active pipeline all the same: the score cache counts as
misses (scores are computed), document vectors come from the worker's memory only (its LRU and
its index; a candidate whose vector is only in Redis is left unscored by the vector tiers),
stored texts and user features are left out, the online ranker is skipped (the cascade's order
is served), and the ranking says ``degraded`` with the reasons. What that costs is recorded by
the rerank agent (:mod:`streamrank.streams.agents.rerank`).

Document vectors are never computed here: they are stored at ingestion (``index build``, the
``items`` agent through :meth:`Reranker.ensure_vectors`). A candidate without one is left
unscored by the vector tiers and counted (``streamrank_vectors_missing_total`` in ``/metrics``);
the ranking is not called degraded for it, since it is an ingestion gap and not overload.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from streamrank.models.learning.online_ranker import ScoredCandidate
from streamrank.models.scoring.batching import CrossRequestBatcher
from streamrank.models.scoring.cascade import Cascade, CascadeItem, CascadeResult
from streamrank.models.scoring.confidence import ConfidenceRule
from streamrank.models.scoring.factory import build_cascade
from streamrank.models.scoring.rules import RuleItem, apply_rules
from streamrank.models.scoring.score_cache import InMemoryCache, LayeredVectors, VectorCache
from streamrank.models.types import TextCandidate
from streamrank.streams.config import Settings
from streamrank.streams.events import Candidates, Ranking
from streamrank.streams.final_ranking import FINAL_STAGE, FinalScores, FinalStage, PendingLog
from streamrank.streams.online import OnlineServing, served_ranks
from streamrank.streams.state.connections import key
from streamrank.streams.state.feature_store import FeatureStore
from streamrank.streams.state.redis_cache import RedisScoreCache, RedisVectorCache
from streamrank.streams.state.rules_store import LiveRules

log = logging.getLogger(__name__)

ONLINE_START_S = 0.015
"""What the online ranker is assumed to take before it has been timed (its top 50, from Redis)."""
ONLINE_COST_ALPHA = 0.2
"""Weight of each new timing in the online and final rankers' moving averages."""
FINAL_START_S = 0.010
"""What the final ranker is assumed to take before it has been timed."""
FEATURE_LOG = "feature_log"
"""The impression's entry the rerank agent takes out and logs to ``impressions``."""

DENSE_TIERS = ("dense", "colbert")
CROSS_TIERS = ("student", "ce")  # the student is a cross-encoder too
"""Tiers whose score the online ranker reads as the candidate's dense score."""


@dataclass(frozen=True)
class OnlineInfo:
    """What the online ranker did to one list: features per document, exploration."""

    features: dict[str, dict[str, float]] = field(default_factory=dict)
    explored: frozenset[str] = frozenset()
    randomized: bool = False


def shown_count(request: Candidates) -> int:
    """How many results of a list count as shown (what the impression records)."""
    return max(request.k, 10)


VECTOR_LRU_BYTES = 256 * 2**20
"""Bytes of document vectors a worker keeps in process (about 170,000 384-float vectors)."""

_worker_vectors: weakref.WeakKeyDictionary[redis.Redis, LayeredVectors] = (
    weakref.WeakKeyDictionary()
)
_worker_vectors_lock = threading.Lock()


MAX_CLOCK_SKEW_S = 60.0
"""A request older than this by its own timestamp is taken for a producer with a wrong clock."""


def waited_s(sent_at: float, now: float) -> float:
    """Seconds a request waited before ranking began, by its timestamp (the producer's clock).

    The serving path's latency budget counts from there, so a request that queued behind
    others (a burst, an overloaded worker) is not given the whole budget again: it is
    answered at once in the first stage's order instead of late. A timestamp in the
    future or implausibly old is a clock problem, not a queue, and counts as no wait.

    Examples
    --------
    >>> waited_s(100.0, 100.25)
    0.25
    >>> waited_s(100.0, 99.0), waited_s(100.0, 100.0 + 3600)
    (0.0, 0.0)
    """
    waited = now - sent_at
    return waited if 0.0 <= waited <= MAX_CLOCK_SKEW_S else 0.0


def vector_store_for(settings: Settings, client: redis.Redis) -> LayeredVectors:
    """Where a worker's vector tiers read document vectors: an in-process LRU, then Redis.

    One per request-path Redis client, hence one per worker: every cascade the worker builds
    (the active version, a promoted one, shadows served in experiments) shares the warm LRU
    (keys carry the encoder version, so sharing is safe). An MGET of 1,000 vectors from Redis
    costs a large part of a 50 ms budget where the LRU answers in about a millisecond
    (``bench/vector_lookup.py``). The retrieve agent adds its index's own vectors as a layer
    between the two (:func:`add_index_vectors`).
    """
    with _worker_vectors_lock:
        store = _worker_vectors.get(client)
        if store is None:
            redis_store = RedisVectorCache(
                client, key(settings, "vec:"), settings.vector_cache_ttl_s
            )
            lru = InMemoryCache(max_items=None, max_bytes=VECTOR_LRU_BYTES)
            store = _worker_vectors[client] = LayeredVectors([lru, redis_store])
        return store


def add_index_vectors(store: LayeredVectors, index_vectors: VectorCache) -> None:
    """Put a first-stage index's vectors in front of Redis in a worker's vector store."""
    if index_vectors not in store.layers:
        store.layers.insert(len(store.layers) - 1, index_vectors)


def cascade_for(settings: Settings, client: redis.Redis, pipeline: str | None = None) -> Cascade:
    """The configured cascade, with the shared Redis caches, the worker's vector store
    (:func:`vector_store_for`) and cross-request batching."""
    return configured_cascade(
        settings,
        pipeline,
        score_cache=RedisScoreCache(client, key(settings, "score:"), settings.score_cache_ttl_s),
        vector_cache=vector_store_for(settings, client),
        predict_wrapper=lambda predict: (
            CrossRequestBatcher(predict, max_wait_s=settings.batch_wait_ms / 1000).predict
        ),
    )


def configured_cascade(settings: Settings, pipeline: str | None = None, **caches: Any) -> Cascade:
    """The cascade a worker serves (models, max length, confidence rule, fusion) for
    ``pipeline`` (default ``settings.pipeline``), with the given caches and wrappers
    (``build_cascade``'s keywords). The demo's offline comparison builds its cascade here too,
    so it measures exactly what the worker serves."""
    cascade = build_cascade(
        pipeline or settings.pipeline,
        settings.model_dir,
        max_length=settings.max_length,
        confidence=ConfidenceRule(
            skip_if_margin_at_least=settings.skip_ce_if_margin_at_least,
            skip_if_top_score_below=settings.skip_ce_if_top_score_below,
        ),
        **caches,
    )
    return cascade.with_fusion(settings.cascade_fusion())


FEATURE_DIGITS = 6
"""Significant digits an impression keeps of a feature (float32 holds about 7)."""


def rounded(features: dict[str, float]) -> dict[str, float]:
    """Features to :data:`FEATURE_DIGITS` significant digits (shorter JSON, same model).

    Examples
    --------
    >>> rounded({"z": 1.5899486007538048, "top": 1.0})
    {'z': 1.58995, 'top': 1.0}
    """
    return {name: float(f"{value:.{FEATURE_DIGITS}g}") for name, value in features.items()}


def degrade(result: CascadeResult, reason: str) -> CascadeResult:
    """``result`` flagged degraded, ``reason`` added to any it had."""
    reasons = "; ".join(filter(None, [result.degraded_reason, reason]))
    return replace(result, degraded=True, degraded_reason=reasons)


def rule_items(items: Sequence[CascadeItem], fields: Sequence[Mapping[str, Any]]) -> list[RuleItem]:
    """The rules' view of a served list: each item's pre-rule score and its fields.

    The score is the item's, capped by the one above it. Scores of different tiers are on
    different scales and the online ranker re-orders the top without re-scoring it, so the
    raw scores need not fall down the served list; capped, they do (ties keep the list's
    order, and a NaN takes the score above it), so the rules start from the served order
    exactly, and a boost is in the units of the scores around it. The published ranking keeps
    the raw scores; the learner's features are those of the online ranker, before any rule.

    Examples
    --------
    >>> items = [CascadeItem("a", 0.2, 1, "ce"), CascadeItem("b", 0.9, 2, "ce"),
    ...          CascadeItem("c", 0.1, 3, "ce")]
    >>> [(i.doc_id, i.score) for i in rule_items(items, [{}, {"in_stock": False}, {}])]
    [('a', 0.2), ('b', 0.2), ('c', 0.1)]
    """
    ceiling = math.inf
    out = []
    for item, item_fields in zip(items, fields, strict=True):
        score = float(item.score)
        # "not score <= ceiling" is also true of a NaN: it takes the ceiling, like a tie
        ceiling = score if score <= ceiling else ceiling
        out.append(RuleItem(item.doc_id, ceiling, item_fields))
    return out


class Reranker:
    """Ranks ``candidates`` requests with one cascade; safe to call from several threads."""

    def __init__(
        self,
        cascade: Cascade,
        feature_store: FeatureStore,
        settings: Settings,
        online: OnlineServing | None = None,
        rules: LiveRules | None = None,
        final: FinalStage | None = None,
    ) -> None:
        self.cascade = cascade
        self.feature_store = feature_store
        self.settings = settings
        self.online = online
        self.rules = rules  # the worker's business rules, shared by its rankers
        self.final = final
        self.online_s = ONLINE_START_S
        """Moving average of the online ranker's seconds, reserved out of the cascade's
        deadline (a race between threads costs one sample, never correctness)."""
        self.final_s = FINAL_START_S
        """The same for the final ranker (its feature fetch and scoring)."""

    @property
    def version(self) -> str:
        version = self.cascade.model_version
        return version if self.final is None else f"{version};{self.final.version}"

    def rank(self, request: Candidates, queued_s: float = 0.0) -> tuple[Ranking, dict[str, Any]]:
        """The ranking to publish and the impression to record.

        ``queued_s``: how long the request waited before this call (:func:`waited_s`, which
        the serving path passes); it comes out of the latency budget. A shadow ranking the
        same request later passes nothing: its lag is not the user's wait.
        """
        started = time.perf_counter()
        try:
            candidates, lost = self.with_stored_texts(request), None
        except redis.RedisError as error:  # rank what came with text; the rest keep their slots
            candidates, lost = list(request.candidates), f"stored texts not read: {error}"
        lookup_ms = (time.perf_counter() - started) * 1000
        budget_s = self.settings.latency_budget_ms / 1000 - lookup_ms / 1000 - queued_s
        # the final and online rankers come after the cascade: their usual time is kept out
        # of the cascade's deadline, so a cascade that fills its deadline still leaves room
        reserve_s = self.online_s if self.online is not None else 0.0
        reserve_s += self.final_s if self.final is not None else 0.0
        deadline_s = max(budget_s - reserve_s, 0.0)
        served_at = time.time()
        if self.settings.feature_time == "event":  # a replay: features as of the request
            served_at = request.timestamp
        result = self.cascade.rank(request.query, candidates, deadline_s=deadline_s)
        cascade_result, final = result, None
        if lost is not None:
            result = degrade(result, lost)
        left_s = budget_s - (time.perf_counter() - started) + lookup_ms / 1000
        if budget_s <= 0:  # late already: the first stage's order now beats a good order later
            result, online = degrade(result, f"late: waited {queued_s * 1000:.0f} ms"), None
        elif left_s <= 0:  # the cascade used the budget: what follows would overrun it
            skipped = "online ranker skipped: deadline"
            if self.final is not None:
                skipped = f"final ranker skipped: deadline; {skipped}"
            result, online = degrade(result, skipped), None
        else:
            result, final = self.serve_final(request, result, served_at)
            result, online = self.serve_online(request, result)
        result, fired = self.apply_rules(request, result)
        ranking = self.to_ranking(request, result, lookup_ms, queued_s * 1000)
        impression = self.impression(request, result, online)
        if fired is not None:
            ranking = ranking.model_copy(update={"rules_fired": fired})
            impression["rules_fired"] = fired
        impression[FEATURE_LOG] = PendingLog(
            request=request,
            shown=tuple(
                (item.doc_id, item.position) for item in result.items[: shown_count(request)]
            ),
            model_version=result.model_version,
            served_at=served_at,
            result=cascade_result,
            final=final,
            features=None if self.final is None else self.final.features,
        )
        return ranking, impression

    def serve_final(
        self, request: Candidates, result: CascadeResult, now: float
    ) -> tuple[CascadeResult, FinalScores | None]:
        """The cascade's list ordered by the final ranker (when the version has one)."""
        if self.final is None or not result.items:
            return result, None
        started = time.perf_counter()
        try:
            served, scores = self.final.rank(request, result, now)
        except redis.RedisError as error:  # Redis away: the cascade's order, no traceback
            log.warning("final ranker skipped for %s: %s", request.request_id, error)
            return degrade(result, f"final ranker skipped: Redis: {error}"), None
        except Exception as error:  # serve the cascade's order rather than nothing
            log.exception("final ranker failed for %s", request.request_id)
            return degrade(result, f"final ranker failed: {type(error).__name__}: {error}"), None
        self.final_s += ONLINE_COST_ALPHA * (time.perf_counter() - started - self.final_s)
        return served, scores

    def apply_rules(
        self, request: Candidates, result: CascadeResult
    ) -> tuple[CascadeResult, dict[str, list[str]] | None]:
        """The served list after the business rules, and which fired on what (None: no rules).

        The rules see each item's pre-rule score (:func:`rule_items`) and the fields they
        read, from the feature store in one read, and only when an active rule reads one.
        Filtered items leave the list; the rest are renumbered in their new order. Fields
        Redis does not give are left out (every item then counts as in stock and not
        promoted) and the ranking says degraded.
        """
        config = self.rules.config if self.rules is not None else None
        if config is None:
            return result, None
        started = time.perf_counter()
        ids = result.doc_ids
        names = sorted(set(config.fields_used().values()))
        fields: list[dict[str, Any]] = [{}] * len(ids)
        if names and ids:
            try:
                fields = self.feature_store.rule_fields(ids, names)
            except redis.RedisError as error:
                result = degrade(result, f"rule fields not read: Redis: {error}")
            except Exception as error:  # a stored field that does not parse, say
                log.exception("rule fields not read for %s", request.request_id)
                result = degrade(result, f"rule fields not read: {type(error).__name__}")
        try:
            ruled = apply_rules(request.query, rule_items(result.items, fields), config)
        except Exception as error:  # a rules bug must not stop serving: the model's order
            log.exception("business rules failed for %s", request.request_id)
            return degrade(result, f"rules failed: {type(error).__name__}: {error}"), None
        items = result.items
        if list(ruled.doc_ids) != ids:
            by_id = {item.doc_id: item for item in items}
            items = [replace(by_id[d], position=p) for p, d in enumerate(ruled.doc_ids, 1)]
        timings = result.timings_ms | {"rules": 1000 * (time.perf_counter() - started)}
        fired = {rule: list(doc_ids) for rule, doc_ids in ruled.fired.items()}
        return replace(result, items=items, timings_ms=timings), fired

    def serve_online(
        self, request: Candidates, result: CascadeResult
    ) -> tuple[CascadeResult, OnlineInfo | None]:
        """The cascade's list with its top re-ordered by the online ranker (when it is on)."""
        if self.online is None or not result.items:
            return result, None
        started = time.perf_counter()
        top = result.items[: max(self.settings.online_top_k, shown_count(request))]
        try:
            order = self.online.order(
                request.request_id,
                request.query,
                self.online_candidates(request, top),
                k=request.k,
                user=self.feature_store.user_features(request.user_id),
                # a caller may ask for the exploit order (the simulator's checkpoints do)
                explore=request.context.get("explore", True) is not False,
            )
        except redis.RedisError as error:  # Redis away: no traceback per request
            log.warning("online ranker skipped for %s: %s", request.request_id, error)
            return degrade(result, f"online ranker skipped: Redis: {error}"), None
        except Exception as error:  # serve the cascade's order rather than nothing
            log.exception("online ranker failed for %s", request.request_id)
            return degrade(result, f"online ranker failed: {type(error).__name__}: {error}"), None
        pinned = [i for i, item in enumerate(top) if "no_text" in item.flags]
        explored = order.explored - set(pinned)
        items = [
            replace(
                top[i],
                position=position,
                flags=(*top[i].flags, "explored") if i in explored else top[i].flags,
            )
            for position, i in enumerate(served_ranks(order.order, pinned), 1)
        ]
        info = OnlineInfo(
            features={item.doc_id: order.features[i] for i, item in enumerate(top)},
            explored=frozenset(top[i].doc_id for i in explored),
            randomized=order.randomized,
        )
        took_s = time.perf_counter() - started
        self.online_s += ONLINE_COST_ALPHA * (took_s - self.online_s)
        timings = result.timings_ms | {"online": 1000 * took_s}
        served = replace(
            result,
            items=items + result.items[len(top) :],
            model_version=f"{result.model_version};online",
            timings_ms=timings,
        )
        return served, info

    def online_candidates(
        self, request: Candidates, top: list[CascadeItem]
    ) -> list[ScoredCandidate]:
        """The online ranker's view of the cascade's top: its scores and item features."""
        given = {c.doc_id: c for c in request.candidates}
        stored = self.feature_store.item_features([item.doc_id for item in top])
        return [
            ScoredCandidate(
                doc_id=item.doc_id,
                final=float(item.score) if item.stage == FINAL_STAGE else None,
                ce=float(item.score) if item.stage in CROSS_TIERS else None,
                dense=float(item.score) if item.stage in DENSE_TIERS else None,
                first_stage=float(given[item.doc_id].first_stage_score),
                features=features | dict(given[item.doc_id].features),
            )
            for item, features in zip(top, stored, strict=True)
        ]

    def ensure_vectors(self, doc_id: str, text: str) -> int:
        """Encode and store a document's vectors for this cascade's vector tiers (ingestion).

        Serving only reads them: the vector tiers never encode a document inside a request
        (a candidate without a stored vector is left unscored by that tier and counted, see
        :meth:`take_vectors_missing`). Returns how many vectors were encoded (0 when they
        were stored already).
        """
        document = [TextCandidate(doc_id, text, 0.0)]
        tiers = [t for t in self.cascade.tiers.values() if hasattr(t, "ensure_vectors")]
        return sum(tier.ensure_vectors(document) for tier in tiers)

    def take_vectors_missing(self) -> dict[str, int]:
        """Candidates each vector tier scored without a stored vector since the last call."""
        counts = {
            name: tier.take_missing()
            for name, tier in self.cascade.tiers.items()
            if hasattr(tier, "take_missing")
        }
        return {name: count for name, count in counts.items() if count}

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

    def to_ranking(
        self, request: Candidates, result: CascadeResult, lookup_ms: float, queued_ms: float = 0.0
    ) -> Ranking:
        timings = {"queue": queued_ms, "lookup": lookup_ms, **result.timings_ms}
        retrieve_ms = request.context.get("retrieve_ms")
        if isinstance(retrieve_ms, int | float):
            timings = {"retrieve": float(retrieve_ms), **timings}
        reasons = [result.degraded_reason] if result.degraded_reason else []
        reasons += [f"{tier} skipped: {why}" for tier, why in result.skipped.items()]
        return Ranking(
            request_id=request.request_id,
            model_version=result.model_version,
            # plain dicts, validated in one call: a RankedItem per item costs several
            # times more, and a ranking may hold 1,000 of them
            items=[
                {
                    "doc_id": item.doc_id,
                    "score": float(item.score),
                    "position": item.position,
                    "flags": list(item.flags),
                }
                for item in result.items
            ],
            timings_ms=timings,
            degraded=result.degraded,
            degraded_reason="; ".join(reasons) or None,
            user_id=request.user_id,
            session_id=request.session_id,
        )

    def impression(
        self, request: Candidates, result: CascadeResult, online: OnlineInfo | None = None
    ) -> dict[str, Any]:
        """What was served, for joining clicks: positions, features, model version.

        ``items`` are the shown results in served order. Each carries ``ranker_features``, the
        online ranker's prior-model features as they were when served (what the learner
        needs), and whether exploration placed it; ``randomized`` marks a randomized list.

        It holds only what the joins read (the learner, experiments, shadows), with features
        rounded to :data:`FEATURE_DIGITS` significant digits: one is kept in Redis per request
        until its clicks can no longer come, so its size is most of what a request costs
        Redis. Scores, tiers and flags are in the published ranking (the ``rankings`` topic),
        the audit record of what was served.
        """
        info = online or OnlineInfo()
        shown = result.items[: shown_count(request)]
        return {
            "request_id": request.request_id,
            "query": request.query,
            "user_id": request.user_id,
            "session_id": request.session_id,
            "model_version": result.model_version,
            "served_at": time.time(),
            "online": online is not None,
            "randomized": info.randomized,
            "items": [
                {
                    "doc_id": item.doc_id,
                    "position": item.position,
                    "ranker_features": rounded(info.features.get(item.doc_id, {})),
                    "explored": item.doc_id in info.explored,
                }
                for item in shown
            ],
        }
