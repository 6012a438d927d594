"""Joining logged impressions with interactions into LambdaMART rows: labels, split, weights."""

from __future__ import annotations

import numpy as np
import pytest

from streamrank.models.learning.lambdamart import LambdaMARTConfig
from streamrank.models.learning.ranker_data import (
    LoggedList,
    Outcome,
    RankerRows,
    build_training_data,
    estimate_propensities,
    heldout_ndcg,
    ips_weights,
    join_lists,
    mean_ndcg,
    split_by_time,
    train_ranker,
)

DIGEST = "fs1"


def logged(request_id: str, served_at: float = 0.0, digest: str = DIGEST, n: int = 3) -> LoggedList:
    items = tuple((f"d{i}", i + 1, (float(i), None)) for i in range(n))
    return LoggedList(request_id, served_at, digest, items)


def test_label_is_the_strongest_interaction_within_the_window() -> None:
    lists = [logged("r1", served_at=100.0)]
    outcomes = [
        Outcome("r1", "d0", "click", 110.0),
        Outcome("r1", "d0", "purchase", 150.0),
        Outcome("r1", "d0", "click", 160.0),  # a weaker one after it changes nothing
        Outcome("r1", "d1", "add_to_cart", 120.0),
        Outcome("r1", "d2", "purchase", 100.0 + 301.0),  # after the window: ignored
        Outcome("r1", "d2", "dwell", 130.0),
    ]
    joined, counts = join_lists(lists, outcomes, DIGEST, n_features=2, window_s=300.0)
    assert joined[0].y.tolist() == [3, 2, 0]
    assert counts.late == 1 and counts.matched == 5


def test_rows_are_in_served_order_with_nan_for_missing_values() -> None:
    items = (("b", 2, (2.0, 2.0)), ("a", 1, (1.0, None)))
    joined, _ = join_lists(
        [LoggedList("r", 0.0, DIGEST, items)], [Outcome("r", "b", "click", 1.0)], DIGEST, 2
    )
    assert joined[0].positions.tolist() == [1, 2]
    assert joined[0].y.tolist() == [0, 1]
    assert joined[0].X[0, 0] == 1.0 and np.isnan(joined[0].X[0, 1])


def test_lists_without_a_positive_label_are_dropped_and_counted() -> None:
    lists = [logged("r1"), logged("r2")]
    outcomes = [Outcome("r1", "d1", "click", 1.0), Outcome("r2", "d1", "impression", 1.0)]
    joined, counts = join_lists(lists, outcomes, DIGEST, 2)
    assert [item.request_id for item in joined] == ["r1"]
    assert counts.no_positive == 1 and counts.joined == 1


def test_foreign_malformed_and_duplicate_lists_are_skipped_and_counted() -> None:
    wrong_width = LoggedList("r4", 0.0, DIGEST, (("d0", 1, (1.0,)),))
    same_position = LoggedList("r5", 0.0, DIGEST, (("d0", 1, (1.0, 1.0)), ("d1", 1, (1.0, 1.0))))
    lists = [logged("r1"), logged("r2", digest="other"), logged("r1"), wrong_width, same_position]
    outcomes = [Outcome(r, "d0", "click", 1.0) for r in ("r1", "r2", "r4", "r5", "nowhere")]
    joined, counts = join_lists(lists, outcomes, DIGEST, 2)
    assert len(joined) == 1
    assert (counts.lists, counts.foreign_digest, counts.duplicates, counts.malformed) == (
        5,
        1,
        1,
        2,
    )
    assert counts.unmatched == 4  # outcomes of skipped lists join nothing


def test_newest_lists_by_served_time_are_held_out() -> None:
    lists = [logged(f"r{i}", served_at=float(10 - i)) for i in range(10)]  # newest first
    outcomes = [Outcome(f"r{i}", "d0", "click", 10.0 - i) for i in range(10)]
    joined, _ = join_lists(lists, outcomes, DIGEST, 2)
    older, newest = split_by_time(joined, holdout=0.2)
    assert [item.request_id for item in newest] == ["r1", "r0"]
    assert len(older) == 8 and max(i.served_at for i in older) < min(i.served_at for i in newest)


