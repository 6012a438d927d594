"""What a worker serves when the pointer record does not verify, without services: the
registry is a small stand-in with the four methods the worker calls (its real signing is
tested against Redis in tests/integration/models/test_registry.py)."""

from __future__ import annotations

import logging

import pytest
import redis

from streamrank.models.registry import PointerError, Pointers, RegistryError
from streamrank.streams.config import Settings
from streamrank.streams.versions import UNVERSIONED, VersionedServing

LOGGER = "streamrank.streams.versions"


class StandInRegistry:
    """Answers as the registry would: ``record`` is what ``pointers()`` returns or raises."""

    def __init__(self, record: Pointers | Exception | None, audited: tuple[str | None, int]):
        self.record = record
        self.audited = audited
        self.known = {"v1", "v2", "v3"}
        self.operator_key: bytes | None = None

    def with_operator_key(self, key: bytes) -> StandInRegistry:
        self.operator_key = key
        return self

    def audited_state(self) -> tuple[str | None, int]:
        return self.audited

    def pointers(self) -> Pointers | None:
        if isinstance(self.record, Exception):
            raise self.record
        return self.record

    def get(self, version: str) -> object:
        if version not in self.known:
            raise RegistryError(f"version {version} is not in the registry")
        return type("Version", (), {"pipeline": f"pipeline-of-{version}"})()


FORGED = PointerError("the pointer record does not verify under this operator key")


def serving(registry: StandInRegistry) -> VersionedServing:
    settings = Settings(operator_token="workers-token", registry_key="registry-key")

    def build(version: object) -> str:
        return f"ranker:{getattr(version, 'pipeline', None)}"

    return VersionedServing(settings, build, registry)  # type: ignore[arg-type]


def test_the_worker_verifies_under_its_own_operator_token() -> None:
    registry = StandInRegistry(Pointers(active="v2", serial=3), ("v2", 3))
    served = serving(registry)
    assert registry.operator_key == b"workers-token"
    assert served.slot.current.version == "v2"
    assert served.slot.current.ranker == "ranker:pipeline-of-v2"


def test_at_start_a_forged_record_is_refused_for_the_newest_audited_version(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        served = serving(StandInRegistry(FORGED, ("v1", 4)))
    assert served.slot.current.version == "v1" and served.refused_pointers == 1
    assert any("REFUSING the registry's pointer record" in r.getMessage() for r in caplog.records)


def test_at_start_with_nothing_verified_the_unversioned_pipeline_serves() -> None:
    assert serving(StandInRegistry(FORGED, (None, 0))).slot.current.version == UNVERSIONED
    # an audited version that is gone from the registry is not served either
    assert serving(StandInRegistry(FORGED, ("v9", 2))).slot.current.version == UNVERSIONED
    # nor is a verified record's active version that is gone
    gone = StandInRegistry(Pointers(active="v9", serial=1), ("v9", 1))
    assert serving(gone).slot.current.version == UNVERSIONED


def test_a_record_that_turns_forged_is_refused_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = StandInRegistry(Pointers(active="v2", serial=2), ("v2", 2))
    served = serving(registry)
    registry.record = FORGED
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        assert [served.active_version() for _ in range(5)] == [None] * 5
    assert served.refused_pointers == 5
    assert sum("does not verify" in r.getMessage() for r in caplog.records) == 1
    registry.record = Pointers(active="v3", serial=3)
    assert served.active_version() == "v3"


def test_a_replayed_older_record_is_refused() -> None:
    registry = StandInRegistry(Pointers(active="v2", serial=5), ("v2", 5))
    served = serving(registry)
    registry.record = Pointers(active="v1", serial=4)  # genuine, but older than one obeyed
    assert served.active_version() is None and served.refused_pointers == 1
    registry.record = Pointers(active="v1", serial=6)
    assert served.active_version() == "v1"


def test_a_redis_error_reaches_the_follower() -> None:
    registry = StandInRegistry(Pointers(active="v2", serial=1), ("v2", 1))
    served = serving(registry)
    registry.record = ConnectionError("Redis down")
    with pytest.raises(ConnectionError):
        served.active_version()  # the follower backs off and retries (test_control_follower)
    assert served.slot.current.version == "v2"


def test_redis_down_at_start_serves_the_pipeline_until_it_answers() -> None:
    registry = StandInRegistry(redis.ConnectionError("Redis down"), ("v2", 1))
    registry.audited_state = lambda: (_ for _ in ()).throw(redis.ConnectionError("down"))  # type: ignore[method-assign]
    served = serving(registry)
    assert served.slot.current.version == UNVERSIONED and served.refused_pointers == 0
    registry.record = Pointers(active="v2", serial=1)
    assert served.active_version() == "v2"
