"""LambdaMART (the final ranker), its linear baseline and the LETOR reader on tiny synthetic data.

One feature decides the grade, the others are noise: LambdaMART must rank by it on held-out
queries, well above a random order; a saved model must score identically after loading.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamrank.models.evaluation.letor import group_sizes, mean_ndcg, ndcg_per_query, parse_letor
from streamrank.models.learning.lambdamart import (
    FinalRanker,
    LambdaMARTConfig,
    LinearRanker,
    train_lambdamart,
)

QUERIES, ROWS, FEATURES, SIGNAL = 40, 25, 6, 2
SMALL = LambdaMARTConfig(n_estimators=40, min_data_in_leaf=10)


def synthetic(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grades 0-4 from feature ``SIGNAL`` alone (quantiles within each query)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(QUERIES * ROWS, FEATURES)).astype(np.float32)
    qids = np.repeat(np.arange(QUERIES), ROWS)
    y = np.digitize(X[:, SIGNAL], [0.0, 0.7, 1.2, 1.7])
    return X, y, qids


@pytest.fixture(scope="module")
def trained() -> FinalRanker:
    X, y, qids = synthetic(0)
    return train_lambdamart(X, y, group_sizes(qids), SMALL)


def test_lambdamart_ranks_by_the_relevant_feature(trained):
    X, y, qids = synthetic(1)  # unseen queries
    learned = mean_ndcg(trained.predict_many(X), y, qids)
    random_order = mean_ndcg(np.random.default_rng(2).random(len(y)), y, qids)
    assert learned > 0.95
    assert learned > random_order + 0.3
    importance = trained.booster.feature_importance(importance_type="gain")
    assert int(np.argmax(importance)) == SIGNAL


def test_save_and_load_give_the_same_scores_and_digest(trained, tmp_path):
    path = trained.save(tmp_path / "final" / "lambdamart.txt")
    loaded = FinalRanker.load(path)
    X, _, _ = synthetic(3)
    assert np.array_equal(loaded.predict_many(X), trained.predict_many(X))
    assert loaded.digest == trained.digest
    assert loaded.feature_names == trained.feature_names == ("f1", "f2", "f3", "f4", "f5", "f6")
    sidecar = json.loads((tmp_path / "final" / "lambdamart.txt.json").read_text())
    assert sidecar["sha256"] == trained.digest
    assert sidecar["config"]["num_leaves"] == SMALL.num_leaves


def test_load_refuses_a_changed_model(trained, tmp_path):
    path = trained.save(tmp_path / "lambdamart.txt")
    path.write_text(path.read_text().replace("shrinkage=0.05", "shrinkage=0.5", 1))
    with pytest.raises(ValueError, match="sha256"):
        FinalRanker.load(path)


def test_training_is_deterministic(trained):
    X, y, qids = synthetic(0)
    again = train_lambdamart(X, y, group_sizes(qids), SMALL)
    assert again.digest == trained.digest


def test_early_stopping_keeps_the_best_round():
    X, y, qids = synthetic(0)
    Xv, yv, qv = synthetic(4)
    config = LambdaMARTConfig(n_estimators=300, min_data_in_leaf=10, early_stopping_rounds=5)
    ranker = train_lambdamart(X, y, group_sizes(qids), config, valid=(Xv, yv, group_sizes(qv)))
    assert 0 < ranker.config["best_iteration"] < 300
    assert ranker.num_trees == ranker.config["best_iteration"]


def test_predict_many_checks_the_feature_count(trained):
    with pytest.raises(ValueError, match="6 features"):
        trained.predict_many(np.zeros((3, FEATURES + 1)))


def test_compiled_scores_match_when_lleaves_is_installed(trained, tmp_path):
    pytest.importorskip("lleaves")
    compiled = FinalRanker(trained.model_text, trained.feature_names, trained.config)
    assert compiled.compile(tmp_path)
    X, _, _ = synthetic(5)
    np.testing.assert_allclose(compiled.predict_many(X), trained.predict_many(X), atol=1e-9)
    assert len(list(tmp_path.glob(f"{trained.digest}.*.o"))) == 1  # cached under the digest


def test_linear_ranker_learns_a_linear_signal():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(1000, 5)) * [1, 10, 0.1, 1, 1] + [0, 5, 0, 0, 100]
    true = np.array([1.0, 0.0, -20.0, 0.5, 0.0])
    y = X @ true + rng.normal(scale=0.1, size=1000)
    ranker = LinearRanker.fit(X, y, alpha=1.0)
    per_unit = ranker.weights / ranker.scale  # back to the raw features' units
    np.testing.assert_allclose(per_unit, true, atol=0.05)
    test = rng.normal(size=(50, 5)) * [1, 10, 0.1, 1, 1]
    assert np.corrcoef(ranker.predict_many(test), test @ true)[0, 1] > 0.99


def test_parse_letor_reads_sparse_rows_and_comments():
    text = """2 qid:10 1:0.5 3:-2 # docid = a
0 qid:10 2:1.5e2

4 qid:11 4:1 7:9
"""
    X, y, qids = parse_letor(text.splitlines(), n_features=4)
    assert X.shape == (3, 4) and X.dtype == np.float32
    np.testing.assert_array_equal(X[0], [0.5, 0, -2, 0])
    np.testing.assert_array_equal(X[1], [0, 150, 0, 0])
    np.testing.assert_array_equal(X[2], [0, 0, 0, 1])  # feature 7 is beyond the fixed width
    assert y.tolist() == [2, 0, 4] and qids.tolist() == [10, 10, 11]
    assert group_sizes(qids).tolist() == [2, 1]


def test_group_sizes_refuses_interleaved_queries():
    with pytest.raises(ValueError, match="contiguous"):
        group_sizes(np.array([1, 1, 2, 1]))


def test_ndcg_per_query_skips_queries_without_relevant_rows():
    labels, qids = np.array([1, 0, 0, 0]), np.array([5, 5, 6, 6])
    scores = np.array([0.0, 1.0, 0.3, 0.2])
    assert ndcg_per_query(scores, labels, qids) == {5: pytest.approx(1 / np.log2(3))}
