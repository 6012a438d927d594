"""The dead-letter topic: where a message that cannot be processed goes, whole, with why.

Nothing is dropped silently: the original bytes, where they came from and the reason are
published to ``deadletter``, and a per-(topic, reason) counter in Redis rises, so operators can
alert on it and replay the messages once the producer is fixed.

A letter too large for the topic keeps only the start of the original, with the whole
original's sha256 and size and its pointer (topic, partition, offset), from which it can be
read again while the topic retains it. A handler that fails on a decoded message is tried
:attr:`~streamrank.streams.config.Settings.poison_tries` times and the message then
dead-lettered with the exception (:func:`process_or_dead_letter`); Redis or the broker being
unreachable is not the message's fault, so it is waited out with backoff instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import redis
import redis.asyncio as aioredis
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    RecordTooLargeError,
    RequestTimedOutError,
)
from redis.exceptions import ClusterDownError, SlotNotCoveredError, TryAgainError

from streamrank.streams.config import Settings
from streamrank.streams.events import ContractError, DeadLetter, decode, describe_any
from streamrank.streams.state.connections import key

consumed_at: contextvars.ContextVar[float] = contextvars.ContextVar("consumed_at")
"""When the handler now running got its message from the consumer (epoch seconds, before
decoding): a handler reads it to split a request's wait into the broker hop and what follows."""

log = logging.getLogger(__name__)

HEADROOM_BYTES = 4096
"""Room left under the topic's limit for the record's key, headers and batch framing."""
MAX_ERROR_CHARS = 2000
"""Longest ``error`` text kept in a truncated letter."""
TRANSIENT = (
    redis.ConnectionError,
    redis.TimeoutError,
    # a Redis Cluster between a master's death and its replica's promotion (a few seconds)
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
    KafkaConnectionError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    NotLeaderForPartitionError,
    RequestTimedOutError,
)
"""Failures that are not the message's fault (Redis or the broker away for a while): the same
message will work once they are back, so they are waited out, never dead-lettered."""
FIRST_BACKOFF_S = 0.1
TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError)


def counter_key(settings: Settings) -> str:
    return key(settings, "deadletter", "counts")


def dead_letter_for(
    raw: bytes | None, message: faust.types.tuples.Message, error: ContractError, agent: str
) -> DeadLetter:
    return DeadLetter(
        original_b64=base64.b64encode(raw or b"").decode("ascii"),
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        reason=error.reason,
        error=str(error),
        agent=agent,
    )


def failure_letter(
    raw: bytes | None,
    message: faust.types.tuples.Message,
    error: Exception,
    agent: str,
    tries: int,
) -> DeadLetter:
    """The letter for a message whose handler failed ``tries`` times (reason ``handler-error``)."""
    failure = ContractError("handler-error", f"{describe_any(error)} (after {tries} tries)")
    return dead_letter_for(raw, message, failure, agent)


