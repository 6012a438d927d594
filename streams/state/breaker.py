"""Redis on the request path: short timeouts, one quick retry, and a circuit breaker.

A request must be ranked whether Redis answers or not (a ranking without the online ranker,
flagged ``degraded``, is better than none). Timeouts alone bound one call, but a request makes
several Redis calls and every one of them would wait its timeout while Redis is away; after
``failures_to_open`` consecutive connection failures the breaker therefore opens, and for
``open_s`` every guarded call fails at once with :class:`RedisUnavailable` without touching the
network. Then one call is let through as a probe: it closes the breaker when it succeeds and
opens it again when it fails, so an outage costs each request at most one timeout in every
``open_s`` window, not one per call.

:class:`RedisUnavailable` is a :class:`redis.ConnectionError`, so code that waits out
unreachable Redis (the followers' retry with backoff,
:func:`streamrank.streams.kafka.deadletter.process_or_dead_letter`) treats an open breaker the
same way, and reconnects once it closes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from streamrank.streams.config import Settings
from streamrank.streams.state.connections import cluster_options

T = TypeVar("T")

OUTAGE_ERRORS = (redis.ConnectionError, redis.TimeoutError)
"""What counts as Redis being away (refused, reset, timed out, still loading its AOF)."""


class RedisUnavailable(redis.ConnectionError):
    """Redis was not asked: the breaker is open after repeated failures."""


class Breaker:
    """A thread-safe circuit breaker: closed, open for ``open_s``, then one probe.

    Parameters
    ----------
    failures_to_open
        Consecutive outage errors that open it.
    open_s
        How long it stays open before one call may probe.
    clock
        Monotonic seconds (a parameter so tests can move time).

    Examples
    --------
    >>> now = [0.0]
    >>> breaker = Breaker(failures_to_open=2, open_s=1.0, clock=lambda: now[0])
    >>> breaker.failure(); breaker.failure(); breaker.state
    'open'
    >>> breaker.allow()
    False
    >>> now[0] = 1.5
    >>> breaker.allow(), breaker.allow()  # one probe, the others still refused
    (True, False)
    >>> breaker.success(); breaker.state
    'closed'
    """

    def __init__(
        self,
        failures_to_open: int = 3,
        open_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures_to_open < 1 or open_s <= 0:
            raise ValueError("failures_to_open must be >= 1 and open_s > 0")
        self.failures_to_open = failures_to_open
        self.open_s = open_s
        self.clock = clock
        self.lock = threading.Lock()
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False
        self.opened = 0
        """How many times it opened (for logs and the outage test)."""

    @property
    def state(self) -> str:
        with self.lock:
            if self.opened_at is None:
                return "closed"
            return "half-open" if self.probing else "open"

    def allow(self) -> bool:
        """Whether a call may go to Redis now (when open: only one probe after ``open_s``)."""
        with self.lock:
            if self.opened_at is None:
                return True
            if self.probing or self.clock() - self.opened_at < self.open_s:
                return False
            self.probing = True
            return True

    def success(self) -> None:
        with self.lock:
            self.failures, self.opened_at, self.probing = 0, None, False

    def failure(self) -> None:
        with self.lock:
            self.failures += 1
            if self.probing or self.failures >= self.failures_to_open:
                if self.opened_at is None or self.probing:
                    self.opened += 1
                self.opened_at, self.probing = self.clock(), False

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Around one Redis call: refused while open; an outage counts as a failure, any
        other exception frees the probe, a return counts as a success."""
        if not self.allow():
            raise RedisUnavailable("Redis circuit breaker is open")
        try:
            yield
        except OUTAGE_ERRORS:
            self.failure()
            raise
        except BaseException:
            self.release_probe()
            raise
        self.success()

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` through the breaker (a blocking Redis call)."""
        with self.guard():
            return function(*args, **kwargs)

    async def acall(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await function(*args)`` through the breaker (an asyncio Redis call)."""
        with self.guard():
            return await function(*args)

    def release_probe(self) -> None:
        """A call that failed for another reason (a script error, say) answered: Redis is up."""
        with self.lock:
            if self.probing:
                self.failures, self.opened_at, self.probing = 0, None, False


class GuardedPipeline(redis.client.Pipeline):
    """A pipeline whose ``execute`` (its one round trip) goes through the breaker."""

    breaker: Breaker

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        return self.breaker.call(super().execute, raise_on_error)


class GuardedRedis(redis.Redis):
    """A Redis client whose every command and pipeline goes through one :class:`Breaker`."""

    breaker: Breaker

    def execute_command(self, *args: Any, **options: Any) -> Any:
        return self.breaker.call(super().execute_command, *args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> GuardedPipeline:
        pipe = GuardedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipe.breaker = self.breaker
        return pipe


class GuardedRedisCluster(redis.RedisCluster):
    """:class:`GuardedRedis` for a Redis Cluster: commands and pipelines through the breaker.

    One breaker for the whole cluster, not one per node: the request path asks for one
    request's features from several masters, and a request degraded by one dead master is as
    degraded as by a dead single Redis. The cluster client moves to the promoted replica by
    itself once the slot map changes.
    """

    breaker: Breaker | None = None
    """None while the constructor reads the cluster's slot map and command table."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if self.breaker is None:
            return super().execute_command(*args, **options)
        return self.breaker.call(super().execute_command, *args, **options)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        unguarded = pipe.execute
        breaker = self.breaker
        if breaker is not None:
            pipe.execute = lambda raise_on_error=True: breaker.call(unguarded, raise_on_error)
        return pipe


def request_clients(
    settings: Settings, breaker: Breaker | None = None
) -> tuple[GuardedRedis, aioredis.Redis, Breaker]:
    """The request path's clients: ``redis_timeout_s`` timeouts, one immediate retry, a breaker.

    One retry without backoff, on connection errors only, replaces a pooled connection that a
    Redis restart left dead; a timeout is not retried (that would double the wait), and
    redis-py's default (ten retries with backoff up to a second) would hold a request for
    seconds while Redis is down. The asyncio client (the dedupe marker) is used through
    ``breaker.acall``. Everything else (the learn path's scripts, the registry's artifacts)
    keeps :func:`streamrank.streams.state.connections.redis_client`, whose timeout is the
    longer ``redis_slow_timeout_s``.
    """
    breaker = breaker or Breaker(settings.redis_breaker_failures, settings.redis_breaker_open_s)
    options = settings.redis_options(settings.redis_timeout_s)
    retry = Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))
    async_retry = AsyncRetry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))
    blocking: type[GuardedRedis] | type[GuardedRedisCluster] = GuardedRedis
    asynchronous: type[aioredis.Redis] | type[aioredis.RedisCluster] = aioredis.Redis
    nodes: dict[str, Any] = {}
    async_nodes: dict[str, Any] = {}
    if settings.redis_cluster:
        blocking, asynchronous = GuardedRedisCluster, aioredis.RedisCluster
        nodes, async_nodes = cluster_options(settings), cluster_options(settings, True)
    client = blocking.from_url(settings.redis_url, retry=retry, **options, **nodes)
    client.breaker = breaker
    async_client = asynchronous.from_url(
        settings.redis_url, retry=async_retry, **options, **async_nodes
    )
    return client, async_client, breaker  # type: ignore[return-value]
