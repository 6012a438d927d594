"""Folding events into the feature state: the one place that writes what extractors read.

Offline, :func:`~streamrank.models.features.replay.point_in_time` calls
:meth:`FeatureLearner.learn_one` on every logged event in time order; online, the ``items``,
``users`` and ``interactions`` agents call it on each event they consume. Either way the state
at time ``t`` holds exactly the events up to ``t``.

Examples
--------
>>> from streamrank.models.features.config import FeatureSet
>>> from streamrank.models.features.state import MemoryState
>>> features = FeatureSet.from_dict({"features": [{"name": "clicks", "kind": "counter",
...     "source": "interactions", "event": "click", "scope": "item", "windows": [7],
...     "default": 0}]})
>>> state = MemoryState(days=features.max_window_days)
>>> learner = FeatureLearner(features, state)
>>> learner.learn_one(InteractionEvent("click", "d1", timestamp=100.0))
>>> float(state.read_counts(["item:counts|d1"], ["click"], today=0, days=1).sum())
1.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from streamrank.models.features.config import (
    AgeFeature,
    CounterFeature,
    DecayedPopularityFeature,
    EmbeddingMeanFeature,
    FeatureSet,
    MultiOverlapFeature,
    OverlapFeature,
    RateFeature,
    UserItemFeature,
)
from streamrank.models.features.events import (
    DAY_S,
    INTERACTION_TYPES,
    SESSION,
    Event,
    FieldValue,
    InteractionEvent,
    ItemEvent,
    UserEvent,
)
from streamrank.models.features.keys import (
    GLOBAL,
    UNIT,
    counts_key,
    embedding_key,
    item_key,
    item_vector_key,
    overlap_key,
    query_item,
    user_key,
)
from streamrank.models.features.state import FeatureState, HashValue


def decay(age_s: float | np.ndarray, half_life_days: float) -> float | np.ndarray:
    """The weight left after ``age_s`` seconds when a weight halves every ``half_life_days``."""
    return np.exp2(-np.asarray(age_s) / (half_life_days * DAY_S))


class FeatureLearner:
    """Updates a :class:`~streamrank.models.features.state.FeatureState` from events."""

    def __init__(self, features: FeatureSet, state: FeatureState) -> None:
        self.features = features
        self.state = state
        counted = [f for f in features.features if isinstance(f, CounterFeature | RateFeature)]
        self._scopes = sorted({f.scope for f in counted})
        self._global = any(isinstance(f, RateFeature) for f in counted)
        self._sessions = any(getattr(f, "event", None) == SESSION for f in counted)
        self._popularity = [f for f in features.features if isinstance(f, DecayedPopularityFeature)]
        self._embeddings = [f for f in features.features if isinstance(f, EmbeddingMeanFeature)]
        self._overlaps = [f for f in features.features if isinstance(f, OverlapFeature)]
        self._multi = [f for f in features.features if isinstance(f, MultiOverlapFeature)]
        self._user_items = [f for f in features.features if isinstance(f, UserItemFeature)]
        self._first_seen = sorted({f.field for f in features.features if isinstance(f, AgeFeature)})

    def learn_one(self, event: Event) -> None:
        """Fold one event into the state; events must come in time order."""
        if isinstance(event, InteractionEvent):
            self._learn_interaction(event)
        elif isinstance(event, ItemEvent):
            self._learn_item(event)
        elif isinstance(event, UserEvent):
            self._learn_user(event)
        else:
            raise TypeError(f"not a feature event: {type(event).__name__}")

    # -- items and users ------------------------------------------------------------------

    def _learn_item(self, event: ItemEvent) -> None:
        values = _typed(event.fields, self.features.item_fields)
        if (
            "in_stock" in self.features.item_fields
            and "in_stock" not in values
            and "stock" in values
        ):
            values["in_stock"] = float(values["stock"] > 0)  # type: ignore[operator]
        key = item_key(event.doc_id)
        stored = self.state.get_hashes([key])[0] or {}
        for name in self._first_seen:
            # Without its own time, an item is as old as its first event.
            if name not in values and name not in stored:
                values[name] = float(event.timestamp)
        if values:
            self.state.update_hash(key, values)
        if event.vector is not None:
            self.state.set_vector(item_vector_key(event.doc_id), event.vector)

    def _learn_user(self, event: UserEvent) -> None:
        values = _typed(event.fields, self.features.user_fields)
        if values:
            self.state.update_hash(user_key(event.user_id), values)

    # -- interactions ---------------------------------------------------------------------

    def _learn_interaction(self, event: InteractionEvent) -> None:
        if event.type not in INTERACTION_TYPES:
            return
        item = self.state.get_hashes([item_key(event.doc_id)])[0] or {}
        day = event.day
        for scope in self._scopes:
            entity = _entity(scope, event, item)
            if entity is not None:
                self.state.add(counts_key(scope, entity), event.type, day)
        if self._global:
            self.state.add(counts_key("global", GLOBAL), event.type, day)
        if self._sessions and event.user_id is not None and event.session_id is not None:
            self._learn_session(event)
        for feature in self._popularity:
            self._learn_popularity(feature, event, item)
        if event.user_id is not None:
            for embedding in self._embeddings:
                if event.type == embedding.event:
                    self._learn_embedding(embedding, event)
            for overlap in self._overlaps:
                if event.type in overlap.events and item.get(overlap.field) is not None:
                    self._learn_overlap(overlap, event.user_id, str(item[overlap.field]))
            for multi in self._multi:
                if event.type in multi.events and item.get(multi.field) is not None:
                    self._learn_multi_overlap(multi, event.user_id, str(item[multi.field]))
            for user_item in self._user_items:
                if event.type in user_item.events:
                    self._learn_user_item(user_item, event.user_id, event.doc_id)

    def _learn_session(self, event: InteractionEvent) -> None:
        key = user_key(event.user_id)  # type: ignore[arg-type]
        stored = self.state.get_hashes([key])[0] or {}
        if stored.get("session.last") != event.session_id:
            self.state.add(counts_key("user", event.user_id), SESSION, event.day)  # type: ignore[arg-type]
            self.state.update_hash(key, {"session.last": event.session_id})  # type: ignore[dict-item]

    def _learn_popularity(
        self, feature: DecayedPopularityFeature, event: InteractionEvent, item: Mapping
    ) -> None:
        weight = feature.weights.get(event.type)  # type: ignore[call-overload]
        if not weight:
            return
        value, since = f"pop.{feature.name}.value", f"pop.{feature.name}.time"
        old = float(item.get(value, 0.0)) * float(
            decay(event.timestamp - float(item.get(since, event.timestamp)), feature.half_life_days)
        )
        self.state.update_hash(
            item_key(event.doc_id), {value: old + weight, since: float(event.timestamp)}
        )

    def _learn_embedding(self, feature: EmbeddingMeanFeature, event: InteractionEvent) -> None:
        vector = self.state.get_vectors([item_vector_key(event.doc_id)])[0]
        if vector is None:
            return  # an item without a vector adds nothing to the mean
        user_id: str = event.user_id  # type: ignore[assignment]
        hash_key, vector_key = user_key(user_id), embedding_key(feature.name, user_id)
        weight_field, time_field = f"emb.{feature.name}.weight", f"emb.{feature.name}.time"
        stored = self.state.get_hashes([hash_key])[0] or {}
        mean = self.state.get_vectors([vector_key])[0]
        old = 0.0
        if mean is not None and weight_field in stored:
            age = event.timestamp - float(stored[time_field])
            old = float(stored[weight_field]) * float(decay(age, feature.half_life_days))
        # The mean of decayed weights does not depend on when it is read: only its weight does.
        total = old + 1.0
        new = vector.astype(np.float64) / total
        if old > 0.0 and mean is not None:
            new += mean.astype(np.float64) * (old / total)
        self.state.set_vector(vector_key, new)
        self.state.update_hash(hash_key, {weight_field: total, time_field: float(event.timestamp)})

    def _learn_overlap(self, feature: OverlapFeature, user_id: str, value: str) -> None:
        key = overlap_key(feature.name, user_id)
        stored = self.state.get_hashes([key])[0] or {}
        if value not in stored and len(stored) >= feature.max_values:
            # Bounded per user: the least frequent value so far makes room for the new one.
            self.state.delete_fields(key, [min((float(c), v) for v, c in stored.items())[1]])
        self.state.update_hash(key, {value: float(stored.get(value, 0.0)) + 1.0})

    def _learn_multi_overlap(self, feature: MultiOverlapFeature, user_id: str, joined: str) -> None:
        values = [v for v in dict.fromkeys(joined.split(feature.separator)) if v]
        if not values:
            return
        key = overlap_key(feature.name, user_id)
        stored = dict(self.state.get_hashes([key])[0] or {})
        total = float(stored.pop(MULTI_TOTAL, 0.0)) + 1.0
        update: dict[str, HashValue] = {MULTI_TOTAL: total}
        for value in values:
            if value not in stored and len(stored) >= feature.max_values:
                # Bounded per user, as an overlap is: the least frequent value makes room.
                dropped = min((float(c), v) for v, c in stored.items())[1]
                self.state.delete_fields(key, [dropped])
                del stored[dropped]
                update.pop(dropped, None)
            stored[value] = float(stored.get(value, 0.0)) + 1.0
            update[value] = stored[value]
        self.state.update_hash(key, update)

    def _learn_user_item(self, feature: UserItemFeature, user_id: str, doc_id: str) -> None:
        key = overlap_key(feature.name, user_id)
        stored = self.state.get_hashes([key])[0] or {}
        if doc_id not in stored and len(stored) >= feature.max_items:
            self.state.delete_fields(key, [min((float(c), v) for v, c in stored.items())[1]])
        self.state.update_hash(key, {doc_id: float(stored.get(doc_id, 0.0)) + 1.0})


MULTI_TOTAL = f"{UNIT}events"
"""The field of a multi-overlap hash counting the user's events (no value holds the unit
separator, so it never clashes with one)."""


def _entity(scope: str, event: InteractionEvent, item: Mapping[str, HashValue]) -> str | None:
    """Whose counter an interaction adds to in ``scope``; None where it has none."""
    if scope == "item":
        return event.doc_id
    if scope == "query_item":
        return None if event.query is None else query_item(event.doc_id, event.query)
    if scope == "category":
        category = item.get("category")
        return None if category is None else str(category)
    return event.user_id


def _typed(fields: Mapping[str, FieldValue], declared: Mapping[str, str]) -> dict[str, HashValue]:
    """The declared fields of an event, numbers as floats and categories as strings.

    Undeclared fields are dropped: nothing reads them, and the store stays bounded.
    """
    values: dict[str, HashValue] = {}
    for name, value in fields.items():
        kind = declared.get(name)
        if kind is None or value is None:
            continue
        if kind == "category":
            values[name] = str(value)
        else:
            number = float(value)
            if not math.isnan(number):
                values[name] = number
    return values
