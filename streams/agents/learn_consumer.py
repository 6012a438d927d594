"""The learn agent's consumer of ``interactions``: whole batches straight from aiokafka.

Not a Faust agent: Faust's stream hands an agent one event at a time (tasks, sensors and an
ack per message, about 200 us each), which held the learn path to a few thousand interactions
per second; taken in batches with ``getmany``, a record costs a few microseconds. The group
is ``<app_id>-learn``, so the workers share the partitions among themselves as Faust's group
does. Offsets are committed by :meth:`LearnConsumer.commit`, only after the batch was
applied: a crash replays what was not committed, and replays are duplicates by event id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from streamrank.streams.app import heartbeat_interval_s
from streamrank.streams.config import Settings

log = logging.getLogger(__name__)


def learn_group(settings: Settings) -> str:
    return f"{settings.app_id}-learn"


class LearnConsumer:
    """Batches of ``interactions`` for the learn agent, committed once applied."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        settings = self.settings
        await asyncio.get_running_loop().run_in_executor(None, adopt_faust_offsets, settings)
        timeout_s = settings.kafka_session_timeout_s
        self._consumer = AIOKafkaConsumer(
            settings.topic("interactions"),
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=learn_group(settings),
            group_id=learn_group(settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=settings.max_message_bytes,
            fetch_max_bytes=max(settings.max_message_bytes, 50 * 1024 * 1024),
            session_timeout_ms=int(timeout_s * 1000),
            heartbeat_interval_ms=int(heartbeat_interval_s(settings) * 1000),
            **settings.aiokafka_client_options(),
        )
        await self._consumer.start()

    async def stop(self) -> None:
        """Leave the group (its partitions go to the other workers at once)."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def batch(self) -> list[ConsumerRecord]:
        """The next records (by partition, each in offset order); empty after
        ``learn_batch_wait_ms`` without any."""
        assert self._consumer is not None, "start() first"
        fetched = await self._consumer.getmany(
            timeout_ms=int(self.settings.learn_batch_wait_ms),
            max_records=self.settings.learn_batch_size,
        )
        return [record for records in fetched.values() for record in records]

    def owned(self) -> list[int]:
        """The partitions assigned to this worker (none before it has joined the group)."""
        if self._consumer is None:
            return []
        return sorted(tp.partition for tp in self._consumer.assignment())

    async def commit(self, records: Sequence[ConsumerRecord]) -> None:
        """Commit past ``records`` on the partitions still assigned to this worker.

        A commit the group refuses (it rebalanced meanwhile) is only logged: the partition's
        next owner re-reads those records, and they change nothing the second time.
        """
        assert self._consumer is not None, "start() first"
        assigned = self._consumer.assignment()
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            if tp in assigned:
                offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            log.warning("learn offsets not committed (the group rebalanced): %s", error)


def adopt_faust_offsets(settings: Settings) -> dict[int, int]:
    """Start each partition the learn group never committed where the worker's Faust group
    (``<app_id>``) left it; returns the offsets adopted, by partition.

    The learn agent was a Faust agent before it had a group of its own: without this, the
    first worker of the new kind would re-read all of the retained topic, and interactions
    older than their impressions would all go to the dead letters as orphans. The commit is
    refused while the learn group has members: then it is in use, and its offsets are its own.
    """
    topic = settings.topic("interactions")
    options = {"bootstrap_servers": settings.kafka_bootstrap, "enable_auto_commit": False}
    options |= settings.kafka_client_options()
    learn = KafkaConsumer(group_id=learn_group(settings), **options)
    faust = KafkaConsumer(group_id=settings.app_id, **options)
    try:
        adopt: dict[KafkaPartition, OffsetAndMetadata] = {}
        for partition in sorted(learn.partitions_for_topic(topic) or ()):
            tp = KafkaPartition(topic, partition)
            if learn.committed(tp) is None and (offset := faust.committed(tp)) is not None:
                adopt[tp] = OffsetAndMetadata(offset, "", -1)
        if adopt:
            learn.commit(adopt)
            log.info("learn group starts where the Faust group left off: %s", adopt)
        return {tp.partition: meta.offset for tp, meta in adopt.items()}
    except KafkaError as error:
        log.info("learn group keeps its own offsets: %s", error)
        return {}
    finally:
        learn.close()
        faust.close()
