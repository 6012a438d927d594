"""Cascade semantics, latency budget, degraded answers, text-less candidates, the confidence
skip and the cache hooks, with tiny deterministic tiers (the same with the real models:
tests/data/models/test_cascade.py)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pytest

from streamrank.models.scoring import cascade as cascade_module
from streamrank.models.scoring.cascade import PipelineError, Stage, parse_pipeline
from streamrank.models.scoring.confidence import ConfidenceRule
from streamrank.models.scoring.fusion import NO_FUSION, Fusion
from streamrank.models.scoring.tiers import FunctionTier, TierScores
from streamrank.models.types import CandidateLike, TextCandidate


def Cascade(*args, fusion: Fusion = NO_FUSION, **kwargs) -> cascade_module.Cascade:
    """A cascade that orders by each tier's own score unless told otherwise: most tests here
    are about the tiers, K, deadlines and flags, which fusion does not change."""
    return cascade_module.Cascade(*args, fusion=fusion, **kwargs)


def docs(*texts: str | None) -> list[TextCandidate]:
    """Candidates d0, d1, ... in first-stage order with decreasing first-stage scores."""
    return [TextCandidate(f"d{i}", t, float(100 - i)) for i, t in enumerate(texts)]


def length_tier(name: str) -> FunctionTier:
    return FunctionTier(name, lambda query, texts: np.array([len(t) for t in texts], float))


def reverse_tier(name: str) -> FunctionTier:
    """Scores that reverse the order it is given."""
    return FunctionTier(name, lambda query, texts: -np.arange(len(texts), dtype=float) * -1)


class SlowTier:
    """Scores a fixed time per candidate, and only what fits in the budget it is given."""

    def __init__(self, name: str, seconds_each: float) -> None:
        self.name = name
        self.version = name
        self.seconds_each = seconds_each
        self.calls: list[int] = []

    def score(
        self, query: str, candidates: Sequence[CandidateLike], budget_s: float | None
    ) -> TierScores:
        n = len(candidates)
        if budget_s is not None:
            n = min(n, int(budget_s / self.seconds_each))
        time.sleep(n * self.seconds_each)
        self.calls.append(n)
        scores = np.full(len(candidates), np.nan)
        scores[:n] = [len(c.text or "") for c in candidates[:n]]
        return TierScores(scores, inferred=n)


class BrokenTier:
    name = "ce"
    version = "broken"

    def score(self, query, candidates, budget_s):
        raise RuntimeError("model crashed")


# -- specs --------------------------------------------------------------------------------


def test_parse_pipeline_specs():
    assert parse_pipeline("first-stage") == ()
    assert parse_pipeline("dense") == (Stage("dense"),)
    assert parse_pipeline("ce") == (Stage("ce"),)
    assert parse_pipeline("dense>ce:30") == (Stage("dense"), Stage("ce", 30))
    assert parse_pipeline("colbert>ce:20") == (Stage("colbert"), Stage("ce", 20))
    assert parse_pipeline("dense:100>ce:20") == (Stage("dense", 100), Stage("ce", 20))
    assert parse_pipeline(" first-stage > ce:5 ") == (Stage("ce", 5),)


@pytest.mark.parametrize("spec", ["bm25", "ce:0", "ce:x", "dense>>ce", "ce>first-stage", ""])
def test_bad_specs_fail_clearly(spec: str):
    with pytest.raises(PipelineError):
        parse_pipeline(spec)


def test_missing_tier_fails_at_construction():
    with pytest.raises(PipelineError, match="dense"):
        Cascade("dense>ce:5", {"ce": length_tier("ce")})


# -- ordering -----------------------------------------------------------------------------


def test_first_stage_keeps_the_given_order():
    result = Cascade("first-stage", {}).rank("q", docs("a", "bb", "c"))
    assert result.doc_ids == ["d0", "d1", "d2"]
    assert [item.position for item in result.items] == [1, 2, 3]
    assert {item.stage for item in result.items} == {"first-stage"}
    assert not result.degraded


def test_cheap_tier_keeps_k_then_cross_encoder_orders_them_and_the_rest_follow():
    # dense: longer is better -> d4(5) d3(4) d2(3) d1(2) d0(1); ce re-scores dense's top 3
    # with "shorter is better": d2 d3 d4; the rest follow in dense order: d1 d0
    shorter = FunctionTier("ce", lambda q, texts: -np.array([len(t) for t in texts], float))
    cascade = Cascade("dense>ce:3", {"dense": length_tier("dense"), "ce": shorter})
    result = cascade.rank("q", docs("a", "bb", "ccc", "dddd", "eeeee"))
    assert result.doc_ids == ["d2", "d3", "d4", "d1", "d0"]
    assert [item.stage for item in result.items] == ["ce", "ce", "ce", "dense", "dense"]
    assert result.items[0].score == -3.0 and result.items[3].score == 2.0
    assert set(result.timings_ms) == {"dense", "ce", "total"}


def test_k_on_the_cheap_tier_limits_what_it_scores():
    cascade = Cascade("dense:2>ce:1", {"dense": length_tier("dense"), "ce": length_tier("ce")})
    result = cascade.rank("q", docs("a", "bb", "cccccc", "dddddddd"))
    # dense scores only the first stage's top 2 (d1 > d0); d2, d3 keep first-stage order
    assert result.doc_ids == ["d1", "d0", "d2", "d3"]
    assert [item.stage for item in result.items] == ["ce", "dense", "first-stage", "first-stage"]


def test_ties_keep_the_previous_order():
    result = Cascade("ce", {"ce": length_tier("ce")}).rank("q", docs("aa", "b", "cc", "dd"))
    assert result.doc_ids == ["d0", "d2", "d3", "d1"]


def test_empty_candidate_list_gives_an_empty_ranking():
    result = Cascade("dense>ce:3", {"dense": length_tier("dense"), "ce": length_tier("ce")}).rank(
        "q", []
    )
    assert result.items == [] and not result.degraded


# -- text-less candidates -----------------------------------------------------------------


def test_candidate_without_text_keeps_its_first_stage_position_and_is_flagged():
    result = Cascade("ce", {"ce": length_tier("ce")}).rank("q", docs("a", None, "ccc", "  ", "bb"))
    assert result.doc_ids == ["d2", "d1", "d4", "d3", "d0"]
    flagged = {item.doc_id: item for item in result.items if item.flags}
    assert set(flagged) == {"d1", "d3"}
    assert all(
        item.flags == ("no_text",) and item.stage == "first-stage" for item in flagged.values()
    )
    assert flagged["d1"].score == 99.0  # its first-stage score


def test_all_candidates_without_text():
    result = Cascade("ce", {"ce": length_tier("ce")}).rank("q", docs(None, None))
    assert result.doc_ids == ["d0", "d1"] and result.pairs_scored == 0


# -- latency budget -----------------------------------------------------------------------


def test_deadline_scores_what_fits_and_says_degraded():
    slow = SlowTier("ce", seconds_each=0.01)
    result = Cascade("ce", {"ce": slow}).rank(
        "q", docs("a", "bbbbb", "ccc", "dddd", "ee", "f"), deadline_s=0.035
    )
    assert slow.calls == [3]
    assert result.doc_ids == ["d1", "d2", "d0", "d3", "d4", "d5"]
    assert result.degraded and "ce: deadline, scored 3 of 6" in (result.degraded_reason or "")
    flags = [item.flags for item in result.items]
    assert flags == [(), (), (), ("not_scored",), ("not_scored",), ("not_scored",)]


def test_no_time_left_serves_the_previous_order():
    slow = SlowTier("ce", seconds_each=0.01)
    dense = length_tier("dense")
    result = Cascade("dense>ce:3", {"dense": dense, "ce": slow}).rank(
        "q", docs("a", "bbb", "cc"), deadline_s=0.0
    )
    assert result.doc_ids == ["d0", "d1", "d2"]  # nothing had time: first-stage order
    assert result.degraded and slow.calls == []


def test_generous_deadline_is_not_degraded():
    slow = SlowTier("ce", seconds_each=0.001)
    result = Cascade("ce", {"ce": slow}).rank("q", docs("a", "bb"), deadline_s=5.0)
    assert not result.degraded and result.doc_ids == ["d1", "d0"]


def test_a_failing_tier_degrades_instead_of_failing_the_request():
    cascade = Cascade("dense>ce:2", {"dense": length_tier("dense"), "ce": BrokenTier()})
    result = cascade.rank("q", docs("a", "bbb", "cc"))
    assert result.doc_ids == ["d1", "d2", "d0"]  # dense order
    assert result.degraded and "ce failed: RuntimeError: model crashed" in result.degraded_reason


# -- confidence skip ----------------------------------------------------------------------


def test_confidence_rule_is_off_by_default():
    result = Cascade("ce", {"ce": length_tier("ce")}).rank("q", docs("a", "bb"))
    assert result.skipped == {} and result.doc_ids == ["d1", "d0"]


def test_confident_first_stage_skips_the_cross_encoder():
    candidates = [
        TextCandidate("a", "x", 30.0),
        TextCandidate("b", "xxx", 5.0),
        TextCandidate("c", "xx", 4.0),
    ]
    rule = ConfidenceRule(skip_if_margin_at_least=0.8)
    cascade = Cascade("ce", {"ce": length_tier("ce")}, confidence=rule)
    result = cascade.rank("q", candidates)
    assert result.doc_ids == ["a", "b", "c"] and "ce" in result.skipped
    assert not result.degraded  # a skip by rule is a choice, not a degradation
    close = [
        TextCandidate("a", "x", 30.0),
        TextCandidate("b", "xxx", 29.0),
        TextCandidate("c", "xx", 4.0),
    ]
    assert cascade.rank("q", close).doc_ids == ["b", "c", "a"]


def test_low_first_stage_scores_skip_the_cross_encoder_but_not_the_cheap_tier():
    rule = ConfidenceRule(skip_if_top_score_below=1.0)
    cascade = Cascade(
        "dense>ce:2", {"dense": length_tier("dense"), "ce": reverse_tier("ce")}, confidence=rule
    )
    weak = [TextCandidate("a", "x", 0.5), TextCandidate("b", "xxx", 0.4)]
    result = cascade.rank("q", weak)
    assert result.doc_ids == ["b", "a"] and "top score" in result.skipped["ce"]
