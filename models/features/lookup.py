"""One request's reads from the feature state, each made once and shared by every feature.

The extractors ask a :class:`StateLookup` for what they need (the candidates' item fields,
their counters in a scope, the user's embedding...); each is read from the state with one batch
call on first use and kept for the rest of the request, so 40 features over 1,000 candidates
cost a handful of reads, not 40,000.

Examples
--------
>>> from streamrank.models.features.events import FeatureRequest
>>> from streamrank.models.features.state import MemoryState
>>> state = MemoryState(days=7)
>>> state.update_hash("item|d1", {"price": 9.5, "category": "shoes"})
>>> lookup = StateLookup(FeatureRequest(["d1", "d2"], now=0.0), state, ReadPlan())
>>> lookup.item_numbers("price")
array([9.5, nan])
>>> lookup.item_strings("category")
['shoes', None]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from streamrank.models.features.config import CounterFeature, FeatureSet, RateFeature
from streamrank.models.features.events import FeatureRequest, day_of
from streamrank.models.features.keys import (
    GLOBAL,
    counts_key,
    embedding_key,
    item_key,
    item_vector_key,
    overlap_key,
    query_items,
    user_key,
)
from streamrank.models.features.state import FeatureState, HashValue

_EMPTY: Mapping[str, HashValue] = {}


@dataclass(frozen=True)
class ReadPlan:
    """What a feature set reads: counter events and windows per scope, and field types."""

    events: dict[str, tuple[str, ...]] = field(default_factory=dict)
    windows: dict[str, tuple[int, ...]] = field(default_factory=dict)
    field_types: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def for_features(cls, features: FeatureSet) -> ReadPlan:
        """Each scope's events and windows; rates also read the global counters."""
        events: dict[str, set[str]] = {}
        windows: dict[str, set[int]] = {}
        for feature in features.features:
            if isinstance(feature, CounterFeature):
                wanted = {(feature.scope, feature.event)}
            elif isinstance(feature, RateFeature):
                pair = (feature.numerator, feature.denominator)
                wanted = {(scope, event) for scope in (feature.scope, "global") for event in pair}
            else:
                continue
            for scope, event in wanted:
                events.setdefault(scope, set()).add(event)
                windows.setdefault(scope, set()).update(feature.windows)
        types = {"items": dict(features.item_fields), "users": dict(features.user_fields)}
        return cls(
            {scope: tuple(sorted(names)) for scope, names in events.items()},
            {scope: tuple(sorted(days)) for scope, days in windows.items()},
            types,
        )

    def field_type(self, source: str, name: str) -> str:
        return self.field_types[source][name]


