"""One request's reads from the feature state, each made once and shared by every feature.

The extractors ask a :class:`StateLookup` for what they need (the candidates' item fields,
their counters in a scope, the user's embedding...); each is read from the state with one batch
call on first use and kept for the rest of the request, so 40 features over 1,000 candidates
cost a handful of reads, not 40,000. :meth:`StateLookup.prefetch` goes further: what the
:class:`ReadPlan` knows a request needs is read as one :class:`~.state.BatchRead` (one Redis
round trip, plus one for the category counters, which need the items' categories first), so
only a feature kind the plan does not know reads on first use.

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
from typing import Any

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
from streamrank.models.features.state import (
    BatchRead,
    BatchResult,
    CounterRead,
    FeatureState,
    HashValue,
    read_batch,
    stack_rows,
)

_EMPTY: Mapping[str, HashValue] = {}


_OVERLAP_KINDS = ("overlap", "multi_overlap", "user_item")
"""Kinds that read the user's overlap hash of their own name."""


@dataclass(frozen=True)
class ReadPlan:
    """What a feature set reads: counter events and windows per scope, and field types.

    The rest is what :meth:`StateLookup.prefetch` reads up front: the candidates' item fields
    read as numbers and as strings, the user's overlap hashes and embeddings by feature name,
    and whether the user's fields and the items' vectors are read at all.
    """

    events: dict[str, tuple[str, ...]] = field(default_factory=dict)
    windows: dict[str, tuple[int, ...]] = field(default_factory=dict)
    field_types: dict[str, dict[str, str]] = field(default_factory=dict)
    item_numbers: tuple[str, ...] = ()
    item_strings: tuple[str, ...] = ()
    overlaps: tuple[str, ...] = ()
    embeddings: tuple[str, ...] = ()
    user_fields: bool = False
    item_vectors: bool = False

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
            **_reads_of(features, "category" in events),
        )

    def field_type(self, source: str, name: str) -> str:
        return self.field_types[source][name]


