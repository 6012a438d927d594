"""The impression backlog: bounded, oldest first, only what can still be joined, nothing lost
when a write fails."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import redis

from streamrank.streams.state.impression_backlog import Entry, ImpressionBacklog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_flush_writes_each_kept_impression_once_with_the_lifetime_it_has_left() -> None:
    clock = Clock()
    backlog = ImpressionBacklog(limit=10, ttl_s=60, clock=clock)
    backlog.keep("r1", '{"a":1}')
    clock.now += 20
    backlog.keep("r2", '{"b":2}')
    clock.now += 5
    written: list[Entry] = []
    assert backlog.flush(written.extend) == 2
    assert written == [("r1", '{"a":1}', 35), ("r2", '{"b":2}', 55)]
    assert len(backlog) == 0 and backlog.flush(written.extend) == 0 and len(written) == 2


def test_an_impression_older_than_its_lifetime_is_dropped_unwritten() -> None:
    clock = Clock()
    backlog = ImpressionBacklog(limit=10, ttl_s=60, clock=clock)
    backlog.keep("old", "{}")
    clock.now += 50
    backlog.keep("young", "{}")
    clock.now += 15
    written: list[Entry] = []
    assert backlog.flush(written.extend) == 1
    assert [entry[0] for entry in written] == ["young"] and backlog.dropped == 1


def test_a_failed_write_keeps_every_impression_in_order_for_the_next_flush() -> None:
    backlog = ImpressionBacklog(limit=3, ttl_s=60, clock=Clock())
    backlog.keep("r1", "{}")
    backlog.keep("r2", "{}")

    def unreachable(entries: Sequence[Entry]) -> None:
        raise redis.ConnectionError("down")

    with pytest.raises(redis.ConnectionError):
        backlog.flush(unreachable)
    backlog.keep("r3", "{}")
    backlog.keep("r4", "{}")  # over the limit: the oldest goes
    written: list[Entry] = []
    assert backlog.flush(written.extend) == 3
    assert [entry[0] for entry in written] == ["r2", "r3", "r4"] and backlog.dropped == 1


def test_a_backlog_of_zero_keeps_nothing() -> None:
    backlog = ImpressionBacklog(limit=0, ttl_s=60)
    assert backlog.keep("r1", "{}") is False
    assert len(backlog) == 0
