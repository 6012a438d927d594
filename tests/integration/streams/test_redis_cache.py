"""The Redis caches, against the real Redis."""

from __future__ import annotations

import time

import numpy as np
import pytest
import redis

from streamrank.streams.config import Settings
from streamrank.streams.state.buckets import is_cluster
from streamrank.streams.state.connections import redis_client
from streamrank.streams.state.redis_cache import RedisScoreCache, RedisVectorCache

pytestmark = pytest.mark.integration


def client(settings: Settings) -> redis.Redis:
    return redis_client(settings)


def test_scores_round_trip_and_expire(settings: Settings) -> None:
    cache = RedisScoreCache(client(settings), prefix=settings.topic_prefix + "score:", ttl_s=1)
    cache.set_many({"q|a": 3.25, "q|b": -1.0})
    assert cache.get_many(["q|a", "q|b", "q|c"]) == [3.25, -1.0, None]
    time.sleep(2.1)
    assert cache.get_many(["q|a"]) == [None]


def test_vectors_and_token_matrices_round_trip(settings: Settings) -> None:
    cache = RedisVectorCache(client(settings), prefix=settings.topic_prefix + "vec:", ttl_s=60)
    vector = np.arange(384, dtype=np.float32) / 384
    tokens = np.random.default_rng(0).normal(size=(17, 128)).astype(np.float32)
    cache.set_many({"v": vector, "t": tokens})
    got_vector, got_tokens, missing = cache.get_many(["v", "t", "nothing"])
    np.testing.assert_array_equal(got_vector, vector)
    np.testing.assert_array_equal(got_tokens, tokens)
    assert missing is None


def test_a_read_of_1000_keys_crosses_buckets(settings: Settings) -> None:
    """1,000 keys in every bucket read back: on a cluster, which refuses an MGET over two
    slots, a read not split by bucket would fail soft and give only misses."""
    redis = client(settings)
    cache = RedisScoreCache(redis, prefix=settings.topic_prefix + "score:", ttl_s=60)
    keys = [f"ce|q|d{n}" for n in range(1000)]
    cache.set_many({k: float(n) for n, k in enumerate(keys[:900])})
    assert cache.get_many(keys) == [float(n) for n in range(900)] + [None] * 100
    assert cache.failures == 0
    name = cache.redis_key(keys[0])
    assert name.startswith(settings.topic_prefix + "score:{f") and name.endswith("}" + keys[0])
    assert redis.get(name) == b"0.0"
    assert cache.clustered == is_cluster(redis)
