"""The feature feed on a live worker, through the real broker and Redis: items with commerce
fields in, a request ranked for a user, their click and purchase learned, then the worker's
feature state read back with :class:`RedisFeatureState`: item fields, today's counters (a
duplicate interaction counted once), the query x item and category counters, the user's
session and category overlap."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from streamrank.models.features.defaults import default_features
from streamrank.models.features.events import day_of
from streamrank.models.features.keys import counts_key, item_key, overlap_key, query_item
from streamrank.streams.config import Settings
from streamrank.streams.events import Candidate, Candidates, Interaction, Item
from streamrank.streams.state.connections import redis_client
from streamrank.streams.state.feature_state import RedisFeatureState
from streamrank.streams.state.user_sessions import SessionStore
from tests.helpers import consume, produce

pytestmark = pytest.mark.integration

# No model to load: the first stage's order is served; the feed is under test, not the budget.
WORKER_ENV = {
    "STREAMRANK_LATENCY_BUDGET_MS": "60000",
    "STREAMRANK_PIPELINE": "first-stage",
    "STREAMRANK_SESSION_CLOSE_S": "1",
    "STREAMRANK_LEARN_TICK_S": "0.2",
}
CREATED = 1_700_000_000.0
QUERY = "Red Shoes"
ITEMS = [
    Item(
        doc_id="sku-1",
        title="red shoes",
        price=49.5,
        stock=3,
        promoted=True,
        brand="acme",
        category="shoes",
        created_at=CREATED,
    ),
    Item(doc_id="sku-2", title="red socks", price=4.0, stock=0, brand="zeta", category="socks"),
]


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_the_worker_feeds_items_and_learned_interactions_into_the_feature_state(
    settings: Settings, start_worker
) -> None:
    worker = start_worker(WORKER_ENV)
    client = redis_client(settings)
    state = RedisFeatureState.for_settings(settings, client, default_features())
    sessions = SessionStore(client, settings)

    produce(settings, "items", [item.to_bytes() for item in ITEMS])
    keys = [item_key("sku-1"), item_key("sku-2")]
    wait_for(lambda: all(state.get_hashes(keys)), "the items in the feature state")
    first, second = state.get_hashes(keys)
    assert first == {
        "price": 49.5,
        "stock": 3.0,
        "in_stock": 1.0,
        "promoted": 1.0,
        "brand": "acme",
        "category": "shoes",
        "created": CREATED,
    }
    assert second is not None
    assert (second["in_stock"], second["category"]) == (0.0, "socks")
    assert second["created"] == ITEMS[1].timestamp  # no created_at: first seen

    request = Candidates(
        request_id="req-1",
        query=QUERY,
        user_id="u1",
        session_id="s1",
        candidates=[
            Candidate(doc_id=item.doc_id, text=item.title, first_stage_score=2.0 - i)
            for i, item in enumerate(ITEMS)
        ],
    )
    produce(settings, "candidates", [request.to_bytes()])
    consume(settings, "rankings", 1)  # published after its impression was recorded

    now = time.time()
    today = day_of(now)

    def event(event_id: str, kind: str) -> bytes:
        interaction = Interaction(
            event_id=event_id,
            request_id="req-1",
            doc_id="sku-1",
            type=kind,
            position=1,
            timestamp=now,
        )
        return interaction.to_bytes()

    def counts(scope: str, entity: str, events: list[str]) -> list[float]:
        read = state.read_counts([counts_key(scope, entity)], events, today, 1)
        return read[0, :, 0].tolist()

    click, purchase, dwell = event("e1", "click"), event("e2", "purchase"), event("e3", "dwell")
    produce(settings, "interactions", [click, purchase, dwell])
    wait_for(lambda: sessions.counts().get("interactions") == 3, "the interactions to be joined")
    wait_for(
        lambda: counts("item", "sku-1", ["click", "purchase"]) == [1.0, 1.0],
        "the item's counters",
    )
    # the query and the session came from the impression, the user too
    assert counts("query_item", query_item("sku-1", QUERY), ["click"]) == [1.0]
    assert counts("category", "shoes", ["click", "purchase"]) == [1.0, 1.0]
    assert counts("user", "u1", ["click", "purchase", "session"]) == [1.0, 1.0, 1.0]
    assert state.get_hashes([overlap_key("user_category_clicks", "u1")]) == [{"shoes": 1.0}]
    popularity = state.get_hashes([item_key("sku-1")])[0]
    assert popularity is not None and popularity["pop.popularity.value"] == pytest.approx(11.0)

    produce(settings, "interactions", [click])  # a duplicate (a producer retry, a replay)
    wait_for(lambda: sessions.counts().get("duplicates") == 1, "the duplicate to be seen")
    time.sleep(1.0)  # what the learn path would have fed after its batch
    assert counts("item", "sku-1", ["click", "purchase"]) == [1.0, 1.0]
    assert counts("user", "u1", ["click"]) == [1.0]
    assert sessions.counts()["interactions"] == 3
    assert "feature store:" not in worker.log()  # nothing failed in the feed
