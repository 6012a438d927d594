"""Connections to Redis, where every piece of state shared between workers lives."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

from streamrank.models.registry import ModelRegistry
from streamrank.shadow.evidence import ShadowStats
from streamrank.streams.config import Settings


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, **settings.redis_options())


def async_redis_client(settings: Settings) -> aioredis.Redis:
    return aioredis.Redis.from_url(settings.redis_url, **settings.redis_options())


def key(settings: Settings, *parts: str) -> str:
    """A Redis key under this deployment's prefix, so two deployments can share one Redis."""
    return settings.topic_prefix + ":".join(parts)


def registry_for(settings: Settings, client: redis.Redis) -> ModelRegistry:
    """The deployment's model registry (raises if no ``registry_key`` is configured)."""
    return ModelRegistry(
        client, prefix=key(settings, "registry:"), key=settings.registry_key.encode()
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
