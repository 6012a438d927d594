"""Keys that one script, transaction or multi-key command touches share a Redis Cluster slot.

A client that never connects (``redis.Redis()`` is lazy) is enough to build the stores' keys.
"""

from __future__ import annotations

import redis
from redis.cluster import key_slot

from streamrank.models.registry import ModelRegistry
from streamrank.shadow.evidence import ShadowStats
from streamrank.streams.config import Settings
from streamrank.streams.state.learner_store import RedisLearnerStore
from streamrank.streams.state.service_metrics import ServiceMetrics, ctr_bucket
from streamrank.streams.state.user_sessions import SessionStore

SETTINGS = Settings(topic_prefix="unit.")


def slots(*keys: str) -> set[int]:
    return {key_slot(name.encode()) for name in keys}


def test_a_partitions_session_keys_share_its_slot_and_partitions_spread() -> None:
    store = SessionStore(redis.Redis(), SETTINGS)
    for p in range(4):
        names = [store.partition_key(p, n) for n in ("counts", "offset", "due", "orphans")]
        assert len(slots(*names, store.session_key(p, "r1"), store.session_key(p, "r9"))) == 1
    assert len(slots(*(store.partition_key(p, "due") for p in range(4)))) == 4
    assert store.partition_key(3, "due").startswith("unit.learn:")  # prefix scans find it


def test_the_learner_store_is_one_slot() -> None:
    store = RedisLearnerStore(redis.Redis(), "unit.ltr:", ttl_s=60)
    names = [store.marker_key("e1"), store.marker_key("e2"), store._pair_key("q")]
    assert len(slots(*names, store._doc_key("d1"), store.tagged)) == 1


def test_registry_records_share_a_slot_and_each_artifact_its_own() -> None:
    registry = ModelRegistry(redis.Redis(), "unit.registry:", key=b"k")
    records = ("pointers", "audit-log", "versions", "version-signatures", "version-counter")
    assert len(slots(*(registry.record_key(name) for name in records))) == 1
    assert len(slots(*registry.artifact_keys("ab" * 32))) == 1
    assert slots(*registry.artifact_keys("ab" * 32)) != slots(*registry.artifact_keys("cd" * 32))


def test_a_ctr_groups_marker_shares_its_minute_counts_slot() -> None:
    metrics = ServiceMetrics(redis.Redis(), SETTINGS)
    bucket = ctr_bucket("r1")
    same = [metrics._ctr_key(bucket, "ctr", "123"), metrics._ctr_key(bucket, "session-seen", "r1")]
    assert len(slots(*same)) == 1
    names = ("counts", "latency", "vectors-missing")
    assert len(slots(*(metrics._ranking_key(n) for n in names))) == 1


def test_a_shadow_versions_aggregates_share_a_slot() -> None:
    stats = ShadowStats(redis.Redis(), "unit.shadow:", "v2", dedupe_ttl_s=60, ranking_ttl_s=60)
    names = ("counts", "samples", "clicks", "interleaving")
    assert len(slots(*(stats._key(n) for n in names), stats._key("ab", "shadow"))) == 1
    assert stats._key("counts") == "unit.shadow:{v2}:counts"
    assert stats._request_key("seen", "request", "r1") == "unit.shadow:v2:seen:request:r1"
