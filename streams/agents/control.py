"""Which ranker version a worker serves, and how it switches when an operator says so.

The registry's ``active`` pointer is the truth. Operators change it with ``streamrank promote``
or ``rollback``, which also publish a ``control`` message. Every worker follows the control
topic with its own group-less consumer (a consumer group would hand each message to only one
worker), and on each message re-reads the pointer. A worker also re-reads the pointer every few
seconds, so one that missed a message (it was restarting) still converges.

A switch loads the new version completely, in an executor thread, while the old one keeps
serving; only then is the reference swapped. A request is served by the version that was
current when it started, so none is dropped and none meets a half-loaded model.

The business rules (:mod:`streamrank.streams.state.rules_store`) are followed the same way, by
:func:`follow_rules`: a control message or the timer re-reads them, a bad stored config is
refused and the running one kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)
RankerT = TypeVar("RankerT")


@dataclass(frozen=True)
class Serving(Generic[RankerT]):
    version: str
    ranker: RankerT


class RankerSlot(Generic[RankerT]):
    """Holds the serving (version, ranker) pair; ``switch_to`` replaces it atomically."""

    def __init__(self, load: Callable[[str], RankerT], initial_version: str) -> None:
        self._load = load
        self._lock = asyncio.Lock()
        self.current: Serving[RankerT] = Serving(initial_version, load(initial_version))
        self.switches = 0
        self.failed_version: str | None = None  # the last version that would not load

    async def switch_to(self, version: str) -> bool:
        """Load ``version`` off the event loop and swap it in; False if it already serves."""
        async with self._lock:
            if version == self.current.version:
                return False
            loop = asyncio.get_running_loop()
            ranker = await loop.run_in_executor(None, self._load, version)
            self.current = Serving(version, ranker)  # one assignment: atomic for readers
            self.switches += 1
            log.info("now serving version %s", version)
            return True


class FailureStreak:
    """Backoff and rate-limited logging for one thing that keeps failing and recovering.

    One line when a streak of failures starts (with the error), one when it ends (how many
    failures, how long): an outage of minutes writes two lines, not one per retry. The delay
    doubles from ``initial_s`` up to ``max_s``, so a dead service costs a few calls a second.
    """

    def __init__(self, what: str, initial_s: float = 0.25, max_s: float = 5.0) -> None:
        self.what = what
        self.initial_s = initial_s
        self.max_s = max_s
        self.failures = 0
        self.total = 0  # every failure, across streaks
        self.started = 0.0

    def failed(self, error: BaseException) -> float:
        """Note a failure; returns how long to wait before the next try."""
        if self.failures == 0:
            self.started = time.monotonic()
            log.error(
                "%s failed (%s: %s); retrying with backoff", self.what, type(error).__name__, error
            )
        self.failures += 1
        self.total += 1
        return min(self.max_s, self.initial_s * 2 ** (self.failures - 1))

    def succeeded(self) -> None:
        if self.failures:
            log.warning(
                "%s recovered after %d failures in %.1f s",
                self.what,
                self.failures,
                time.monotonic() - self.started,
            )
            self.failures = 0


class ControlConsumer:
    """The ``control`` topic's group-less consumer, re-created whenever it fails."""

    def __init__(self, make: Callable[[], Any], streak: FailureStreak) -> None:
        self.make = make
        self.streak = streak
        self.consumer: Any = None

    async def wait(self, poll_s: float) -> bool:
        """Wait up to ``poll_s`` for a control message; True when one came. Never raises:
        a broker that does not answer costs a backoff sleep instead (the caller polls the
        pointer either way, so a worker converges with Kafka down)."""
        try:
            if self.consumer is None:
                consumer = self.make()
                await consumer.start()
                self.consumer = consumer
            batch = await self.consumer.getmany(timeout_ms=int(poll_s * 1000))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            delay = self.streak.failed(error)
            await self.close()
            await asyncio.sleep(delay)
            return False
        self.streak.succeeded()
        return bool(batch)

    async def close(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            try:
                await consumer.stop()
            except Exception as error:  # it failed already; stopping it is a courtesy
                log.debug("stopping the control consumer: %s", error)


async def follow_control(
    slot: RankerSlot[RankerT],
    active_version: Callable[[], str | None],
    bootstrap: str,
    topic_name: str,
    poll_s: float,
    client_options: dict,
    make_consumer: Callable[[], Any] | None = None,
    max_backoff_s: float = 5.0,
) -> None:
    """Keep ``slot`` on the registry's active version, for as long as the worker runs.

    Reads ``control`` without a consumer group (every worker must see every message), from
    its end: the pointer, not the message history, is the truth, so each message (and a
    timer, for messages missed while restarting) only says "look at the pointer now".

    Neither Kafka nor Redis failing ends it: a consumer that fails is stopped and made again,
    a pointer read that fails is retried, both with exponential backoff up to
    ``max_backoff_s`` and one log line per failure streak (:class:`FailureStreak`), while
    the slot keeps serving the version it has. ``make_consumer`` replaces the aiokafka
    consumer (tests).
    """
    if make_consumer is None:
        make_consumer = _aiokafka_consumer(bootstrap, topic_name, client_options)

    async def switch(version: str | None) -> None:
        if version is not None:
            await _switch(slot, version)

    await _follow(
        make_consumer,
        "the control consumer",
        "the active version",
        poll_s,
        active_version,
        switch,
        max_backoff_s,
    )


async def _follow(
    make_consumer: Callable[[], Any],
    consumer: str,
    what: str,
    poll_s: float,
    read: Callable[[], Any],
    then: Callable[[Any], Awaitable[None]] | None,
    max_backoff_s: float,
) -> None:
    """On each ``control`` message and each ``poll_s`` tick, ``read()`` in an executor thread
    and await ``then`` on what it returned; failures of either are retried with backoff and
    one log line per streak, and the loop runs until it is cancelled."""
    control = ControlConsumer(make_consumer, FailureStreak(consumer, max_s=max_backoff_s))
    reads = FailureStreak(f"reading {what}", max_s=max_backoff_s)
    loop = asyncio.get_running_loop()
    try:
        while True:
            if await control.wait(poll_s):
                log.info("control message received; re-reading %s", what)
            try:
                value = await loop.run_in_executor(None, read)
            except Exception as error:
                await asyncio.sleep(reads.failed(error))
                continue
            reads.succeeded()
            if then is not None:
                await then(value)
    finally:
        await control.close()


async def follow_rules(
    refresh: Callable[[], bool],
    bootstrap: str,
    topic_name: str,
    poll_s: float,
    client_options: dict,
    make_consumer: Callable[[], Any] | None = None,
    max_backoff_s: float = 5.0,
) -> None:
    """Keep a worker's business rules on the stored ones, for as long as the worker runs.

    The same pattern as :func:`follow_control`, with a group-less consumer of its own: each
    ``control`` message (``streamrank rules set`` sends one) and each ``poll_s`` tick calls
    ``refresh`` (:meth:`~streamrank.streams.state.rules_store.LiveRules.refresh`, in an
    executor thread), which re-reads the rules when their stored version changed. A failing
    consumer or Redis read is retried with backoff, the running rules kept meanwhile.
    """
    if make_consumer is None:
        make_consumer = _aiokafka_consumer(bootstrap, topic_name, client_options)
    await _follow(
        make_consumer,
        "the rules' control consumer",
        "the business rules",
        poll_s,
        refresh,
        None,
        max_backoff_s,
    )


def _aiokafka_consumer(bootstrap: str, topic_name: str, options: dict) -> Callable[[], Any]:
    def make() -> Any:
        from aiokafka import AIOKafkaConsumer

        return AIOKafkaConsumer(
            topic_name,
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            **options,
        )

    return make


async def _switch(slot: RankerSlot[RankerT], version: str) -> None:
    try:
        await slot.switch_to(version)
    except Exception:  # a bad version must not stop the worker: it keeps the current one
        if slot.failed_version != version:  # once per version, not once per poll
            log.exception(
                "could not load version %s; still serving %s", version, slot.current.version
            )
        slot.failed_version = version
    else:
        slot.failed_version = None
