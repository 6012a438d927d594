"""Live experiments on the primary path: team-draft interleaving and an A/B split by user.

For a request, :func:`assign` decides (deterministically, from hashes, so a replay decides
the same) whether it is served

- as an **interleaving** of the primary and one shadow (a ``interleave_fraction`` share of
  requests, by request-id hash): both rank it, :func:`streamrank.shadow.interleaving.team_draft`
  merges the lists, and the impression remembers which ranker contributed each result;
- by the **shadow alone** (the A/B split: users whose id hash falls below ``ab_fraction``),
  or by the primary as the A/B control (every other request of a user with an id);
- or plainly by the primary.

When the session closes, the learn path calls :func:`credit`, which turns its clicks into an
interleaving outcome or A/B metrics in :class:`streamrank.shadow.evidence.ShadowStats`. Experiment
traffic does not train the online learner (its lists were not chosen by the learner's policy, so its
position-bias corrections would not hold for them).

Examples
--------
>>> bucket("user-7") < 1.0
True
>>> assign("r1", "user-7", ["v2"], interleave_fraction=1.0, ab_fraction=0.0)
Assignment(kind='interleave', shadow='v2')
>>> assign("r1", None, [], interleave_fraction=1.0, ab_fraction=0.0) is None
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamrank.shadow.evidence import ShadowStats, session_metrics
from streamrank.shadow.interleaving import SHADOW, team_draft

INTERLEAVE, AB_SHADOW, AB_PRIMARY = "interleave", "ab-shadow", "ab-primary"


@dataclass(frozen=True)
class Assignment:
    kind: str
    shadow: str


def bucket(text: str) -> float:
    """A stable number in [0, 1) for a request or user id."""
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(
    request_id: str,
    user_id: str | None,
    shadows: Sequence[str],
    interleave_fraction: float,
    ab_fraction: float,
) -> Assignment | None:
    """How this request is served (None: by the primary, outside any experiment)."""
    if not shadows:
        return None
    if user_id and ab_fraction > 0:
        shadow = shadows[int(bucket("shadow:" + user_id) * len(shadows))]
        kind = AB_SHADOW if bucket("ab:" + user_id) < ab_fraction else AB_PRIMARY
        return Assignment(kind, shadow)
    if interleave_fraction > 0 and bucket("interleave:" + request_id) < interleave_fraction:
        return Assignment(INTERLEAVE, shadows[int(bucket(request_id) * len(shadows))])
    return None


def interleave(
    request_id: str, primary: Sequence[str], shadow: Sequence[str], k: int
) -> tuple[list[str], list[str]]:
    """The team-draft list (top ``k``, then the primary's rest) and each result's team."""
    rng = np.random.default_rng(int(bucket("draft:" + request_id) * 2**32))
    drafted = team_draft(list(primary), list(shadow), k=k, rng=rng)
    rest = [doc for doc in primary if doc not in set(drafted.docs)]
    return drafted.docs + rest, drafted.teams + ["primary"] * len(rest)


def credit(
    record: dict[str, Any], clicked: Iterable[str], stats_for: Any, shown: int = 10
) -> str | None:
    """Record a closed experiment session's outcome; returns its kind (None: not one).

    ``stats_for(version)`` gives the shadow's :class:`ShadowStats`.
    """
    experiment = record.get("experiment")
    if not experiment:
        return None
    stats: ShadowStats = stats_for(experiment["shadow"])
    clicked = list(clicked)
    if experiment["kind"] == INTERLEAVE:
        docs = [item["doc_id"] for item in record["items"]]
        team_of = dict(zip(docs, experiment["teams"], strict=False))
        teams = [team_of.get(doc) for doc in clicked]
        shadow_clicks, primary_clicks = teams.count(SHADOW), teams.count("primary")
        outcome = (shadow_clicks > primary_clicks) - (shadow_clicks < primary_clicks)
        stats.record_interleaving(record["request_id"], outcome)
    else:
        positions = {item["doc_id"]: item["position"] for item in record["items"]}
        clicked_positions = [positions[doc] for doc in clicked if doc in positions]
        arm = "shadow" if experiment["kind"] == AB_SHADOW else "primary"
        stats.record_ab(record["request_id"], arm, session_metrics(clicked_positions, shown))
    return experiment["kind"]
