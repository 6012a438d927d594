"""nDCG@k (trec_eval's ndcg_cut, linear gain), MRR@k and recall@k against hand-computed values."""

from __future__ import annotations

import math

import pytest

from streamrank.models.evaluation.metrics import dcg, mean_metrics, mrr_at_k, ndcg_at_k, recall_at_k

JUDGED = {"a": 3, "b": 2, "c": 0, "d": 1, "e": 2}


def test_dcg_is_linear_gain_with_log2_discount():
    assert dcg([3, 2, 1]) == pytest.approx(3 / 1 + 2 / math.log2(3) + 1 / 2)


def test_ndcg_by_hand():
    # ranking: c(0) a(3) x(unjudged) b(2); ideal: 3, 2, 2, 1
    got = ndcg_at_k(["c", "a", "x", "b"], JUDGED, k=4)
    actual = 3 / math.log2(3) + 2 / math.log2(5)
    ideal = 3 + 2 / math.log2(3) + 2 / 2 + 1 / math.log2(5)
    assert got == pytest.approx(actual / ideal)


def test_ndcg_cut_uses_all_judged_documents_for_the_ideal():
    # only "d" retrieved; the ideal still counts a, b, e that were never retrieved
    assert ndcg_at_k(["d"], JUDGED, k=10) == pytest.approx(
        1 / (3 + 2 / math.log2(3) + 2 / 2 + 1 / math.log2(5))
    )


def test_perfect_and_empty_rankings():
    assert ndcg_at_k(["a", "b", "e", "d"], JUDGED, k=10) == pytest.approx(1.0)
    assert ndcg_at_k([], JUDGED, k=10) == 0.0
    assert ndcg_at_k(["a"], {"a": 0}, k=10) == 0.0  # nothing relevant: 0, not NaN


def test_cutoff_ignores_documents_below_k():
    assert ndcg_at_k(["c", "c2", "a"], JUDGED, k=2) == 0.0


def test_mrr_and_recall():
    assert mrr_at_k(["c", "x", "d"], JUDGED, k=10) == pytest.approx(1 / 3)
    assert mrr_at_k(["c", "x", "d"], JUDGED, k=2) == 0.0
    assert mrr_at_k(["d", "a"], JUDGED, k=10, threshold=2) == pytest.approx(1 / 2)
    assert recall_at_k(["a", "c", "d"], JUDGED, k=10) == pytest.approx(2 / 4)
    assert recall_at_k(["a", "c", "d"], JUDGED, k=1) == pytest.approx(1 / 4)


def test_mean_metrics_averages_over_judged_queries_only():
    rankings = {"q1": ["a"], "q2": ["z"], "unjudged": ["a"]}
    qrels = {"q1": {"a": 1}, "q2": {"y": 1}}
    assert mean_metrics(rankings, qrels, k=10) == {"ndcg@10": 0.5, "mrr@10": 0.5, "recall@10": 0.5}
