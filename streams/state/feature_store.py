"""The feature store in Redis: document texts, features and commerce fields, user features,
and impressions.

Documents and users arrive on the ``items`` and ``users`` topics; any worker can then fill in a
candidate that came without text, and add item or user features to a ranking. Impressions (what
was shown to whom, at which positions, with which features and model version) are kept with a
TTL so the online learner can join clicks to them; the TTL and the record are as short as the
joins allow, since one is kept per request.

All calls are synchronous: they run in the executor threads that also run inference.

Keys (``doc:<id>``, ``user:<id>``, ``impression:<request>``) carry no hash tag: no script,
transaction or multi-key command touches two of them, and a batch read is a pipeline of
single-key reads, which a Redis Cluster spreads over its masters in one round trip each.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis

from streamrank.streams.config import Settings
from streamrank.streams.events import Item, User
from streamrank.streams.state.connections import key

RULE_FIELDS: tuple[str, ...] = (
    "price",
    "stock",
    "in_stock",
    "promoted",
    "brand",
    "category",
    "created_at",
)
"""The :class:`~streamrank.streams.events.Item` fields the business rules may read (the
``known_fields`` of :func:`~streamrank.models.scoring.rules.load_rules`)."""


class FeatureStore:
    """Documents, users and impressions, in Redis under the deployment's prefix."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    # -- documents ------------------------------------------------------------------------

    def _doc_key(self, doc_id: str) -> str:
        return key(self.settings, "doc", doc_id)

    def apply_item(self, item: Item) -> None:
        """Upsert or delete a document; applying the same event twice changes nothing."""
        doc_key = self._doc_key(item.doc_id)
        if item.op == "delete":
            self.client.delete(doc_key)
            return
        fields: dict[str, str] = {"updated": repr(item.timestamp)}
        if item.title is not None:
            fields["title"] = item.title
        if item.text is not None:
            fields["text"] = item.text
        if item.features:
            fields["features"] = json.dumps(item.features)
        for name in RULE_FIELDS:  # as JSON, so a flag reads back as a flag, a count as a count
            if (value := getattr(item, name)) is not None:
                fields[name] = json.dumps(value)
        self.client.hset(doc_key, mapping=fields)

    def texts(self, doc_ids: Sequence[str]) -> list[str | None]:
        """Stored text of each document (title and text joined), None where unknown."""
        pipe = self.client.pipeline(transaction=False)
        for doc_id in doc_ids:
            pipe.hmget(self._doc_key(doc_id), "title", "text")
        texts: list[str | None] = []
        for title, text in pipe.execute():
            parts = [part.decode() for part in (title, text) if part]
            texts.append(" ".join(parts) if parts else None)
        return texts

    def item_features(self, doc_ids: Sequence[str]) -> list[dict[str, float]]:
        pipe = self.client.pipeline(transaction=False)
        for doc_id in doc_ids:
            pipe.hget(self._doc_key(doc_id), "features")
        return [json.loads(raw) if raw else {} for raw in pipe.execute()]

    def rule_fields(
        self, doc_ids: Sequence[str], names: Sequence[str] = RULE_FIELDS
    ) -> list[dict[str, Any]]:
        """The commerce fields ``names`` of each document, in one pipelined read.

        A field never sent is absent from its document's dict (the rules read that as "in
        stock", "not promoted", "never capped"); so is an unknown document.
        """
        names = list(names)
        if not names:
            return [{} for _ in doc_ids]
        pipe = self.client.pipeline(transaction=False)
        for doc_id in doc_ids:
            pipe.hmget(self._doc_key(doc_id), names)
        return [
            {name: json.loads(raw) for name, raw in zip(names, values, strict=True) if raw}
            for values in pipe.execute()
        ]

    # -- users ----------------------------------------------------------------------------

    def apply_user(self, user: User) -> None:
        self.client.set(key(self.settings, "user", user.user_id), json.dumps(user.features))

    def user_features(self, user_id: str | None) -> dict[str, float]:
        if user_id is None:
            return {}
        raw = self.client.get(key(self.settings, "user", user_id))
        return json.loads(raw) if raw else {}

    # -- impressions ----------------------------------------------------------------------

    def impression_key(self, request_id: str) -> str:
        """The Redis key of a request's impression (the learn agent joins on it)."""
        return key(self.settings, "impression", request_id)

    def record_impression(self, request_id: str, impression: dict[str, Any]) -> None:
        """Keep a served ranking's impression for ``impression_ttl_s``, as compact JSON.

        The TTL is as long as a click may still join it (see
        :meth:`~streamrank.streams.config.Settings.derive_impression_ttl`): every request
        leaves one, so Redis holds about ``rate x impression_ttl_s`` of them.
        """
        self.client.set(
            self.impression_key(request_id),
            impression_record(impression),
            ex=self.settings.impression_ttl_s,
        )

    def record_impressions(self, records: Sequence[tuple[str, str, int]]) -> None:
        """Write ``(request_id, record, ttl_s)`` impression records in one pipeline (the
        backlog an outage left, :mod:`streamrank.streams.state.impression_backlog`)."""
        pipe = self.client.pipeline(transaction=False)
        for request_id, record, ttl_s in records:
            pipe.set(self.impression_key(request_id), record, ex=max(1, ttl_s))
        pipe.execute()

    def impression(self, request_id: str) -> dict[str, Any] | None:
        raw = self.client.get(self.impression_key(request_id))
        return json.loads(raw) if raw else None


def impression_record(impression: dict[str, Any]) -> str:
    """A served ranking's impression as Redis keeps it: compact JSON, without the feature log
    (that goes to the ``impressions`` topic, never to Redis)."""
    kept = {name: value for name, value in impression.items() if name != "feature_log"}
    return json.dumps(kept, separators=(",", ":"))
