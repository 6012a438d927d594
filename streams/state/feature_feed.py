"""Feeding the feature store from the worker's streams: wire events -> feature events -> Redis.

The ``items`` and ``users`` agents and the learn path hand each event they consumed to a
:class:`FeatureFeed`, which turns it into a :mod:`streamrank.models.features.events` event
(:func:`item_event`, :func:`user_event`, :func:`interaction_event`) and folds it into the
deployment's :class:`~streamrank.streams.state.feature_state.RedisFeatureState` with the same
:class:`~streamrank.models.features.learn.FeatureLearner` the offline replay uses, so the
features a worker computes follow the stream.

Counting once. Items and users are overwrites: a replayed one changes nothing. Interactions
are counted: the learn path feeds only those its session store accepted as ``new`` (joined
to their impression for the first time), never a duplicate or a replay, so a counter never
counts one event twice. The feed runs after the session store applied a batch: a crash or a
Redis failure in between loses those interactions' features (logged), it never doubles them.

Examples
--------
>>> from streamrank.streams.events import Interaction, Item
>>> event = item_event(Item(doc_id="sku-1", price=9.5, stock=0, brand="acme", created_at=10.0))
>>> sorted(event.fields.items())
[('brand', 'acme'), ('created', 10.0), ('in_stock', False), ('price', 9.5), ('stock', 0)]
>>> click = Interaction(event_id="e1", request_id="r1", doc_id="sku-1", type="click")
>>> interaction_event(click, {"query": "shoes", "user_id": "u1", "session_id": "s1"}).query
'shoes'
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import redis

from streamrank.models.features.config import FeatureSet
from streamrank.models.features.defaults import default_features
from streamrank.models.features.events import (
    INTERACTION_TYPES,
    Event,
    FieldValue,
    InteractionEvent,
    ItemEvent,
    UserEvent,
)
from streamrank.models.features.learn import FeatureLearner
from streamrank.models.scoring.score_cache import vector_key
from streamrank.streams.config import Settings
from streamrank.streams.events import Interaction, Item, User
from streamrank.streams.state.connections import key
from streamrank.streams.state.feature_state import RedisFeatureState

log = logging.getLogger(__name__)

ITEM_FIELDS = ("price", "stock", "in_stock", "promoted", "brand", "category")
"""The :class:`~streamrank.streams.events.Item` commerce fields passed on under their name."""

CREATED = "created"
"""The item field an age feature reads: the item's ``created_at``."""

CATEGORIES = "categories"
"""The item field that holds every category of an item, joined by :data:`CATEGORY_SEPARATOR`."""
CATEGORY_SEPARATOR = "|"

VECTOR_TIER = "dense"
"""The serving tier whose stored document vector becomes the item's vector."""


# -- translation --------------------------------------------------------------------------


def item_event(item: Item, vector: np.ndarray | None = None) -> ItemEvent | None:
    """The feature event of an ``items`` message; None for a delete (features keep no
    deletions: the item's counters age out of their windows)."""
    if item.op == "delete":
        return None
    fields: dict[str, FieldValue] = dict(item.features)
    for name in ITEM_FIELDS:
        if (value := getattr(item, name)) is not None:
            fields[name] = value
    if item.categories is not None:
        fields[CATEGORIES] = CATEGORY_SEPARATOR.join(item.categories)
    if item.created_at is not None:
        fields[CREATED] = item.created_at
    return ItemEvent(item.doc_id, item.timestamp, fields, vector)


def user_event(user: User) -> UserEvent:
    """The feature event of a ``users`` message."""
    return UserEvent(user.user_id, user.timestamp, dict(user.features))


def interaction_event(
    interaction: Interaction, impression: Mapping[str, Any] | None
) -> InteractionEvent | None:
    """The feature event of an interaction joined to its request's ``impression`` record
    (its query, user and session); None for a type the store does not count (``dwell``).

    The interaction's own user id wins over the impression's.
    """
    if interaction.type not in INTERACTION_TYPES:
        return None
    context = impression or {}
    return InteractionEvent(
        type=interaction.type,
        doc_id=interaction.doc_id,
        timestamp=interaction.timestamp,
        user_id=interaction.user_id or context.get("user_id"),
        query=context.get("query"),
        session_id=context.get("session_id"),
    )


