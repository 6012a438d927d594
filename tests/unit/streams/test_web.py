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
