"""A Redis Cluster of this module's own (``deploy/redis.sh start --cluster``), for what needs
nodes stopped or killed: replicas confirm the learn path's writes, and clients start while
the URL's node is down.

The cluster runs on free ports in a temporary run directory, so the services the other tests
use are never touched; it runs in both CI stages.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from redis.exceptions import RedisClusterException

from streamrank.models.registry import redis_from_env
from streamrank.streams.config import Settings
from streamrank.streams.state.breaker import request_clients
from streamrank.streams.state.connections import async_redis_client, redis_client
from streamrank.streams.state.replicas import ReplicaLagError, ReplicaWait
from tests.helpers import REPO, free_ports, wait_for

pytestmark = pytest.mark.integration

NODES = 6
KEYS = [f"learn:{{p{n}}}:offset" for n in range(24)]  # hash tags that cover all three masters


@dataclass
class PrivateCluster:
    run_dir: Path
    first_port: int

    def script(self, *arguments: str) -> None:
        env = os.environ | {
            "STREAMRANK_RUN_DIR": str(self.run_dir),
            "STREAMRANK_REDIS_CLUSTER_PORT": str(self.first_port),
        }
        done = subprocess.run(
            ["bash", str(REPO / "deploy" / "redis.sh"), *arguments],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr

    def settings(self, with_other_nodes: bool = True) -> Settings:
        others = ",".join(f"127.0.0.1:{self.first_port + n}" for n in range(1, NODES))
        return Settings(
            redis_url=f"redis://127.0.0.1:{self.first_port}/0",
            redis_cluster=True,
            redis_cluster_nodes=others if with_other_nodes else "",
            redis_slow_timeout_s=5.0,
        )

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=5, single_connection_client=True)

    def replica_of(self, master_port: int) -> int:
        """The port of the replica attached to the master on ``master_port``."""
        lines = self.node(master_port).execute_command("CLUSTER", "NODES").decode().splitlines()
        master_id = next(line.split()[0] for line in lines if "myself" in line.split()[2])
        return next(
            int(line.split()[1].split(":")[1].split("@")[0])
            for line in lines
            if line.split()[3] == master_id
        )

    def pid(self, port: int) -> int:
        return int((self.run_dir / "redis-cluster" / str(port) / "redis.pid").read_text())


def master_port(client: redis.RedisCluster, key: str) -> int:
    return int(client.get_node_from_key(key).port)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateCluster]:
    private = PrivateCluster(tmp_path_factory.mktemp("redis-cluster"), free_ports(NODES))
    private.script("start", "--cluster")
    yield private
    private.script("stop", "--cluster")


@pytest.fixture
def client(cluster: PrivateCluster) -> Iterator[redis.RedisCluster]:
    client = redis_client(cluster.settings())
    assert isinstance(client, redis.RedisCluster)
    yield client
    client.close()


def test_a_replica_holds_every_write_the_wait_confirmed(
    cluster: PrivateCluster, client: redis.RedisCluster
) -> None:
    for n, key in enumerate(KEYS):
        client.set(key, n)
    masters = {master_port(client, key) for key in KEYS}
    assert ReplicaWait(replicas=1, timeout_s=5.0).after_writes(client, KEYS) == len(masters) == 3
    for n, key in enumerate(KEYS):  # read from the replica, which the wait says has it
        replica = cluster.node(cluster.replica_of(master_port(client, key)))
        replica.execute_command("READONLY")
        assert replica.get(key) == str(n).encode()


def test_a_lagging_replica_makes_the_wait_fail_so_the_write_is_retried(
    cluster: PrivateCluster, client: redis.RedisCluster
) -> None:
    key = KEYS[0]
    replica_pid = cluster.pid(cluster.replica_of(master_port(client, key)))
    os.kill(replica_pid, signal.SIGSTOP)  # connected, but acknowledges nothing
    try:
        client.set(key, "lagging")
        with pytest.raises(ReplicaLagError, match="0 of 1 replicas"):
            ReplicaWait(replicas=1, timeout_s=0.3).after_writes(client, [key])
    finally:
        os.kill(replica_pid, signal.SIGCONT)
    assert ReplicaWait(replicas=1, timeout_s=5.0).after_writes(client, [key]) == 1


def test_fewer_replicas_connected_than_asked_keeps_the_write_with_a_warning(
    client: redis.RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    client.set(KEYS[0], "one copy")
    with caplog.at_level(logging.WARNING, logger="streamrank.streams.state.replicas"):
        assert ReplicaWait(replicas=2, timeout_s=0.2).after_writes(client, [KEYS[0]]) == 1
    assert "has 1 replicas connected, fewer than the 2" in caplog.text


def test_clients_start_from_the_other_nodes_while_the_urls_node_is_down(
    cluster: PrivateCluster,
    client: redis.RedisCluster,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = next(k for k in KEYS if master_port(client, k) == cluster.first_port)
    client.set(key, "before the failover")
    ReplicaWait(replicas=1, timeout_s=5.0).after_writes(client, [key])
    survivor = cluster.node(cluster.first_port + 1)
    cluster.script("kill-node", str(cluster.first_port))
    try:
        wait_for(
            lambda: (
                b"cluster_state:ok" in survivor.execute_command("CLUSTER", "INFO")
                and b"master,fail" in survivor.execute_command("CLUSTER", "NODES")
            ),
            30,
            "the replica of the killed master to take over",
        )
        with pytest.raises((redis.ConnectionError, RedisClusterException)):
            redis_client(cluster.settings(with_other_nodes=False)).ping()
        settings = cluster.settings()
        assert redis_client(settings).get(key) == b"before the failover"
        blocking, asynchronous, _ = request_clients(settings)
        assert blocking.get(key) == b"before the failover"
        assert asyncio.run(asynchronous.get(key)) == b"before the failover"
        assert asyncio.run(async_redis_client(settings).get(key)) == b"before the failover"
        monkeypatch.setenv("STREAMRANK_REDIS_URL", settings.redis_url)
        monkeypatch.setenv("STREAMRANK_REDIS_CLUSTER", "true")
        monkeypatch.setenv("STREAMRANK_REDIS_CLUSTER_NODES", settings.redis_cluster_nodes)
        assert redis_from_env().get(key) == b"before the failover"  # the models package's own
        # the promoted replica has no replica of its own yet: its writes stand, with a warning
        promoted = redis_client(settings)
        promoted.set(key, "after the failover")
        with caplog.at_level(logging.WARNING, logger="streamrank.streams.state.replicas"):
            assert ReplicaWait(replicas=1, timeout_s=5.0).after_writes(promoted, [key]) == 1
        assert "has 0 replicas connected, fewer than the 1" in caplog.text
    finally:
        cluster.script("start-node", str(cluster.first_port))
