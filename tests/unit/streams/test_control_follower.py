"""The control follower's loop without services: a pointer read or a consumer that fails
(Redis or Kafka blinking) is retried with backoff and never ends the follower, which keeps
serving its version until a read succeeds, and logs one line per failure streak."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from streamrank.streams.agents.control import FailureStreak, RankerSlot, follow_control

LOGGER = "streamrank.streams.agents.control"


class FlakyConsumer:
    """Stands in for the aiokafka consumer; fails (start and getmany) while ``down()``."""

    def __init__(self, down: Callable[[], bool], made: list[FlakyConsumer]) -> None:
        self.down = down
        made.append(self)

    async def start(self) -> None:
        if self.down():
            raise ConnectionError("broker down")

    async def getmany(self, timeout_ms: int) -> dict:
        await asyncio.sleep(timeout_ms / 1000)
        if self.down():
            raise ConnectionError("broker down")
        return {}

    async def stop(self) -> None:
        raise RuntimeError("stopping a dead consumer fails too")


def follow_until(
    slot: RankerSlot[str],
    done: Callable[[], bool],
    active_version: Callable[[], str | None],
    make: Callable[[], Any],
) -> None:
    """Run the follower until ``done()``; fail if it ended on its own before that."""

    async def main() -> None:
        task = asyncio.create_task(
            follow_control(
                slot, active_version, "-", "control", 0.005, {}, make, max_backoff_s=0.01
            )
        )
        while not done() and not task.done():
            await asyncio.sleep(0.005)
        assert not task.done(), f"the follower ended: {task.exception()!r}"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def new_slot() -> RankerSlot[str]:
    return RankerSlot(lambda version: f"ranker-{version}", "v1")


def test_a_failing_pointer_read_keeps_the_version_and_is_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def active_version() -> str | None:
        calls.append("read")
        if len(calls) <= 20:
            assert slot.current.version == "v1"  # still serving through the outage
            raise ConnectionError("Redis down")
        return "v2"

    slot = new_slot()
    made: list[FlakyConsumer] = []
    with caplog.at_level(logging.INFO, logger=LOGGER):
        follow_until(
            slot,
            lambda: slot.current.version == "v2",
            active_version,
            lambda: FlakyConsumer(lambda: False, made),
        )
    assert slot.current.ranker == "ranker-v2" and len(calls) > 20
    assert len(made) == 1  # Redis failing does not touch the Kafka consumer
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert sum("reading the active version failed" in line for line in lines) == 1
    assert sum("recovered after 20 failures" in line for line in lines) == 1


def test_a_failing_consumer_is_made_again_and_the_pointer_still_polled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = {"down": True}
    reads: list[str] = []
    made: list[FlakyConsumer] = []

    def active_version() -> str | None:
        reads.append("read")
        if len(reads) == 5:
            broker["down"] = False
        return "v2" if len(reads) >= 10 else "v1"

    slot = new_slot()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        follow_until(
            slot,
            lambda: slot.current.version == "v2",
            active_version,
            lambda: FlakyConsumer(lambda: broker["down"], made),
        )
    assert len(made) >= 5  # one per try while the broker was down, then one that worked
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert sum("the control consumer failed" in line for line in lines) == 1
    assert sum("the control consumer recovered" in line for line in lines) == 1


def test_a_version_that_will_not_load_keeps_the_old_one_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def load(version: str) -> str:
        if version == "bad":
            raise ValueError("corrupt model")
        return f"ranker-{version}"

    slot: RankerSlot[str] = RankerSlot(load, "v1")
    reads: list[str] = []

    def active_version() -> str:
        reads.append("read")
        return "bad"

    with caplog.at_level(logging.INFO, logger=LOGGER):
        follow_until(slot, lambda: len(reads) > 10, active_version, lambda: FlakyConsumer(bool, []))
    assert slot.current.version == "v1"
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert sum("could not load version bad" in line for line in lines) == 1


def test_the_backoff_doubles_up_to_its_cap() -> None:
    streak = FailureStreak("x", initial_s=0.25, max_s=2.0)
    delays = [streak.failed(RuntimeError("down")) for _ in range(6)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    streak.succeeded()
    assert streak.failed(RuntimeError("down")) == 0.25 and streak.total == 7
