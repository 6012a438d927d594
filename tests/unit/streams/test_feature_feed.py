"""The feature feed's translation of wire events into feature events (no services)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from streamrank.models.features.events import InteractionEvent
from streamrank.models.scoring.score_cache import vector_key
from streamrank.streams.agents.learn import original_of
from streamrank.streams.events import Interaction, Item, User
from streamrank.streams.state.feature_feed import (
    interaction_event,
    item_event,
    stored_vector,
    user_event,
)
from streamrank.streams.state.user_sessions import Orphan, orphan_as_incoming


def test_an_item_passes_its_commerce_fields_and_creation_time() -> None:
    item = Item(
        doc_id="sku-1",
        price=19.5,
        stock=3,
        promoted=True,
        brand="acme",
        category="shoes",
        created_at=1_000.0,
        features={"rating": 4.5},
        timestamp=2_000.0,
    )
    vector = np.ones(4, dtype=np.float32)
    event = item_event(item, vector)
    assert event is not None
    assert (event.doc_id, event.timestamp) == ("sku-1", 2_000.0)
    assert dict(event.fields) == {
        "rating": 4.5,
        "price": 19.5,
        "stock": 3,
        "in_stock": True,
        "promoted": True,
        "brand": "acme",
        "category": "shoes",
        "created": 1_000.0,
    }
    assert event.vector is vector


def test_in_stock_is_derived_from_the_stock_and_unsent_fields_stay_out() -> None:
    event = item_event(Item(doc_id="sku-2", stock=0))
    assert event is not None
    assert dict(event.fields) == {"stock": 0, "in_stock": False}
    assert event.vector is None


def test_every_category_of_an_item_is_one_field_and_old_items_have_negative_times() -> None:
    item = Item(doc_id="m1", category="Comedy", categories=["Comedy", "Romance"], created_at=-3e8)
    event = item_event(item)
    assert event is not None
    assert event.fields["categories"] == "Comedy|Romance"
    assert event.fields["category"] == "Comedy" and event.fields["created"] == -3e8


def test_a_deleted_item_feeds_nothing() -> None:
    assert item_event(Item(doc_id="sku-3", op="delete")) is None


def test_a_user_passes_its_features() -> None:
    event = user_event(User(user_id="u1", features={"segment": 2.0}, timestamp=5.0))
    assert (event.user_id, dict(event.fields), event.timestamp) == ("u1", {"segment": 2.0}, 5.0)


def interaction(kind: str, user_id: str | None = None) -> Interaction:
    return Interaction(
        event_id="e1", request_id="r1", doc_id="d1", type=kind, user_id=user_id, timestamp=86_500.0
    )


def test_an_interaction_takes_query_user_and_session_from_its_impression() -> None:
    impression = {"query": "red shoes", "user_id": "u1", "session_id": "s1"}
    event = interaction_event(interaction("purchase"), impression)
    assert event == InteractionEvent(
        "purchase", "d1", 86_500.0, user_id="u1", query="red shoes", session_id="s1"
    )
    assert event.day == 1


def test_the_interactions_own_user_wins_and_no_impression_leaves_context_empty() -> None:
    event = interaction_event(interaction("click", user_id="u2"), {"user_id": "u1"})
    assert event is not None and event.user_id == "u2"
    bare = interaction_event(interaction("click"), None)
    assert bare is not None
    assert (bare.user_id, bare.query, bare.session_id) == (None, None, None)


@pytest.mark.parametrize("kind", ["dwell"])
def test_dwell_is_ignored(kind: str) -> None:
    assert interaction_event(interaction(kind), {"query": "q"}) is None


class Cache:
    def __init__(self, stored: dict[str, np.ndarray]) -> None:
        self.stored = stored

    def get_many(self, keys: list[str]) -> list[np.ndarray | None]:
        return [self.stored.get(k) for k in keys]


def ranker(tiers: dict) -> SimpleNamespace:
    return SimpleNamespace(cascade=SimpleNamespace(tiers=tiers))


def test_the_item_vector_is_the_dense_tiers_stored_one() -> None:
    vector = np.arange(3, dtype=np.float64)
    dense = SimpleNamespace(version="enc-1", cache=Cache({vector_key("enc-1", "d1", "t"): vector}))
    without_cache = ranker({"dense": SimpleNamespace(version="x")})
    found = stored_vector([without_cache, ranker({"dense": dense})], "d1", "t")
    assert found is not None and found.dtype == np.float32
    assert found.tolist() == [0.0, 1.0, 2.0]
    assert stored_vector([ranker({"dense": dense})], "d1", "other text") is None
    assert stored_vector([ranker({"ce": dense})], "d1", "t") is None


def test_a_resolved_orphan_is_fed_with_its_original_user_and_time() -> None:
    sent = interaction("click", user_id="u7")
    raw = sent.to_bytes()
    orphan = Orphan("e1", "r1", "click|1|d1", raw, "t", 0, 4, first_seen=1.0)
    rebuilt = orphan_as_incoming(orphan)
    assert rebuilt.interaction.user_id is None  # what the session store keeps
    original = original_of(orphan, rebuilt)
    assert (original.interaction.user_id, original.interaction.timestamp) == ("u7", 86_500.0)
    assert (original.partition, original.offset) == (0, 4)
    broken = Orphan("e1", "r1", "click|1|d1", b"not json", "t", 0, 4, first_seen=1.0)
    assert original_of(broken, rebuilt) is rebuilt
