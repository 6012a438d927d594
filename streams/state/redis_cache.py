"""Redis-backed caches shared by every worker: cross-encoder scores and document vectors.

Both are plain key-value caches with a TTL; the keys are built by the cascade (model version,
normalized query, document id and a hash of the text), so a changed document or a new model
never hits a stale entry. In Redis a key is ``<prefix>{<bucket tag>}<cache key>``
(:mod:`streamrank.streams.state.buckets`): a read of 1,000 keys is one ``MGET`` on a single
Redis and one per bucket (at most 16, in one pipeline) on a Redis Cluster, which takes an
``MGET`` only over keys of one slot.

A cache never fails a request: when Redis does not answer (down, timed out, the request
path's circuit breaker open), a read is all misses and a write is dropped, so the cascade
computes what it would have read; the scores and the order are the same, only slower. The
failures are counted in ``failures`` and logged at debug level (the ranking says why it is
degraded when anything it serves depends on Redis).

Examples
--------
>>> from streamrank.streams.config import get_settings
>>> from streamrank.streams.state.connections import redis_client
>>> client = redis_client(get_settings())  # $STREAMRANK_REDIS_URL, else local Redis
>>> cache = RedisScoreCache(client, prefix="doctest:", ttl_s=5)
>>> cache.set_many({"a": 1.5})
>>> cache.get_many(["a", "b"])
[1.5, None]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import redis
from redis.exceptions import SlotNotCoveredError

from streamrank.streams.state.buckets import Spread, buckets_of, is_cluster, tagged

log = logging.getLogger(__name__)
T = TypeVar("T")


class _FailSoft:
    """Cache calls that turn a Redis error into ``fallback`` (and count it)."""

    failures = 0

    def soft(self, call: Callable[[], T], fallback: T) -> T:
        try:
            return call()
        # SlotNotCoveredError: a cluster's master is down and no replica was promoted yet
        except (redis.RedisError, SlotNotCoveredError) as error:
            self.failures += 1
            log.debug("%s: Redis did not answer (%s)", type(self).__name__, error)
            return fallback


class _TaggedCache(_FailSoft):
    """Raw values by key under ``prefix`` and a bucket tag, with a TTL."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.clustered = is_cluster(client)

    def redis_key(self, key: str) -> str:
        """The Redis key of a cache key."""
        (name,) = tagged(self.prefix, [key])
        return name.decode()

    def _get_raw(self, keys: Sequence[str]) -> list[Any]:
        """The stored bytes of each key (None where absent): one round trip, or all misses."""
        return self.soft(lambda: self._mget(keys), [None] * len(keys))

    def _mget(self, keys: Sequence[str]) -> list[Any]:
        names = tagged(self.prefix, keys)
        if not self.clustered:
            return self.client.mget(names)  # type: ignore[no-any-return]
        spread = Spread.of(buckets_of(keys), grouped=True)
        pipe = self.client.pipeline(transaction=False)
        for part in spread.parts(names):
            pipe.execute_command("MGET", *part)  # a cluster pipeline refuses pipe.mget
        return spread.merge(pipe.execute())

    def _set_raw(self, values: Mapping[str, bytes | str]) -> None:
        """Store each value with the TTL (one pipeline of single-key SETs); dropped on error."""
        names = tagged(self.prefix, list(values))
        pipe = self.client.pipeline(transaction=False)
        for name, value in zip(names, values.values(), strict=True):
            pipe.set(name, value, ex=self.ttl_s)
        self.soft(pipe.execute, [])


class RedisScoreCache(_TaggedCache):
    """Scores by key, as ``repr`` text; ``get_many`` is one round trip, ``set_many`` one
    pipeline."""

    def get_many(self, keys: Sequence[str]) -> list[float | None]:
        if not keys:
            return []
        return [None if value is None else float(value) for value in self._get_raw(keys)]

    def set_many(self, scores: Mapping[str, float]) -> None:
        if scores:
            self._set_raw({key: repr(float(score)) for key, score in scores.items()})


class RedisVectorCache(_TaggedCache):
    """Float32 vectors (or matrices of token vectors) by key, stored as raw bytes + shape."""

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        if not keys:
            return []
        return [None if value is None else _decode(value) for value in self._get_raw(keys)]

    def set_many(self, vectors: Mapping[str, np.ndarray]) -> None:
        if vectors:
            self._set_raw({key: _encode(vector) for key, vector in vectors.items()})


def _encode(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.float32)
    header = np.array([array.ndim, *array.shape], dtype=np.int32).tobytes()
    return header + array.tobytes()


def _decode(raw: bytes) -> np.ndarray:
    ndim = int(np.frombuffer(raw[:4], dtype=np.int32)[0])
    shape = tuple(np.frombuffer(raw[4 : 4 + 4 * ndim], dtype=np.int32))
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.float32).reshape(shape)
