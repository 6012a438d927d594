"""The agents a worker runs.

- ``rerank``: ``candidates`` -> ``rankings`` through the cross-encoder cascade and the
  version's final ranker (:mod:`streamrank.streams.serving`), several requests at once,
  inference in executor threads; after each ranking, its feature log -> ``impressions``
  (:mod:`streamrank.streams.final_ranking`).
- ``items`` and ``users``: keep the feature store in Redis up to date; ``items`` also encodes
  each document's vectors for the serving cascades' vector tiers, so requests only read them
  (a request never encodes a document; candidates without a stored vector are counted in
  ``/metrics`` as ``streamrank_vectors_missing_total``).
- ``learn`` (:mod:`streamrank.streams.agents.learn`, when online learning is on):
  ``interactions`` -> the online ranker's click statistics in Redis, each session once; it
  reads its topic in batches with a consumer of its own (group ``<app_id>-learn``), not as a
  Faust agent.

Every handler is idempotent: a request whose ranking was already published (a replay after a
crash, a duplicate from the producer) is skipped, and item and user updates are overwrites, so
replays double nothing. A message that does not decode goes to the dead-letter topic, and so
does one whose handler fails ``poison_tries`` times (Redis being unreachable is waited out
instead), so no message stalls its partition.

Redis outages. A request is ranked and published whether Redis answers or not: every Redis
call of ``rerank`` has a short timeout behind one circuit breaker
(:mod:`streamrank.streams.state.breaker`), and a failed one degrades the ranking rather than
failing the request (see :mod:`streamrank.streams.serving`). What a request served during an
outage costs:

- its impression waits in the worker's memory
  (:mod:`streamrank.streams.state.impression_backlog`, up to ``impression_backlog``) and is
  written when Redis answers again; clicks on it are learned if that is within
  ``orphan_window_s``, else the learn path dead-letters them as orphans;
- its done-marker is neither read nor written, so a replay of it (a crash before the offset
  commit, a duplicate from the producer) is ranked and published again: at-least-once, where
  it is exactly-once while Redis answers;
- it is not counted in the service metrics.

The ``items`` and ``users`` agents cannot do their work without Redis; their handlers raise
the outage as :class:`redis.ConnectionError`, which the worker's handler loop waits out with
backoff (:func:`~streamrank.streams.kafka.deadletter.process_or_dead_letter`) and redis-py
reconnects once Redis is back, so an outage delays them and never ends the worker.

:func:`register` adds them (with the control task and the web pages) to a worker's app; see
:func:`streamrank.streams.worker.build`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import faust
import redis

from streamrank.streams.agents.control import follow_control, follow_rules
from streamrank.streams.events import Candidates, Item, Ranking, User
from streamrank.streams.kafka.deadletter import consumed_at
from streamrank.streams.state.breaker import Breaker
from streamrank.streams.state.connections import key
from streamrank.streams.state.feature_feed import stored_vector
from streamrank.streams.state.feature_store import impression_record
from streamrank.streams.state.impression_backlog import ImpressionBacklog
from streamrank.streams.web import mount as mount_pages

if TYPE_CHECKING:
    from streamrank.streams.final_ranking import PendingLog
    from streamrank.streams.serving import Reranker
    from streamrank.streams.worker import WorkerParts

log = logging.getLogger(__name__)

KEPT_IMPRESSIONS_EVERY_S = 1.0
"""How often kept impressions are tried."""


class RerankAgents:
    """The handlers of the rerank, items and users agents and of the control task."""

    def __init__(self, parts: WorkerParts) -> None:
        self.parts = parts
        self.rankings_topic = parts.topic("rankings")
        self.impressions_topic = parts.topic("impressions")
        # Requests being ranked right now, by id. Duplicates share a key, hence a partition,
        # hence this worker: a duplicate that arrives while the original is in flight waits
        # for it, then finds the done-marker, instead of racing it (the agent runs several
        # requests concurrently).
        self.in_flight: dict[str, asyncio.Future] = {}
        # The request path's breaker (None: the async client is asked directly).
        self.breaker: Breaker | None = getattr(parts.feature_store.client, "breaker", None)
        settings = parts.settings
        self.backlog = ImpressionBacklog(settings.impression_backlog, settings.impression_ttl_s)

    async def rerank(self, stream: faust.StreamT[bytes]) -> None:
        await self.parts.handle_each(stream, "candidates", "rerank", self.rerank_one)

    async def items(self, stream: faust.StreamT[bytes]) -> None:
        await self.parts.handle_each(stream, "items", "items", self.ingest_item)

    async def users(self, stream: faust.StreamT[bytes]) -> None:
        await self.parts.handle_each(stream, "users", "users", self.apply_user)

    async def ingest_item(self, item: Item) -> None:
        await self.parts.run_blocking(self.ingest, item)

    async def apply_user(self, user: User) -> None:
        await self.parts.run_blocking(self.store_user, user)

    def store_user(self, user: User) -> None:
        """Store a user's features, then feed the feature store's state; runs in a thread."""
        self.parts.feature_store.apply_user(user)
        feed = getattr(self.parts, "feature_feed", None)  # parts without one: no feed
        if feed is not None:
            feed.user(user)

    async def rerank_one(self, request: Candidates) -> None:
        parts, settings = self.parts, self.parts.settings
        while (running := self.in_flight.get(request.request_id)) is not None:
            await asyncio.shield(running)
        # Claimed before the first await below, so no other coroutine can slip in between.
        self.in_flight[request.request_id] = asyncio.get_running_loop().create_future()
        try:
            done_key = key(settings, "done", "rerank", request.request_id)
            if await self.redis_or(None, parts.redis.exists, done_key):
                return
            consumed = consumed_at.get(None)
            ranking, pending = await parts.run_blocking(self.serve, request, consumed)
            delivery = await self.rankings_topic.send(
                key=request.request_id.encode(), value=ranking.to_bytes()
            )
            await delivery
            if pending is not None:
                await self.log_features(pending)
            # Marked only after the broker has the ranking: a crash in between replays the
            # request, which publishes the same ranking again under the same key (at-least-once).
            await self.redis_or(None, parts.redis.set, done_key, b"1", settings.dedupe_ttl_s)
        finally:
            self.in_flight.pop(request.request_id).set_result(None)

    async def redis_or(self, fallback: object, function: Any, *args: Any) -> Any:
        """``await function(*args)`` on the request path's async client, or ``fallback``
        when Redis does not answer (see the module docstring for what that costs)."""
        try:
            if self.breaker is None:
                return await function(*args)
            return await self.breaker.acall(function, *args)
        except redis.RedisError as error:
            log.warning("%s skipped: Redis: %s", function.__name__, error)
            return fallback

    async def log_features(self, pending: PendingLog) -> None:
        """Publish a served list's feature log to ``impressions``, after its ranking (so
        features computed for the log never add to the request's latency). A log that cannot
        be made (Redis away) is skipped with a warning: it is training data, not the answer."""
        logger = self.parts.feature_logger
        if logger is None:
            return
        try:
            event = await self.parts.run_blocking(logger.event, pending)
        except redis.RedisError as error:
            log.warning("feature log of %s skipped: Redis: %s", pending.request.request_id, error)
            return
        except Exception:  # a bug in the log must not fail the request that was served
            log.exception("feature log of %s failed", pending.request.request_id)
            return
        await self.impressions_topic.send(key=event.request_id.encode(), value=event.to_bytes())

    def serve(
        self, request: Candidates, consumed: float | None = None
    ) -> tuple[Ranking, PendingLog | None]:
        """Rank and record the impression; runs in an executor thread. Returns the ranking and
        the served list's feature log, still to be made (None: experiments are not logged).

        An impression Redis does not take makes the ranking degraded: it is served all the
        same, but clicks on it cannot be learned. ``consumed``: when the consumer handed the
        request over; the ranking's ``timings_ms["hop"]`` is the part of its ``queue`` spent
        before that (the producer, the broker, the fetch), so the re-rank stage's own added
        latency (consumed -> produced) can be told from the broker's.
        """
        from streamrank.streams.serving import FEATURE_LOG, waited_s

        ranking, impression = self.parts.serving.rank(
            request, waited_s(request.timestamp, time.time())
        )
        pending = impression.pop(FEATURE_LOG, None)
        if pending is not None:  # logged under the label it was served as (v7:..., say)
            pending = replace(pending, model_version=ranking.model_version)
        if consumed is not None:
            hop_ms = 1000 * waited_s(request.timestamp, consumed)
            ranking = ranking.model_copy(
                update={"timings_ms": ranking.timings_ms | {"hop": hop_ms}}
            )
        try:
            self.parts.feature_store.record_impression(request.request_id, impression)
        except redis.RedisError as error:
            kept = self.backlog.keep(request.request_id, impression_record(impression))
            what = "kept until Redis answers" if kept else "not recorded (clicks not learned)"
            reason = f"impression {what}: Redis: {error}"
            reasons = "; ".join(filter(None, [ranking.degraded_reason, reason]))
            ranking = ranking.model_copy(update={"degraded": True, "degraded_reason": reasons})
        try:
            self.parts.metrics.record_ranking(
                impression["latency_ms"], ranking.degraded, self.vectors_missing()
            )
        except redis.RedisError as error:
            log.warning("ranking %s not counted in the metrics: %s", request.request_id, error)
        return ranking, pending

    def write_kept_impressions(self) -> int:
        """Write the impressions an outage left in the backlog; how many. Runs in a thread."""
        try:
            return self.backlog.flush(self.parts.feature_store.record_impressions)
        except redis.RedisError as error:
            log.warning("%d kept impressions not written yet: Redis: %s", len(self.backlog), error)
            return 0

    async def write_kept_impressions_every_second(self) -> None:
        """Every second, write kept impressions, off the request path: a request that finds
        Redis back does not also carry the outage's backlog."""
        while not self.parts.app.should_stop:
            await asyncio.sleep(KEPT_IMPRESSIONS_EVERY_S)
            if len(self.backlog):
                await self.parts.run_blocking(self.write_kept_impressions)

    def rankers(self) -> list[Reranker]:
        """The rankers requests are served by here: the active version and the shadows that
        experiments serve (all share the worker's vector store)."""
        serving = self.parts.serving
        return [serving.slot.current.ranker, *list(serving.shadows.values())]

    def vectors_missing(self) -> dict[str, int]:
        """Candidates the vector tiers of :meth:`rankers` found without a stored vector since
        the last call, by tier (a request ranked by two rankers is counted by each)."""
        counts: dict[str, int] = {}
        for ranker in self.rankers():
            for tier, count in ranker.take_vectors_missing().items():
                counts[tier] = counts.get(tier, 0) + count
        return counts

    def ingest(self, item: Item) -> None:
        """Store a document and encode its vectors for the serving rankers; runs in a thread.

        This is where document vectors are made: a request never encodes a document, and
        leaves one without a stored vector unscored by the vector tiers.
        """
        feature_store = self.parts.feature_store
        feature_store.apply_item(item)
        text = None
        if item.op == "upsert" and item.text is not None:
            text = feature_store.texts([item.doc_id])[0]
            try:
                if text:
                    for ranker in self.rankers():  # the store is shared: each is encoded once
                        ranker.ensure_vectors(item.doc_id, text)
            except Exception:  # stored all the same; requests leave it unscored by those tiers
                log.exception("could not encode document %s on ingestion", item.doc_id)
        self.feed_item(item, text)

    def feed_item(self, item: Item, text: str | None) -> None:
        """Feed an ingested item to the feature store's state, with the dense vector stored
        for its ``text`` (None: the item's fields only)."""
        feed = getattr(self.parts, "feature_feed", None)  # parts without one: no feed
        if feed is None:
            return
        vector = None
        try:
            vector = stored_vector(self.rankers(), item.doc_id, text) if text else None
        except Exception:  # the item's fields are fed all the same
            log.exception("could not read the vector of document %s", item.doc_id)
        feed.item(item, vector)

    def active_version(self) -> str | None:
        """The version to serve now (and the shadows' rankers brought up to date), from a
        pointer record verified under the workers' key (None: keep serving)."""
        return self.parts.serving.active_version()

    def serving_version(self) -> str:
        """The version this worker serves now, for the web pages."""
        return self.parts.serving.slot.current.version or self.parts.settings.pipeline

    async def follow_rules(self) -> None:
        """Follow the business rules (:func:`~streamrank.streams.agents.control.follow_rules`)."""
        settings, rules = self.parts.settings, self.parts.rules
        assert rules is not None
        await follow_rules(
            rules.refresh,
            settings.kafka_bootstrap,
            settings.topic("control"),
            settings.control_poll_s,
            settings.aiokafka_client_options(),
        )

    async def control(self) -> None:
        """Follow promotions and rollbacks (see :mod:`streamrank.streams.agents.control`)."""
        settings = self.parts.settings
        await follow_control(
            self.parts.serving.slot,
            self.active_version,
            settings.kafka_bootstrap,
            settings.topic("control"),
            settings.control_poll_s,
            settings.aiokafka_client_options(),
        )


def register(parts: WorkerParts) -> RerankAgents:
    """Add the rerank, items and users agents, the control task (with a registry), the rules
    follower and the web pages (when enabled) to ``parts.app``; the handlers are returned."""
    app, settings = parts.app, parts.settings
    agents = RerankAgents(parts)
    app.task(agents.write_kept_impressions_every_second)
    if parts.registry is not None:
        app.task(agents.control)
    if parts.rules is not None:
        app.task(agents.follow_rules)
    if settings.web_enabled:
        mount_pages(app, settings, parts.sync_redis, agents.serving_version)
    # The names Faust gave these agents when they were declared at module level.
    app.agent(
        parts.topic("candidates"),
        name=f"{__name__}.rerank",
        concurrency=settings.inference_threads,
    )(agents.rerank)
    app.agent(parts.topic("items"), name=f"{__name__}.items")(agents.items)
    app.agent(parts.topic("users"), name=f"{__name__}.users")(agents.users)
    return agents
