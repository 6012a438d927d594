"""The verdict on a shadow version: its evidence summarized, and whether to promote it.

:func:`summarize` turns a :class:`~streamrank.shadow.evidence.Snapshot` into plain numbers (what
``shadow report`` prints, the dashboard draws and ``promote`` records in its audit entry):

- interleaving: sessions, shadow wins / losses / ties, Delta with a 95 % bootstrap interval,
  the sign test's p-value and the always-valid sequential p-value (mSPRT);
- the A/B split: sessions, CTR, clicks@10 and MRR of clicks per arm, Welch's p-value on CTR;
- clicks on mirrored traffic: how often the shadow ranked the clicked document higher;
- agreement and cost: mean Kendall's tau, RBO and overlap@10, latency p50 / p95 of both.

The verdict uses the sequential test, the one that may be checked after every session:
``promote`` when the shadow wins with p < alpha after at least ``min_sessions`` sessions,
``reject`` when it loses with p < alpha, otherwise ``keep collecting``.

Examples
--------
>>> from streamrank.shadow.evidence import Snapshot
>>> summary = summarize(Snapshot("v2", interleaving=[1] * 150 + [-1] * 80 + [0] * 70),
...                     min_sessions=200)
>>> summary["verdict"], round(summary["delta"], 3)
('promote', 0.117)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from streamrank.shadow.evidence import Snapshot
from streamrank.shadow.statistics import (
    SequentialTest,
    bootstrap_interval,
    preference,
    sign_test,
    two_sample_p_value,
)

PROMOTE, REJECT, COLLECT = "promote", "reject", "keep collecting"


def sequential_p_value(outcomes: Sequence[int]) -> float:
    """The mSPRT p-value after these sessions (+1 = shadow won), in arrival order."""
    test = SequentialTest()
    for outcome in outcomes:
        test.update(float(outcome))
    return test.p_value


def verdict(delta: float, p_value: float, sessions: int, min_sessions: int, alpha: float) -> str:
    if p_value < alpha and delta < 0:
        return REJECT
    if p_value < alpha and delta > 0 and sessions >= min_sessions:
        return PROMOTE
    return COLLECT


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def agreement(samples: list[dict[str, Any]]) -> dict[str, float | None]:
    def column(name: str) -> list[float]:
        return [float(s[name]) for s in samples if s.get(name) is not None]

    return {
        "kendall_tau": _mean(column("tau")),
        "rbo": _mean(column("rbo")),
        "overlap_at_10": _mean(column("overlap")),
        "shadow_p50_ms": _percentile(column("shadow_ms"), 50),
        "shadow_p95_ms": _percentile(column("shadow_ms"), 95),
        "primary_p50_ms": _percentile(column("primary_ms"), 50),
        "primary_p95_ms": _percentile(column("primary_ms"), 95),
    }


def ab_summary(ab: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    arms = {}
    for arm in ("primary", "shadow"):
        sessions = ab.get(arm, [])
        arms[arm] = {
            "sessions": len(sessions),
            "ctr": _mean([s["clicked"] for s in sessions]),
            "clicks_at_10": _mean([s["clicks_at_k"] for s in sessions]),
            "mrr": _mean([s["reciprocal_rank"] for s in sessions]),
        }
    p_value = two_sample_p_value(
        [s["clicked"] for s in ab.get("shadow", [])], [s["clicked"] for s in ab.get("primary", [])]
    )
    return {"arms": arms, "ctr_p_value": p_value}


def summarize(snapshot: Snapshot, min_sessions: int = 200, alpha: float = 0.05) -> dict[str, Any]:
    """One shadow's evidence as plain numbers, with the verdict."""
    outcomes = snapshot.interleaving
    delta = preference([-o for o in outcomes]) if outcomes else 0.0
    low, high = bootstrap_interval([-o for o in outcomes]) if outcomes else (0.0, 0.0)
    p_value = sequential_p_value(outcomes)
    clicks = snapshot.click_preference
    compared = clicks.get("shadow_higher", 0) + clicks.get("primary_higher", 0)
    return {
        "version": snapshot.version,
        "mirrored_requests": snapshot.requests,
        "unmatched_requests": snapshot.unmatched,
        "sessions": len(outcomes),
        "wins": outcomes.count(1),
        "losses": outcomes.count(-1),
        "ties": outcomes.count(0),
        "delta": delta,
        "delta_interval": [low, high],
        "sign_test_p": sign_test(outcomes) if outcomes else 1.0,
        "sequential_p": p_value,
        "click_preference": clicks,
        "clicked_higher_share": clicks.get("shadow_higher", 0) / compared if compared else None,
        "ab": ab_summary(snapshot.ab),
        **agreement(snapshot.samples),
        "verdict": verdict(delta, p_value, len(outcomes), min_sessions, alpha),
        "min_sessions": min_sessions,
        "alpha": alpha,
    }
