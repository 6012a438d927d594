"""The state journal: every registry and checkpoint record, also kept on a compacted Kafka topic.

Redis holds the state workers share, but a Redis that restarts without its files comes back
empty, and with it would go the versions, the active pointer, the audit log and the learner's
checkpoints, after which the version counter starts again at ``v1``. Kafka already holds
everything else streamrank must not lose, so these records are written there too, to the
``state`` topic, keyed by the record's name (``counter``, ``version/v3``, ``pointers``,
``checkpoints/<redis list key>``, ...):

- the topic is compacted, so the broker keeps the newest value of every name for ever and
  reading it from the start is a replay of the current state, whatever its age;
- it has one partition, so the order of writes is total and the newest value of a name is
  the last one read;
- a ``None`` value is a tombstone: the record was deleted (a superseded checkpoint's artifact).

Writes are synchronous (the broker has the record on its log, acknowledged by every in-sync
replica, before :meth:`KafkaJournal.write` returns) because the registry writes the journal
before Redis: nothing may be in Redis that a restore could not bring back. Registry writes are
rare (a registration, a promotion, a checkpoint every few minutes), so the round trip costs
nothing that matters. :func:`read_journal` folds the topic into the state it describes;
:mod:`streamrank.streams.state.restore` writes that back into Redis.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from streamrank.models.registry import RegistryError
from streamrank.streams.config import Settings
from streamrank.streams.kafka.clients import producer_options

STATE_KIND = "state"
"""The topic kind of the journal: ``<topic_prefix>state``."""
TIMEOUT_MS = 15_000
"""How long a write or a read waits for the broker before it reports it unreachable."""
STALL_S = 30.0
"""A read that makes no progress for this long gives up (the broker stopped answering)."""
CHECKPOINTS = "checkpoints"
"""The kind of the learner's checkpoint lists, journaled as ``checkpoints/<redis list key>``."""


def checkpoint_record_name(list_key: str) -> str:
    """The journal name of the checkpoint list kept in Redis under ``list_key``."""
    return f"{CHECKPOINTS}/{list_key}"


class JournalError(RegistryError):
    """The journal could not be written or read: the broker is away or the topic is missing.

    A :class:`~streamrank.models.registry.RegistryError`, so a registry write that cannot be
    journaled is refused like any other registry refusal, and the commands that report those
    report this one with its fix.
    """


def fix_for(settings: Settings) -> str:
    return (
        f"is Kafka up at {settings.kafka_bootstrap}, and does the topic "
        f"{settings.topic(STATE_KIND)} exist (`streamrank topics create`)? A deployment "
        "without Kafka sets STREAMRANK_JOURNAL_ENABLED=false"
    )


class KafkaJournal:
    """The registry's :class:`~streamrank.models.registry.Journal` on the ``state`` topic.

    The producer is made on the first write, not here: most registries only read (the web
    pages, a shadow worker), and they should neither connect to Kafka nor fail without it.
    It is idempotent (a retried send is not written twice) with ``acks="all"``, and may send
    messages as large as the workers accept (``max_message_bytes``): a learner checkpoint is
    a few MB.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topic(STATE_KIND)
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    def write(self, name: str, value: bytes | None) -> None:
        """Append ``name = value`` (``None``: deleted) and wait until the broker has it.

        Raises
        ------
        JournalError
            When the broker does not acknowledge the record; the caller must then not write
            Redis either.
        """
        if not name:
            raise ValueError("a journal record needs a name")
        try:
            future = self._open().send(self.topic, key=name.encode(), value=value)
            future.get(timeout=2 * TIMEOUT_MS / 1000)
        except KafkaError as error:
            raise JournalError(
                f"could not journal {name} to {self.topic}: {error}; {fix_for(self.settings)}"
            ) from error

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None

    def _open(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                self._producer = KafkaProducer(
                    **producer_options(
                        self.settings,
                        client_id=f"{self.settings.app_id}-journal",
                        allow_auto_create_topics=False,
                        request_timeout_ms=TIMEOUT_MS,
                        max_block_ms=TIMEOUT_MS,
                        bootstrap_timeout_ms=TIMEOUT_MS,
                        delivery_timeout_ms=2 * TIMEOUT_MS,
                        linger_ms=0,
                    )
                )
            return self._producer


def fold(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[str, bytes]:
    """The state a sequence of journal records describes: the last value of each name wins,
    and a tombstone (``None``) deletes the name.

    Records without a name (or with one that is not UTF-8) were not written by
    :class:`KafkaJournal` and are skipped: they name nothing that could be restored.

    Examples
    --------
    >>> fold([(b"counter", b"1"), (b"counter", b"2"), (b"artifact/a", b"x"), (b"artifact/a", None)])
    {'counter': b'2'}
    """
    state: dict[str, bytes] = {}
    for key, value in records:
        try:
            name = key.decode() if key else ""
        except UnicodeDecodeError:
            continue
        if not name:
            continue
        if value is None:
            state.pop(name, None)
        else:
            state[name] = value
    return state


def read_journal(settings: Settings) -> dict[str, bytes]:
    """The journal's current state: the ``state`` topic from its start to its end, folded.

    A consumer without a group reads it, so nothing is committed and any number of readers
    (workers starting together, an operator) can read at once. The end is the topic's end
    offset when the read starts; what is written after that is not part of this answer.

    Raises
    ------
    JournalError
        When no broker answers, the topic does not exist or the read stops making progress.
    """
    topic = settings.topic(STATE_KIND)
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=f"{settings.app_id}-journal-reader",
            group_id=None,
            enable_auto_commit=False,
            allow_auto_create_topics=False,
            max_partition_fetch_bytes=settings.max_message_bytes,
            fetch_max_bytes=max(settings.max_message_bytes, 50 * 1024 * 1024),
            request_timeout_ms=TIMEOUT_MS + 1000,
            bootstrap_timeout_ms=TIMEOUT_MS,
            **settings.kafka_client_options(),
        )
    except KafkaError as error:
        raise JournalError(
            f"cannot read the state journal {topic}: {error}; {fix_for(settings)}"
        ) from error
    try:
        return fold(_read_to_end(consumer, topic, settings))
    except KafkaError as error:
        raise JournalError(
            f"cannot read the state journal {topic}: {error}; {fix_for(settings)}"
        ) from error
    finally:
        consumer.close()


def _read_to_end(
    consumer: KafkaConsumer, topic: str, settings: Settings
) -> list[tuple[bytes | None, bytes | None]]:
    """Every (key, value) of ``topic`` from its first offset to its end offset, in order."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise JournalError(f"the state journal's topic {topic} does not exist; {fix_for(settings)}")
    assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
    consumer.assign(assigned)
    consumer.seek_to_beginning(*assigned)
    ends = consumer.end_offsets(assigned)
    records: list[tuple[bytes | None, bytes | None]] = []
    progress = time.monotonic()
    while any(consumer.position(partition) < ends[partition] for partition in assigned):
        batches = consumer.poll(timeout_ms=500)
        for batch in batches.values():
            records.extend((record.key, record.value) for record in batch)
        if batches:
            progress = time.monotonic()
        elif time.monotonic() - progress > STALL_S:
            raise JournalError(f"reading {topic} stalled for {STALL_S:.0f} s")
    return records
