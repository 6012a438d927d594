"""How many copies of each topic streamrank keeps: from the cluster's size, unless set.

``STREAMRANK_REPLICATION_FACTOR=auto`` (the default) means three copies on a cluster of
three or more brokers and one per broker on a smaller one: the same settings then serve a
single development broker and a production cluster. Three is the usual choice because, with
``min.insync.replicas=2`` (:func:`min_insync_replicas`), one broker may be down or restarting
while ``acks=all`` writes still succeed and no acknowledged write is lost. The factor is
resolved where a topic may be created: :func:`~streamrank.streams.kafka.topics.create_topics`
(every streamrank topic) and :func:`~streamrank.streams.app.create_app` (the topics Faust
creates itself, its assignor's leader topic), each asking the cluster once. An explicit
factor wins, but not one larger than the brokers there are: the broker would refuse the
topic with a bare ``INVALID_REPLICATION_FACTOR``, so :class:`ReplicationError` says so first
and what to set instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from kafka import KafkaAdminClient

from streamrank.streams.config import Settings
from streamrank.streams.kafka.clients import UNREACHABLE, admin_client

AUTO = "auto"
MOST_AUTO_REPLICAS = 3
"""``auto`` never asks for more copies than this, however many brokers there are."""
MIN_INSYNC_REPLICAS = 2
"""Copies a write with ``acks=all`` waits for on a topic of three or more: two of three
leaves one broker free to fail, and an acknowledged write is on a second broker."""
LOOKUP_TIMEOUT_MS = 10_000
"""How long :func:`resolve_replication` waits for a broker to count the cluster's brokers."""
FIRST_RETRY_S = 1.0
LONGEST_RETRY_S = 30.0
"""The backoff of :func:`resolve_replication_waiting` while no broker answers."""

log = logging.getLogger(__name__)


class ReplicationError(ValueError):
    """A replication factor the cluster cannot give, or a cluster that could not be asked."""


class BrokerUnreachable(ReplicationError):
    """``auto`` found no broker to count the cluster's brokers."""


def replication_for(
    requested: int | Literal["auto"], brokers: int, bootstrap: str = "the bootstrap address"
) -> int:
    """The replication factor for ``requested`` on a cluster of ``brokers`` live brokers.

    Raises
    ------
    ReplicationError
        When ``requested`` is larger than ``brokers``.

    Examples
    --------
    >>> replication_for("auto", 1), replication_for("auto", 3), replication_for("auto", 5)
    (1, 3, 3)
    >>> replication_for(2, 3)
    2
    """
    if requested == AUTO:
        return max(1, min(MOST_AUTO_REPLICAS, brokers))
    if requested > brokers:
        raise ReplicationError(
            f"STREAMRANK_REPLICATION_FACTOR is {requested}, but the cluster at {bootstrap} "
            f"has {brokers} live broker{'s' if brokers != 1 else ''}, and a partition cannot "
            f"have more copies than there are brokers: set it to at most {brokers}, or to "
            f"{AUTO} (min({MOST_AUTO_REPLICAS}, brokers))"
        )
    return requested


def broker_count(admin: KafkaAdminClient) -> int:
    """How many live brokers the cluster has (a fenced or stopped one does not count: no
    replica could be placed on it now)."""
    return len(admin.describe_cluster()["brokers"])


def resolve_replication(settings: Settings, admin: KafkaAdminClient | None = None) -> int:
    """``settings``' replication factor as a number, checked against the cluster.

    With ``admin`` (a caller about to create topics holds one), the brokers are counted
    through it, and an explicit factor is checked as well. Without one, an explicit factor
    is returned as it is, and ``auto`` opens a client of its own for the count.

    Raises
    ------
    ReplicationError
        When an explicit factor exceeds the brokers, or ``auto`` finds no broker to ask.
    """
    requested = settings.replication_factor
    if admin is None and requested != AUTO:
        return requested
    if admin is not None:
        return replication_for(requested, broker_count(admin), settings.kafka_bootstrap)
    try:
        own = admin_client(settings, timeout_ms=LOOKUP_TIMEOUT_MS)
    except UNREACHABLE as error:
        raise BrokerUnreachable(
            f"replication factor {AUTO} needs the cluster's size, but no Kafka broker answers "
            f"at {settings.kafka_bootstrap} ({error}): start Kafka, or set "
            "STREAMRANK_REPLICATION_FACTOR to a number"
        ) from error
    try:
        return replication_for(requested, broker_count(own), settings.kafka_bootstrap)
    finally:
        own.close()


def resolve_replication_waiting(
    settings: Settings, sleep: Callable[[float], None] = time.sleep
) -> int:
    """:func:`resolve_replication`, waiting with backoff (up to :data:`LONGEST_RETRY_S`)
    while no broker answers.

    A worker may start before Kafka (a Kubernetes rollout, a compose file, a host reboot). It
    waits for the broker, as Faust's own consumer does, rather than exiting: a supervisor
    restarts an exiting worker with ever longer pauses, which would outlast the broker's
    return. An explicit factor is not checked here (no broker is asked): topic creation
    checks it.
    """
    retry_s = FIRST_RETRY_S
    while True:
        try:
            return resolve_replication(settings)
        except BrokerUnreachable as error:
            log.warning("%s; trying again in %.0f s", error, retry_s)
            sleep(retry_s)
            retry_s = min(2 * retry_s, LONGEST_RETRY_S)


def min_insync_replicas(replication: int) -> int | None:
    """The ``min.insync.replicas`` a topic of ``replication`` copies is created with; None
    below three copies, where the broker's default stays (with two copies, requiring both
    would refuse every write while one broker is down; with one, there is nothing to wait for).

    Examples
    --------
    >>> min_insync_replicas(3), min_insync_replicas(1)
    (2, None)
    """
    return MIN_INSYNC_REPLICAS if replication >= MOST_AUTO_REPLICAS else None
