"""Shadow evidence, the verdict and the promotion gate, against the real Redis."""

from __future__ import annotations

import re

import pytest
import redis

from streamrank.models.registry import ModelRegistry, PointerError
from streamrank.shadow.evidence import session_metrics
from streamrank.shadow.promotion import PromotionError, PromotionPolicy, promote, rollback
from streamrank.shadow.report import PROMOTE
from streamrank.streams.config import Settings
from streamrank.streams.state.connections import redis_client, registry_for, shadow_stats_for
from streamrank.streams.state.service_metrics import ServiceMetrics
from streamrank.streams.web import dashboard_data, prometheus_text
from tests.helpers import interleaving_outcomes

pytestmark = pytest.mark.integration

TOKEN = "operator-secret"


@pytest.fixture
def operator(settings: Settings) -> Settings:
    return settings.model_copy(update={"registry_key": "k", "operator_token": TOKEN})


@pytest.fixture
def client(operator: Settings) -> redis.Redis:
    return redis_client(operator)


@pytest.fixture
def policy(operator: Settings) -> PromotionPolicy:
    return PromotionPolicy(operator.promotion_min_sessions, operator.promotion_alpha)


def signer(operator: Settings, client: redis.Redis, token: str = TOKEN) -> ModelRegistry:
    """The registry as the CLI builds it: pointers signed with the token presented."""
    return registry_for(operator, client).with_operator_key(token.encode())


def test_evidence_is_recorded_once_per_request_and_event(
    operator: Settings, client: redis.Redis
) -> None:
    stats = shadow_stats_for(operator, client, "v2")
    assert stats.record_interleaving("r1", 1)
    assert not stats.record_interleaving("r1", 1)  # a replay
    assert stats.record_ab("r2", "shadow", session_metrics([2]))
    assert not stats.record_ab("r2", "shadow", session_metrics([2]))
    assert stats.record_click("e1", "d2", primary=["d1", "d2"], shadow=["d2", "d1"])
    assert stats.record_click("e2", "d1", primary=["d1", "d2"], shadow=["d2", "d1"])
    assert stats.record_click("e3", "d9", primary=["d1"], shadow=["d2"])
    snapshot = stats.snapshot()
    assert snapshot.interleaving == [1]
    assert snapshot.ab["shadow"] == [{"clicked": 1.0, "clicks_at_k": 1.0, "reciprocal_rank": 0.5}]
    assert snapshot.click_preference == {"shadow_higher": 1, "primary_higher": 1, "same": 1}
    with pytest.raises(ValueError, match="outcome"):
        stats.record_interleaving("r3", 2)


def test_promotion_needs_the_deployments_key_and_a_significant_win(
    operator: Settings, client: redis.Redis, policy: PromotionPolicy
) -> None:
    registry = signer(operator, client)
    v1 = registry.register(pipeline="first-stage").version
    registry.activate(v1)
    v2 = registry.register(pipeline="ce").version
    registry.add_shadow(v2)
    stats = shadow_stats_for(operator, client, v2)
    with pytest.raises(PointerError, match="does not verify"):  # another token signs nothing
        promote(policy, signer(operator, client, "guess"), stats, reason="try", force=True)
    with pytest.raises(PromotionError, match="keep collecting"):
        promote(policy, registry, stats, reason="no evidence yet")
    assert registry.active() == v1

    for number, outcome in enumerate(interleaving_outcomes(170, 90, 40)):
        stats.record_interleaving(f"r{number}", outcome)
    decision = promote(policy, registry, stats, reason="wins interleaving")
    assert registry.active() == v2
    assert decision.control.action == "promote" and decision.control.version == v2
    entry = registry.audit_log()[-1]
    assert entry["action"] == "promote" and entry["replaced"] == v1 and not entry["forced"]
    assert entry["reason"] == "wins interleaving" and entry["by"]
    assert entry["statistics"]["sessions"] == 300 and entry["statistics"]["verdict"] == PROMOTE

    back = rollback(registry, reason="bad canary")
    assert registry.active() == v1 and back.control.action == "rollback"
    assert registry.audit_log()[-1]["replaced"] == v2
    with pytest.raises(PromotionError, match="no earlier active version"):
        rollback(registry, reason="again")
    actions = [e["action"] for e in registry.audit_log()]
    assert actions == ["activate", "shadow-add", "promote", "rollback"]


def test_the_first_promotion_needs_no_evidence(
    operator: Settings, client: redis.Redis, policy: PromotionPolicy
) -> None:
    registry = signer(operator, client)
    v1 = registry.register(pipeline="first-stage").version
    promote(policy, registry, shadow_stats_for(operator, client, v1), reason="first")
    assert registry.active() == v1


def test_force_overrides_the_evidence_but_is_recorded(
    operator: Settings, client: redis.Redis, policy: PromotionPolicy
) -> None:
    registry = signer(operator, client)
    registry.activate(registry.register(pipeline="first-stage").version)
    v2 = registry.register(pipeline="ce").version
    stats = shadow_stats_for(operator, client, v2)
    promote(policy, registry, stats, reason="hotfix", force=True)
    assert registry.active() == v2
    assert registry.audit_log()[-1]["forced"] is True
    with pytest.raises(PromotionError, match="already the active version"):
        promote(policy, registry, stats, reason="again", force=True)


def test_metrics_page_has_the_numbers(operator: Settings, client: redis.Redis) -> None:
    registry = signer(operator, client)
    registry.activate(registry.register(pipeline="first-stage").version)
    v2 = registry.register(pipeline="ce").version
    registry.add_shadow(v2)
    stats = shadow_stats_for(operator, client, v2)
    for number, outcome in enumerate([1, 1, -1, 0]):
        stats.record_interleaving(f"r{number}", outcome)
    metrics = ServiceMetrics(client, operator)
    for latency in (40.0, 90.0, 300.0):
        metrics.record_ranking(latency, degraded=latency > 250)
    assert metrics.record_session("r1", clicked=True)
    assert metrics.record_session("r2", clicked=False)
    assert not metrics.record_session("r2", clicked=False)  # a replay counts once
    data = dashboard_data(operator, client)
    assert data["learning"][-1]["ctr"] == 0.5 and data["learning"][-1]["sessions"] == 2
    text = prometheus_text(data)
    assert "streamrank_rankings_total 3\n" in text
    assert "streamrank_rankings_degraded_total 1\n" in text
    assert 'streamrank_ranking_latency_ms_bucket{le="100"} 2\n' in text
    assert 'streamrank_ranking_latency_ms_bucket{le="+Inf"} 3\n' in text
    assert f'streamrank_shadow_sessions{{version="{v2}"}} 4\n' in text
    assert 'streamrank_active_version_info{version="v1"} 1' in text
    # Every sample line is "name{labels} value" with a number for the value.
    for line in text.splitlines():
        if not line.startswith("#"):
            assert re.fullmatch(r'[a-z_]+(\{[a-z_]+="[^"]*"\})? -?[0-9.e+-]+', line), line
