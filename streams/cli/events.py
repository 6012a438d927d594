"""``streamrank publish`` and ``streamrank tail``: events into and out of the topics.

``publish`` checks every line against its topic's contract (:mod:`streamrank.streams.events`)
before it sends anything, so a bad line is reported with its number instead of reaching the
workers; ``tail`` pretty-prints what arrives.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from streamrank.streams.cli.helpers import (
    EXISTING_FILE,
    RichProgress,
    console,
    errors,
    fail,
    no_broker,
    progress_bar,
)
from streamrank.streams.config import Settings, get_settings
from streamrank.streams.events import EVENT_TYPES, ContractError, decode

# The field whose value becomes the Kafka message key: it decides the partition, so all
# messages about one request (or document, or user) stay in order on one partition.
KEY_FIELDS = {
    "queries": "request_id",
    "candidates": "request_id",
    "rankings": "request_id",
    "interactions": "request_id",
    "items": "doc_id",
    "users": "user_id",
    "control": "command_id",
    "comparisons": "request_id",
    "impressions": "request_id",
    "deadletter": "topic",
}
PROGRESS_MIN_BYTES = 1_000_000  # smaller files publish faster than a bar could say so

topic_kind = click.Choice(list(EVENT_TYPES))


def numbered_lines(path: Path, advance: Callable[[int], None]) -> Iterator[tuple[int, bytes]]:
    """The file's non-blank lines with their 1-based numbers; ``advance`` gets the bytes read."""
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):
            advance(len(line))
            if line.strip():
                yield number, line.rstrip(b"\r\n")


@click.command()
@click.argument("kind", metavar="TOPIC", type=topic_kind)
@click.argument("file", type=EXISTING_FILE)
def publish(kind: str, file: Path) -> None:
    """Validate every line of FILE.jsonl against TOPIC's contract and publish the good ones.

    Each rejected line (whatever it holds: deep nesting, huge numbers, NaN, a message larger
    than the topic takes) is reported with its number and reason, and the command then exits
    with status 1, so a script notices. TOPIC is a kind (candidates, interactions, ...); the
    configured prefix is added.

    Example: streamrank publish candidates deploy/sample/candidates.jsonl
    """
    from kafka import KafkaProducer

    from streamrank.streams.kafka.clients import producer_options
    from streamrank.streams.kafka.topics import UNREACHABLE, existing_topics

    settings = get_settings()
    limits = settings.limits()
    try:
        producer = KafkaProducer(**producer_options(settings, linger_ms=5))
    except UNREACHABLE:
        no_broker(settings)
    topic = settings.topic(kind)
    if topic not in existing_topics(settings):
        fail(f"topic {topic} does not exist", "create the topics with `streamrank topics create`")
    rejected: list[tuple[int, str]] = []
    published = 0
    size = file.stat().st_size
    with (
        progress_bar(errors, in_bytes=True, disable=size < PROGRESS_MIN_BYTES) as bars,
        RichProgress(bars).stage("publishing", size) as advance,
    ):
        for number, line in numbered_lines(file, advance):
            try:
                event = decode(kind, line, limits)
            except ContractError as error:
                rejected.append((number, f"{error.reason}: {error}"))
                continue
            value = event.to_bytes()
            if len(value) > settings.max_message_bytes:
                rejected.append((number, f"limit: {too_large(len(value), settings)}"))
                continue
            key = getattr(event, KEY_FIELDS[kind], None)
            producer.send(topic, key=str(key).encode() if key else None, value=value)
            published += 1
    producer.flush()
    producer.close()
    for number, reason in rejected:
        errors.print(f"{file}:{number}: rejected: {reason}", markup=False, highlight=False)
    console.print(f"published {published} message(s) to {topic}; rejected {len(rejected)}")
    if rejected:
        sys.exit(1)


def too_large(size: int, settings: Settings) -> str:
    limit = settings.max_message_bytes
    return f"the message has {size} bytes; the limit is {limit} (STREAMRANK_MAX_MESSAGE_BYTES)"


@click.command()
@click.argument("kind", metavar="TOPIC", type=topic_kind)
@click.option("--from-beginning", is_flag=True, help="start at the oldest message kept")
@click.option("--max-messages", "-n", type=int, help="stop after this many messages")
@click.option("--idle-timeout", type=float, help="stop after this many seconds with no message")
def tail(
    kind: str, from_beginning: bool, max_messages: int | None, idle_timeout: float | None
) -> None:
    """Pretty-print TOPIC's messages as they arrive (Ctrl-C stops).

    Example: streamrank tail rankings --from-beginning -n 10
    """
    from kafka import KafkaConsumer, TopicPartition

    from streamrank.streams.kafka.topics import UNREACHABLE

    settings = get_settings()
    topic = settings.topic(kind)
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, **settings.kafka_client_options()
        )
    except UNREACHABLE:
        no_broker(settings)
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        fail(f"topic {topic} does not exist", "create the topics with `streamrank topics create`")
    assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
    consumer.assign(assigned)
    if from_beginning:
        consumer.seek_to_beginning(*assigned)
    else:
        consumer.seek_to_end(*assigned)
    seen = 0
    last_message = time.monotonic()
    try:
        while max_messages is None or seen < max_messages:
            batches = consumer.poll(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    print_record(kind, record)
                    seen += 1
                    last_message = time.monotonic()
            if idle_timeout is not None and time.monotonic() - last_message > idle_timeout:
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


def print_record(kind: str, record: object) -> None:
    """One consumed record: where it came from, then its JSON (or what it is if not JSON)."""
    where = f"{record.topic}[{record.partition}]@{record.offset}"  # type: ignore[attr-defined]
    try:
        payload = json.loads(record.value)  # type: ignore[attr-defined]
        console.print(f"[dim]{where}[/]")
        console.print_json(data=payload)
    except (ValueError, TypeError):
        console.print(f"[dim]{where}[/] [red]not JSON:[/] {record.value!r}")  # type: ignore[attr-defined]
