"""What the test tiers share: where the checkout and the shared data are, simulated
interleaving outcomes, and the helpers for tests that talk to the real broker (the environment
of a child process, produce and consume raw messages).

A module, not a conftest: test files import these by name (``from tests.helpers import ...``),
and a conftest is for fixtures, which pytest finds on its own.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from streamrank.models.learning.distill import Tokenized
from streamrank.streams.config import Settings

# The checkout (the folder holding pyproject.toml) and the judged collections beside it.
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def free_port() -> int:
    """A TCP port no process listens on now: the kernel's pick for a bind to port 0.

    Tests that start a server take one of these rather than a fixed "spare" port, which another
    process (a second test run, a CI job on the same machine) may already hold.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_ports(count: int, bus_offset: int = 10_000) -> int:
    """The first of ``count`` consecutive ports that no process listens on now, nor on each
    port plus ``bus_offset`` (a Redis Cluster node's bus port; a port stays below 65536)."""
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(20_000, 65_535 - bus_offset - count)
        wanted = [first + n + offset for n in range(count) for offset in (0, bus_offset)]
        if all(port_free(port) for port in wanted):
            return first
    raise RuntimeError(f"found no {count} consecutive free ports")


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout_s`` naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.3)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process (worker, CLI) use these settings."""
    env = dict(os.environ)
    fields = (
        "kafka_bootstrap",
        "redis_url",
        "redis_cluster",
        "redis_cluster_nodes",
        "topic_prefix",
        "app_id",
        "partitions",
    )
    for field in fields:
        env[f"STREAMRANK_{field.upper()}"] = str(getattr(settings, field))
    return env


@contextmanager
def isolated_settings(bootstrap: str, redis_url: str, partitions: int) -> Iterator[Settings]:
    """Settings with a fresh topic prefix and app id on the given services; its topics are
    created, and deleted afterwards with every Redis key under the prefix."""
    from streamrank.streams.kafka.topics import admin_client, create_topics
    from streamrank.streams.state.connections import redis_client

    run = uuid.uuid4().hex[:10]
    isolated = Settings(
        kafka_bootstrap=bootstrap,
        redis_url=redis_url,
        topic_prefix=f"test-{run}.",
        app_id=f"streamrank-test-{run}",
        partitions=partitions,
    )
    created = [result.name for result in create_topics(isolated)]
    yield isolated
    admin = admin_client(isolated)
    try:
        admin.delete_topics(created)
    finally:
        admin.close()
    client = redis_client(isolated)
    for name in client.scan_iter(match=f"{isolated.topic_prefix}*"):
        client.delete(name)


def interleaving_outcomes(wins: int, losses: int, ties: int, seed: int = 0) -> list[int]:
    """Per-session interleaving outcomes (1 the shadow won, -1 it lost, 0 a tie), shuffled."""
    values = np.array([1] * wins + [-1] * losses + [0] * ties)
    return np.random.default_rng(seed).permutation(values).tolist()


def produce(settings: Settings, kind: str, values: list[bytes], key: bytes | None = None) -> None:
    """Publish ``values`` and wait until the broker has each one (a refusal fails the test).

    Without ``key``, each message is keyed as ``streamrank publish`` keys it (its
    ``request_id``, ``doc_id``, ...), which compacted topics such as ``items`` require.
    """
    from kafka import KafkaProducer

    from streamrank.streams.cli.events import KEY_FIELDS

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    sent = []
    for value in values:
        message_key = key if key is not None else key_of(value, KEY_FIELDS[kind])
        sent.append(producer.send(settings.topic(kind), key=message_key, value=value))
    producer.flush()
    for future in sent:
        future.get(timeout=30)
    producer.close()


def key_of(value: bytes, field: str) -> bytes | None:
    """The message's key field, or None for a value that is not a JSON object (poison)."""
    try:
        found = json.loads(value).get(field)
    except (ValueError, AttributeError, RecursionError):
        return None
    return str(found).encode() if found is not None else None


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


def tiny_tokenized(groups: int = 6, per_query: int = 4, seed: int = 0) -> Tokenized:
    """Random token ids and teacher scores for distillation tests on a 20-word vocabulary."""

    rng = np.random.default_rng(seed)
    ids, types = [], []
    for _ in range(groups * per_query):
        length = int(rng.integers(5, 12))
        ids.append([1, *rng.integers(3, 20, length - 2).tolist(), 2])
        types.append([0] * (length // 2) + [1] * (length - length // 2))
    data = Tokenized(ids, types, per_query)
    data.teacher = rng.normal(0, 2, groups * per_query).astype(np.float32)
    return data
