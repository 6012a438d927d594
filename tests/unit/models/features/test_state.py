"""MemoryState: day-bucketed counters that forget, hashes, vectors, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from streamrank.models.features.state import MemoryState

KEY = "item:counts|d1"


def total(state: MemoryState, today: int, days: int, key: str = KEY) -> float:
    return float(state.read_counts([key], ["click"], today, days).sum())


def test_counts_land_in_their_day_columns() -> None:
    state = MemoryState(days=5)
    for day, amount in ((3, 1.0), (5, 2.0), (5, 1.0), (6, 4.0)):
        state.add(KEY, "click", day, amount)
    read = state.read_counts([KEY, "item:counts|other"], ["click", "purchase"], today=6, days=4)
    assert read.shape == (2, 2, 4)
    assert read[0, 0].tolist() == [1.0, 0.0, 3.0, 4.0]  # days 3, 4, 5, 6
    assert not read[0, 1].any() and not read[1].any()


def test_a_window_forgets_days_before_it() -> None:
    state = MemoryState(days=7)
    state.add(KEY, "click", day=100)
    state.add(KEY, "click", day=104)
    assert total(state, today=104, days=7) == 2.0
    assert total(state, today=106, days=7) == 2.0
    assert total(state, today=107, days=7) == 1.0  # day 100 left the 7-day window
    assert total(state, today=107, days=4) == 1.0
    assert total(state, today=107, days=3) == 0.0
    assert total(state, today=111, days=7) == 0.0


def test_a_new_day_reuses_the_ring_bucket_of_an_expired_one() -> None:
    state = MemoryState(days=3)
    state.add(KEY, "click", day=1, amount=5)
    state.add(KEY, "click", day=4)  # same ring position as day 1
    assert total(state, today=4, days=3) == 1.0


def test_late_events_within_the_ring_count_and_older_ones_are_dropped() -> None:
    state = MemoryState(days=3)
    state.add(KEY, "click", day=10)
    state.add(KEY, "click", day=9)
    state.add(KEY, "click", day=5)  # older than any window the state keeps
    assert total(state, today=10, days=3) == 2.0


def test_a_window_longer_than_the_state_keeps_is_refused() -> None:
    with pytest.raises(ValueError, match="keeps 7 day buckets"):
        MemoryState(days=7).read_counts([KEY], ["click"], today=0, days=8)
    with pytest.raises(ValueError, match="not counted"):
        MemoryState().add(KEY, "dwell", day=0)


def test_hashes_merge_and_vectors_are_float32() -> None:
    state = MemoryState()
    state.update_hash("item|d1", {"price": 1.0, "brand": "acme"})
    state.update_hash("item|d1", {"price": 2.0})
    state.delete_fields("item|d1", ["brand"])
    assert state.get_hashes(["item|d1", "item|d2"]) == [{"price": 2.0}, None]
    state.set_vector("item:vector|d1", np.array([1.0, 2.0]))
    stored, absent = state.get_vectors(["item:vector|d1", "item:vector|d2"])
    assert stored.dtype == np.float32 and absent is None


def test_memory_per_item_stays_bounded_over_a_year_of_events() -> None:
    state = MemoryState(days=30)
    report_at = {}
    for day in range(365):
        for event in ("impression", "click"):
            state.add(KEY, event, day)
        # A query seen once: its counters go once their newest day leaves the window.
        state.add(f"item:query_counts|d1\x1fquery {day}", "click", day)
        if day in (40, 364):
            report_at[day] = state.memory_report().by_owner["item"]
    early, late = report_at[40], report_at[364]
    assert late.entries_max == early.entries_max <= 2 * 30 + 30
    assert late.bytes_max == early.bytes_max
    assert len(state._slots) == 31  # the item's key and the last 30 days' query keys


def test_memory_report_groups_by_owner() -> None:
    state = MemoryState(days=7)
    state.add("item:counts|d1", "click", 0)
    state.add("item:query_counts|d1\x1fshoes", "click", 0)
    state.update_hash("item|d2", {"price": 3.0})
    state.update_hash("user|u1", {"segment": "a"})
    report = state.memory_report().as_dict()
    assert report["item"]["owners"] == 2 and report["item"]["entries_max"] == 2
    assert report["user"]["owners"] == 1
    assert report["item"]["bytes_total"] > 0


def test_counts_match_a_plain_recount_of_the_events() -> None:
    rng = np.random.default_rng(3)
    state, days = MemoryState(days=10), 10
    kept: list[tuple[str, str, int]] = []
    newest: dict[str, int] = {}
    day = 0
    for _ in range(3000):
        day += int(rng.random() < 0.05)
        key = f"item:counts|d{rng.integers(0, 20)}"
        event = ("click", "purchase")[int(rng.integers(0, 2))]
        when = day - int(rng.integers(0, 12)) if rng.random() < 0.1 else day  # some late
        state.add(key, event, when)
        if newest.get(key, when) - when < days:
            kept.append((key, event, when))
        newest[key] = max(newest.get(key, when), when)
    keys = sorted(newest)
    for today, window in ((day, 10), (day, 3), (day + 4, 10)):
        read = state.read_counts(keys, ["click", "purchase"], today, window)
        for row, key in enumerate(keys):
            for column, event in enumerate(("click", "purchase")):
                expected = sum(
                    1
                    for k, e, d in kept
                    if k == key
                    and e == event
                    and today - window < d <= today
                    and newest[key] - d < days
                )
                assert read[row, column].sum() == expected, (key, event, today, window)
