"""Writes that must outlive their Redis master: wait until a replica holds them.

A Redis Cluster replicates asynchronously. A master that dies a moment after a write takes the
write with it, and the replica promoted in its place never saw it. The learn path commits its
Kafka offsets (or marks sessions learned) right after writing Redis, so a write lost that way
would be an interaction lost for good. After such a write it asks each master it wrote to
that ``replicas`` replicas confirm it: ``WAIT numreplicas timeout``.

``WAIT`` counts the writes of the connection it is sent on, and the cluster client spreads
commands over pooled connections (it would even send ``WAIT`` to every master), so the wait
goes on a connection of its own to the master: one small write (a fence key in the slot just
written), then ``WAIT``. A master's replication stream is one ordered log, so a replica that
acknowledged the fence holds every write the master answered before it.

The master is first asked how many replicas it has connected. When it has fewer than
``replicas`` (a replica is down, or it is the replica just promoted and has none yet), nothing
more durable is possible now: the wait is for those it has, with a warning, and losing the
write would take a second failure, of this master, before a replica is back. When connected
replicas do not confirm within ``timeout_s`` they lag: :class:`ReplicaLagError` (a
``redis.TimeoutError``, which the learn path waits out and retries; its writes are
idempotent).

On a single Redis (no ``RedisCluster``) nothing is waited for: durability there is the AOF's.

Examples
--------
>>> import redis
>>> ReplicaWait(replicas=1, timeout_s=2.0).after_writes(redis.Redis(), ["learn:{p0}:due"])
0
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import redis
from redis.cluster import ClusterNode
from redis.crc import key_slot
from redis.exceptions import AskError

from streamrank.streams.config import Settings

log = logging.getLogger(__name__)

FENCE_TTL_MS = 60_000
"""How long a fence key lives: only its write matters, not its value."""


class ReplicaLagError(redis.TimeoutError):
    """Connected replicas did not confirm a write in time; retry it."""


@dataclass(frozen=True)
class ReplicaWait:
    """How many replicas must confirm a write, and how long to wait for them."""

    replicas: int
    timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ReplicaWait:
        return cls(settings.redis_wait_replicas, settings.redis_wait_timeout_s)

    def after_writes(self, client: redis.Redis, keys: Iterable[str]) -> int:
        """Wait until ``replicas`` replicas of each master that holds one of ``keys`` have
        everything written to it so far; how many masters were asked (0 on a single Redis).

        Raises :class:`ReplicaLagError` when a master's connected replicas lag, and
        ``redis.ConnectionError`` when a master is unreachable (both transient: retry)."""
        if self.replicas == 0 or not isinstance(client, redis.RedisCluster):
            return 0
        fences: dict[str, tuple[ClusterNode, str]] = {}  # node name -> node, a key it holds
        for key in keys:
            node = client.get_node_from_key(key)
            fences.setdefault(node.name, (node, key))
        for node, key in fences.values():
            self.wait_one(client, node, key)
        return len(fences)

    def wait_one(self, client: redis.RedisCluster, node: ClusterNode, key: str) -> None:
        """Fence ``key``'s slot on ``node`` and wait for its replicas (see the module)."""
        connection = client.get_redis_connection(node)
        connected = int(connection.info("replication").get("connected_slaves", 0))
        wanted = min(self.replicas, connected)
        if wanted < self.replicas:
            log.warning(
                "Redis master %s has %d replicas connected, fewer than the %d a learned write "
                "waits for: it stands on %d copies until a replica is back",
                node.name,
                connected,
                self.replicas,
                connected + 1,
            )
        if wanted == 0:
            return
        pipe = connection.pipeline(transaction=False)  # one connection: WAIT counts its writes
        pipe.set(fence_key(key), 1, px=FENCE_TTL_MS)
        pipe.execute_command("WAIT", wanted, int(self.timeout_s * 1000))
        try:
            _, confirmed = pipe.execute()
        except AskError as error:  # MOVED or ASK: the slot moved; the next try learns where
            raise ReplicaLagError(f"{key}'s slot moved from {node.name}: {error}") from error
        if confirmed < wanted:
            raise ReplicaLagError(
                f"{confirmed} of {wanted} replicas of {node.name} confirmed a write "
                f"in {self.timeout_s} s"
            )


def fence_key(key: str) -> str:
    """A key of ``key``'s slot to write the fence to: ``key`` with a suffix when its hash tag
    keeps the slot, else ``key`` as the tag.

    Examples
    --------
    >>> fence_key("learn:{p3}:due"), fence_key("learn:partitions")
    ('learn:{p3}:due:fence', '{learn:partitions}:fence')
    """
    for fence in (f"{key}:fence", f"{{{key}}}:fence"):
        if key_slot(fence.encode()) == key_slot(key.encode()):
            return fence
    raise ValueError(f"no fence key shares the slot of {key!r}")
