"""Fusion of a tier's scores with the order it received: methods, weights, validation, and the
cascade with fusion on (the first stage's strong candidate is not thrown away)."""

from __future__ import annotations

import numpy as np
import pytest

from streamrank.models.evaluation.fusion_fit import (
    MemoTier,
    fit_fusion,
    fusion_grid,
    split_queries,
)
from streamrank.models.evaluation.rerank import Query
from streamrank.models.scoring.cascade import Cascade
from streamrank.models.scoring.fusion import (
    DEFAULT_FUSION,
    METHODS,
    NO_FUSION,
    Fusion,
    FusionError,
)
from streamrank.models.scoring.tiers import FunctionTier
from streamrank.models.types import TextCandidate

PREVIOUS = np.array([10.0, 9.0, 8.0, 7.0])  # the order received: d0 first
NEW = np.array([0.0, 1.0, 2.0, 3.0])  # the tier reverses it


def order(scores: np.ndarray) -> list[int]:
    return np.argsort(-scores, kind="stable").tolist()


@pytest.mark.parametrize("method", ["minmax", "zscore", "rrf"])
def test_weight_one_orders_as_the_tier_and_weight_zero_keeps_the_order_received(method: str):
    assert order(Fusion(method, 1.0).fuse(PREVIOUS, NEW)) == [3, 2, 1, 0]
    assert order(Fusion(method, 0.0).fuse(PREVIOUS, NEW)) == [0, 1, 2, 3]


def test_none_returns_the_tier_scores_untouched():
    assert Fusion("none", 0.3).fuse(PREVIOUS, NEW).tolist() == NEW.tolist()
    assert not NO_FUSION.active and not Fusion("minmax", 1.0).active
    assert Fusion("minmax", 0.99).active


def test_minmax_is_blind_to_each_side_scale():
    scaled = Fusion("minmax", 0.5).fuse(PREVIOUS * 1000, NEW * 0.001)
    assert np.allclose(scaled, Fusion("minmax", 0.5).fuse(PREVIOUS, NEW))


def test_rrf_uses_the_order_received_not_the_previous_values():
    fusion = Fusion("rrf", 0.5)
    a = fusion.fuse(np.array([3.0, 2.0, 1.0]), np.array([1.0, 3.0, 2.0]))
    b = fusion.fuse(np.array([100.0, 0.0, -5.0]), np.array([1.0, 3.0, 2.0]))
    assert a.tolist() == b.tolist()
    assert order(a) == [1, 0, 2]  # d1: ranks 1 and 2; d0: 2 and 1, ties keep the given order


def test_constant_or_missing_scores_fall_back_to_the_other_side():
    fused = Fusion("minmax", 0.5).fuse(np.zeros(3), np.array([1.0, 3.0, 2.0]))
    assert order(fused) == [1, 2, 0]
    for method in ("minmax", "zscore"):
        fused = Fusion(method, 0.5).fuse(np.array([3.0, -np.inf, 1.0]), np.zeros(3))
        assert np.isfinite(fused).all() and fused[1] == fused.min() < fused[0]


def test_empty_heads_fuse_to_nothing():
    assert Fusion("zscore", 0.5).fuse(np.array([]), np.array([])).tolist() == []


@pytest.mark.parametrize("weight", [-0.1, 1.5, float("nan"), "0.5", None])
def test_weights_outside_zero_to_one_are_refused(weight):
    with pytest.raises(FusionError, match="weight"):
        Fusion("minmax", weight)  # type: ignore[arg-type]


def test_unknown_methods_and_bad_constants_are_refused():
    with pytest.raises(FusionError, match="methods: none, minmax, zscore, rrf"):
        Fusion("linear", 0.5)
    with pytest.raises(FusionError, match="constant"):
        Fusion("rrf", 0.5, rrf_constant=0)


def test_parse_round_trips_and_refuses_junk():
    for text in ("none", "minmax:0.5", "zscore:0.8", "rrf:0.7"):
        assert str(Fusion.parse(text)) == text
    assert Fusion.parse("zscore") == Fusion("zscore")
    with pytest.raises(FusionError, match="not a number"):
        Fusion.parse("minmax:heavy")
    with pytest.raises(FusionError):
        Fusion.parse("minmax:2")
    assert set(METHODS) == {"none", "minmax", "zscore", "rrf"}


# -- in a cascade -------------------------------------------------------------------------


def adversary() -> FunctionTier:
    """A tier that likes short texts: here it puts the best first-stage candidate last."""
    return FunctionTier("ce", lambda query, texts: -np.array([len(t) for t in texts], float))


def first_stage_favourite() -> list[TextCandidate]:
    """d0 is far ahead in the first stage, and the longest text; the rest are close."""
    texts = ["x" * 50, "x" * 3, "x" * 2, "x" * 4, "x" * 1]
    scores = [100.0, 10.0, 9.9, 9.8, 9.7]
    return [
        TextCandidate(f"d{i}", t, s) for i, (t, s) in enumerate(zip(texts, scores, strict=True))
    ]


