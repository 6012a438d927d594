"""A message whose handler keeps failing is dead-lettered after its tries and the stream goes
on; Redis being away is waited out. Driven with stand-ins for the stream, Redis and the
broker, so the policy is checked without services (tests/integration/streams/test_poison.py
runs poison through a real worker)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import redis

from streamrank.streams.agents.learn import CheckpointClock, LearnPath
from streamrank.streams.config import Settings
from streamrank.streams.events import DeadLetter, Interaction, Limits
from streamrank.streams.worker import WorkerParts

SETTINGS = Settings(poison_tries=3, retry_backoff_max_s=0.001)


@dataclass
class Record:
    """What the learn consumer and a Faust event carry of a message."""

    value: bytes | None
    offset: int
    topic: str = "t.interactions"
    partition: int = 0


def interaction(event_id: str) -> bytes:
    return Interaction(event_id=event_id, request_id="r1", doc_id="d1", type="click").to_bytes()


# -- the rerank, items and users agents ---------------------------------------------------------


class Stream:
    def __init__(self, records: list[Record]) -> None:
        self.records = records

    async def events(self) -> Any:
        for record in self.records:
            yield SimpleNamespace(value=record.value, message=record)


def test_an_agent_dead_letters_poison_and_moves_on(monkeypatch) -> None:
    letters: list[DeadLetter] = []

    async def dead_letter(self: WorkerParts, letter: DeadLetter) -> None:
        letters.append(letter)

    monkeypatch.setattr(WorkerParts, "dead_letter", dead_letter)
    parts = WorkerParts(*([None] * 12))  # type: ignore[arg-type]
    object.__setattr__(parts, "settings", SETTINGS)
    object.__setattr__(parts, "limits", Limits())
    handled: list[str] = []
    redis_away = [redis.ConnectionError("down")] * 4

    async def handler(event: Interaction) -> None:
        if event.event_id == "poison":
            raise ZeroDivisionError("a bug this message triggers")
        if event.event_id == "during-outage" and redis_away:
            raise redis_away.pop()
        handled.append(event.event_id)

    records = [
        Record(b"not json", 0),
        Record(interaction("poison"), 1),
        Record(interaction("during-outage"), 2),
        Record(interaction("good"), 3),
    ]
    asyncio.run(parts.handle_each(Stream(records), "interactions", "test", handler))
    assert handled == ["during-outage", "good"]
    assert [(letter.reason, letter.offset) for letter in letters] == [
        ("not-json", 0),
        ("handler-error", 1),
    ]
    assert "ZeroDivisionError" in letters[1].error and "3 tries" in letters[1].error
    assert letters[1].original == records[1].value


# -- the learn path -----------------------------------------------------------------------------


class Sessions:
    """A session store whose script fails on one event id, as Redis would refuse a value."""

    def __init__(self, poison: str) -> None:
        self.poison = poison
        self.applied: list[str] = []
        self.offsets: dict[int, int] = {}
        self.calls = 0

    def accumulate(self, batch: list, offsets: dict[int, int] | None = None) -> list[str]:
        self.calls += 1
        if any(item.interaction.event_id == self.poison for item in batch):
            raise redis.ResponseError("ERR value is not a valid float")
        self.applied += [item.interaction.event_id for item in batch]
        for partition, offset in (offsets or {}).items():
            self.offsets[partition] = max(self.offsets.get(partition, -1), offset)
        return ["new"] * len(batch)


def learn_path(sessions: Sessions) -> tuple[LearnPath, list[DeadLetter]]:
    async def run_blocking(function: Any, *args: Any) -> Any:
        return function(*args)

    path = object.__new__(LearnPath)
    path.parts = SimpleNamespace(limits=Limits(), run_blocking=run_blocking)
    path.settings = SETTINGS
    path.sessions = sessions
    path.clock = CheckpointClock(1000, 60)
    letters: list[DeadLetter] = []

    async def send_letters(batch: list[DeadLetter]) -> None:
        letters.extend(batch)

    path.send_letters = send_letters
    return path, letters


def test_poison_in_a_learn_batch_is_isolated_and_the_rest_learned() -> None:
    sessions = Sessions(poison="e3")
    path, letters = learn_path(sessions)
    records = [Record(interaction(f"e{n}"), n) for n in range(6)] + [Record(b"{", 6)]
    asyncio.run(path.apply_until_done(records))
    assert sessions.applied == ["e0", "e1", "e2", "e4", "e5"]
    assert sessions.offsets == {0: 6}  # the barrier moves past the poison and the malformed
    assert [(letter.reason, letter.offset) for letter in letters] == [
        ("not-json", 6),
        ("handler-error", 3),
    ]
    assert "ResponseError" in letters[1].error and letters[1].agent == "learn"


def test_a_learn_batch_waits_out_redis_without_dead_letters() -> None:
    sessions = Sessions(poison="none")
    path, letters = learn_path(sessions)
    outage = [redis.ConnectionError("down")] * 5
    accumulate = sessions.accumulate

    def flaky(batch: list, offsets: dict[int, int] | None = None) -> list[str]:
        if outage:
            raise outage.pop()
        return accumulate(batch, offsets)

    sessions.accumulate = flaky  # type: ignore[method-assign]
    asyncio.run(path.apply_until_done([Record(interaction(f"e{n}"), n) for n in range(3)]))
    assert sessions.applied == ["e0", "e1", "e2"] and letters == []
