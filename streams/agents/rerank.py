"""The agents a worker runs.

- ``rerank``: ``candidates`` -> ``rankings`` through the cross-encoder cascade
  (:mod:`streamrank.streams.serving`), several requests at once, inference in executor threads.
- ``items`` and ``users``: keep the feature store in Redis up to date; ``items`` also encodes
  each document's vectors for the serving cascade's dense tier, so requests only read them.
- ``learn`` (:mod:`streamrank.streams.agents.learn`, when online learning is on): ``interactions`` -> the online
  ranker's click statistics in Redis, each session once; it reads its topic in batches with a
  consumer of its own (group ``<app_id>-learn``), not as a Faust agent.

Every handler is idempotent: a request whose ranking was already published (a replay after a
crash, a duplicate from the producer) is skipped, and item and user updates are overwrites, so
replays double nothing. A message that does not decode goes to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from streamrank.streams.agents.control import follow_control
from streamrank.streams.app import app, settings, topic
from streamrank.streams.events import Candidates, ContractError, Event, Item, Ranking, User, decode
from streamrank.streams.kafka.deadletter import dead_letter_for, send_to_dead_letters
from streamrank.streams.online import OnlineServing, online_ranker_for
from streamrank.streams.serving import Reranker, cascade_for
from streamrank.streams.state.connections import async_redis_client, key, redis_client, registry_for
from streamrank.streams.state.feature_store import FeatureStore
from streamrank.streams.state.service_metrics import ServiceMetrics
from streamrank.streams.versions import VersionedServing
from streamrank.streams.web import mount as mount_pages

log = logging.getLogger(__name__)

candidates_topic = topic("candidates")
rankings_topic = topic("rankings")
items_topic = topic("items")
users_topic = topic("users")
deadletter_topic = topic("deadletter")

redis = async_redis_client(settings)
limits = settings.limits()
# Blocking work (inference, synchronous Redis calls) runs here, never on the event loop.
executor = ThreadPoolExecutor(
    max_workers=settings.inference_threads + 2, thread_name_prefix="streamrank"
)
sync_redis = redis_client(settings)
feature_store = FeatureStore(sync_redis, settings)

# One online ranker per worker, shared by the rerank agent's threads and the learn agent.
online = (
    OnlineServing(online_ranker_for(settings, sync_redis), settings.exploration_max_loss)
    if settings.online_learning
    else None
)
registry = registry_for(settings, sync_redis) if settings.registry_key else None


def build_reranker(pipeline: str | None) -> Reranker:
    return Reranker(cascade_for(settings, sync_redis, pipeline), feature_store, settings, online)


# The registry's active version (or settings.pipeline without a registry), switched live by
# `promote` / `rollback`; shadows are loaded here too when experiments are configured.
serving = VersionedServing(settings, build_reranker, registry)
metrics = ServiceMetrics(sync_redis, settings)


async def run_blocking(function: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(executor, function, *args)


async def decoded(stream: faust.StreamT[bytes], kind: str, agent: str) -> AsyncIterator[Event]:
    """The stream's messages as events; those that do not decode go to the dead letters."""
    async for event in stream.events():
        try:
            yield decode(kind, event.value, limits)
        except ContractError as error:
            letter = dead_letter_for(event.value, event.message, error, agent=agent)
            await send_to_dead_letters(letter, deadletter_topic, redis, settings)
            log.warning("dead letter from %s: %s", letter.topic, error)


# Requests being ranked right now, by id. Duplicates share a key, hence a partition, hence this
# worker: a duplicate that arrives while the original is in flight waits for it, then finds
# the done-marker, instead of racing it (the agent runs several requests concurrently).
in_flight: dict[str, asyncio.Future] = {}


async def rerank_one(request: Candidates) -> None:
    while (running := in_flight.get(request.request_id)) is not None:
        await asyncio.shield(running)
    # Claimed before the first await below, so no other coroutine can slip in between.
    in_flight[request.request_id] = asyncio.get_running_loop().create_future()
    try:
        done_key = key(settings, "done", "rerank", request.request_id)
        if await redis.exists(done_key):
            return
        ranking = await run_blocking(serve, request)
        delivery = await rankings_topic.send(
            key=request.request_id.encode(), value=ranking.to_bytes()
        )
        await delivery
        # Marked only after the broker has the ranking: a crash in between replays the
        # request, which publishes the same ranking again under the same key (at-least-once).
        await redis.set(done_key, b"1", ex=settings.dedupe_ttl_s)
    finally:
        in_flight.pop(request.request_id).set_result(None)


def serve(request: Candidates) -> Ranking:
    """Rank and record the impression; runs in an executor thread."""
    ranking, impression = serving.rank(request)
    feature_store.record_impression(request.request_id, impression)
    metrics.record_ranking(impression["latency_ms"], ranking.degraded)
    return ranking


def ingest(item: Item) -> None:
    """Store a document and encode its vectors for the serving cascade; runs in a thread."""
    feature_store.apply_item(item)
    if item.op == "upsert" and item.text is not None:
        text = feature_store.texts([item.doc_id])[0]
        try:
            if text:
                serving.slot.current.ranker.ensure_vectors(item.doc_id, text)
        except Exception:  # stored all the same; the first request that ranks it encodes it
            log.exception("could not encode document %s on ingestion", item.doc_id)


def active_version() -> str | None:
    """The version to serve now (and the shadows' rankers brought up to date)."""
    assert registry is not None
    serving.refresh_shadows()
    return registry.active()


if registry is not None:

    @app.task
    async def control() -> None:
        """Follow promotions and rollbacks (see :mod:`streamrank.streams.agents.control`)."""
        await follow_control(
            serving.slot,
            active_version,
            settings.kafka_bootstrap,
            settings.topic("control"),
            settings.control_poll_s,
            settings.aiokafka_client_options(),
        )


if settings.web_enabled:
    mount_pages(
        app, settings, sync_redis, lambda: serving.slot.current.version or settings.pipeline
    )


@app.agent(candidates_topic, concurrency=settings.inference_threads)
async def rerank(stream: faust.StreamT[bytes]) -> None:
    async for request in decoded(stream, "candidates", agent="rerank"):
        assert isinstance(request, Candidates)
        await rerank_one(request)


@app.agent(items_topic)
async def items(stream: faust.StreamT[bytes]) -> None:
    async for item in decoded(stream, "items", agent="items"):
        assert isinstance(item, Item)
        await run_blocking(ingest, item)


@app.agent(users_topic)
async def users(stream: faust.StreamT[bytes]) -> None:
    async for user in decoded(stream, "users", agent="users"):
        assert isinstance(user, User)
        await run_blocking(feature_store.apply_user, user)