def _reads_of(features: FeatureSet, categories: bool) -> dict[str, Any]:
    """The fields, hashes and vectors ``features`` read, by the kinds it knows."""
    numbers: set[str] = set()
    strings: set[str] = {"category"} if categories else set()
    overlaps, embeddings = set(), set()
    user_fields = item_vectors = False
    item_types = features.item_fields
    for feature in features.features:
        kind, source = feature.kind, getattr(feature, "source", None)
        name = getattr(feature, "field", None)
        if source == "users" or kind == "embedding_mean":
            user_fields = True
        elif name is not None and name in item_types:  # an item field, by its declared type
            (strings if item_types[name] == "category" else numbers).add(name)
        if kind == "decayed_popularity":
            numbers.update((f"pop.{feature.name}.value", f"pop.{feature.name}.time"))
        if kind in _OVERLAP_KINDS:
            overlaps.add(feature.name)
        if kind == "cosine":
            embeddings.add(feature.embedding)  # type: ignore[attr-defined]
            item_vectors = True
    return {
        "item_numbers": tuple(sorted(numbers)),
        "item_strings": tuple(sorted(strings)),
        "overlaps": tuple(sorted(overlaps)),
        "embeddings": tuple(sorted(embeddings)),
        "user_fields": user_fields,
        "item_vectors": item_vectors,
    }


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
        self._overlaps: dict[str, Mapping[str, HashValue] | None] = {}
        self._embeddings: dict[str, np.ndarray | None] = {}

    # -- everything at once ---------------------------------------------------------------

    def prefetch(self) -> None:
        """Read all the plan knows this request needs: one batch, and one for categories.

        Afterwards every read the plan covers is served from what this read; the values are
        the ones the reads on first use would give.

        Examples
        --------
        >>> from streamrank.models.features.events import FeatureRequest
        >>> from streamrank.models.features.state import MemoryState
        >>> state = MemoryState(days=7)
        >>> state.update_hash("item|d1", {"price": 9.5})
        >>> lookup = StateLookup(FeatureRequest(["d1"], now=0.0), state,
        ...                      ReadPlan(item_numbers=("price",)))
        >>> lookup.prefetch()
        >>> state.update_hash("item|d1", {"price": 1.0})  # too late for this request
        >>> lookup.item_numbers("price")
        array([9.5])
        """
        plan, user = self.plan, self.request.user_id
        columns = plan.item_numbers or plan.item_strings
        hashes: list[str] = []
        if user is not None:
            if plan.user_fields:
                hashes.append(user_key(user))
            hashes += [overlap_key(name, user) for name in plan.overlaps]
        scopes = [scope for scope in plan.events if scope != "category"]
        placing = {scope: self._counter_keys(scope) for scope in scopes}
        doc_ids = self.request.doc_ids
        reads = BatchRead(
            today=self.today,
            hashes=hashes,
            columns=[item_key(doc_id) for doc_id in doc_ids] if columns else [],
            numbers=plan.item_numbers,
            strings=plan.item_strings,
            vectors=[embedding_key(name, user) for name in plan.embeddings] if user else [],
            rows=[item_vector_key(doc_id) for doc_id in doc_ids] if plan.item_vectors else [],
            counters={scope: self._counter_read(scope, placing[scope][0]) for scope in scopes},
        )
        if reads.hashes or reads.columns or reads.vectors or reads.rows or reads.counters:
            self._keep(read_batch(self.state, reads), columns=bool(columns))
        for scope in scopes:
            self._place(scope, placing[scope][1])
        if "category" in plan.events:
            self.counts("category")  # the second read: needs the categories just read

    def _keep(self, got: BatchResult, columns: bool) -> None:
        plan, user = self.plan, self.request.user_id
        if columns:
            self._numbers.update(zip(plan.item_numbers, got.numbers, strict=True))
            self._strings.update(zip(plan.item_strings, got.strings, strict=True))  # type: ignore[arg-type]
        hashes = iter(got.hashes)
        if user is not None:
            if plan.user_fields:
                self.__dict__["user_hash"] = next(hashes) or _EMPTY
            self._overlaps.update(zip(plan.overlaps, hashes, strict=True))
            self._embeddings.update(zip(plan.embeddings, got.vectors, strict=True))
        if plan.item_vectors:
            self.__dict__["item_vectors"] = (got.matrix, got.present)
        self._counts.update(got.counts)  # window sums of the keys read; placed by _place

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
        return stack_rows(self.state.get_vectors(keys))

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
            keys, rows = self._counter_keys(scope)
            reads = BatchRead(today=self.today, counters={scope: self._counter_read(scope, keys)})
            self._counts[scope] = read_batch(self.state, reads).counts[scope]
            self._place(scope, rows)
        return self._counts[scope]

    def _counter_keys(self, scope: str) -> tuple[list[str], np.ndarray]:
        """The distinct counter keys of ``scope`` and, per row, the index of its key (-1: none).

        Many candidates share a category: each key is read once.
        """
        entities = self.entities(scope)
        if scope == "user" or scope == "global":
            entities = entities[:1]
        prefix = counts_key(scope, "")
        distinct = dict.fromkeys(entities)
        if len(distinct) == len(entities) and None not in distinct:  # the usual case: cheap
            return [prefix + entity for entity in distinct], np.arange(len(entities))  # type: ignore[operator]
        index: dict[str, int] = {}
        rows = np.fromiter(
            (-1 if entity is None else index.setdefault(entity, len(index)) for entity in entities),
            dtype=np.intp,
            count=len(entities),
        )
        return [prefix + entity for entity in index], rows

    def _counter_read(self, scope: str, keys: list[str]) -> CounterRead:
        return CounterRead(keys, self.plan.events[scope], self.plan.windows[scope])

    def _place(self, scope: str, rows: np.ndarray) -> None:
        """Turn the window sums read per key into sums per row (NaN for rows with no entity)."""
        sums = self._counts[scope]
        if len(sums) == len(rows):
            return  # as many keys as rows: each row has its own, in order (numbered as met)
        known = rows >= 0
        if known.all():
            self._counts[scope] = sums[rows]
            return
        counts = np.full((len(rows), *sums.shape[1:]), np.nan)
        counts[known] = sums[rows[known]]
        self._counts[scope] = counts

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
        if feature not in self._overlaps:
            key = overlap_key(feature, self.request.user_id)
            self._overlaps[feature] = self.state.get_hashes([key])[0]
        return self._overlaps[feature]

    def user_embedding(self, feature: str) -> np.ndarray | None:
        if self.request.user_id is None:
            return None
        if feature not in self._embeddings:
            key = embedding_key(feature, self.request.user_id)
            self._embeddings[feature] = self.state.get_vectors([key])[0]
        return self._embeddings[feature]

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
