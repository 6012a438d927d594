"""Creating, checking and describing streamrank's Kafka topics, with kafka-python's admin client.

Every topic is created with its settings (:func:`topic_configs`): the message size limit the
workers accept, and compaction where the latest message per key is the state. Besides the
event topics (:data:`~streamrank.streams.events.TOPIC_KINDS`) there is ``state``, the journal
of the registry and the learner's checkpoints (:mod:`streamrank.streams.state.journal`). A
topic that already exists keeps whatever it was created with, so :func:`check_topics`
compares the broker's values with these at worker start and warns about each difference, and
``streamrank topics create --fix`` alters them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import KafkaConnectionError, KafkaTimeoutError, TopicAlreadyExistsError

from streamrank.streams.config import Settings
from streamrank.streams.events import TOPIC_KINDS
from streamrank.streams.state.journal import STATE_KIND

# Every topic streamrank creates and checks: the event topics, then the state journal.
MANAGED_KINDS = (*TOPIC_KINDS, STATE_KIND)
# The latest item/user update per key is the state: compaction keeps it for replays forever.
# The same holds for the journal's records, which a restore replays from the start.
COMPACTED_KINDS = frozenset({"items", "users", STATE_KIND})
# What kafka-python raises when no broker answers at the bootstrap address.
UNREACHABLE = (KafkaTimeoutError, KafkaConnectionError)
# Operator commands must be seen in the order they were issued: one partition keeps them so.
# The journal too: its last value of a record must be the one written last.
SINGLE_PARTITION_KINDS = frozenset({"control", STATE_KIND})
# A worker's start-up check gives up on an unreachable broker sooner than the CLI does: the
# worker itself then reports the broker, the check only warns.
CHECK_TIMEOUT_MS = 10_000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConfigMismatch:
    """A setting of an existing topic that differs from what streamrank creates it with."""

    topic: str
    setting: str
    actual: str | None
    expected: str

    def __str__(self) -> str:
        return f"{self.setting} is {self.actual}, should be {self.expected}"


@dataclass(frozen=True)
class TopicResult:
    name: str
    partitions: int
    created: bool
    mismatches: tuple[ConfigMismatch, ...] = ()
    fixed: bool = False


def admin_client(settings: Settings, timeout_ms: int | None = None) -> KafkaAdminClient:
    timeouts = (
        {}
        if timeout_ms is None
        else {
            "request_timeout_ms": timeout_ms,
            "bootstrap_timeout_ms": timeout_ms,
        }
    )
    return KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=f"{settings.app_id}-admin",
        **settings.kafka_client_options(),
        **timeouts,
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
    """The settings a topic of this kind is created with (and checked against).

    ``max.message.bytes`` is the workers' own limit on every topic (the broker's default is
    about 1 MB, less than a request of 1,000 candidates with text). ``items`` and ``users``
    are compacted: the latest message per key is the item or user, and the index rebuild
    replays them from the start, which only works if none is deleted by age. ``state`` is
    compacted for the same reason: a restore replays the journal from its start. The other
    topics keep the broker's time-based retention (``log.retention.hours``).
    """
    configs = {"max.message.bytes": str(settings.max_message_bytes)}
    configs["cleanup.policy"] = "compact" if kind in COMPACTED_KINDS else "delete"
    return configs


def create_topics(settings: Settings, fix: bool = False) -> list[TopicResult]:
    """Create every missing streamrank topic with its settings; check the existing ones.

    An existing topic's partitions are left alone; its settings are compared with
    :func:`topic_configs` and, with ``fix``, altered to them.
    """
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics())
        results = []
        for kind in MANAGED_KINDS:
            name = settings.topic(kind)
            partitions = partitions_for(kind, settings)
            created = name not in existing
            if created:
                created = create_topic(admin, name, partitions, kind, settings)
            mismatches = () if created else tuple(topic_mismatches(admin, kind, settings))
            fixed = fix and bool(mismatches)
            if fixed:
                alter_topic_configs(admin, name, mismatches)
            results.append(TopicResult(name, partitions, created, mismatches, fixed))
        return results
    finally:
        admin.close()


def create_topic(
    admin: KafkaAdminClient, name: str, partitions: int, kind: str, settings: Settings
) -> bool:
    """Create one topic with its settings; False when another process created it first."""
    topic = NewTopic(
        name,
        partitions,
        settings.replication_factor,
        topic_configs=topic_configs(kind, settings),
    )
    try:
        admin.create_topics([topic])
    except TopicAlreadyExistsError:
        return False
    return True


def topic_mismatches(
    admin: KafkaAdminClient, kind: str, settings: Settings
) -> list[ConfigMismatch]:
    """The settings of one existing topic that differ from :func:`topic_configs`."""
    name = settings.topic(kind)
    expected = topic_configs(kind, settings)
    resource = ConfigResource(ConfigResourceType.TOPIC, name, configs=dict.fromkeys(expected))
    described = admin.describe_configs([resource], config_filter="all")
    actual = described["topic"][name]
    return [
        ConfigMismatch(name, setting, actual.get(setting, {}).get("value"), value)
        for setting, value in expected.items()
        if actual.get(setting, {}).get("value") != value
    ]


def alter_topic_configs(
    admin: KafkaAdminClient, name: str, mismatches: tuple[ConfigMismatch, ...]
) -> None:
    """Set the given settings of one topic (incrementally: its other settings stay)."""
    changes = {mismatch.setting: mismatch.expected for mismatch in mismatches}
    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs=changes)])


def check_topics(settings: Settings) -> list[ConfigMismatch]:
    """Warn about each missing topic and each topic setting that is not what it should be.

    Called when a worker starts: a topic created by hand or by an older version keeps its
    settings (a 1 MB message limit, an ``items`` topic that deletes by age) until someone
    alters it, and the symptoms (rejected large requests, an index rebuild missing old
    items) are far from the cause. The check only warns; ``streamrank topics create --fix``
    mends. A broker that does not answer is logged and left to the worker to report.
    """
    try:
        admin = admin_client(settings, timeout_ms=CHECK_TIMEOUT_MS)
    except UNREACHABLE as error:
        log.warning("could not check the topics' settings: %s", error)
        return []
    try:
        existing = set(admin.list_topics())
        mismatches = []
        for kind in MANAGED_KINDS:
            name = settings.topic(kind)
            if name not in existing:
                log.warning("topic %s does not exist: run `streamrank topics create`", name)
                continue
            mismatches.extend(topic_mismatches(admin, kind, settings))
    finally:
        admin.close()
    for mismatch in mismatches:
        log.warning(
            "topic %s: %s is %s, should be %s; `streamrank topics create --fix` sets it",
            mismatch.topic,
            mismatch.setting,
            mismatch.actual,
            mismatch.expected,
        )
    return mismatches
