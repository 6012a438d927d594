"""The Faust application every streamrank worker runs.

Workers hold no state of their own: offsets live in Kafka, everything else in Redis. So a
worker can be killed at any moment, and more workers (up to the partition count) share the
load by joining the same consumer group.

Failover: a worker that dies without leaving the group (kill -9, a lost host) keeps its
partitions until its session times out, so the session timeout is short (6 s, the broker's
default floor). Faust and aiokafka support only the eager rebalance protocol (aiokafka has the
range, round-robin and sticky assignors, no cooperative-sticky), so every rebalance pauses all
partitions briefly; static membership (``group.instance.id``) would spare the rebalance of a
worker that restarts under the same id, but not the wait for one that is gone, and a cleanly
stopped static member does not leave the group at all, so it is not used.

Durability: the app's producer writes with ``acks=all`` and idempotence
(:data:`~streamrank.streams.kafka.clients.DURABLE_PRODUCER`), which Faust sets only inside
exactly-once transactions, so the app runs on a transport whose producer always asks for
them (:class:`DurableTransport`). The topics Faust creates itself (its assignor's leader
topic) get the replication factor streamrank's own topics get
(:func:`~streamrank.streams.kafka.replication.resolve_replication_waiting`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as aiokafka_driver

from streamrank.streams.config import Settings
from streamrank.streams.kafka.clients import DURABLE_PRODUCER
from streamrank.streams.kafka.replication import resolve_replication_waiting


class DurableProducer(aiokafka_driver.Producer):
    """Faust's aiokafka producer, always with ``acks=all`` and idempotence (Faust's own adds
    them only in a transaction; ``producer_acks`` alone would leave retries able to write a
    batch twice)."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), **DURABLE_PRODUCER}


class DurableTransport(aiokafka_driver.Transport):
    """Faust's aiokafka transport with :class:`DurableProducer`."""

    Producer = DurableProducer


class App(faust.App):
    """A Faust app on :class:`DurableTransport`, whatever the broker URL's scheme."""

    def _new_transport(self) -> DurableTransport:
        return DurableTransport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> DurableTransport:
        return DurableTransport(self.conf.broker_producer, self)


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """Faust's form of the Kafka security settings (None on plaintext)."""
    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=settings.ssl_context(),
        )
    if protocol == "SSL":
        return faust.SSLCredentials(settings.ssl_context())
    return None


def create_app(settings: Settings) -> faust.App:
    """A Faust app for ``settings``, without agents (:func:`streamrank.streams.worker.build`
    and :func:`streamrank.streams.agents.shadow.build_shadow` add them).

    With replication ``auto`` it waits until a broker answers to count the cluster's
    brokers (:func:`~streamrank.streams.kafka.replication.resolve_replication_waiting`).

    Raises
    ------
    ReplicationError
        With an explicit replication factor larger than the cluster's brokers.
    """
    # Faust makes a data directory even with in-memory tables; it holds nothing here, so it
    # goes under the temp dir instead of littering whatever directory the worker runs in
    # (Faust creates only the last level of the path)
    datadir = Path(tempfile.gettempdir()) / "streamrank"
    datadir.mkdir(exist_ok=True)
    return App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        broker_credentials=broker_credentials(settings),
        store="memory://",
        datadir=str(datadir / "{conf.name}-data"),
        topic_partitions=settings.partitions,
        topic_replication_factor=resolve_replication_waiting(settings),
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_bind=settings.web_host,  # Faust's own default is 0.0.0.0: every interface
        web_host=settings.web_host,
        # Faust's own pages (key routing, table contents) are not used and would be open to
        # anyone who reaches the port: only streamrank's pages (streams/web.py) are served.
        web_router_enabled=False,
        web_tables_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=settings.max_message_bytes,
        consumer_max_fetch_size=settings.max_message_bytes,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=heartbeat_interval_s(settings),
    )


def heartbeat_interval_s(settings: Settings) -> float:
    """How often a worker's consumers heartbeat to the group coordinator.

    The group notices a dead worker only when its session times out, so failover takes the
    session timeout plus up to one heartbeat interval of the survivors (they hear of the
    rebalance in a heartbeat's answer) plus the rejoin. Heartbeats are cheap (one small
    request), so they go out often: the configured interval, capped at a third of the session
    timeout so that two lost heartbeats in a row do not yet evict a live worker. aiokafka
    sends them from its own task on the event loop, which inference does not block (it runs
    in an executor).
    """
    return min(settings.kafka_heartbeat_interval_s, settings.kafka_session_timeout_s / 3)


def topic(app: faust.App, settings: Settings, kind: str) -> faust.TopicT:
    """A streamrank topic of ``app`` by kind ('candidates', 'rankings', ...), as raw bytes."""
    return app.topic(settings.topic(kind), key_type=bytes, value_type=bytes)
