"""Business rules on the serving path, without services: the rules' view of a served list,
a worker's copy of the stored rules (a bad config keeps the running one), the commerce fields
of item events, and a ranker that applies the rules after the model."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest
import redis

from streamrank.models.scoring.cascade import Cascade, CascadeItem
from streamrank.models.scoring.rules import RulesConfig, apply_rules
from streamrank.models.scoring.tiers import FunctionTier
from streamrank.streams.agents.control import follow_rules
from streamrank.streams.config import Settings
from streamrank.streams.events import Candidate, Candidates, ContractError, Item, Limits, decode
from streamrank.streams.serving import Reranker, rule_items
from streamrank.streams.state.feature_store import RULE_FIELDS
from streamrank.streams.state.rules_store import LiveRules, StoredRules, config_json
from tests.helpers import free_port

# -- the rules' view of a served list --------------------------------------------------------


def test_rule_items_keep_the_served_order_whatever_the_raw_scores() -> None:
    # The online ranker put "b" (lower cascade score) first; "d" has no score at all.
    served = [("b", 0.3), ("a", 0.9), ("d", math.nan), ("c", 0.5), ("e", 0.1)]
    items = [CascadeItem(doc, score, i, "ce") for i, (doc, score) in enumerate(served, 1)]
    fields = [{"brand": doc} for doc, _ in served]
    ruled = rule_items(items, fields)
    assert [item.score for item in ruled] == [0.3, 0.3, 0.3, 0.3, 0.1]
    assert [dict(item.fields) for item in ruled] == fields
    # With no rule firing, the rules give back the served order exactly.
    unchanged = apply_rules("q", ruled, RulesConfig(out_of_stock="off"))
    assert list(unchanged.doc_ids) == [doc for doc, _ in served]
    assert unchanged.fired == {}


def test_rule_items_need_one_field_dict_per_item() -> None:
    with pytest.raises(ValueError):
        rule_items([CascadeItem("a", 1.0, 1, "ce")], [])


# -- a worker's copy of the stored rules -----------------------------------------------------


def test_a_bad_stored_config_keeps_the_running_rules() -> None:
    live = LiveRules(store=None)
    assert live.update(StoredRules(1, "s1", '{"out_of_stock": "filter"}'))
    running = live.config
    for version, bad in enumerate(
        [
            '{"diversity": {"field": "colour", "max_per_value": 1}}',  # no such item field
            '{"out_of_stock": "hide"}',
            "not json at all",
        ],
        start=2,
    ):
        assert not live.update(StoredRules(version, f"s{version}", bad))
        assert live.config is running and live.version == 1
        assert live.refused is not None
    assert "colour" not in str(live.refused)  # the last error is the last refusal's
    assert live.update(StoredRules(5, "s5", '{"bury": ["d9"]}'))
    assert live.config is not None and live.config.bury == frozenset({"d9"})
    assert live.refused is None and live.version == 5


def test_a_field_error_names_the_field() -> None:
    live = LiveRules(store=None)
    live.update(StoredRules(1, "s1", '{"diversity": {"field": "colour", "max_per_value": 1}}'))
    assert live.config is None
    assert "diversity.field" in str(live.refused) and "'colour'" in str(live.refused)


def test_cleared_rules_mean_none_and_the_same_state_is_taken_once() -> None:
    live = LiveRules(store=None)
    stored = StoredRules(1, "s1", '{"out_of_stock": "filter"}')
    assert live.update(stored)
    assert not live.update(stored)  # the same version and hash: nothing to do
    assert live.reloads == 1
    assert live.update(StoredRules(2, None))
    assert live.config is None and live.version == 2


class CountingStore:
    """A rules store in memory that counts full reads."""

    def __init__(self, stored: StoredRules) -> None:
        self.stored = stored
        self.reads = 0

    def stamp(self) -> tuple[int, str | None]:
        return self.stored.stamp

    def read(self) -> StoredRules:
        self.reads += 1
        return self.stored


def test_refresh_reads_the_config_only_when_its_stamp_changed() -> None:
    store = CountingStore(StoredRules(1, "s1", '{"out_of_stock": "filter"}'))
    live = LiveRules(store)  # type: ignore[arg-type]
    assert live.refresh() and not live.refresh() and not live.refresh()
    assert store.reads == 1
    store.stored = StoredRules(2, "s2", '{"out_of_stock": "nope"}')
    assert not live.refresh() and not live.refresh()  # refused once, not re-read each poll
    assert store.reads == 2 and live.config is not None and live.version == 1


def test_the_stored_json_is_one_text_per_config() -> None:
    one = RulesConfig(bury=frozenset({"b", "a"}), pins={"Red Shoes": ("x",)})
    other = RulesConfig(pins={"red  shoes": ("x",)}, bury=frozenset({"a", "b"}))
    assert config_json(one) == config_json(other)
    assert LiveRules(None).known_fields == frozenset(RULE_FIELDS)


def test_the_follower_refreshes_on_every_tick_and_outlives_failures() -> None:
    calls: list[int] = []

    def refresh() -> bool:
        calls.append(1)
        if len(calls) % 2:
            raise ConnectionError("redis blinked")
        return False

    class Quiet:
        async def start(self) -> None:
            pass

        async def getmany(self, timeout_ms: int) -> dict:
            await asyncio.sleep(timeout_ms / 1000)
            return {}

        async def stop(self) -> None:
            pass

    async def main() -> None:
        task = asyncio.create_task(
            follow_rules(refresh, "-", "control", 0.005, {}, Quiet, max_backoff_s=0.01)
        )
        while len(calls) < 6 and not task.done():
            await asyncio.sleep(0.005)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert len(calls) >= 6


# -- item events -----------------------------------------------------------------------------


def test_item_commerce_fields_are_checked_at_decode() -> None:
    item = decode("items", b'{"doc_id": "s1", "stock": 0, "brand": "acme"}', Limits())
    assert isinstance(item, Item) and item.in_stock is False and item.brand == "acme"
    for bad, field in [
        (b'{"doc_id": "s1", "stock": -2}', "stock"),
        (b'{"doc_id": "s1", "price": -0.5}', "price"),
        (b'{"doc_id": "s1", "stock": 0, "in_stock": true}', "in_stock"),
    ]:
        with pytest.raises(ContractError) as error:
            decode("items", bad, Limits())
        assert error.value.reason == "contract" and field in str(error.value)
    assert set(RULE_FIELDS) <= set(Item.model_fields)


# -- a ranker with rules ---------------------------------------------------------------------


class FieldStore:
    """The feature store's rule-fields read, from a dict; counts the reads."""

    def __init__(self, fields: dict[str, dict[str, Any]]) -> None:
        self.fields = fields
        self.reads: list[list[str]] = []

    def rule_fields(self, doc_ids: list[str], names: list[str]) -> list[dict[str, Any]]:
        self.reads.append(list(names))
        return [{n: v for n, v in self.fields.get(d, {}).items() if n in names} for d in doc_ids]


