"""Creating and describing streamrank's Kafka topics, with kafka-python's admin client."""

from __future__ import annotations

from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaConnectionError, KafkaTimeoutError, TopicAlreadyExistsError

from streamrank.streams.config import Settings
from streamrank.streams.events import TOPIC_KINDS

# The latest item/user update per key is the state: compaction keeps it for replays forever.
COMPACTED_KINDS = frozenset({"items", "users"})
# What kafka-python raises when no broker answers at the bootstrap address.
UNREACHABLE = (KafkaTimeoutError, KafkaConnectionError)
# Operator commands must be seen in the order they were issued: one partition keeps them so.
SINGLE_PARTITION_KINDS = frozenset({"control"})


@dataclass(frozen=True)
class TopicResult:
    name: str
    partitions: int
    created: bool


def admin_client(settings: Settings) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=f"{settings.app_id}-admin",
        **settings.kafka_client_options(),
    )


def partitions_for(kind: str, settings: Settings) -> int:
    return 1 if kind in SINGLE_PARTITION_KINDS else settings.partitions


def existing_topics(settings: Settings) -> set[str]:
    admin = admin_client(settings)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def topic_configs(kind: str, settings: Settings) -> dict[str, str]:
    configs = {"max.message.bytes": str(settings.max_message_bytes)}
    if kind in COMPACTED_KINDS:
        configs["cleanup.policy"] = "compact"
    return configs


def create_topics(settings: Settings) -> list[TopicResult]:
    """Create every streamrank topic that does not exist yet; existing ones are left alone."""
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics())
        results = []
        for kind in TOPIC_KINDS:
            name = settings.topic(kind)
            partitions = partitions_for(kind, settings)
            created = name not in existing
            if created:
                try:
                    admin.create_topics([NewTopic(name, partitions, settings.replication_factor)])
                except TopicAlreadyExistsError:  # another process won the race
                    created = False
            results.append(TopicResult(name, partitions, created))
        return results
    finally:
        admin.close()
