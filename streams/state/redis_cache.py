"""Redis-backed caches shared by every worker: cross-encoder scores and document vectors.

Both are plain key-value caches with a TTL; the keys are built by the cascade (model version,
normalized query, document id and a hash of the text), so a changed document or a new model
never hits a stale entry.

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
from typing import TypeVar

import numpy as np
import redis

log = logging.getLogger(__name__)
T = TypeVar("T")


class _FailSoft:
    """Cache calls that turn a Redis error into ``fallback`` (and count it)."""

    failures = 0

    def soft(self, call: Callable[[], T], fallback: T) -> T:
        try:
            return call()
        except redis.RedisError as error:
            self.failures += 1
            log.debug("%s: Redis did not answer (%s)", type(self).__name__, error)
            return fallback


class RedisScoreCache(_FailSoft):
    """Scores by key, as float32 bytes; ``get_many`` is one MGET, ``set_many`` one pipeline."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    def get_many(self, keys: Sequence[str]) -> list[float | None]:
        if not keys:
            return []
        names = [self.prefix + key for key in keys]
        raw = self.soft(lambda: self.client.mget(names), [None] * len(keys))
        return [None if value is None else float(value) for value in raw]

    def set_many(self, scores: Mapping[str, float]) -> None:
        if not scores:
            return
        pipe = self.client.pipeline(transaction=False)
        for key, score in scores.items():
            pipe.set(self.prefix + key, repr(float(score)), ex=self.ttl_s)
        self.soft(pipe.execute, [])


class RedisVectorCache(_FailSoft):
    """Float32 vectors (or matrices of token vectors) by key, stored as raw bytes + shape."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        if not keys:
            return []
        names = [self.prefix + key for key in keys]
        raw = self.soft(lambda: self.client.mget(names), [None] * len(keys))
        return [None if value is None else _decode(value) for value in raw]

    def set_many(self, vectors: Mapping[str, np.ndarray]) -> None:
        if not vectors:
            return
        pipe = self.client.pipeline(transaction=False)
        for key, vector in vectors.items():
            pipe.set(self.prefix + key, _encode(vector), ex=self.ttl_s)
        self.soft(pipe.execute, [])


def _encode(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.float32)
    header = np.array([array.ndim, *array.shape], dtype=np.int32).tobytes()
    return header + array.tobytes()


def _decode(raw: bytes) -> np.ndarray:
    ndim = int(np.frombuffer(raw[:4], dtype=np.int32)[0])
    shape = tuple(np.frombuffer(raw[4 : 4 + 4 * ndim], dtype=np.int32))
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.float32).reshape(shape)
