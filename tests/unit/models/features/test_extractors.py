"""Each feature kind, learnt from events and read back through the feature matrix."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from streamrank.models.features.config import FeatureSet
from streamrank.models.features.events import (
    DAY_S,
    FeatureRequest,
    InteractionEvent,
    ItemEvent,
    UserEvent,
)
from streamrank.models.features.extractors import category_code, smoothed_rate
from streamrank.models.features.learn import FeatureLearner
from streamrank.models.features.state import MemoryState
from streamrank.models.features.vector import FeatureVector

T0 = 1_000 * DAY_S  # a day boundary, so that day arithmetic reads plainly


class Store:
    """A feature set with its state, learner and matrix: what the tests drive."""

    def __init__(self, *entries: dict[str, Any], **fields: Any) -> None:
        self.features = FeatureSet.from_dict({"features": list(entries), **fields})
        self.state = MemoryState(days=self.features.max_window_days)
        self.learner = FeatureLearner(self.features, self.state)
        self.vector = FeatureVector(self.features, self.state)

    def learn(self, *events: Any) -> None:
        for event in events:
            self.learner.learn_one(event)

    def matrix(self, doc_ids: list[str], now: float, **request: Any) -> np.ndarray:
        return self.vector.matrix(FeatureRequest(doc_ids, now=now, **request))


def entry(name: str, kind: str, source: str = "interactions", **settings: Any) -> dict:
    return {"name": name, "kind": kind, "source": source, "default": -1.0, **settings}


def shown(doc_id: str, t: float, clicked: bool = False, **more: Any) -> list[InteractionEvent]:
    events = [InteractionEvent("impression", doc_id, t, **more)]
    return events + ([InteractionEvent("click", doc_id, t, **more)] if clicked else [])


def test_smoothing_starts_at_the_global_rate_and_moves_to_the_items_own() -> None:
    ctr = entry("ctr", "rate", numerator="click", denominator="impression", scope="item",
                windows=[30], weight=10.0)  # fmt: skip
    store = Store(ctr)
    # Everyone else: 1 click per 10 impressions, so the global CTR is 0.1.
    for i in range(2000):
        store.learn(*shown(f"other{i % 50}", T0 + i, clicked=i % 10 == 0))
    assert store.matrix(["new"], T0 + 3000)[0, 0] == pytest.approx(0.1, rel=1e-6)
    rates, seen = [], 0
    for n in (10, 100, 1000):  # this item: half its impressions clicked
        for i in range(seen, n):
            store.learn(*shown("hot", T0 + 2000 + i, clicked=i % 2 == 0))
        seen = n
        rates.append(float(store.matrix(["hot"], T0 + 5000)[0, 0]))
    # The global rate moves a little too (the hot item is part of it); the item's own more.
    assert 0.1 < rates[0] < rates[1] < rates[2] < 0.5
    assert rates[2] == pytest.approx(0.5, abs=0.02)


def test_smoothed_rate_formula() -> None:
    values = smoothed_rate(np.array([0.0, 5.0, np.nan]), np.array([0.0, 10.0, 1.0]), 0.2, 10.0)
    assert values[0] == pytest.approx(0.2)
    assert values[1] == pytest.approx(15 / 60)
    assert np.isnan(values[2])
    assert smoothed_rate(np.array([0.0]), np.array([4.0]), 0.0, 10.0).tolist() == [0.0]


def test_a_rate_without_any_global_history_is_missing() -> None:
    ctr = entry("ctr", "rate", numerator="click", denominator="impression", scope="item",
                windows=[7])  # fmt: skip
    assert Store(ctr).matrix(["d1"], T0).tolist() == [[-1.0]]


def test_windowed_counters_forget_events_older_than_the_window() -> None:
    store = Store(entry("clicks", "counter", event="click", scope="item", windows=[1, 7]))
    store.learn(
        InteractionEvent("click", "d1", T0), InteractionEvent("click", "d1", T0 + 3 * DAY_S)
    )
    assert store.matrix(["d1"], T0 + 3 * DAY_S + 60).tolist() == [[1.0, 2.0]]
    assert store.matrix(["d1"], T0 + 7 * DAY_S).tolist() == [[0.0, 1.0]]
    assert store.matrix(["d1"], T0 + 10 * DAY_S).tolist() == [[0.0, 0.0]]


def test_query_item_and_category_counters_and_missing_scopes() -> None:
    store = Store(
        entry("qi", "counter", event="click", scope="query_item", windows=[7]),
        entry("cat", "counter", event="click", scope="category", windows=[7]),
    )
    store.learn(
        ItemEvent("d1", T0, {"category": "shoes"}),
        ItemEvent("d2", T0, {"category": "shoes"}),
        InteractionEvent("click", "d1", T0 + 1, query="Red Shoes"),
        InteractionEvent("click", "d2", T0 + 2, query="boots"),
    )
    matrix = store.matrix(["d1", "d2", "d3"], T0 + 10, query="red  shoes")
    assert matrix.tolist() == [[1.0, 2.0], [0.0, 2.0], [0.0, -1.0]]  # d3 has no category
    assert store.matrix(["d1"], T0 + 10).tolist() == [[-1.0, 2.0]]  # no query: missing


def test_decayed_popularity_weights_purchases_above_clicks_and_halves() -> None:
    pop = entry("pop", "decayed_popularity", weights={"click": 1.0, "purchase": 5.0},
                half_life_days=2.0)  # fmt: skip
    store = Store(pop)
    store.learn(
        InteractionEvent("click", "clicked", T0), InteractionEvent("purchase", "bought", T0)
    )
    store.learn(InteractionEvent("impression", "seen", T0))  # weight 0: nothing
    now = store.matrix(["clicked", "bought", "seen", "never"], T0)[:, 0]
    assert now.tolist() == [1.0, 5.0, 0.0, 0.0]
    later = store.matrix(["clicked", "bought"], T0 + 2 * DAY_S)[:, 0]
    assert later.tolist() == pytest.approx([0.5, 2.5])
    store.learn(InteractionEvent("click", "clicked", T0 + 2 * DAY_S))
    assert store.matrix(["clicked"], T0 + 2 * DAY_S)[0, 0] == pytest.approx(1.5)


def test_the_purchase_embedding_is_a_time_decayed_mean() -> None:
    store = Store(
        entry("history", "embedding_mean", half_life_days=1.0),
        entry("affinity", "cosine", embedding="history"),
    )
    store.learn(
        ItemEvent("x", T0, vector=np.array([1.0, 0.0])),
        ItemEvent("y", T0, vector=np.array([0.0, 1.0])),
        ItemEvent("novec", T0),
        InteractionEvent("purchase", "x", T0, user_id="u"),
        InteractionEvent("purchase", "y", T0 + DAY_S, user_id="u"),  # x now weighs 1/2
        InteractionEvent("purchase", "novec", T0 + DAY_S, user_id="u"),  # adds nothing
        InteractionEvent("click", "x", T0 + DAY_S, user_id="u"),  # not a purchase
    )
    mean = store.state.get_vectors(["user:embedding:history|u"])[0]
    assert mean.tolist() == pytest.approx([1 / 3, 2 / 3])
    matrix = store.matrix(["x", "y", "novec"], T0 + 2 * DAY_S, user_id="u")
    assert matrix[0, 0] == pytest.approx(1.5 / 2)  # weights 1/2 + 1, one half-life later
    expected = np.array([1 / 3, 2 / 3]) / np.linalg.norm([1 / 3, 2 / 3])
    assert matrix[:2, 1].tolist() == pytest.approx(expected.tolist(), rel=1e-5)
    assert matrix[2, 1] == -1.0  # no item vector
    assert store.matrix(["x"], T0, user_id="stranger").tolist() == [[0.0, -1.0]]
    assert store.matrix(["x"], T0).tolist() == [[-1.0, -1.0]]  # anonymous


def test_overlap_is_the_share_of_the_users_clicks_on_the_items_value() -> None:
    store = Store(entry("cats", "overlap", field="category", events=["click"], max_values=2))
    store.learn(
        ItemEvent("a", T0, {"category": "shoes"}),
        ItemEvent("b", T0, {"category": "hats"}),
        ItemEvent("c", T0, {"category": "socks"}),
        ItemEvent("z", T0),
        *[InteractionEvent("click", "a", T0 + i, user_id="u") for i in range(3)],
        InteractionEvent("click", "b", T0 + 5, user_id="u"),
        InteractionEvent("impression", "c", T0 + 6, user_id="u"),
    )
    matrix = store.matrix(["a", "b", "c", "z"], T0 + 10, user_id="u")
    assert matrix[:, 0].tolist() == [0.75, 0.25, 0.0, -1.0]
    store.learn(InteractionEvent("click", "c", T0 + 11, user_id="u"))  # evicts hats (1 < 3)
    assert store.state.get_hashes(["user:overlap:cats|u"])[0] == {"shoes": 3.0, "socks": 1.0}
    assert store.matrix(["a"], T0 + 12, user_id="new").tolist() == [[-1.0]]


def test_item_fields_age_and_price_against_the_list() -> None:
    store = Store(
        entry("price", "field", source="items", field="price"),
        entry("category", "field", source="items", field="category", buckets=64),
        entry("in_stock", "field", source="items", field="in_stock"),
        entry("age", "age", source="items"),
        entry("relative", "relative_to_list", source="items", field="price", top_n=3),
        entry("segment", "field", source="users", field="segment"),
    )
    store.learn(
        ItemEvent("a", T0, {"price": 10.0, "category": "shoes", "stock": 0, "ignored": "x"}),
        ItemEvent("b", T0 + DAY_S, {"price": 20.0, "stock": 4}),
        ItemEvent("c", T0, {"price": 40.0, "created": T0 - 9 * DAY_S}),
        ItemEvent("a", T0 + 5 * DAY_S, {"price": 30.0}),  # a change keeps the first-seen time
        UserEvent("u", T0, {"segment": "gold"}),
    )
    matrix = store.matrix(["a", "b", "c", "unknown"], T0 + 10 * DAY_S, user_id="u")
    assert matrix[:, 0].tolist() == [30.0, 20.0, 40.0, -1.0]
    assert matrix[:, 1].tolist() == [category_code("shoes", 64), -1.0, -1.0, -1.0]
    assert matrix[:, 2].tolist() == [0.0, 1.0, -1.0, -1.0]
    assert matrix[:, 3].tolist() == [10.0, 9.0, 19.0, -1.0]
    assert matrix[:, 4].tolist() == pytest.approx([1.0, 2 / 3, 4 / 3, -1.0])
    assert matrix[:, 5].tolist() == [category_code("gold", 1024)] * 4
    assert store.state.get_hashes(["item|a"])[0].get("ignored") is None


def test_request_values_and_sessions() -> None:
    store = Store(
        entry("rank", "request", source="request", value="first_stage_rank"),
        entry("ce", "request", source="request", value="ce"),
        entry("sessions", "counter", event="session", scope="user", windows=[7]),
    )
    store.learn(
        InteractionEvent("click", "a", T0, user_id="u", session_id="s1"),
        InteractionEvent("click", "b", T0 + 1, user_id="u", session_id="s1"),
        InteractionEvent("click", "a", T0 + 2, user_id="u", session_id="s2"),
    )
    matrix = store.matrix(["a", "b"], T0 + 3, user_id="u", values={"ce": [0.5, np.nan]})
    assert matrix.tolist() == [[1.0, 0.5, 2.0], [2.0, -1.0, 2.0]]
    with pytest.raises(ValueError, match="shape"):
        store.matrix(["a", "b"], T0, values={"ce": [0.5]})
