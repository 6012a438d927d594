"""Merchandising rules after the model: each rule alone, the order they apply in, the config
errors, and properties over random lists (hypothesis)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from streamrank.models.scoring.rules import (
    RuledList,
    RuleItem,
    RulesConfig,
    RulesError,
    apply_rules,
    load_rules,
    reload_rules,
)

FIELDS = {"in_stock", "promoted", "brand", "category"}


def items_of(*specs: tuple[str, float, dict[str, Any]]) -> list[RuleItem]:
    return [RuleItem(doc_id, score, fields) for doc_id, score, fields in specs]


def ranked(n: int, **fields: dict[str, Any]) -> list[RuleItem]:
    """``n`` items d0..d{n-1} with descending scores; ``fields`` gives some of them fields."""
    return [RuleItem(f"d{i}", float(n - i), fields.get(f"d{i}", {})) for i in range(n)]


def rules(**settings: Any) -> RulesConfig:
    return load_rules(settings, FIELDS)


# --- stock -----------------------------------------------------------------------------------


def test_filter_removes_out_of_stock_items_and_records_them() -> None:
    items = ranked(4, d1={"in_stock": False}, d2={"in_stock": 0})
    ruled = apply_rules("q", items, rules(out_of_stock="filter"))
    assert ruled.doc_ids == ("d0", "d3")
    assert ruled.fired == {"out_of_stock": ("d1", "d2")}
    assert set(ruled.scores) == {"d0", "d1", "d2", "d3"}  # the learner still sees them


def test_bury_moves_out_of_stock_below_every_in_stock_item_in_order() -> None:
    items = ranked(5, d0={"in_stock": False}, d2={"in_stock": False})
    ruled = apply_rules("q", items, rules(out_of_stock="bury"))
    assert ruled.doc_ids == ("d1", "d3", "d4", "d0", "d2")
    assert ruled.fired == {"out_of_stock": ("d0", "d2")}


def test_off_leaves_out_of_stock_items_where_the_model_put_them() -> None:
    items = ranked(3, d0={"in_stock": False})
    ruled = apply_rules("q", items, rules(out_of_stock="off"))
    assert ruled.doc_ids == ("d0", "d1", "d2")
    assert ruled.fired == {}


def test_an_item_without_the_stock_field_or_with_none_counts_as_in_stock() -> None:
    items = ranked(3, d0={}, d1={"in_stock": None}, d2={"in_stock": False})
    ruled = apply_rules("q", items, rules(out_of_stock="filter"))
    assert ruled.doc_ids == ("d0", "d1")


def test_a_stock_count_field_can_stand_for_the_flag() -> None:
    config = load_rules({"out_of_stock": "filter", "stock_field": "stock"}, {"stock"})
    items = ranked(3, d0={"stock": 0}, d1={"stock": 7})
    assert apply_rules("q", items, config).doc_ids == ("d1", "d2")


# --- promoted boost --------------------------------------------------------------------------


def test_boost_lifts_a_promoted_item_by_its_score() -> None:
    items = items_of(("a", 3.0, {}), ("b", 2.0, {}), ("c", 1.5, {"promoted": True}))
    config = rules(promoted_boost=0.7, max_boost_positions=5)
    ruled = apply_rules("q", items, config)
    assert ruled.doc_ids == ("a", "c", "b")  # 1.5 + 0.7 passes 2.0, not 3.0
    assert ruled.fired == {"promoted_boost": ("c",)}
    assert ruled.scores["c"] == 1.5  # the pre-rule score, untouched


def test_boost_never_lifts_an_item_more_than_the_bound() -> None:
    items = ranked(6, d5={"promoted": True})
    ruled = apply_rules("q", items, rules(promoted_boost=100.0, max_boost_positions=2))
    assert ruled.positions()["d5"] == 4  # from 6, two places up although the boost beats all


def test_promoted_items_keep_their_order_and_others_never_rise() -> None:
    items = ranked(6, d3={"promoted": True}, d4={"promoted": True})
    ruled = apply_rules("q", items, rules(promoted_boost=100.0, max_boost_positions=2))
    assert ruled.doc_ids == ("d0", "d3", "d4", "d1", "d2", "d5")


def test_an_item_without_the_promoted_field_is_not_promoted() -> None:
    items = ranked(3, d1={"promoted": False}, d2={"brand": "x"})
    ruled = apply_rules("q", items, rules(promoted_boost=10.0, max_boost_positions=2))
    assert ruled.doc_ids == ("d0", "d1", "d2")
    assert ruled.fired == {}


def test_boost_does_not_lift_an_out_of_stock_item_over_in_stock_ones() -> None:
    items = ranked(3, d2={"promoted": True, "in_stock": False})
    config = rules(out_of_stock="bury", promoted_boost=10.0, max_boost_positions=2)
    assert apply_rules("q", items, config).doc_ids == ("d0", "d1", "d2")


# --- bury list -------------------------------------------------------------------------------


def test_bury_list_moves_items_to_the_end_in_model_order() -> None:
    items = ranked(4)
    ruled = apply_rules("q", items, rules(out_of_stock="off", bury=["d1", "d0", "zz"]))
    assert ruled.doc_ids == ("d2", "d3", "d0", "d1")
    assert ruled.fired == {"bury": ("d0", "d1")}


def test_a_buried_item_stays_above_out_of_stock_ones_and_gets_no_boost() -> None:
    items = ranked(4, d0={"in_stock": False}, d1={"promoted": True})
    config = rules(bury=["d1"], promoted_boost=10.0, max_boost_positions=3)
    ruled = apply_rules("q", items, config)
    assert ruled.doc_ids == ("d2", "d3", "d1", "d0")
    assert "promoted_boost" not in ruled.fired


# --- diversity -------------------------------------------------------------------------------


def test_diversity_defers_extra_items_to_just_below_the_top() -> None:
    brands = ["a", "a", "a", "b", "a", "c", "b"]
    items = [RuleItem(f"d{i}", float(10 - i), {"brand": b}) for i, b in enumerate(brands)]
    config = rules(diversity={"field": "brand", "max_per_value": 2, "top": 4})
    ruled = apply_rules("q", items, config)
    assert ruled.doc_ids == ("d0", "d1", "d3", "d5", "d2", "d4", "d6")
    assert ruled.fired == {"diversity": ("d2", "d4")}


def test_items_without_the_diversity_field_are_never_capped() -> None:
    items = ranked(4, d0={"brand": "a"}, d1={"brand": "a"})
    config = rules(diversity={"field": "brand", "max_per_value": 1, "top": 3})
    assert apply_rules("q", items, config).doc_ids == ("d0", "d2", "d3", "d1")


def test_diversity_gives_way_when_too_few_other_items_exist() -> None:
    items = ranked(3, d0={"brand": "a"}, d1={"brand": "a"}, d2={"brand": "a"})
    config = rules(diversity={"field": "brand", "max_per_value": 1, "top": 10})
    assert apply_rules("q", items, config).doc_ids == ("d0", "d1", "d2")


def test_diversity_counts_pinned_items_in_the_top() -> None:
    items = ranked(5, d0={"brand": "a"}, d1={"brand": "a"}, d4={"brand": "a"})
    config = rules(pins={"q": ["d4"]}, diversity={"field": "brand", "max_per_value": 1, "top": 3})
    ruled = apply_rules("q", items, config)
    assert ruled.doc_ids == ("d4", "d2", "d3", "d0", "d1")


def test_diversity_never_pulls_a_buried_item_over_capped_ones() -> None:
    items = ranked(4, d0={"brand": "a"}, d1={"brand": "a"}, d2={"brand": "a"})
    config = rules(bury=["d3"], diversity={"field": "brand", "max_per_value": 1, "top": 3})
    ruled = apply_rules("q", items, config)
    assert ruled.doc_ids == ("d0", "d1", "d2", "d3")


def test_pins_take_places_of_the_top_the_cap_covers() -> None:
    items = ranked(4, d0={"brand": "a"}, d2={"brand": "a"})
    config = rules(pins={"q": ["d0"]}, diversity={"field": "brand", "max_per_value": 1, "top": 2})
    # the top is d0 (pinned) and d1: d2 is already below it and needs no deferring
    ruled = apply_rules("q", items, config)
    assert ruled.doc_ids == ("d0", "d1", "d2", "d3")
    assert ruled.fired == {"pin": ("d0",)}


def test_unhashable_field_values_are_capped_by_their_text() -> None:
    items = ranked(3, d0={"brand": ["a"]}, d1={"brand": ["a"]})
    config = rules(diversity={"field": "brand", "max_per_value": 1, "top": 2})
    assert apply_rules("q", items, config).doc_ids == ("d0", "d2", "d1")


# --- pins ------------------------------------------------------------------------------------


def test_pins_take_the_first_positions_of_their_normalised_query_only() -> None:
    config = rules(pins={"Red Shoes": ["d3", "absent", "d2"]})
    assert apply_rules("  red   SHOES ", ranked(4), config).doc_ids == ("d3", "d2", "d0", "d1")
    assert apply_rules("blue shoes", ranked(4), config).doc_ids == ("d0", "d1", "d2", "d3")
    assert apply_rules("red shoes", ranked(4), config).fired == {"pin": ("d3", "d2")}


def test_a_pin_wins_over_bury_but_not_over_the_stock_filter() -> None:
    items = ranked(4, d3={"in_stock": False})
    pins = {"q": ["d3", "d2"]}
    buried = apply_rules("q", items, rules(out_of_stock="bury", pins=pins, bury=["d2"]))
    assert buried.doc_ids == ("d3", "d2", "d0", "d1")
    assert buried.fired == {"pin": ("d3", "d2")}
    filtered = apply_rules("q", items, rules(out_of_stock="filter", pins=pins))
    assert filtered.doc_ids == ("d2", "d0", "d1")
    assert filtered.fired == {"out_of_stock": ("d3",), "pin": ("d2",)}


# --- the list as a whole ---------------------------------------------------------------------


def test_items_are_ordered_by_score_ties_in_input_order_and_nan_last() -> None:
    items = items_of(("a", 1.0, {}), ("b", math.nan, {}), ("c", 2.0, {}), ("d", 1.0, {}))
    ruled = apply_rules("q", items, RulesConfig())
    assert ruled.pre_rule_order == ("c", "a", "d", "b")
    assert ruled.doc_ids == ("c", "a", "d", "b")


def test_duplicate_doc_ids_are_refused() -> None:
    with pytest.raises(RulesError, match="share a doc id"):
        apply_rules("q", items_of(("a", 1.0, {}), ("a", 2.0, {})), RulesConfig())


def test_an_empty_list_stays_empty() -> None:
    ruled = apply_rules("q", [], rules(pins={"q": ["a"]}))
    assert ruled.doc_ids == () and ruled.fired == {}


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ({"promoted_bost": 1.0}, ["promoted_bost", "unknown setting"]),
        ({"promoted_boost": -1.0, "max_boost_positions": 2}, ["promoted_boost", "0"]),
        ({"max_boost_positions": -3}, ["max_boost_positions"]),
        ({"out_of_stock": "hide"}, ["out_of_stock", "'filter'", "'hide'"]),
        ({"promoted_boost": 1.0}, ["max_boost_positions"]),
        ({"diversity": {"field": "brand", "max_per_value": 0}}, ["diversity.max_per_value"]),
        ({"diversity": {"field": "brand", "max_per_value": 1, "tops": 3}}, ["diversity.tops"]),
        ({"pins": {"Shoes": ["a"], " shoes": ["b"]}}, ["pins", "'Shoes'", "' shoes'"]),
        ({"pins": {"shoes": ["a", "a"]}}, ["pins", "twice"]),
        ({"diversity": {"field": "colour", "max_per_value": 2}}, ["diversity.field", "'colour'"]),
        ({"stock_field": "stock"}, ["stock_field", "'stock'", "known fields"]),
        ({"promoted_field": "promo", "promoted_boost": 1, "max_boost_positions": 1}, ["'promo'"]),
        ("{not json", ["not valid JSON"]),
        ("[1, 2]", ["table of settings"]),
    ],
)
def test_config_errors_name_what_is_wrong(raw: Any, names: list[str]) -> None:
    with pytest.raises(RulesError) as error:
        load_rules(raw, FIELDS)
    for name in names:
        assert name in str(error.value)


def test_fields_only_need_to_exist_for_the_rules_that_read_them() -> None:
    config = load_rules({"out_of_stock": "off", "promoted_field": "promo"}, known_fields=())
    assert config.out_of_stock == "off"


def test_config_loads_from_json_text_and_bytes() -> None:
    text = '{"out_of_stock": "filter", "bury": ["x"], "pins": {"Q": ["a"]}}'
    for raw in (text, text.encode()):
        config = load_rules(raw, FIELDS)
        assert config.bury == frozenset({"x"}) and config.pins == {"q": ("a",)}


def test_a_bad_reload_keeps_the_running_config() -> None:
    running = rules(out_of_stock="filter")
    kept, error = reload_rules(
        running, {"diversity": {"field": "size", "max_per_value": 1}}, FIELDS
    )
    assert kept is running and error is not None and "'size'" in str(error)
    new, error = reload_rules(running, {"out_of_stock": "off"}, FIELDS)
    assert error is None and new.out_of_stock == "off"


# --- properties over random lists ------------------------------------------------------------

DOCS = [f"d{i}" for i in range(40)]
MISSING = object()


@st.composite
def random_items(draw: st.DrawFn, max_size: int = 30) -> list[RuleItem]:
    n = draw(st.integers(0, max_size))
    scores = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.0]), st.floats(-5, 5), st.just(math.nan))
    items = []
    for doc_id in DOCS[:n]:
        fields = {
            "in_stock": draw(st.sampled_from([True, False, 0, 3, None, MISSING])),
            "promoted": draw(st.sampled_from([True, False, MISSING, MISSING])),
            "brand": draw(st.sampled_from(["a", "b", "c", MISSING])),
        }
        fields = {k: v for k, v in fields.items() if v is not MISSING}
        items.append(RuleItem(doc_id, draw(scores), fields))
    return draw(st.permutations(items))


def out_of_stock(item: RuleItem) -> bool:
    value = item.fields.get("in_stock")
    return value is not None and not value


def promoted(item: RuleItem) -> bool:
    return bool(item.fields.get("promoted"))


def model_order(items: list[RuleItem]) -> list[str]:
    key = [(-math.inf if math.isnan(i.score) else i.score, -n) for n, i in enumerate(items)]
    return [items[n].doc_id for n in sorted(range(len(items)), key=key.__getitem__, reverse=True)]


def greedy_boost(order: list[RuleItem], boost: float, bound: int) -> list[str]:
    """The boost as a plain slot-by-slot merge: the reference the fast version must match."""

    def key(item: RuleItem) -> float:
        return -math.inf if math.isnan(item.score) else item.score

    pos = {item.doc_id: p for p, item in enumerate(order)}
    heads = [item for item in order if promoted(item)]
    rest = [item for item in order if not promoted(item)]
    out: list[str] = []
    while heads and rest:
        head, other = heads[0], rest[0]
        boosted = key(head) + boost
        wins = boosted > key(other) or (
            boosted == key(other) and pos[head.doc_id] < pos[other.doc_id]
        )
        if wins and len(out) >= pos[head.doc_id] - bound:
            out.append(heads.pop(0).doc_id)
        else:
            out.append(rest.pop(0).doc_id)
    return out + [i.doc_id for i in heads + rest]


configs = st.builds(
    dict,
    out_of_stock=st.sampled_from(["filter", "bury", "off"]),
    promoted_boost=st.sampled_from([0.0, 0.3, 1.0, 50.0]),
    max_boost_positions=st.integers(1, 5),
    pins=st.dictionaries(
        st.sampled_from(["q", "other"]), st.lists(st.sampled_from(DOCS), unique=True, max_size=4)
    ),
    bury=st.lists(st.sampled_from(DOCS), max_size=6),
    diversity=st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {
                "field": st.just("brand"),
                "max_per_value": st.integers(1, 4),
                "top": st.integers(1, 12),
            }
        ),
    ),
)


def shown_pins(items: list[RuleItem], config: RulesConfig) -> list[str]:
    present = {i.doc_id: i for i in items}
    filtered = config.out_of_stock == "filter"
    return [
        d
        for d in config.pins.get("q", ())
        if d in present and not (filtered and out_of_stock(present[d]))
    ]


@settings(max_examples=60, deadline=None)
@given(random_items(), configs)
def test_any_config_keeps_the_list_whole_and_the_scores_untouched(
    items: list[RuleItem], raw: dict[str, Any]
) -> None:
    config = rules(**raw)
    ruled = apply_rules("Q", items, config)
    kept = [i.doc_id for i in items]
    if config.out_of_stock == "filter":
        kept = [i.doc_id for i in items if not out_of_stock(i)]
    assert sorted(ruled.doc_ids) == sorted(kept)
    assert list(ruled.pre_rule_order) == model_order(items)
    for item in items:
        score = ruled.scores[item.doc_id]
        assert score is item.score or score == item.score
    pins = shown_pins(items, config)
    assert list(ruled.doc_ids[: len(pins)]) == pins
    assert ruled.fired.get("pin", ()) == tuple(pins)
    assert set(ruled.fired) <= {"out_of_stock", "promoted_boost", "bury", "diversity", "pin"}


@settings(max_examples=60, deadline=None)
@given(random_items(), configs)
def test_out_of_stock_never_reaches_the_top_10_and_buried_items_stay_low(
    items: list[RuleItem], raw: dict[str, Any]
) -> None:
    config = rules(**raw)
    ruled = apply_rules("Q", items, config)
    by_id = {i.doc_id: i for i in items}
    pins = set(shown_pins(items, config))
    unpinned = [by_id[d] for d in ruled.doc_ids if d not in pins]
    # the bands hold whatever the boost and diversity do: in stock, buried, out of stock, ...
    sink = config.out_of_stock == "bury"
    bands = [2 * (sink and out_of_stock(i)) + (i.doc_id in config.bury) for i in unpinned]
    assert bands == sorted(bands)
    if config.out_of_stock == "filter":
        assert not any(out_of_stock(by_id[d]) for d in ruled.doc_ids)
    elif config.out_of_stock == "bury":
        stock = [out_of_stock(i) for i in unpinned]
        assert stock == sorted(stock)  # every in-stock item above every out-of-stock one
        if not any(out_of_stock(by_id[d]) for d in pins) and stock.count(False) >= 10:
            event("bury with 10 in-stock items")
            assert not any(out_of_stock(by_id[d]) for d in ruled.doc_ids[:10])


@settings(max_examples=60, deadline=None)
@given(
    random_items(),
    st.sampled_from([0.3, 1.0, 2.5, 50.0]),
    st.integers(1, 6),
    st.sampled_from(["off", "filter"]),
    st.lists(st.sampled_from(DOCS), unique=True, max_size=3),
)
def test_every_promoted_item_rises_at_most_the_bound(
    items: list[RuleItem], boost: float, bound: int, stock: str, pins: list[str]
) -> None:
    config = rules(
        out_of_stock=stock, promoted_boost=boost, max_boost_positions=bound, pins={"q": pins}
    )
    ruled = apply_rules("q", items, config)
    # what the boost received: the model's order, less filtered and pinned items
    by_id = {i.doc_id: i for i in items}
    shown = shown_pins(items, config)
    received = [
        by_id[d]
        for d in model_order(items)
        if d not in shown and not (stock == "filter" and out_of_stock(by_id[d]))
    ]
    before = {item.doc_id: p for p, item in enumerate(received)}
    after = {d: p - 1 - len(shown) for d, p in ruled.positions().items() if d not in shown}
    for doc_id, p in before.items():
        if promoted(by_id[doc_id]):
            assert p - bound <= after[doc_id] <= p
        else:
            assert after[doc_id] >= p  # no other item rises
    assert list(ruled.doc_ids[len(shown) :]) == greedy_boost(received, boost, bound)


@settings(max_examples=60, deadline=None)
@given(
    random_items(),
    st.integers(1, 4),
    st.integers(1, 15),
    st.lists(st.sampled_from(DOCS), unique=True, max_size=3),
)
def test_the_diversity_cap_holds_in_the_top_when_enough_other_items_exist(
    items: list[RuleItem], cap: int, top: int, pins: list[str]
) -> None:
    config = rules(
        out_of_stock="off",
        pins={"q": pins},
        diversity={"field": "brand", "max_per_value": cap, "top": top},
    )
    ruled: RuledList = apply_rules("q", items, config)
    by_id = {i.doc_id: i for i in items}
    shown = shown_pins(items, config)
    pinned = [by_id[d].fields.get("brand") for d in shown]
    others = [by_id[d].fields.get("brand") for d in ruled.doc_ids if d not in shown]
    # the places the cap lets the other items fill, value by value
    room = others.count(None) + sum(
        min(others.count(v), max(0, cap - pinned.count(v))) for v in set(others) - {None}
    )
    in_top = [by_id[d].fields.get("brand") for d in ruled.doc_ids[:top]]
    if room >= top - len(shown):
        event("room for the cap")
        for value in set(in_top) - {None}:
            assert in_top.count(value) <= max(cap, pinned.count(value))
    # the items it did not defer keep the model's order, and so do the deferred ones
    deferred = set(ruled.fired.get("diversity", ()))
    order = [d for d in model_order(items) if d not in shown]
    rest = [d for d in ruled.doc_ids if d not in shown]
    assert [d for d in rest if d not in deferred] == [d for d in order if d not in deferred]
    assert [d for d in rest if d in deferred] == [d for d in order if d in deferred]
    # deferred items go just below the top: first among those the top left out
    below = [d in deferred for d in rest[max(top - len(shown), 0) :]]
    assert below == sorted(below, reverse=True)
