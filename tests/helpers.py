"""Helpers for tests that talk to the real broker: produce and consume raw messages."""

from __future__ import annotations

import json
import time

from streamrank.streams.config import Settings


def produce(settings: Settings, kind: str, values: list[bytes], key: bytes | None = None) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for value in values:
        producer.send(settings.topic(kind), key=key, value=value)
    producer.flush()
    producer.close()


def consume(
    settings: Settings, kind: str, count: int, timeout_s: float = 60, exact: bool = True
) -> list:
    """Read a topic from its beginning until ``count`` messages came or ``timeout_s`` passed.

    With ``exact`` (the default) fewer than ``count`` messages fail the test; without it, all
    messages seen in ``timeout_s`` are returned (to show that no more than expected arrive).
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    topic = settings.topic(kind)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    records: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while (len(records) < count or not exact) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
    finally:
        consumer.close()
    if exact:
        assert len(records) >= count, f"expected {count} message(s) on {topic}, got {len(records)}"
    return records


def json_values(records: list) -> list[dict]:
    return [json.loads(record.value) for record in records]