TEXTS = {"long": "a much longer text", "middle": "some text", "short": "abc", "tiny": "a"}


def ranker(store: FieldStore, rules: LiveRules | None) -> Reranker:
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", latency_budget_ms=60000)
    by_length = FunctionTier("ce", lambda query, texts: np.array([len(t) for t in texts]))
    cascade = Cascade("ce", {"ce": by_length})
    return Reranker(cascade, store, settings, rules=rules)  # type: ignore[arg-type]


def request() -> Candidates:
    candidates = [
        Candidate(doc_id=doc, text=text, first_stage_score=1.0) for doc, text in TEXTS.items()
    ]
    return Candidates(request_id="r1", query="Red Shoes", candidates=candidates)


def live(raw: str) -> LiveRules:
    rules = LiveRules(store=None)
    assert rules.update(StoredRules(1, "s", raw)), rules.refused
    return rules


def test_without_rules_the_ranking_is_the_models_and_no_field_is_read() -> None:
    store = FieldStore({"long": {"in_stock": False}})
    for rules in (None, LiveRules(store=None)):
        ranking, impression = ranker(store, rules).rank(request())
        assert [item.doc_id for item in ranking.items] == ["long", "middle", "short", "tiny"]
        assert ranking.rules_fired is None and "rules_fired" not in impression
        assert b"rules_fired" not in ranking.to_bytes()
    assert store.reads == []


def test_filtered_items_leave_the_ranking_and_positions_are_the_served_ones() -> None:
    store = FieldStore({"long": {"in_stock": False}, "short": {"promoted": True}})
    rules = live('{"out_of_stock": "filter", "promoted_boost": 100, "max_boost_positions": 1}')
    ranking, impression = ranker(store, rules).rank(request())
    assert [item.doc_id for item in ranking.items] == ["short", "middle", "tiny"]
    assert [item.position for item in ranking.items] == [1, 2, 3]
    assert ranking.rules_fired == {"out_of_stock": ["long"], "promoted_boost": ["short"]}
    assert impression["rules_fired"] == ranking.rules_fired
    assert [(i["doc_id"], i["position"]) for i in impression["items"]] == [
        ("short", 1),
        ("middle", 2),
        ("tiny", 3),
    ]
    assert store.reads == [["in_stock", "promoted"]]  # the fields the active rules read
    assert ranking.timings_ms["rules"] >= 0
    # the published scores are the model's, not boosted
    assert {i.doc_id: i.score for i in ranking.items}["short"] == len(TEXTS["short"])


def test_rules_that_read_no_field_read_nothing() -> None:
    store = FieldStore({})
    rules = live('{"out_of_stock": "off", "pins": {"red shoes": ["tiny"]}, "bury": ["long"]}')
    ranking, _ = ranker(store, rules).rank(request())
    assert [item.doc_id for item in ranking.items] == ["tiny", "middle", "short", "long"]
    assert ranking.rules_fired == {"bury": ["long"], "pin": ["tiny"]}
    assert store.reads == []


class DownStore(FieldStore):
    def rule_fields(self, doc_ids: list[str], names: list[str]) -> list[dict[str, Any]]:
        raise redis.ConnectionError("redis is away")


def test_without_the_fields_rules_still_apply_and_the_ranking_says_degraded() -> None:
    rules = live('{"out_of_stock": "filter", "pins": {"red shoes": ["short"]}}')
    ranking, _ = ranker(DownStore({}), rules).rank(request())
    # nothing is known out of stock; the pin holds
    assert [item.doc_id for item in ranking.items] == ["short", "long", "middle", "tiny"]
    assert ranking.degraded and "rule fields not read" in ranking.degraded_reason
    assert ranking.rules_fired == {"pin": ["short"]}
