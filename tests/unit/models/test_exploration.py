"""Safe exploration: it explores when allowed, never beyond its bound, and serves a
permutation of the candidates."""

from __future__ import annotations

import numpy as np
import pytest

from streamrank.models.learning.exploration import SafeExplorer, look_values
from streamrank.models.learning.online_ranker import OnlineRanker, Scored, ScoredCandidate


def scored_list(n: int = 40, seed: int = 0, clicks: int = 60) -> Scored:
    """A posterior with some evidence: a few sessions of random clicks on the top 10."""
    rng = np.random.default_rng(seed)
    cands = [ScoredCandidate(f"d{i}", ce=float(rng.normal())) for i in range(n)]
    ranker = OnlineRanker()
    for s in range(clicks):
        scored = ranker.score_one("q", cands)
        order = rng.permutation(scored.exploit_order()[:15])
        clicked = sorted(rng.choice(10, size=int(rng.integers(0, 3)), replace=False).tolist())
        ranker.learn_one(scored.impression(f"e{s}", order, clicked, k=10))
    return ranker.score_one("q", cands)


def true_loss(scored: Scored, order: np.ndarray, k: int = 10) -> float:
    """The bound's definition, recomputed independently."""
    gains = scored.mean - scored.mean.min()
    discount = 1 / np.log2(np.arange(2, k + 2))
    best = gains[scored.exploit_order()[:k]] @ discount
    return 1 - gains[order[:k]] @ discount / best


def test_no_allowed_loss_means_the_exploit_ranking() -> None:
    scored = scored_list()
    explorer = SafeExplorer(max_loss=0.0, swap_probability=1.0, seed=0)
    for _ in range(20):
        served = explorer.rank_one(scored)
        assert served.order.tolist() == scored.exploit_order().tolist() and not served.explored


@pytest.mark.parametrize("max_loss", [0.02, 0.1, 0.3])
def test_the_loss_bound_is_never_exceeded(max_loss: float) -> None:
    explored = 0
    for seed in range(3):
        scored = scored_list(seed=seed)
        explorer = SafeExplorer(max_loss=max_loss, swap_probability=0.5, seed=seed)
        for _ in range(100):
            served = explorer.rank_one(scored)
            assert true_loss(scored, served.order) <= max_loss + 1e-9
            assert served.loss == pytest.approx(max(0.0, true_loss(scored, served.order)))
            explored += served.explored
    assert explored > 0  # it does explore when allowed


def test_served_lists_are_permutations_of_the_candidates() -> None:
    scored = scored_list(n=25)
    explorer = SafeExplorer(max_loss=1.0, seed=3)
    for _ in range(50):
        order = explorer.rank_one(scored).order
        assert sorted(order.tolist()) == list(range(25))


def test_exploration_moves_documents_across_ranks() -> None:
    """Position-bias estimation needs documents at several ranks: check that they get there."""
    scored = scored_list()
    explorer = SafeExplorer(max_loss=0.3, seed=0)
    ranks: dict[int, set[int]] = {}
    for _ in range(200):
        for rank, doc in enumerate(explorer.rank_one(scored).order[:10]):
            ranks.setdefault(int(doc), set()).add(rank)
    assert np.median([len(r) for r in ranks.values()]) >= 3


def test_a_fresh_ranker_explores_only_within_the_bound() -> None:
    cands = [ScoredCandidate(f"d{i}", ce=-float(i)) for i in range(30)]
    scored = OnlineRanker().score_one("q", cands)
    served = SafeExplorer(max_loss=0.05, seed=0).rank_one(scored)
    assert served.loss <= 0.05


def test_interventions_shuffle_the_exploit_top_k_only_when_asked() -> None:
    scored = scored_list()
    top = sorted(scored.exploit_order()[:10].tolist())
    explorer = SafeExplorer(max_loss=0.1, shuffle_probability=0.5, seed=2)
    served = [explorer.rank_one(scored, interventions=True) for _ in range(400)]
    shuffled = [s for s in served if s.randomized]
    assert 150 < len(shuffled) < 250
    for s in shuffled:
        assert sorted(s.order[:10].tolist()) == top  # the same documents, in random order
    first = {int(s.order[0]) for s in shuffled}
    assert len(first) == 10  # every one of them reaches rank 1
    assert not any(explorer.rank_one(scored).randomized for _ in range(200))


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        SafeExplorer(max_loss=1.5)
    with pytest.raises(ValueError):
        SafeExplorer(reference="oracle")


