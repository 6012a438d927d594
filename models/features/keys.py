"""How the feature store names what it keeps: one key per owner and purpose.

A key reads ``<family>|<entity>``: the family (``item``, ``item:counts``, ``user:counts``...)
says what is stored and, before its first colon, whom it belongs to (an item, a user, a
category or everyone), so memory can be reported per item and per user. A query x item
counter belongs to its item: its entity is the document id, a unit separator and the query.
Entities come last so that ids may hold any character.

Examples
--------
>>> counts_key("query_item", query_item("d1", "Red  Shoes"))
'item:query_counts|d1\\x1fred shoes'
>>> owner_of(counts_key("query_item", query_item("d1", "red shoes")))
('item', 'd1')
>>> owner_of(overlap_key("clicked_categories", "u7"))
('user', 'u7')
"""

from __future__ import annotations

UNIT = "\x1f"
"""Joins a query x item entity; no document id or query holds it."""

_COUNT_FAMILIES = {
    "item": "item:counts",
    "query_item": "item:query_counts",
    "category": "category:counts",
    "user": "user:counts",
    "global": "global:counts",
}


def normalize_query(query: str) -> str:
    """Lower case, single spaces: how a query names its query x item counters."""
    return " ".join(query.lower().split())


def query_item(doc_id: str, query: str) -> str:
    """The entity of a query x item counter."""
    return f"{doc_id}{UNIT}{normalize_query(query)}"


def query_items(doc_ids: list[str], query: str) -> list[str]:
    """The query x item entities of many documents and one query (normalised once)."""
    joined = UNIT + normalize_query(query)
    return [doc_id + joined for doc_id in doc_ids]


def counts_key(scope: str, entity: str) -> str:
    """Day-bucketed counters of one scope (``item``, ``query_item``, ``category``...)."""
    return f"{_COUNT_FAMILIES[scope]}|{entity}"


def item_key(doc_id: str) -> str:
    """An item's fields, and its decayed popularity."""
    return f"item|{doc_id}"


def item_vector_key(doc_id: str) -> str:
    """An item's dense vector."""
    return f"item:vector|{doc_id}"


def user_key(user_id: str) -> str:
    """A user's fields, session marker and embedding weights."""
    return f"user|{user_id}"


def overlap_key(feature: str, user_id: str) -> str:
    """The values of an item field a user interacted with, and how often."""
    return f"user:overlap:{feature}|{user_id}"


def embedding_key(feature: str, user_id: str) -> str:
    """A user's purchase-history embedding."""
    return f"user:embedding:{feature}|{user_id}"


GLOBAL = "all"
"""The entity of the global counters (every interaction)."""


def owner_of(key: str) -> tuple[str, str]:
    """Whom ``key`` belongs to: (``item`` | ``user`` | ``category`` | ``global``, id)."""
    family, _, entity = key.partition("|")
    return family.split(":", 1)[0], entity.split(UNIT, 1)[0]
