"""The model registry in the real Redis: versions, signed artifacts, pointers, audit."""

from __future__ import annotations

import pytest
import redis

from streamrank.models.registry import ModelRegistry, RegistryError
from streamrank.streams.config import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(settings: Settings) -> ModelRegistry:
    client = redis.Redis.from_url(settings.redis_url)
    return ModelRegistry(client, prefix=settings.topic_prefix + "registry:", key=b"test-key")


def test_versions_are_numbered_and_read_back(registry: ModelRegistry) -> None:
    first = registry.register(pipeline="dense>ce:30", cross_encoder={"sha256": "abc"})
    second = registry.register(pipeline="ce", parent=first.version, training_events=10)
    assert (first.version, second.version) == ("v1", "v2")
    assert registry.get("v2").parent == "v1"
    assert [v.version for v in registry.versions()] == ["v1", "v2"]
    with pytest.raises(RegistryError, match="not in the registry"):
        registry.get("v9")


def test_tampered_artifacts_and_versions_are_refused(registry: ModelRegistry) -> None:
    digest = registry.put_artifact(b'{"w": [1, 2]}')
    client, prefix = registry.client, registry.prefix
    client.set(f"{prefix}artifact:{digest}", b'{"w": [9, 9]}')
    with pytest.raises(RegistryError, match="does not match its hash"):
        registry.get_artifact(digest)
    # A blob replaced together with a matching hash key still lacks the signature.
    forged = ModelRegistry(client, prefix, key=b"attacker-key").put_artifact(b"evil")
    with pytest.raises(RegistryError, match="signature"):
        registry.get_artifact(forged)
    version = registry.register(pipeline="ce")
    client.hset(f"{prefix}versions", version.version, b'{"version": "v1", "pipeline": "x"}')
    with pytest.raises(RegistryError, match="signature"):
        registry.get(version.version)


def test_activate_and_rollback(registry: ModelRegistry) -> None:
    for _ in range(3):
        registry.register(pipeline="ce")
    registry.activate("v1")
    registry.add_shadow("v2")
    assert registry.activate("v2") == "v1"
    assert registry.shadows() == []  # a promoted shadow is no longer a shadow
    registry.activate("v3")
    assert registry.rollback() == "v2"
    assert registry.active() == "v2"
    assert registry.rollback() == "v1"
    with pytest.raises(RegistryError, match="no earlier"):
        registry.rollback()


def test_audit_entries_are_signed(registry: ModelRegistry) -> None:
    registry.audit({"action": "promote", "version": "v2", "who": "alice", "p_value": 0.01})
    assert registry.audit_log()[0]["who"] == "alice"
    raw = registry.client.lindex(f"{registry.prefix}audit", 0).replace(b"alice", b"mallory")
    registry.client.lset(f"{registry.prefix}audit", 0, raw)
    with pytest.raises(RegistryError, match="signature"):
        registry.audit_log()


def test_a_registry_without_a_key_is_refused(settings: Settings) -> None:
    with pytest.raises(RegistryError, match="STREAMRANK_REGISTRY_KEY"):
        ModelRegistry(redis.Redis.from_url(settings.redis_url), "x:", key=b"")


def test_rollback_refuses_a_version_that_is_not_in_the_registry(registry: ModelRegistry) -> None:
    first = registry.register(pipeline="ce").version
    second = registry.register(pipeline="dense>ce:30").version
    registry.activate(first)
    registry.activate(second)
    # A plain Redis write slips an unknown version into the history.
    registry.client.rpush(f"{registry.prefix}active-history", "v99")
    with pytest.raises(RegistryError, match="cannot roll back: version v99 is not in the registry"):
        registry.rollback()
    assert registry.active() == second  # nothing switched
    assert registry.client.lrange(f"{registry.prefix}active-history", -1, -1) == [b"v99"]