def stored_vector(rankers: Iterable[Any], doc_id: str, text: str) -> np.ndarray | None:
    """The document vector a ranker's ``dense`` tier stored for ``doc_id`` (None: none)."""
    for ranker in rankers:
        tier = ranker.cascade.tiers.get(VECTOR_TIER)
        cache = getattr(tier, "cache", None)
        if cache is None:
            continue
        (vector,) = cache.get_many([vector_key(tier.version, doc_id, text)])
        if vector is not None and np.ndim(vector) == 1:
            return np.asarray(vector, dtype=np.float32)
    return None


# -- the feed -----------------------------------------------------------------------------


class FeatureFeed:
    """Folds a worker's consumed events into the feature state in Redis.

    Parameters
    ----------
    settings
        The deployment (key prefix).
    client
        A synchronous Redis client (the feed runs in executor threads).
    features
        The feature config; the default one when None.

    One feed serves every agent of a worker: a lock keeps the state's write buffer to one
    thread at a time, and each call sends its writes before it returns.
    """

    def __init__(
        self, settings: Settings, client: redis.Redis, features: FeatureSet | None = None
    ) -> None:
        self.settings = settings
        self.client = client
        self.features = features or default_features()
        self.state = RedisFeatureState.for_settings(
            settings, client, self.features, buffer_writes=True
        )
        self.learner = FeatureLearner(self.features, self.state)
        self._lock = threading.Lock()

    def learn(self, events: Iterable[Event]) -> int:
        """Learn ``events`` in order and send their writes; how many were learned."""
        learned = 0
        with self._lock:
            for event in events:
                self.learner.learn_one(event)
                learned += 1
            self.state.flush()
        return learned

    def item(self, item: Item, vector: np.ndarray | None = None) -> None:
        """Feed an ingested item. Redis errors are raised (the items agent waits them out and
        applies the item again, an overwrite); any other failure is logged."""
        event = item_event(item, vector)
        if event is not None:
            self._guarded(lambda: self.learn([event]), f"item {item.doc_id}")

    def user(self, user: User) -> None:
        """Feed a user update; errors as for :meth:`item`."""
        self._guarded(lambda: self.learn([user_event(user)]), f"user {user.user_id}")

    def interactions(self, interactions: Sequence[Interaction]) -> int:
        """Feed interactions newly joined by the learn path, each with its impression's query
        and session; how many were counted. Never raises: a failure is logged and these
        interactions' features are lost (feeding them again later could double them)."""
        if not interactions:
            return 0
        try:
            contexts = self.impressions(sorted({i.request_id for i in interactions}))
            events = [interaction_event(i, contexts.get(i.request_id)) for i in interactions]
            learned = self.learn(e for e in events if e is not None)
            self.client.hincrby(self.counts_key, "interactions", learned)
            return learned
        except Exception:
            log.exception("feature store: %d interactions not counted", len(interactions))
            return 0

    @property
    def counts_key(self) -> str:
        """Where the feed counts what it has learnt (``interactions``): how far it has come."""
        return key(self.settings, "feature-feed")

    def fed(self) -> int:
        """Interactions the feature store has counted so far (every worker's feed)."""
        return int(self.client.hget(self.counts_key, "interactions") or 0)

    def impressions(self, request_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The query, user and session of each request's stored impression (one round trip).

        A pipeline of ``GET``s, not one ``MGET``: impressions are keyed per request, so on a
        Redis Cluster they lie in many slots, and a pipeline of single-key reads may cross
        slots where an ``MGET`` may not.
        """
        pipe = self.client.pipeline(transaction=False)
        for rid in request_ids:
            pipe.get(key(self.settings, "impression", rid))
        found: dict[str, dict[str, Any]] = {}
        for rid, raw in zip(request_ids, pipe.execute(), strict=True):
            if raw:
                record = json.loads(raw)
                found[rid] = {k: record.get(k) for k in ("query", "user_id", "session_id")}
        return found

    def _guarded(self, work: Any, what: str) -> None:
        try:
            work()
        except redis.RedisError:
            raise
        except Exception:  # the feature store lags; ingestion goes on
            log.exception("feature store: %s not fed", what)
