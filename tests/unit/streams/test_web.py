"""The dashboard's data without Redis: the preference series of the shadow comparison."""

from __future__ import annotations

import pytest

from streamrank.streams.web import preference_series
from tests.helpers import interleaving_outcomes


def test_preference_series_ends_at_the_overall_delta() -> None:
    series = preference_series(interleaving_outcomes(60, 30, 10), points=10)
    assert len(series) == 10 and series[-1]["sessions"] == 100
    assert series[-1]["delta"] == pytest.approx((60 + 5) / 100 - 0.5)
    assert all(p["low"] <= p["delta"] <= p["high"] for p in series)


def test_without_a_token_every_request_is_authorized() -> None:
    from streamrank.streams.web import authorized

    assert authorized(None, "") and authorized("Bearer anything", "")


def test_the_token_is_accepted_as_bearer_or_basic_password_only() -> None:
    import base64

    from streamrank.streams.web import authorized

    basic = "Basic " + base64.b64encode(b"anyone:s3cret").decode()
    assert authorized("Bearer s3cret", "s3cret") and authorized(basic, "s3cret")
    for header in (None, "", "Bearer", "Bearer s3cre", "Bearer s3cret2", "s3cret", "Basic s3cret"):
        assert not authorized(header, "s3cret"), header


def test_the_web_pages_listen_on_localhost_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamrank.streams.app import create_app
    from streamrank.streams.config import Settings

    monkeypatch.delenv("STREAMRANK_WEB_HOST", raising=False)
    app = create_app(Settings(web_enabled=True, replication_factor=1))
    assert app.conf.web_bind == "127.0.0.1"
    assert not app.conf.web_router_enabled and not app.conf.web_tables_enabled
    assert create_app(Settings(web_host="0.0.0.0", replication_factor=1)).conf.web_bind == "0.0.0.0"
    assert "s3cret" not in repr(Settings(web_token="s3cret"))


def test_prometheus_label_values_are_escaped() -> None:
    from streamrank.streams.web import prometheus_text

    primary = {"rankings": 0, "degraded": 0, "latency_buckets": {}, "latency_sum_ms": 0}
    shadow = {"version": 'v"} 1\nstreamrank_fake 2', "sessions": 3}
    text = prometheus_text({"primary": primary, "active": None, "shadows": [shadow]})
    assert "\nstreamrank_fake" not in text
    assert 'streamrank_shadow_sessions{version="v\\"} 1\\nstreamrank_fake 2"} 3' in text


def test_prometheus_counts_missing_vectors_per_tier() -> None:
    from streamrank.streams.web import prometheus_text

    primary = {"rankings": 2, "degraded": 0, "latency_buckets": {}, "latency_sum_ms": 1.0}
    before = prometheus_text({"primary": primary, "active": None, "shadows": []})
    assert 'streamrank_vectors_missing_total{tier="dense"} 0' in before  # a series from start
    primary["vectors_missing"] = {"dense": 7}
    text = prometheus_text({"primary": primary, "active": None, "shadows": []})
    assert "# TYPE streamrank_vectors_missing_total counter" in text
    assert 'streamrank_vectors_missing_total{tier="dense"} 7' in text
    assert 'streamrank_vectors_missing_total{tier="colbert"} 0' in text
