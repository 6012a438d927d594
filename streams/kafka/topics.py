"""Creating, checking and describing streamrank's Kafka topics, with kafka-python's admin client.

Every topic is created with its settings (:func:`topic_configs`): the message size limit the
workers accept, and compaction where the latest message per key is the state. Besides the
event topics (:data:`~streamrank.streams.events.TOPIC_KINDS`) there is ``state``, the journal
of the registry and the learner's checkpoints (:mod:`streamrank.streams.state.journal`). A
topic that already exists keeps whatever it was created with, so :func:`check_topics`
compares the broker's values with these at worker start and warns about each difference, and
``streamrank topics create --fix`` alters them.

Each topic gets the replication factor the settings resolve to on this cluster
(:mod:`streamrank.streams.kafka.replication`: ``auto`` is min(3, brokers)), counted once per
:func:`create_topics` or :func:`check_topics`, and with three copies or more the
``min.insync.replicas`` that makes ``acks=all`` wait for two of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import TopicAlreadyExistsError

from streamrank.streams.config import Settings
from streamrank.streams.events import TOPIC_KINDS
from streamrank.streams.kafka.clients import UNREACHABLE, admin_client
from streamrank.streams.kafka.replication import (
    ReplicationError,
    min_insync_replicas,
    resolve_replication,
)
from streamrank.streams.state.journal import STATE_KIND

# Every topic streamrank creates and checks: the event topics, then the state journal.
MANAGED_KINDS = (*TOPIC_KINDS, STATE_KIND)
# The latest item/user update per key is the state: compaction keeps it for replays forever.
# The same holds for the journal's records, which a restore replays from the start.
COMPACTED_KINDS = frozenset({"items", "users", STATE_KIND})
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


def partitions_for(kind: str, settings: Settings) -> int:
    return 1 if kind in SINGLE_PARTITION_KINDS else settings.partitions


def existing_topics(settings: Settings) -> set[str]:
    admin = admin_client(settings)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def topic_configs(kind: str, settings: Settings, replication: int | None = None) -> dict[str, str]:
    """The settings a topic of this kind is created with (and checked against).

    ``max.message.bytes`` is the workers' own limit on every topic (the broker's default is
    about 1 MB, less than a request of 1,000 candidates with text). ``items`` and ``users``
    are compacted: the latest message per key is the item or user, and the index rebuild
    replays them from the start, which only works if none is deleted by age. ``state`` is
    compacted for the same reason: a restore replays the journal from its start. The other
    topics keep the broker's time-based retention (``log.retention.hours``).

    ``replication`` is the topic's replication factor (default: the settings' explicit one;
    with ``auto`` and none given, the settings that depend on it are left out). From three
    copies on, ``min.insync.replicas`` is 2: set on the topic rather than trusted to the
    broker's default, which is 1 unless the cluster was set up otherwise, and would let an
    ``acks=all`` write be acknowledged with a single copy.
    """
    configs = {"max.message.bytes": str(settings.max_message_bytes)}
    configs["cleanup.policy"] = "compact" if kind in COMPACTED_KINDS else "delete"
    if replication is None and isinstance(settings.replication_factor, int):
        replication = settings.replication_factor
    min_insync = None if replication is None else min_insync_replicas(replication)
    if min_insync is not None:
        configs["min.insync.replicas"] = str(min_insync)
    return configs


def create_topics(settings: Settings, fix: bool = False) -> list[TopicResult]:
    """Create every missing streamrank topic with its settings; check the existing ones.

    An existing topic's partitions and replicas are left alone; its settings are compared
    with :func:`topic_configs` and, with ``fix``, altered to them.

    Raises
    ------
    ReplicationError
        When the settings ask for more copies than the cluster has brokers.
    """
    admin = admin_client(settings)
    try:
        replication = resolve_replication(settings, admin)
        existing = set(admin.list_topics())
        results = []
        for kind in MANAGED_KINDS:
            name = settings.topic(kind)
            partitions = partitions_for(kind, settings)
            created = name not in existing
            if created:
                created = create_topic(admin, name, partitions, kind, settings, replication)
            mismatches = (
                ()
                if created
                else tuple(topic_mismatches(admin, kind, settings, replication_of(admin, name)))
            )
            fixed = fix and bool(mismatches)
            if fixed:
                alter_topic_configs(admin, name, mismatches)
            results.append(TopicResult(name, partitions, created, mismatches, fixed))
        return results
    finally:
        admin.close()


def create_topic(
    admin: KafkaAdminClient,
    name: str,
    partitions: int,
    kind: str,
    settings: Settings,
    replication: int,
) -> bool:
    """Create one topic with its settings; False when another process created it first."""
    topic = NewTopic(
        name,
        partitions,
        replication,
        topic_configs=topic_configs(kind, settings, replication),
    )
    try:
        admin.create_topics([topic])
    except TopicAlreadyExistsError:
        return False
    return True


def replication_of(admin: KafkaAdminClient, name: str) -> int:
    """How many copies an existing topic keeps (of its least replicated partition)."""
    (described,) = admin.describe_topics([name])
    return min(len(partition["replica_nodes"]) for partition in described["partitions"])


def topic_mismatches(
    admin: KafkaAdminClient, kind: str, settings: Settings, replication: int
) -> list[ConfigMismatch]:
    """The settings of one existing topic of ``replication`` copies that differ from
    :func:`topic_configs`.

    ``replication`` is the copies the topic has, not those a new topic would get: a topic
    created with fewer (by hand, or before the cluster grew) must not be set to wait for more
    in-sync copies than it has, which would refuse every ``acks=all`` write to it.
    """
    name = settings.topic(kind)
    expected = topic_configs(kind, settings, replication)
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
        replication = resolve_replication(settings, admin)
        existing = set(admin.list_topics())
        mismatches = []
        for kind in MANAGED_KINDS:
            name = settings.topic(kind)
            if name not in existing:
                log.warning("topic %s does not exist: run `streamrank topics create`", name)
                continue
            copies = replication_of(admin, name)
            if copies < replication:
                log.warning(
                    "topic %s keeps %d copies of each message, streamrank creates %d here; "
                    "a broker's loss may lose or stop it until its partitions are reassigned",
                    name,
                    copies,
                    replication,
                )
            mismatches.extend(topic_mismatches(admin, kind, settings, copies))
    except ReplicationError as error:
        log.warning("could not check the topics' settings: %s", error)
        return []
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
