"""Connections to Redis, where every piece of state shared between workers lives."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster
import redis.cluster

from streamrank.models.registry import Journal, ModelRegistry
from streamrank.shadow.evidence import ShadowStats
from streamrank.streams.config import Settings
from streamrank.streams.state.journal import KafkaJournal


def redis_client(settings: Settings) -> redis.Redis:
    """A blocking client: ``RedisCluster`` when ``redis_cluster`` is set, else ``Redis``.

    The cluster client finds every node from the one the URL names and sends each command to
    the master of its key's slot. It has the methods of ``Redis`` that streamrank uses (one
    more reason keys touched together share a hash tag: a script, ``MULTI`` or ``MGET`` across
    slots is refused), hence the one return type.
    """
    if settings.redis_cluster:
        return redis.RedisCluster.from_url(  # type: ignore[return-value]
            settings.redis_url, **cluster_options(settings), **settings.redis_options()
        )
    return redis.Redis.from_url(settings.redis_url, **settings.redis_options())


def async_redis_client(settings: Settings) -> aioredis.Redis:
    """The asyncio twin of :func:`redis_client`."""
    if settings.redis_cluster:
        return aioredis.RedisCluster.from_url(  # type: ignore[return-value]
            settings.redis_url,
            **cluster_options(settings, asynchronous=True),
            **settings.redis_options(),
        )
    return aioredis.Redis.from_url(settings.redis_url, **settings.redis_options())


def cluster_options(settings: Settings, asynchronous: bool = False) -> dict[str, Any]:
    """The startup nodes of a cluster client: ``redis_cluster_nodes`` besides the URL's node.

    A cluster client learns the slot map from the first startup node that answers; with the
    URL's node alone, a client created while that node is down (a worker starting, an
    executor thread's client, the CLI) fails although its replica took over.
    """
    node = redis.asyncio.cluster.ClusterNode if asynchronous else redis.cluster.ClusterNode
    nodes = [node(host, port) for host, port in settings.redis_startup_nodes()]
    return {"startup_nodes": nodes} if nodes else {}


def key(settings: Settings, *parts: str) -> str:
    """A Redis key under this deployment's prefix, so two deployments can share one Redis."""
    return settings.topic_prefix + ":".join(parts)


def registry_for(
    settings: Settings,
    client: redis.Redis,
    operator_key: bytes | None = None,
    journal: Journal | None = None,
) -> ModelRegistry:
    """The deployment's model registry (raises if no ``registry_key`` is configured).

    Parameters
    ----------
    operator_key
        The key pointer records are signed and verified with. None: the workers' rule, the
        configured operator token or else the registry key. The CLI passes the token the
        operator presents instead, so that a token in the caller's own environment grants
        nothing.
    journal
        Where every registry write goes before Redis. None: the deployment's ``state``
        topic (:class:`~streamrank.streams.state.journal.KafkaJournal`) when
        ``journal_enabled``, else no journal. The Kafka journal connects on its first write,
        so a registry that only reads needs no broker; tools and tests that write without
        Kafka set ``journal_enabled=False`` (``STREAMRANK_JOURNAL_ENABLED=false``).
    """
    if operator_key is None:
        operator_key = (settings.operator_token or settings.registry_key).encode()
    if journal is None and settings.journal_enabled:
        journal = KafkaJournal(settings)
    return ModelRegistry(
        client,
        prefix=key(settings, "registry:"),
        key=settings.registry_key.encode(),
        operator_key=operator_key,
        journal=journal,
    )


def shadow_stats_for(settings: Settings, client: redis.Redis, version: str) -> ShadowStats:
    """A shadow version's evidence under the deployment's prefix and Redis lifetimes.

    The shadow's rankings live as long as the primary's impressions: a click can arrive as
    late as the impression it joins.
    """
    return ShadowStats(
        client,
        prefix=key(settings, "shadow:"),
        version=version,
        dedupe_ttl_s=settings.dedupe_ttl_s,
        ranking_ttl_s=settings.impression_ttl_s,
    )