@pytest.mark.parametrize("fusion", [Fusion("minmax", 0.3), Fusion("zscore", 0.3)])
def test_fusion_keeps_a_strong_first_stage_candidate_an_adversarial_tier_would_bury(fusion):
    docs = first_stage_favourite()
    unfused = Cascade("ce", {"ce": adversary()}, fusion=NO_FUSION).rank("q", docs)
    fused = Cascade("ce", {"ce": adversary()}, fusion=fusion).rank("q", docs)
    assert unfused.doc_ids[-1] == "d0"
    assert fused.doc_ids[0] == "d0"
    # among the close ones the tier still decides
    assert fused.doc_ids[1:] == [d for d in unfused.doc_ids if d != "d0"]


def test_none_reproduces_the_tier_order_with_the_tier_scores_and_no_fused_score():
    docs = first_stage_favourite()
    result = Cascade(
        "dense>ce:3", {"dense": adversary_named("dense"), "ce": adversary()}, fusion=NO_FUSION
    ).rank("q", docs)
    # dense (length, shortest first) then ce over its top 3, by hand
    assert result.doc_ids == ["d4", "d2", "d1", "d3", "d0"]
    assert [item.fused for item in result.items] == [None] * 5
    assert result.items[0].score == -1.0 and result.fusion == "none"
    assert "fusion" not in Cascade("ce", {"ce": adversary()}, fusion=NO_FUSION).model_version


def adversary_named(name: str) -> FunctionTier:
    return FunctionTier(name, lambda query, texts: -np.array([len(t) for t in texts], float))


def test_fused_scores_are_recorded_and_the_fusion_is_part_of_the_version():
    docs = first_stage_favourite()
    cascade = Cascade("ce:3", {"ce": adversary()}, fusion=Fusion("minmax", 0.5))
    result = cascade.rank("q", docs)
    assert result.fusion == "minmax:0.5"
    assert cascade.model_version.endswith(";fusion=minmax:0.5")
    head = result.items[:3]
    assert all(item.fused is not None and item.stage == "ce" for item in head)
    assert [item.fused for item in head] == sorted((i.fused for i in head), reverse=True)
    assert head[0].doc_id == "d0" and head[0].score == -50.0  # the tier's own score stays
    assert [item.fused for item in result.items[3:]] == [None, None]


def test_a_second_tier_fuses_with_the_first_fusion_not_with_its_raw_scores():
    docs = first_stage_favourite()
    tiers = {"dense": adversary_named("dense"), "ce": adversary()}
    fused = Cascade("dense>ce:3", tiers, fusion=Fusion("minmax", 0.3)).rank("q", docs)
    assert fused.doc_ids[0] == "d0"  # (1 - w) of the first stage survives both tiers


def test_with_fusion_shares_the_tiers_and_the_default_is_the_measured_one():
    tier = adversary()
    cascade = Cascade("ce", {"ce": tier})
    assert cascade.fusion == DEFAULT_FUSION
    other = cascade.with_fusion(NO_FUSION)
    assert other.tiers["ce"] is tier and other.fusion == NO_FUSION


def test_first_stage_alone_has_nothing_to_fuse():
    docs = first_stage_favourite()
    result = Cascade("first-stage", {}, fusion=Fusion("minmax", 0.5)).rank("q", docs)
    assert result.doc_ids == [d.doc_id for d in docs]
    assert "fusion" not in Cascade("first-stage", {}).model_version


# -- fitting ------------------------------------------------------------------------------


def test_memo_tier_scores_each_pair_once():
    calls: list[int] = []

    def count(query, texts):
        calls.append(len(texts))
        return np.array([len(t) for t in texts], float)

    tier = MemoTier(FunctionTier("ce", count))
    docs = first_stage_favourite()
    first = tier.score("q", docs[:3], None)
    again = tier.score("q", docs[1:4], None)
    assert calls == [3, 1]
    assert again.inferred == 1 and again.cached == 2
    assert first.scores[1:].tolist() == again.scores[:2].tolist()


def test_grid_and_split_are_what_they_say():
    grid = fusion_grid(("rrf", "minmax"), (0.2, 0.8))
    assert [str(f) for f in grid] == ["none", "rrf:0.2", "rrf:0.8", "minmax:0.2", "minmax:0.8"]
    fit, held = split_queries([f"q{i}" for i in range(10)], 3, seed=1)
    assert len(fit) == 3 and len(held) == 7 and not set(fit) & set(held)
    assert split_queries([f"q{i}" for i in range(10)], 3, seed=1) == (fit, held)
    with pytest.raises(FusionError):
        fusion_grid(("linear",))


def test_fit_picks_the_fusion_that_keeps_the_first_stage_when_the_tier_is_adversarial():
    queries = [Query(f"q{n}", "q", first_stage_favourite()) for n in range(6)]
    qrels = {f"q{n}": {"d0": 1} for n in range(6)}
    report = fit_fusion(
        Cascade("ce", {"ce": adversary()}),
        queries,
        qrels,
        fit=3,
        seed=0,
        grid=[NO_FUSION, Fusion("minmax", 0.5)],
    )
    assert report["fusion"] == "minmax:0.5"
    assert report["fit_queries"] == 3 and report["held_out_queries"] == 3
    assert report["held_out_ndcg@10"]["fitted"] == 1.0
    assert report["held_out_ndcg@10"]["none"] < 0.5
