"""A single Redis written by a release without hash tags keeps what it holds after the upgrade.

The old names are written by hand, as that release left them; everything is then read through
the current code, after the start-of-worker step that renames them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
import redis

from streamrank.models.learning.online_ranker import Stats
from streamrank.models.registry import ModelRegistry
from streamrank.streams.config import Settings
from streamrank.streams.state.connections import key, redis_client, shadow_stats_for
from streamrank.streams.state.feature_state import RedisFeatureState
from streamrank.streams.state.layout import upgrade_key_layout
from streamrank.streams.state.learner_store import FIELDS, RedisLearnerStore, query_digest
from streamrank.streams.state.restore import restore_if_lost
from streamrank.streams.state.service_metrics import ServiceMetrics
from streamrank.streams.state.user_sessions import SessionStore

pytestmark = pytest.mark.integration

REGISTRY_KEY = b"layout-key"


@pytest.fixture
def client(settings: Settings) -> redis.Redis:
    client = redis_client(settings)
    if isinstance(client, redis.RedisCluster):
        pytest.skip("a cluster never held the layout without hash tags")
    return client


def write_old_layout(settings: Settings, client: redis.Redis, minute: int) -> str:
    """State as the release without tags wrote it; returns an artifact's digest."""
    old = lambda *parts: key(settings, *parts)  # noqa: E731
    pair = {f"volga:{f}": "2" for f in range(1, FIELDS + 1)}
    client.hset(old("ltr:pairs:" + query_digest("river")), mapping=pair)
    client.expire(old("ltr:pairs:" + query_digest("river")), 3600)
    client.set(old("ltr:applied:e1"), 1, ex=3600)
    client.zadd(old("learn", "due", "2"), {"r1": time.time() - 10})
    client.hset(old("learn", "session", "r1"), mapping={"r1:click:0": "click|1|volga"})
    client.hset(old("learn", "offsets"), mapping={"2": 7})
    client.hset(old("learn", "counts"), mapping={"interactions": 3, "duplicates": 1})
    client.set(old("metrics", "session-seen", "s1"), 1, ex=3600)
    client.hset(old("metrics", "ctr", str(minute)), mapping={"sessions": 5, "clicked": 2})
    client.hset(old("metrics", "counts"), mapping={"rankings": 9})
    client.hset(old("shadow:v2", "counts"), mapping={"requests": 4})
    blob = b'{"w": 1}'
    digest = hashlib.sha256(blob).hexdigest()
    client.set(old(f"registry:artifact:{digest}"), blob)
    signature = hmac.new(REGISTRY_KEY, blob, hashlib.sha256).hexdigest()
    client.set(old(f"registry:artifact-signature:{digest}"), signature)
    client.set(old("registry:version-counter"), 3)
    client.hset(old("features:item|volga"), mapping={"stock": "3"})
    return digest


def test_the_first_start_renames_the_old_layout_and_loses_nothing(
    settings: Settings, client: redis.Redis
) -> None:
    minute = int(time.time() // 60)
    digest = write_old_layout(settings, client, minute)
    restore_if_lost(settings, client)  # what every worker does first

    learner = RedisLearnerStore(client, key(settings, "ltr:"), ttl_s=3600)
    assert learner.pair_stats("river", ["volga"]) == [Stats(*[2.0] * FIELDS)]
    assert not learner.apply("e1", "river", [("volga", Stats(1))])  # applied before the upgrade
    assert 0 < client.ttl(f"{learner.tagged}pairs:{query_digest('river')}") <= 3600
    sessions = SessionStore(client, settings)
    assert sessions.applied_offsets() == {2: 7}
    assert sessions.counts() == {"interactions": 3, "duplicates": 1}
    (claimed,) = sessions.claim(2, before=time.time(), limit=10)
    assert claimed.request_id == "r1" and claimed.events["r1:click:0"] == "click|1|volga"
    metrics = ServiceMetrics(client, settings)
    assert not metrics.record_session("s1", clicked=True, at=minute * 60.0)  # seen before
    assert metrics.minute_counts([minute]) == [(5, 2)]
    assert metrics.snapshot()["rankings"] == 9
    assert shadow_stats_for(settings, client, "v2").snapshot().requests == 4
    registry = ModelRegistry(client, key(settings, "registry:"), REGISTRY_KEY)
    assert registry.get_artifact(digest) == b'{"w": 1}'
    assert dict(registry.records())["counter"] == b"3"
    features = RedisFeatureState(client, prefix=key(settings, "features:"))
    assert client.hget(features.redis_key("item|volga"), "stock") == b"3"
    untagged = {
        name.decode().removeprefix(settings.topic_prefix)
        for name in client.scan_iter(match=f"{settings.topic_prefix}*")
        if b"{" not in name
    }
    assert untagged == {"key-layout", "learn:partitions"}  # the old names are all gone
    assert upgrade_key_layout(settings, client) is None  # once: later starts read one key
    assert json.loads(client.get(key(settings, "key-layout"))) == 2
