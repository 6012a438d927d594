"""What the feature store learns from and what it is asked: plain event and request types.

These mirror the wire contracts of the ``items``, ``users`` and ``interactions`` topics without
importing them (``models`` never imports ``streams``): the agents turn a decoded event into one
of these, and an offline replay builds them from logged rows.

Examples
--------
>>> InteractionEvent("click", "d1", timestamp=86_400.0, user_id="u1", query="red shoes").day
1
>>> FeatureRequest(["d1", "d2"], now=0.0).size
2
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

DAY_S = 86_400.0
"""Seconds in a day: counters keep one bucket per UTC day."""

INTERACTION_TYPES = ("impression", "click", "add_to_cart", "purchase")
"""The interaction types the store counts; others (``dwell``) are ignored."""

SESSION = "session"
"""The derived event counted once each time a user starts a new session."""

COUNTED_EVENTS = (*INTERACTION_TYPES, SESSION)
"""Every event type a counter may name."""

REQUEST_VALUES = ("first_stage_score", "first_stage_rank", "dense", "student", "ce")
"""Per-candidate values a request carries (scores computed before the ranker runs)."""

FieldValue = float | int | bool | str


def day_of(timestamp: float) -> int:
    """The UTC day number of an epoch-seconds ``timestamp`` (its counter bucket)."""
    return int(timestamp // DAY_S)


@dataclass(frozen=True)
class ItemEvent:
    """An item was created or changed: its fields (price, category...) and dense vector."""

    doc_id: str
    timestamp: float
    fields: Mapping[str, FieldValue] = field(default_factory=dict)
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class UserEvent:
    """A user's profile fields changed."""

    user_id: str
    timestamp: float
    fields: Mapping[str, FieldValue] = field(default_factory=dict)


@dataclass(frozen=True)
class InteractionEvent:
    """A user did something with an item: ``type`` is one of :data:`INTERACTION_TYPES`."""

    type: str
    doc_id: str
    timestamp: float
    user_id: str | None = None
    query: str | None = None
    session_id: str | None = None

    @property
    def day(self) -> int:
        return day_of(self.timestamp)


Event = ItemEvent | UserEvent | InteractionEvent


@dataclass(frozen=True)
class FeatureRequest:
    """One ranking request: the candidates in first-stage order, at time ``now``.

    ``values`` holds per-candidate request-time values named in :data:`REQUEST_VALUES`, one
    per candidate, NaN where a value was not computed (the cross-encoder scores only a prefix).
    ``first_stage_rank``, when absent, is the candidates' order (1-based).
    """

    doc_ids: Sequence[str]
    now: float
    query: str | None = None
    user_id: str | None = None
    values: Mapping[str, Sequence[float] | np.ndarray] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.doc_ids)
