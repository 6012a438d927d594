"""A streamrank worker: its parts, built once, and the Faust app with every agent on it.

Nothing of the runtime does work at import: settings are read, Redis clients made, models
loaded and agents declared only when :func:`build` is called (by ``streamrank worker``). So
any module can be imported by tools, tests and documentation without services, model files
or a valid configuration, and two apps with different settings can live in one process.

The agents of :mod:`streamrank.streams.agents` receive a :class:`WorkerParts`: one executor,
one online ranker, one serving cascade and one set of Redis clients per worker, shared by
every agent, exactly as when they were module globals.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import faust
import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from streamrank.models.registry import ModelRegistry, Version
from streamrank.streams.agents import learn, rerank, retrieve
from streamrank.streams.app import create_app, topic
from streamrank.streams.config import Settings
from streamrank.streams.events import DeadLetter, Limits
from streamrank.streams.final_ranking import FeatureLogger, feature_logger_for, final_stage_for
from streamrank.streams.kafka.deadletter import (
    handle_stream,
    send_to_dead_letters,
)
from streamrank.streams.kafka.topics import check_topics
from streamrank.streams.online import OnlineServing, online_ranker_for
from streamrank.streams.serving import Reranker, cascade_for
from streamrank.streams.state.breaker import request_clients
from streamrank.streams.state.connections import redis_client, registry_for
from streamrank.streams.state.feature_feed import FeatureFeed
from streamrank.streams.state.feature_store import FeatureStore
from streamrank.streams.state.journal import JournalError
from streamrank.streams.state.restore import RestoreSummary, restore_if_lost
from streamrank.streams.state.rules_store import LiveRules, RulesStore
from streamrank.streams.state.service_metrics import ServiceMetrics
from streamrank.streams.versions import VersionedServing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerParts:
    """What the agents of one worker share; made once by :func:`build_parts`.

    Attributes
    ----------
    app
        The Faust app the agents are registered on.
    redis, sync_redis
        Redis clients for the event loop and for executor threads.
    executor
        Where blocking work (inference, synchronous Redis calls) runs, never on the event loop.
    online
        The worker's one online ranker, shared by the rerank threads and the learn path
        (None when online learning is off).
    registry
        The model registry (None without ``registry_key``).
    serving
        The registry's active version (or ``settings.pipeline``), switched live by
        ``promote`` / ``rollback``; shadows are loaded here too when experiments are on.
    rules
        The business rules every ranker applies after the model, followed live
        (:func:`~streamrank.streams.agents.control.follow_rules`).
    feature_feed
        Feeds the feature store's state from items, users and learned interactions (None when
        ``feature_store`` is off).
    feature_logger
        Makes the ``impressions`` topic's feature log of each served list (None when
        ``feature_store`` or ``feature_log`` is off).
    """

    settings: Settings
    app: faust.App
    redis: aioredis.Redis
    sync_redis: redis.Redis
    limits: Limits
    executor: ThreadPoolExecutor
    feature_store: FeatureStore
    online: OnlineServing | None
    registry: ModelRegistry | None
    serving: VersionedServing
    metrics: ServiceMetrics
    deadletter_topic: faust.TopicT
    rules: LiveRules | None = None
    feature_feed: FeatureFeed | None = None
    feature_logger: FeatureLogger | None = None

    def topic(self, kind: str) -> faust.TopicT:
        """A streamrank topic of this worker's app by kind, as raw bytes."""
        return topic(self.app, self.settings, kind)

    async def run_blocking(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` in the worker's executor, awaited."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def handle_each(
        self,
        stream: faust.StreamT[bytes],
        kind: str,
        agent: str,
        handler: Callable[[Any], Awaitable[None]],
    ) -> None:
        """Decode each message and await ``handler(event)``; a message never stalls the stream.

        One that does not decode goes to the dead letters at once; one whose handler keeps
        failing goes there after ``poison_tries`` (see
        :func:`~streamrank.streams.kafka.deadletter.process_or_dead_letter`), while Redis
        being unreachable is waited out.
        """
        await handle_stream(stream, kind, agent, handler, self.settings, self.dead_letter)

    async def dead_letter(self, letter: DeadLetter) -> None:
        await send_to_dead_letters(letter, self.deadletter_topic, self.redis, self.settings)
        log.warning("dead letter (%s) from %s: %s", letter.reason, letter.topic, letter.error)


def build_parts(settings: Settings, app: faust.App) -> WorkerParts:
    """Connect the clients and load the serving cascade (its models) once for ``app``."""
    sync_redis = redis_client(settings)
    # The request path's clients: short timeouts and a circuit breaker (Redis outages degrade
    # rankings instead of stopping them); the learn path and the registry keep sync_redis.
    fast_redis, fast_async_redis, _ = request_clients(settings)
    feature_store = FeatureStore(fast_redis, settings)
    online = (
        OnlineServing(
            online_ranker_for(settings, sync_redis, reads=fast_redis),
            settings.exploration_max_loss,
        )
        if settings.online_learning
        else None
    )
    registry = registry_for(settings, sync_redis) if settings.registry_key else None
    rules = start_rules(settings, sync_redis)

    def build_reranker(version: Version | None) -> Reranker:
        cascade = cascade_for(settings, fast_redis, version.pipeline if version else None)
        final = final_stage_for(settings, registry, version, fast_redis)
        return Reranker(cascade, feature_store, settings, online, rules, final)

    return WorkerParts(
        settings=settings,
        app=app,
        redis=fast_async_redis,
        sync_redis=sync_redis,
        limits=settings.limits(),
        executor=ThreadPoolExecutor(
            max_workers=settings.inference_threads + 2, thread_name_prefix="streamrank"
        ),
        feature_store=feature_store,
        online=online,
        registry=registry,
        serving=VersionedServing(settings, build_reranker, registry),
        metrics=ServiceMetrics(fast_redis, settings),
        deadletter_topic=topic(app, settings, "deadletter"),
        rules=rules,
        feature_feed=FeatureFeed(settings, sync_redis) if settings.feature_store else None,
        feature_logger=feature_logger_for(settings, fast_redis),
    )


def start_rules(settings: Settings, client: redis.Redis) -> LiveRules:
    """The worker's business rules, read once before the first request (Redis down: none
    until the rules follower reads them)."""
    rules = LiveRules(RulesStore(client, settings))
    try:
        rules.refresh()
    except RedisError as error:
        log.error("cannot read the business rules at start (%s); none until Redis answers", error)
    return rules


def build(settings: Settings) -> faust.App:
    """The worker's Faust app with every agent and task registered, ready to run.

    Loads the serving models (raises
    :class:`~streamrank.models.assets.model_files.ModelFilesError` when they are missing)
    and, with online learning on, the learner's newest checkpoint. Warns about topics whose
    settings differ from those streamrank creates them with (:func:`check_topics`), and
    rebuilds an emptied registry from the state journal first (:func:`restore_at_start`).
    """
    check_topics(settings)
    restore_at_start(settings)
    app = create_app(settings)
    parts = build_parts(settings, app)
    rerank.register(parts)
    learn.register(parts)
    retrieve.register(parts)
    return app


def restore_at_start(settings: Settings) -> RestoreSummary | None:
    """Rebuild Redis's registry and checkpoints from the journal when Redis lost them.

    Runs before anything reads the registry (the active version, the learner's checkpoint),
    so a worker started on an emptied Redis serves the version that was active, not
    ``settings.pipeline`` (see :func:`~streamrank.streams.state.restore.restore_if_lost`).
    A journal that cannot be read is logged, not fatal: the worker cannot consume without
    the broker either, and ``streamrank state restore`` mends later.
    """
    try:
        summary = restore_if_lost(settings, redis_client(settings))
    except (JournalError, RedisError) as error:
        log.error("could not restore state at start: %s; run `streamrank state restore`", error)
        return None
    if summary is not None and (summary.restored or summary.failed):
        log.warning("Redis had lost registry records: %s", summary.describe())
        for problem in summary.problems:
            log.error("state restore: %s", problem)
    return summary
