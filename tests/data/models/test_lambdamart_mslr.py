"""LambdaMART beats the linear ranker trained on the same MSLR-WEB10K rows (issue #22).

Needs ``../shared/data/mslr-sample`` (two disjoint 5,000-row samples of fold 1, 43 queries
each); skips with a message when it is absent. About 10 seconds on a 2-core machine.

The comparison is against the ridge :class:`LinearRanker` on standardised features, the
baseline the issue names. With 43 training queries the margin is small (see
``docs/notes/2026-12-07-final-ranker.md``: a ridge on ``log1p`` features ties LambdaMART
here), so the test pools both directions, train on one sample and score the other, 84
judged queries, as well as checking the issue's own direction.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamrank.models.evaluation.letor import group_sizes, ndcg_per_query, read_letor
from streamrank.models.learning.lambdamart import LambdaMARTConfig, LinearRanker, train_lambdamart
from tests.helpers import SHARED_DATA

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_data")]

MSLR = SHARED_DATA / "mslr-sample"


@pytest.fixture(scope="module")
def samples() -> tuple[tuple, tuple]:
    if not (MSLR / "msn1.fold1.train.5k.txt").exists():
        pytest.skip(f"the MSLR-WEB10K sample is not at {MSLR} (the shared evaluation data)")
    return (
        read_letor(MSLR / "msn1.fold1.train.5k.txt", 136),
        read_letor(MSLR / "msn1.fold1.test.5k.txt", 136),
    )


def per_query_ndcg(train: tuple, test: tuple) -> tuple[list[float], list[float]]:
    """nDCG@10 per judged test query: LambdaMART's and the linear ranker's, same order."""
    X, y, qids = train
    lambdamart = train_lambdamart(X, y, group_sizes(qids), LambdaMARTConfig())
    linear = LinearRanker.fit(X, y)
    Xt, yt, qt = test
    trees = ndcg_per_query(lambdamart.predict_many(Xt), yt, qt)
    lines = ndcg_per_query(linear.predict_many(Xt), yt, qt)
    return [trees[q] for q in trees], [lines[q] for q in trees]


def test_lambdamart_beats_the_linear_ranker(samples):
    first, second = samples
    assert len(np.unique(first[2])) == len(np.unique(second[2])) == 43
    assert not set(first[2].tolist()) & set(second[2].tolist())  # disjoint queries
    trees, lines = per_query_ndcg(first, second)
    assert len(trees) >= 40
    assert np.mean(trees) > np.mean(lines)  # the direction: sample 1 -> sample 2
    assert np.mean(trees) > 0.40  # MSLR nDCG@10 with linear gain; a random order is ~0.2
    back_trees, back_lines = per_query_ndcg(second, first)
    pooled_trees, pooled_lines = trees + back_trees, lines + back_lines
    assert np.mean(pooled_trees) > np.mean(pooled_lines) + 0.01
    wins = sum(t > line for t, line in zip(pooled_trees, pooled_lines, strict=True))
    assert wins > len(pooled_trees) / 2
