"""The request path without Redis: the circuit breaker and the caches that fail soft.

No service is needed: the clients point at a port nothing listens on (a refused connection
is what a stopped Redis looks like from the client).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import redis

from streamrank.streams.config import Settings
from streamrank.streams.state.breaker import Breaker, RedisUnavailable, request_clients
from streamrank.streams.state.redis_cache import RedisScoreCache, RedisVectorCache
from tests.helpers import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def dead_settings() -> Settings:
    return Settings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        redis_timeout_s=0.2,
        redis_breaker_failures=2,
        redis_breaker_open_s=30,
    )


def test_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = Breaker(failures_to_open=3, open_s=1.0, clock=Clock())
    breaker.failure()
    breaker.failure()
    breaker.success()  # a success in between resets the count
    breaker.failure()
    breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open"
    assert breaker.opened == 1


def test_open_breaker_lets_one_probe_through_after_open_s() -> None:
    clock = Clock()
    breaker = Breaker(failures_to_open=1, open_s=2.0, clock=clock)
    breaker.failure()
    clock.now = 1.9
    assert not breaker.allow()
    clock.now = 2.0
    assert breaker.allow()
    assert breaker.state == "half-open"
    assert not breaker.allow()  # only one probe at a time
    breaker.failure()  # the probe failed: open for another open_s
    assert breaker.state == "open"
    assert breaker.opened == 2
    clock.now = 3.0
    assert not breaker.allow()
    clock.now = 4.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed"
    assert breaker.allow()


def test_call_counts_outages_not_other_errors() -> None:
    breaker = Breaker(failures_to_open=1, open_s=1.0, clock=Clock())

    def bad_script() -> None:
        raise redis.ResponseError("ERR script failed")

    with pytest.raises(redis.ResponseError):
        breaker.call(bad_script)
    assert breaker.state == "closed"

    def refused() -> None:
        raise redis.ConnectionError("refused")

    with pytest.raises(redis.ConnectionError):
        breaker.call(refused)
    with pytest.raises(RedisUnavailable):
        breaker.call(lambda: None)


def test_breaker_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError, match="failures_to_open"):
        Breaker(failures_to_open=0)
    with pytest.raises(ValueError, match="open_s"):
        Breaker(open_s=0)


def test_request_client_opens_its_breaker_and_stops_asking(dead_settings: Settings) -> None:
    client, async_client, breaker = request_clients(dead_settings)
    for _ in range(dead_settings.redis_breaker_failures):
        with pytest.raises(redis.ConnectionError) as raised:
            client.get("k")
        assert not isinstance(raised.value, RedisUnavailable)  # it really asked
    assert breaker.state == "open"
    with pytest.raises(RedisUnavailable):
        client.get("k")
    pipe = client.pipeline(transaction=False)
    pipe.get("k")
    with pytest.raises(RedisUnavailable):  # pipelines go through the same breaker
        pipe.execute()
    with pytest.raises(RedisUnavailable):
        asyncio.run(breaker.acall(async_client.exists, "k"))
    # RedisUnavailable is a ConnectionError: the followers' retry waits it out
    assert issubclass(RedisUnavailable, redis.ConnectionError)


def test_request_client_has_short_timeouts_and_one_retry(dead_settings: Settings) -> None:
    client, async_client, _ = request_clients(dead_settings)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.2
    assert kwargs["socket_connect_timeout"] == 0.2
    assert kwargs["retry"].get_retries() == 1
    assert async_client.connection_pool.connection_kwargs["socket_timeout"] == 0.2


def test_caches_fail_soft_as_misses(dead_settings: Settings) -> None:
    client, _, _ = request_clients(dead_settings)
    scores = RedisScoreCache(client, "p:", ttl_s=5)
    vectors = RedisVectorCache(client, "p:", ttl_s=5)
    assert scores.get_many(["a", "b"]) == [None, None]
    scores.set_many({"a": 1.0})  # dropped, not raised
    assert vectors.get_many(["a"]) == [None]
    vectors.set_many({"a": np.zeros(3, dtype=np.float32)})
    assert scores.failures == 2
    assert vectors.failures == 2