def test_ips_weights_only_positive_rows_and_clips() -> None:
    theta = np.array([1.0, 0.5, 0.01])
    weights = ips_weights(np.array([1, 0, 1, 3]), np.array([2, 2, 3, 9]), theta, clip=20.0)
    assert weights.tolist() == [2.0, 1.0, 20.0, 20.0]


def test_build_weights_rows_only_for_ips() -> None:
    lists = [logged(f"r{i}", served_at=float(i)) for i in range(10)]
    outcomes = [Outcome(f"r{i}", "d2", "click", float(i)) for i in range(10)]
    ips = build_training_data(lists, outcomes, DIGEST, 2, debias="ips")
    none = build_training_data(lists, outcomes, DIGEST, 2, debias="none")
    assert (none.train.weights == 1).all()
    assert (ips.train.weights[ips.train.y == 0] == 1).all()
    assert (ips.train.weights[ips.train.y > 0] >= 1).all()
    assert ips.train.n_lists == 8 and ips.valid.n_lists == 2
    with pytest.raises(ValueError, match="debias"):
        build_training_data(lists, outcomes, DIGEST, 2, debias="magic")


def pbm_rows(n: int, k: int, seed: int) -> tuple[RankerRows, np.ndarray]:
    """Lists where feature 0 drives attraction, clicks by a PBM with theta_r = 1 / r."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n * k, 2)).astype(np.float32)
    positions = np.tile(np.arange(1, k + 1), n)
    attract = 1 / (1 + np.exp(-3 * X[:, 0]))
    clicks = (rng.random(n * k) < attract / positions).astype(np.int32)
    return RankerRows(X, clicks, np.full(n, k), positions, np.ones(n * k), np.arange(n)), attract


def test_propensities_recover_a_position_based_model() -> None:
    rows, _ = pbm_rows(3000, 4, seed=1)
    theta = estimate_propensities(rows, max_position=4)
    np.testing.assert_allclose(theta, [1, 1 / 2, 1 / 3, 1 / 4], atol=0.06)


@pytest.mark.parametrize("debias", ["none", "ips", "position"])
def test_each_treatment_learns_the_informative_feature(debias: str) -> None:
    rng = np.random.default_rng(0)
    lists, outcomes = [], []
    for i in range(300):
        x = rng.normal(size=5)
        items = tuple((f"d{j}", j + 1, (float(x[j]), float(rng.normal()))) for j in range(5))
        lists.append(LoggedList(f"r{i}", float(i), DIGEST, items))
        best = int(np.argmax(x + rng.normal(scale=0.3, size=5)))
        outcomes.append(Outcome(f"r{i}", f"d{best}", "click", float(i)))
    data = build_training_data(lists, outcomes, DIGEST, 2, debias=debias)
    model = train_ranker(data, LambdaMARTConfig(n_estimators=30, min_data_in_leaf=20))
    grid = np.array([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    assert np.all(np.diff(model.predict_many(grid)) > 0)
    assert model.config["debias"] == debias
    figures = heldout_ndcg(model, data.valid, data.propensities)
    assert figures["ndcg@10_model"] > figures["ndcg@10_served"]
    assert set(figures) >= {"ips_ndcg@10_model", "ips_ndcg@10_served"}


def test_mean_ndcg_skips_lists_without_gain_and_keeps_order_on_ties() -> None:
    y, groups = np.array([0, 0, 0, 1, 0]), np.array([2, 3])
    assert mean_ndcg(np.zeros(5), y, groups) == pytest.approx(1 / np.log2(3))
    assert mean_ndcg(np.array([0, 0, 0, 1.0, 0]), y, groups) == 1.0