def _two_ambiguous(stop: np.ndarray) -> Scored:
    """Four documents for k=2: d0 and d1 equally likely to belong in the top 2, d2 and d3
    a little less likely; ``stop`` as given."""
    levels = (np.arange(8) + 0.5) / 8
    attract = np.full((4, 8), 0.01)
    attract[:2, 3:7] = 1.0
    attract[2:, 2:6] = 1.0
    attract /= attract.sum(1, keepdims=True)
    mean = attract @ levels
    std = np.sqrt(attract @ levels**2 - mean**2)
    base = np.zeros(4)
    table = OnlineRanker().score_one("q", [ScoredCandidate(f"d{i}") for i in range(4)]).table
    return Scored(
        "q", [f"d{i}" for i in range(4)], table, mean, std, attract, levels, base, np.ones(4), stop
    )


def test_a_result_users_stop_at_is_shown_after_an_equally_open_one() -> None:
    """Smith's rule: a look is worth its information times the chance the user still looks,
    so of two equally open documents the one that ends more sessions goes second."""
    scored = _two_ambiguous(np.array([0.9, 0.0, 0.0, 0.0]))
    explorer = SafeExplorer(k=2, max_loss=1.0, swap_probability=0.0, seed=0)
    both = [s.order[:2].tolist() for s in (explorer.rank_one(scored) for _ in range(400))]
    both = [o for o in both if sorted(o) == [0, 1]]
    assert len(both) > 50
    assert sum(o == [1, 0] for o in both) > 0.9 * len(both)


def test_a_document_that_surely_belongs_is_not_shown_first() -> None:
    scored = scored_list()
    sure = int(scored.exploit_order()[0])
    scored.attract[sure] = 0.0
    scored.attract[sure, -1] = 1.0  # every draw puts it in the top 10: a look teaches nothing
    explorer = SafeExplorer(max_loss=1.0, swap_probability=0.0, seed=0)
    firsts = [int(explorer.rank_one(scored).order[0]) for _ in range(200)]
    assert firsts.count(sure) < 20


def brute_force_look_values(scored: Scored, k: int) -> np.ndarray:
    """look_values' definition, recomputed one revealed level at a time."""
    mean = scored.attract @ scored.levels
    discount = 1 / np.log2(np.arange(2, k + 2))
    kept_order = np.argsort(-mean, kind="stable")[:k]
    values = np.zeros(len(mean))
    for i in range(len(mean)):
        for p, level in zip(scored.attract[i], scored.levels, strict=True):
            revealed = mean.copy()
            revealed[i] = level
            best = np.sort(revealed)[::-1][:k] @ discount[: min(k, len(mean))]
            kept = revealed[kept_order] @ discount[: len(kept_order)]
            values[i] += p * max(best - kept, 0.0)
    return values


@pytest.mark.parametrize(("n", "k"), [(40, 10), (11, 10), (6, 10), (25, 3)])
def test_look_values_are_the_expected_value_of_knowing_a_documents_level(n: int, k: int) -> None:
    scored = scored_list(n=n, seed=n)
    assert np.allclose(look_values(scored, k), brute_force_look_values(scored, k), atol=1e-12)


def test_a_document_whose_level_is_known_or_out_of_reach_is_worth_no_look() -> None:
    scored = scored_list()
    order = scored.exploit_order()
    known, hopeless = int(order[3]), int(order[-1])
    scored.attract[known] = np.eye(len(scored.levels))[-1]  # surely the most attractive
    scored.attract[hopeless] = np.eye(len(scored.levels))[0]  # surely the least
    values = look_values(scored, k=10)
    assert values[known] == 0.0 and values[hopeless] == 0.0
    assert (values > 0).sum() >= 10  # the others' places are open