def fit_to_topic(letter: DeadLetter, max_bytes: int) -> DeadLetter:
    """The letter itself when it fits in ``max_bytes``; else one that keeps as much of the
    start of the original as fits, the whole original's sha256 and size, and ``truncated``.

    The pointer (topic, partition, offset) is always kept: with it and the hash, the whole
    message can be found and checked on its topic while the topic retains it. The ``error``
    text is cut too (to :data:`MAX_ERROR_CHARS`, less when the limit is tiny).
    """
    budget = max_bytes - min(HEADROOM_BYTES, max_bytes // 4)
    if len(letter.to_bytes()) <= budget:
        return letter
    shell = hash_and_pointer(letter, error_chars=0)
    spare = max(0, budget - len(shell.to_bytes()))
    # half of what is left for the error at most; JSON may escape a character as 6 bytes
    shell = shell.model_copy(update={"error": letter.error[: min(MAX_ERROR_CHARS, spare // 12)]})
    room = max(0, budget - len(shell.to_bytes()))
    kept = letter.original[: room // 4 * 3]  # base64 makes 4 characters of every 3 bytes
    return shell.model_copy(update={"original_b64": base64.b64encode(kept).decode("ascii")})


def hash_and_pointer(letter: DeadLetter, error_chars: int = MAX_ERROR_CHARS) -> DeadLetter:
    """The letter without the original's bytes: its sha256, size and pointer only."""
    original = letter.original
    return letter.model_copy(
        update={
            "original_b64": "",
            "error": letter.error[:error_chars],
            "truncated": True,
            "original_sha256": hashlib.sha256(original).hexdigest(),
            "original_size": len(original),
        }
    )


async def send_to_dead_letters(
    letter: DeadLetter,
    deadletter_topic: faust.TopicT,
    redis_client: aioredis.Redis,
    settings: Settings,
) -> None:
    """Publish the letter (truncated to fit the topic) and count it; waits for the broker's
    acknowledgement.

    Should the broker still refuse it as too large (its topic set below
    ``max_message_bytes``), the letter is sent again with no original bytes at all: the hash,
    size and pointer, never nothing. The counter is monitoring: Redis being away is logged,
    not allowed to crash the agent that sends the letter.
    """
    letter = fit_to_topic(letter, settings.max_message_bytes)
    try:
        await publish(letter, deadletter_topic)
    except TOO_LARGE as error:
        log.warning("dead letter refused as too large (%s); sending hash and pointer only", error)
        await publish(hash_and_pointer(letter), deadletter_topic)
    try:
        await redis_client.hincrby(counter_key(settings), f"{letter.topic}:{letter.reason}", 1)
    except TRANSIENT as error:
        log.warning("dead-letter counter not raised (unreachable): %s", error)


async def publish(letter: DeadLetter, deadletter_topic: faust.TopicT) -> None:
    key_bytes = f"{letter.topic}:{letter.partition}:{letter.offset}".encode()
    delivery = await deadletter_topic.send(key=key_bytes, value=letter.to_bytes())
    await delivery


def service(error: Exception) -> str:
    return "Redis" if isinstance(error, redis.RedisError | SlotNotCoveredError) else "the broker"


def backoff_s(attempt: int, settings: Settings) -> float:
    """Wait before retry ``attempt`` (0-based): doubling from 0.1 s up to the setting."""
    return min(settings.retry_backoff_max_s, FIRST_BACKOFF_S * 2 ** min(attempt, 16))


async def process_or_dead_letter(
    handle: Callable[[], Awaitable[None]],
    settings: Settings,
    what: str,
    dead_letter: Callable[[Exception, int], Awaitable[None]],
) -> bool:
    """Run ``handle`` until it succeeds (True), waiting out :data:`TRANSIENT` failures with
    backoff.

    Any other exception is the message's fault (or one the same message will meet again):
    after ``settings.poison_tries`` of them ``dead_letter(error, tries)`` is awaited and
    False returned, so the partition moves on.
    """
    failures = 0
    waits = 0
    while True:
        try:
            await handle()
            return True
        except TRANSIENT as error:
            log.warning("%s: %s unreachable (%s); retrying", what, service(error), error)
            await asyncio.sleep(backoff_s(waits, settings))
            waits += 1
        except Exception as error:
            failures += 1
            if failures >= settings.poison_tries:
                log.error("%s failed %d times; dead-lettered: %s", what, failures, error)
                await dead_letter(error, failures)
                return False
            log.warning(
                "%s failed (try %d of %d): %s", what, failures, settings.poison_tries, error
            )
            await asyncio.sleep(backoff_s(failures - 1, settings))


async def handle_stream(
    stream: faust.StreamT[bytes],
    kind: str,
    agent: str,
    handler: Callable[[Any], Awaitable[None]],
    settings: Settings,
    send: Callable[[DeadLetter], Awaitable[None]],
    letter_undecodable: bool = True,
) -> None:
    """Decode each message of ``stream`` and await ``handler(event)``; a message never stalls
    the stream.

    One that does not decode goes to ``send`` at once (or is skipped without
    ``letter_undecodable``: a shadow reads the primary's input, and the primary letters it);
    one whose handler keeps failing goes there after ``poison_tries``
    (:func:`process_or_dead_letter`), while Redis or the broker being away is waited out.
    """
    limits = settings.limits()
    async for event in stream.events():
        consumed_at.set(time.time())  # each agent actor is its own task, so its own context
        try:
            decoded = decode(kind, event.value, limits)
        except ContractError as error:
            if letter_undecodable:
                await send(dead_letter_for(event.value, event.message, error, agent))
            continue

        async def dead_letter(error: Exception, tries: int, event: Any = event) -> None:
            await send(failure_letter(event.value, event.message, error, agent, tries))

        message = event.message
        await process_or_dead_letter(
            lambda decoded=decoded: handler(decoded),
            settings,
            f"{agent} on {message.topic}[{message.partition}]@{message.offset}",
            dead_letter,
        )
