"""A request's reads: prefetched as one batch or read on first use, the same values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from streamrank.models.features.config import FeatureSet
from streamrank.models.features.defaults import default_features
from streamrank.models.features.events import DAY_S, FeatureRequest, InteractionEvent, ItemEvent
from streamrank.models.features.learn import FeatureLearner
from streamrank.models.features.lookup import ReadPlan, StateLookup
from streamrank.models.features.state import (
    BatchRead,
    BatchResult,
    CounterRead,
    MemoryState,
    read_batch,
    read_by_parts,
)
from streamrank.models.features.vector import FeatureVector

T0 = 3_000 * DAY_S


def learnt_state(features: FeatureSet) -> MemoryState:
    """Items (some without fields, vectors or a category), a user, interactions over 40 days."""
    state = MemoryState(days=features.max_window_days)
    learner = FeatureLearner(features, state)
    rng = np.random.default_rng(3)
    for i in range(30):
        fields: dict[str, float | str] = {"price": float(5 + i), "brand": f"b{i % 4}"}
        if i % 7:
            fields["category"] = f"c{i % 3}"
        vector = rng.standard_normal(6) if i % 3 else None
        learner.learn_one(ItemEvent(f"d{i}", T0, fields if i % 5 else {}, vector))
    kinds = ("impression", "click", "add_to_cart", "purchase")
    for t in np.sort(rng.random(600)) * 40 * DAY_S:
        user = ["u1", "u2", None][int(t) % 3]
        session = f"s{int(t // DAY_S)}"  # a session a day
        event = InteractionEvent(
            kinds[int(t) % 4], f"d{int(t) % 31}", T0 + DAY_S + float(t), user, "red shoes", session
        )
        learner.learn_one(event)
    return state


class CountingState:
    """A state's plain calls and batch reads, counted; the batch read by its plain calls."""

    def __init__(self, state: MemoryState) -> None:
        self.state = state
        self.calls: list[str] = []

    def read_counts(
        self, keys: Sequence[str], events: Sequence[str], today: int, days: int
    ) -> np.ndarray:
        self.calls.append("read_counts")
        return self.state.read_counts(keys, events, today, days)

    def get_hashes(self, keys: Sequence[str]) -> list:
        self.calls.append("get_hashes")
        return self.state.get_hashes(keys)

    def get_vectors(self, keys: Sequence[str]) -> list:
        self.calls.append("get_vectors")
        return self.state.get_vectors(keys)

    def read_batch(self, reads: BatchRead) -> BatchResult:
        self.calls.append("read_batch")
        return read_by_parts(self.state, reads)


def requests() -> list[FeatureRequest]:
    doc_ids = [f"d{i}" for i in range(31)] + ["ghost", "d4"]  # unknown, and one twice
    now = T0 + 30.5 * DAY_S
    return [
        FeatureRequest(doc_ids, now=now, query="Red  Shoes", user_id="u1"),
        FeatureRequest(doc_ids, now=now, query=None, user_id="stranger"),
        FeatureRequest(doc_ids[:3], now=now + 20 * DAY_S, query="never", user_id=None),
        FeatureRequest([], now=now, query="red shoes", user_id="u2"),
    ]


@pytest.mark.parametrize("n", range(4))
def test_prefetched_and_first_use_reads_give_the_same_matrix(n: int) -> None:
    features = default_features()
    state = learnt_state(features)
    request = requests()[n]
    prefetched = FeatureVector(features, state).matrix(request)
    on_first_use = FeatureVector(features, CountingState(state), prefetch=False)  # type: ignore[arg-type]
    expected = on_first_use.matrix(request)
    np.testing.assert_array_equal(prefetched, expected)
    if n == 0:  # the comparison covered values read from every part of the state
        read = [
            "price",
            "category",
            "item_clicks_30d",
            "query_item_clicks_30d",
            "category_clicks_30d",
            "item_ctr_30d",
            "popularity",
            "user_sessions_30d",
            "user_category_clicks",
            "purchase_affinity",
        ]
        columns = features.columns
        for name in read:
            column = prefetched[:, columns.index(name)]
            assert (np.nan_to_num(column) != 0).any(), name


