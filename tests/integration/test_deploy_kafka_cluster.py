"""deploy/kafka.sh --cluster: three brokers that list each other, replicated topics that take
acks=all writes with one broker killed, and that broker back.

The cluster runs on ports free at run time, in a temporary run directory, so it neither
disturbs the services the other tests use (the single broker, or a cluster on 9192-9194)
nor collides with another process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.integration

NODES = (1, 2, 3)


def free_run_of_ports(count: int) -> int:
    """The first of ``count`` consecutive TCP ports no process listens on now."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count >= 65535:
            continue
        probes = [socket.socket() for _ in range(count)]
        try:
            for offset, extra in enumerate(probes):
                extra.bind(("127.0.0.1", first + offset))
            return first
        except OSError:
            continue
        finally:
            for extra in probes:
                extra.close()
    raise AssertionError("no run of free ports")


BROKER_PORT, CONTROLLER_PORT = free_run_of_ports(3), free_run_of_ports(3)
BOOTSTRAP = ",".join(f"127.0.0.1:{BROKER_PORT + n - 1}" for n in NODES)


def script(*args: str, run_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ) | {
        "STREAMRANK_RUN_DIR": str(run_dir),
        "STREAMRANK_KAFKA_CLUSTER_PORT": str(BROKER_PORT),
        "STREAMRANK_KAFKA_CLUSTER_CONTROLLER_PORT": str(CONTROLLER_PORT),
    }
    return subprocess.run(
        ["bash", str(REPO / "deploy" / "kafka.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """One cluster for the module (each start is three JVMs); stopping it is checked last."""
    run_dir = tmp_path_factory.mktemp("kafka-cluster")
    started = script("start", "--cluster", run_dir=run_dir)
    assert started.returncode == 0, started.stderr
    assert f"STREAMRANK_KAFKA_BOOTSTRAP={BOOTSTRAP}" in started.stderr
    yield run_dir
    stopped = script("stop", "--cluster", run_dir=run_dir)
    assert stopped.returncode == 0 and "cluster stopped" in stopped.stderr
    status = script("status", "--cluster", run_dir=run_dir)
    assert status.returncode == 3 and status.stdout.count("stopped") == 3
    assert not list((run_dir / "kafka-cluster").glob("node-*/kafka.pid"))


def live_brokers() -> set[int]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    try:
        return {broker["broker_id"] for broker in admin.describe_cluster()["brokers"]}
    finally:
        admin.close()


def produce_all(topic: str, values: list[bytes]) -> None:
    """Send with acks=all and idempotence; every send must be acknowledged."""
    from kafka import KafkaProducer

    from streamrank.streams.config import Settings
    from streamrank.streams.kafka.clients import producer_options

    producer = KafkaProducer(**producer_options(Settings(kafka_bootstrap=BOOTSTRAP)))
    try:
        futures = [producer.send(topic, value) for value in values]
        for future in futures:
            future.get(timeout=120)
    finally:
        producer.close()


def consume_all(topic: str, expected: int) -> list[bytes]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic, bootstrap_servers=BOOTSTRAP, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    values: list[bytes] = []
    deadline = time.monotonic() + 120
    try:
        while len(values) < expected and time.monotonic() < deadline:
            values.extend(record.value for record in consumer)
    finally:
        consumer.close()
    return values


def test_the_cluster_starts_with_three_brokers_and_reports_each_node(cluster: Path) -> None:
    assert live_brokers() == set(NODES)
    status = script("status", "--cluster", run_dir=cluster)
    assert status.returncode == 0
    for node in NODES:
        assert f"node {node}: running" in status.stdout
        assert (cluster / "kafka-cluster" / f"node-{node}" / "data" / "meta.properties").exists()
    ids = {
        line
        for node in NODES
        for line in (cluster / "kafka-cluster" / f"node-{node}" / "data" / "meta.properties")
        .read_text()
        .splitlines()
        if line.startswith("cluster.id=")
    }
    assert len(ids) == 1  # one cluster, formatted once
    again = script("start", "--cluster", run_dir=cluster)
    assert again.returncode == 0 and again.stderr.count("already running") == 3


def test_writes_survive_a_killed_broker_and_it_comes_back(cluster: Path) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics([NewTopic("survivors", 3, 3, topic_configs={"min.insync.replicas": "2"})])
    admin.close()
    produce_all("survivors", [f"before-{n}".encode() for n in range(30)])

    killed = script("kill-node", "2", run_dir=cluster)
    assert killed.returncode == 0 and "node 2: killed" in killed.stderr
    status = script("status", "--cluster", run_dir=cluster)
    assert status.returncode == 3 and "node 2: stopped" in status.stdout
    # Two in-sync copies remain: acks=all writes go on (once node 2's leaderships moved).
    produce_all("survivors", [f"during-{n}".encode() for n in range(30)])

    restarted = script("start-node", "2", run_dir=cluster)
    assert restarted.returncode == 0, restarted.stderr
    assert "node 2: started" in restarted.stderr
    assert live_brokers() == set(NODES)
    values = consume_all("survivors", 60)
    assert sorted(values) == sorted(
        [f"before-{n}".encode() for n in range(30)] + [f"during-{n}".encode() for n in range(30)]
    )


def test_a_node_outside_the_cluster_is_refused(tmp_path: Path) -> None:
    refused = script("start-node", "4", run_dir=tmp_path)
    assert refused.returncode == 2 and "no node 4" in refused.stderr
    unformatted = script("start-node", "1", run_dir=tmp_path)
    assert unformatted.returncode == 1 and "start it with --cluster first" in unformatted.stderr