class StateLookup:
    """The state as one request sees it: reads made on first use, then kept."""

    def __init__(self, request: FeatureRequest, state: FeatureState, plan: ReadPlan) -> None:
        self.request = request
        self.state = state
        self.plan = plan
        self.size = request.size
        self.now = float(request.now)
        self.today = day_of(self.now)
        self._numbers: dict[str, np.ndarray] = {}
        self._strings: dict[str, list[str | None]] = {}
        self._counts: dict[str, np.ndarray] = {}

    # -- items ----------------------------------------------------------------------------

    @cached_property
    def item_hashes(self) -> list[Mapping[str, HashValue]]:
        hashes = self.state.get_hashes([item_key(doc_id) for doc_id in self.request.doc_ids])
        return [_EMPTY if stored is None else stored for stored in hashes]

    def item_numbers(self, name: str) -> np.ndarray:
        """A numeric item field (or stored statistic) per candidate, NaN where absent."""
        if name not in self._numbers:
            nan = float("nan")
            self._numbers[name] = np.array(
                [stored.get(name, nan) for stored in self.item_hashes], dtype=np.float64
            )
        return self._numbers[name]

    def item_strings(self, name: str) -> list[str | None]:
        """A category item field per candidate, None where absent."""
        if name not in self._strings:
            self._strings[name] = [stored.get(name) for stored in self.item_hashes]  # type: ignore[misc]
        return self._strings[name]

    @cached_property
    def item_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """The candidates' vectors (rows; zeros where absent) and which ones exist."""
        keys = [item_vector_key(doc_id) for doc_id in self.request.doc_ids]
        vectors = self.state.get_vectors(keys)
        present = np.array([vector is not None for vector in vectors], dtype=bool)
        if not present.any():
            return np.zeros((self.size, 0), dtype=np.float32), present
        if present.all():
            return np.stack(vectors), present  # type: ignore[arg-type]
        dim = next(vector for vector in vectors if vector is not None).shape[0]
        matrix = np.zeros((self.size, dim), dtype=np.float32)
        matrix[present] = np.stack([vector for vector in vectors if vector is not None])
        return matrix, present

    # -- counters -------------------------------------------------------------------------

    def entities(self, scope: str) -> list[str | None]:
        """Each candidate's entity in a counter scope, None where it has none."""
        doc_ids = self.request.doc_ids
        if scope == "item":
            return list(doc_ids)
        if scope == "query_item":
            query = self.request.query
            return [None] * self.size if query is None else query_items(list(doc_ids), query)
        if scope == "category":
            return self.item_strings("category")
        if scope == "user":
            return [self.request.user_id] * self.size
        return [GLOBAL]

    def counts(self, scope: str) -> np.ndarray:
        """Counts over each planned window, shaped (rows, events, windows).

        Rows are candidates, or one row for the ``user`` and ``global`` scopes (the same
        entity for the whole list). Rows without an entity in ``scope`` are NaN: missing.
        """
        if scope not in self._counts:
            events, windows = self.plan.events[scope], self.plan.windows[scope]
            days = max(windows)
            entities = self.entities(scope)
            if scope == "user" or scope == "global":
                known = [0] if entities[0] is not None else []
                entities = entities[:1]
            else:
                known = [index for index, entity in enumerate(entities) if entity is not None]
            prefix = counts_key(scope, "")
            if scope == "category":
                # Many candidates share a category: read each one once.
                distinct = {entities[index]: None for index in known}
                position = {entity: n for n, entity in enumerate(distinct)}
                keys = [prefix + entity for entity in distinct]  # type: ignore[operator]
                read = self.state.read_counts(keys, events, self.today, days)
                read = read[[position[entities[index]] for index in known]]
            else:
                keys = [prefix + entities[index] for index in known]  # type: ignore[operator]
                read = self.state.read_counts(keys, events, self.today, days)
            # Each window is a sum over the trailing days of every event of every row at once.
            sums = np.stack([read[:, :, days - window :].sum(axis=2) for window in windows], 2)
            if len(known) == len(entities):
                counts = sums
            else:
                counts = np.full((len(entities), len(events), len(windows)), np.nan)
                counts[known] = sums
            self._counts[scope] = counts
        return self._counts[scope]

    def window_sums(self, scope: str, event: str, windows: list[int]) -> np.ndarray:
        """Counts of ``event`` over each window ending today, shaped (rows, windows)."""
        counts = self.counts(scope)[:, self.plan.events[scope].index(event)]
        columns = [self.plan.windows[scope].index(window) for window in windows]
        sums = counts[:, columns]
        if scope == "user":
            return np.broadcast_to(sums, (self.size, len(windows)))
        return sums

    # -- the user -------------------------------------------------------------------------

    @cached_property
    def user_hash(self) -> Mapping[str, HashValue] | None:
        """The user's fields, ``{}`` for an unseen user, None for an anonymous request."""
        if self.request.user_id is None:
            return None
        return self.state.get_hashes([user_key(self.request.user_id)])[0] or _EMPTY

    def user_overlap(self, feature: str) -> Mapping[str, HashValue] | None:
        if self.request.user_id is None:
            return None
        return self.state.get_hashes([overlap_key(feature, self.request.user_id)])[0]

    def user_embedding(self, feature: str) -> np.ndarray | None:
        if self.request.user_id is None:
            return None
        return self.state.get_vectors([embedding_key(feature, self.request.user_id)])[0]

    # -- the request ----------------------------------------------------------------------

    def request_value(self, name: str) -> np.ndarray:
        """A request-time value per candidate, NaN where not given."""
        given = self.request.values.get(name)
        if given is None:
            if name == "first_stage_rank":
                return np.arange(1, self.size + 1, dtype=np.float64)
            return np.full(self.size, np.nan)
        values = np.asarray(given, dtype=np.float64)
        if values.shape != (self.size,):
            raise ValueError(f"request value {name!r} has shape {values.shape}, not ({self.size},)")
        return values
