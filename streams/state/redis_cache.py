"""Redis-backed caches shared by every worker: cross-encoder scores and document vectors.

Both are plain key-value caches with a TTL; the keys are built by the cascade (model version,
normalized query, document id and a hash of the text), so a changed document or a new model
never hits a stale entry.

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

from collections.abc import Mapping, Sequence

import numpy as np
import redis


class RedisScoreCache:
    """Scores by key, as float32 bytes; ``get_many`` is one MGET, ``set_many`` one pipeline."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    def get_many(self, keys: Sequence[str]) -> list[float | None]:
        if not keys:
            return []
        raw = self.client.mget([self.prefix + key for key in keys])
        return [None if value is None else float(value) for value in raw]

    def set_many(self, scores: Mapping[str, float]) -> None:
        if not scores:
            return
        pipe = self.client.pipeline(transaction=False)
        for key, score in scores.items():
            pipe.set(self.prefix + key, repr(float(score)), ex=self.ttl_s)
        pipe.execute()


class RedisVectorCache:
    """Float32 vectors (or matrices of token vectors) by key, stored as raw bytes + shape."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        if not keys:
            return []
        raw = self.client.mget([self.prefix + key for key in keys])
        return [None if value is None else _decode(value) for value in raw]

    def set_many(self, vectors: Mapping[str, np.ndarray]) -> None:
        if not vectors:
            return
        pipe = self.client.pipeline(transaction=False)
        for key, vector in vectors.items():
            pipe.set(self.prefix + key, _encode(vector), ex=self.ttl_s)
        pipe.execute()


def _encode(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.float32)
    header = np.array([array.ndim, *array.shape], dtype=np.int32).tobytes()
    return header + array.tobytes()


def _decode(raw: bytes) -> np.ndarray:
    ndim = int(np.frombuffer(raw[:4], dtype=np.int32)[0])
    shape = tuple(np.frombuffer(raw[4 : 4 + 4 * ndim], dtype=np.int32))
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.float32).reshape(shape)