def test_a_prefetched_request_reads_the_state_twice_and_nothing_after() -> None:
    features = default_features()
    counting = CountingState(learnt_state(features))
    FeatureVector(features, counting).matrix(requests()[0])  # type: ignore[arg-type]
    # All the plan knows in one batch; the category counters need the categories first.
    assert counting.calls == ["read_batch", "read_batch"]


def test_the_plan_lists_what_the_default_features_read() -> None:
    plan = ReadPlan.for_features(default_features())
    assert {"price", "stock", "created", "pop.popularity.value"} <= set(plan.item_numbers)
    assert {"category", "brand"} <= set(plan.item_strings)
    assert {"user_category_clicks", "user_brand_clicks"} <= set(plan.overlaps)
    assert plan.embeddings == ("purchase_history",)
    assert plan.user_fields and plan.item_vectors


def test_a_read_the_plan_does_not_cover_is_made_on_first_use() -> None:
    state = MemoryState(days=7)
    state.update_hash("item|d1", {"price": 9.5, "brand": "acme"})
    counting = CountingState(state)
    lookup = StateLookup(FeatureRequest(["d1", "d2"], now=0.0), counting, ReadPlan())  # type: ignore[arg-type]
    lookup.prefetch()  # an empty plan: nothing to read
    assert counting.calls == []
    assert lookup.item_strings("brand") == ["acme", None]
    np.testing.assert_array_equal(lookup.item_numbers("price"), [9.5, np.nan])
    assert counting.calls == ["get_hashes"]  # once, kept for both


def test_a_batch_read_reads_columns_window_sums_hashes_and_vectors() -> None:
    state = MemoryState(days=30)
    state.update_hash("item|d1", {"price": 2.5, "category": "12", "stock": "n/a"})
    state.update_hash("user|u1", {"segment": "s1"})
    state.set_vector("item:vector|d1", np.arange(3))
    for day, event in [(10, "click"), (16, "click"), (17, "impression"), (18, "click")]:
        state.add("item:counts|d1", event, day)
    got = read_batch(
        state,
        BatchRead(
            today=17,
            hashes=["user|u1", "user|u2"],
            columns=["item|d1", "item|d2"],
            numbers=["price", "stock", "category"],
            strings=["category", "price"],
            vectors=["item:vector|d2"],
            rows=["item:vector|d1", "item:vector|d2"],
            counters={
                "item": CounterRead(["item:counts|d1", "item:counts|d9"], ["click"], [1, 7, 30]),
                "none": CounterRead([], ["click"], [7]),
            },
        ),
    )
    assert got.hashes == [{"segment": "s1"}, None]
    # A string in a number field is missing, whatever it spells.
    np.testing.assert_array_equal(got.numbers, [[2.5, np.nan], [np.nan, np.nan], [np.nan] * 2])
    assert got.strings == [["12", None], [2.5, None]]
    assert got.vectors == [None]
    np.testing.assert_array_equal(got.matrix, [[0, 1, 2], [0, 0, 0]])
    assert got.matrix.dtype == np.float32 and got.present.tolist() == [True, False]
    # Day 18 is after today: in no window. Day 10 is 7 days back: in the 30-day one only.
    np.testing.assert_array_equal(got.counts["item"], [[[0.0, 1.0, 2.0]], [[0.0, 0.0, 0.0]]])
    assert got.counts["none"].shape == (0, 1, 1)


def test_a_window_longer_than_the_state_keeps_is_refused_in_a_batch() -> None:
    reads = BatchRead(today=5, counters={"item": CounterRead(["item:counts|d1"], ["click"], [8])})
    with pytest.raises(ValueError, match="keeps 7 day buckets"):
        read_batch(MemoryState(days=7), reads)
