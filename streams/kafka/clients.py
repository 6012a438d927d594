"""The options every Kafka client of streamrank is made with, in one place.

Producers write with ``acks=all`` and idempotence. On a replicated cluster ``acks=all`` waits
until every in-sync replica has the record (at least ``min.insync.replicas``, two of three
on the local cluster), so a record the producer was told is written survives the loss of its
leader; ``acks=1`` would lose whatever the leader had not yet copied when it died.
Idempotence gives each producer an id and each batch a sequence number, so that a batch
retried after a lost answer (a leader that moved while it was in flight) is written once, not
twice, and never out of order. kafka-python enables both by default (and silently drops
idempotence when another option conflicts, unless it was asked for), aiokafka neither; so
streamrank asks for both explicitly. :func:`producer_options` is for kafka-python's
``KafkaProducer``; :data:`DURABLE_PRODUCER` is the same pair for aiokafka, which the Faust
app's producer takes (:mod:`streamrank.streams.app`).

When a partition's leader moves (a broker stopped, killed or back and given its leadership
again), neither kafka-python nor aiokafka needs a setting to follow it: an answer
``NOT_LEADER_OR_FOLLOWER``, ``LEADER_NOT_AVAILABLE`` or a broken connection marks the
metadata stale, the client fetches it again from any live broker after ``retry_backoff_ms``
(100 ms in both) and resends or refetches; a consumer whose group coordinator went away
looks the coordinator up again the same way. ``metadata_max_age_ms`` (5 minutes) only
bounds how long a client goes without news when nothing fails, which a moved leader never
is: the old leader refuses, or does not answer. What bounds the pause is the cluster: a
killed broker leads its partitions until the controller fences it
(``broker.session.timeout.ms``, 9 s by default), so a producer must keep retrying for
longer than that. kafka-python's producers retry until ``delivery_timeout_ms`` (2 minutes;
the journal's is 30 s) and Faust's aiokafka producer for ``producer_request_timeout`` (20
minutes), both well past it, so they are left as they are.
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from streamrank.streams.config import Settings

UNREACHABLE = (KafkaTimeoutError, KafkaConnectionError)
"""What kafka-python raises when no broker answers at the bootstrap address."""
DURABLE_PRODUCER: dict[str, Any] = {"acks": "all", "enable_idempotence": True}
"""Every producer's durability, in the keyword names kafka-python and aiokafka share."""


def producer_options(settings: Settings, **options: Any) -> dict[str, Any]:
    """Keyword arguments for a kafka-python ``KafkaProducer`` of ``settings``' cluster.

    ``options`` adds the caller's own (``linger_ms``, ``client_id``, timeouts) and may
    replace the defaults here, but not :data:`DURABLE_PRODUCER`: every producer writes with
    ``acks=all`` and idempotence. ``max_request_size`` is the workers' message limit, which
    every topic accepts (kafka-python's own default, 1 MB, would refuse a large request the
    topic takes).

    Examples
    --------
    >>> options = producer_options(Settings(kafka_bootstrap="b1:9092,b2:9092"), linger_ms=5)
    >>> options["acks"], options["enable_idempotence"], options["linger_ms"]
    ('all', True, 5)
    """
    overridden = DURABLE_PRODUCER.keys() & options.keys()
    if overridden:
        raise ValueError(f"every producer writes with {DURABLE_PRODUCER}; not {overridden}")
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "max_request_size": settings.max_message_bytes,
        **settings.kafka_client_options(),
        **options,
        **DURABLE_PRODUCER,
    }


def admin_client(settings: Settings, timeout_ms: int | None = None) -> KafkaAdminClient:
    """A kafka-python admin client of ``settings``' cluster; ``timeout_ms`` bounds both the
    wait for a first broker and each request (default: kafka-python's own)."""
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
