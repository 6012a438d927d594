"""The replica wait's fence key, and that a single Redis waits for nothing."""

from __future__ import annotations

import pytest
import redis
from redis.crc import key_slot

from streamrank.streams.state.replicas import ReplicaWait, fence_key


@pytest.mark.parametrize(
    "key",
    [
        "learn:{p3}:offset",
        "prod.learn:partitions",
        "prod.ltr:{learner}:",
        "prod.registry:{registry}:pointers",
        "no tag at all",
    ],
)
def test_the_fence_shares_the_slot_of_the_key_it_fences(key: str) -> None:
    assert key_slot(fence_key(key).encode()) == key_slot(key.encode())
    assert fence_key(key) != key


def test_a_key_whose_slot_no_fence_can_share_is_refused() -> None:
    with pytest.raises(ValueError, match="no fence key"):
        fence_key("an {} empty tag")


def test_a_single_redis_or_no_replicas_asked_waits_for_nothing() -> None:
    unreachable = redis.Redis(port=1)  # never connected: nothing is sent
    assert ReplicaWait(replicas=1, timeout_s=1.0).after_writes(unreachable, ["k"]) == 0
    cluster = redis.RedisCluster.__new__(redis.RedisCluster)  # not started: nothing is sent
    assert ReplicaWait(replicas=0, timeout_s=1.0).after_writes(cluster, ["k"]) == 0
