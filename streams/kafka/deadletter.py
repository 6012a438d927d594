"""The dead-letter topic: where a message that cannot be processed goes, whole, with why.

Nothing is dropped silently: the original bytes, where they came from and the reason are
published to ``deadletter``, and a per-(topic, reason) counter in Redis rises, so operators can
alert on it and replay the messages once the producer is fixed.
"""

from __future__ import annotations

import base64

import faust
import redis.asyncio as aioredis

from streamrank.streams.config import Settings
from streamrank.streams.events import ContractError, DeadLetter
from streamrank.streams.state.connections import key


def counter_key(settings: Settings) -> str:
    return key(settings, "deadletter", "counts")


def dead_letter_for(
    raw: bytes, message: faust.types.tuples.Message, error: ContractError, agent: str
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


async def send_to_dead_letters(
    letter: DeadLetter,
    deadletter_topic: faust.TopicT,
    redis: aioredis.Redis,
    settings: Settings,
) -> None:
    """Publish the letter and count it; waits for the broker's acknowledgement."""
    key_bytes = f"{letter.topic}:{letter.partition}:{letter.offset}".encode()
    delivery = await deadletter_topic.send(key=key_bytes, value=letter.to_bytes())
    await delivery
    await redis.hincrby(counter_key(settings), f"{letter.topic}:{letter.reason}", 1)
