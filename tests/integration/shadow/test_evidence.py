"""A shadow version's evidence in the real Redis (single node or cluster, as configured)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from streamrank.streams.config import Settings
from streamrank.streams.state.connections import redis_client, shadow_stats_for

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Agreement:
    kendall_tau: float | None
    rbo: float | None
    overlap_at_10: float | None


def test_each_version_writes_and_reads_its_evidence_in_transactions(settings: Settings) -> None:
    """The comparison's transaction and the snapshot's run on each version's keys together
    (on a cluster they must share a slot); claims make every write count once."""
    client = redis_client(settings)
    versions = [shadow_stats_for(settings, client, version) for version in ("v2", "v3", "v4")]
    for n, stats in enumerate(versions):
        assert stats.claim_request("r1") and not stats.claim_request("r1")
        for _ in range(n + 1):
            stats.record_comparison(Agreement(0.5, 0.8, 0.9), shadow_ms=12.0, primary_ms=10.0)
        stats.remember_ranking("r1", ["d2", "d1"])
        assert stats.record_click("e1", "d2", ["d1", "d2"], stats.ranking("r1") or [])
        assert not stats.record_click("e1", "d2", ["d1", "d2"], ["d2", "d1"])  # a replay
        assert stats.record_interleaving("r1", 1) and not stats.record_interleaving("r1", -1)
        assert stats.record_ab("r1", "shadow", {"clicked": 1.0})
        assert not stats.record_ab("r1", "primary", {"clicked": 0.0})
    for n, stats in enumerate(versions):
        snapshot = stats.snapshot()
        assert snapshot.requests == n + 1 and len(snapshot.samples) == n + 1
        assert snapshot.click_preference == {"shadow_higher": 1, "primary_higher": 0, "same": 0}
        assert snapshot.interleaving == [1]
        assert snapshot.ab == {"primary": [], "shadow": [{"clicked": 1.0}]}
    versions[0].clear()
    assert versions[0].snapshot().requests == 0 and versions[0].ranking("r1") is None
    assert versions[0].claim_request("r1")  # its claims went with it
    assert versions[1].snapshot().requests == 2  # the others' are kept
