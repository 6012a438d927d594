"""Dead letters that fit their topic, and the retry policy that decides when a message is one."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

import pytest
import redis

from streamrank.streams.config import Settings
from streamrank.streams.events import DeadLetter
from streamrank.streams.kafka.deadletter import (
    HEADROOM_BYTES,
    fit_to_topic,
    process_or_dead_letter,
)


def letter(original: bytes, error: str = "query has too many characters") -> DeadLetter:
    return DeadLetter(
        original_b64=base64.b64encode(original).decode("ascii"),
        topic="streamrank.candidates",
        partition=3,
        offset=41,
        reason="limit",
        error=error,
        agent="rerank",
    )


def test_a_letter_that_fits_is_kept_whole() -> None:
    small = letter(b'{"request_id": "r1"}')
    assert fit_to_topic(small, 1_000_000) is small
    assert not small.truncated and small.original_sha256 is None


@pytest.mark.parametrize("limit", [1024, HEADROOM_BYTES + 1024, 100_000, 1_048_576])
def test_a_letter_too_large_is_truncated_with_hash_size_and_pointer(limit: int) -> None:
    original = b'{"request_id": "r1", "query": "' + b"q" * 2_000_000 + b'"}'
    fitted = fit_to_topic(letter(original, error="e" * 100_000), limit)
    encoded = fitted.to_bytes()
    assert len(encoded) <= limit - min(HEADROOM_BYTES, limit // 4)
    assert fitted.truncated
    assert fitted.original_sha256 == hashlib.sha256(original).hexdigest()
    assert fitted.original_size == len(original)
    assert original.startswith(fitted.original)
    assert (fitted.topic, fitted.partition, fitted.offset) == ("streamrank.candidates", 3, 41)
    assert fitted.reason == "limit" and set(fitted.error) <= {"e"}
    if limit > 10_000:
        assert len(fitted.original) > limit // 2  # most of the room holds the original
    # what is on the topic reads back as a letter (the contract accepts the new fields)
    assert DeadLetter.model_validate_json(encoded) == fitted


def run_policy(failures: list[BaseException], tries: int = 3) -> tuple[bool, list, int]:
    """Run the policy on a handler that raises ``failures`` in turn, then succeeds."""
    settings = Settings(poison_tries=tries, retry_backoff_max_s=0.001)
    remaining = list(failures)
    calls = 0
    letters: list[tuple[Exception, int]] = []

    async def handle() -> None:
        nonlocal calls
        calls += 1
        if remaining:
            raise remaining.pop(0)

    async def dead_letter(error: Exception, tries: int) -> None:
        letters.append((error, tries))

    done = asyncio.run(process_or_dead_letter(handle, settings, "test", dead_letter))
    return done, letters, calls


def test_redis_away_is_waited_out_never_dead_lettered() -> None:
    outage = [redis.ConnectionError("down")] * 6 + [redis.TimeoutError("slow")] * 4
    done, letters, calls = run_policy(outage)
    assert done and letters == [] and calls == 11


def test_a_poison_message_is_dead_lettered_after_its_tries() -> None:
    done, letters, calls = run_policy([ValueError("bad value")] * 10, tries=3)
    assert not done and calls == 3
    [(error, tries)] = letters
    assert isinstance(error, ValueError) and tries == 3


def test_a_failure_that_passes_is_not_dead_lettered() -> None:
    done, letters, calls = run_policy([KeyError("once")], tries=3)
    assert done and letters == [] and calls == 2


def test_a_letter_the_broker_still_refuses_is_sent_as_hash_and_pointer() -> None:
    """A topic made with a smaller ``max.message.bytes`` than the settings say refuses the
    letter: it goes again without the original's bytes, never nowhere."""
    from aiokafka.errors import MessageSizeTooLargeError

    from streamrank.streams.kafka.deadletter import send_to_dead_letters

    sent: list[DeadLetter] = []

    class Topic:
        async def send(self, key: bytes, value: bytes) -> Any:
            letter = DeadLetter.model_validate_json(value)
            if letter.original_b64:
                raise MessageSizeTooLargeError("the topic takes 1 MB")
            sent.append(letter)
            return asyncio.sleep(0)

    class Redis:
        async def hincrby(self, *args: object) -> None:
            raise redis.ConnectionError("Redis away: the letter is still sent")

    original = b"q" * 500_000
    asyncio.run(send_to_dead_letters(letter(original), Topic(), Redis(), Settings()))
    [hashed] = sent
    assert hashed.truncated and hashed.original == b""
    assert hashed.original_sha256 == hashlib.sha256(original).hexdigest()
    assert hashed.original_size == len(original) and hashed.offset == 41
