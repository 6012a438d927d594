"""Position-bias correction for ``streamrank train ranker``, measured on simulated click logs.

Synthetic lists with a known truth: each item has ``--features`` standard-normal features and a
true grade 0-3 set by a nonlinear function of the first four. A biased *logging ranker* (half
the true signal, plus a feature the truth ignores, plus noise) orders each list of 10; users
click by the position-based model: rank ``r`` is examined with probability ``theta_r = 1 / r``
and an examined item is clicked with probability 0.05 / 0.3 / 0.6 / 0.9 by grade. The clicked
lists go through the real join (:func:`~streamrank.models.learning.ranker_data.build_training_data`,
newest 20% held out for early stopping) and the real trainer, once per treatment:

- ``none``: the clicks as they are;
- ``ips``: clicked rows weighted by the inverse of the propensities the regression EM fits to
  the same logs (what ``--debias ips`` does);
- ``ips_true_theta``: the same with the true ``theta`` (the best IPS can do; reference only);
- ``position``: LightGBM's unbiased lambdarank, ``lgb.Dataset(position=...)``;
- ``position_feature``: the served position as an extra feature, held at 1 when scoring
  (not open to ``train ranker``: a registered model reads its feature set's columns only);
- ``ips_early_stopped``, ``position_early_stopped``: the debiased ones early-stopped on the
  held-out lists' clicks, which are as biased as the training clicks (``none`` always is).

Debiased models otherwise train the configured 200 rounds, as ``train ranker`` does.

Each model then ranks fresh lists of fresh items (no logging bias) and is scored by nDCG@10
against the TRUE grades; ``logging`` and ``truth`` are the logging ranker and a perfect one.
The median over ``--seeds`` seeds is reported, with each seed's figure. Prints one JSON object.

Example: python bench/train_ranker.py --lists 8000 --seeds 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamrank.models.learning.lambdamart import LambdaMARTConfig  # noqa: E402
from streamrank.models.learning.ranker_data import (  # noqa: E402
    LoggedList,
    Outcome,
    RankerRows,
    TrainingData,
    build_training_data,
    estimate_propensities,
    ips_weights,
    mean_ndcg,
    train_ranker,
)

LIST_SIZE = 10
DIGEST = "bench"
ATTRACTION = np.array([0.05, 0.3, 0.6, 0.9])
THETA = 1.0 / np.arange(1, LIST_SIZE + 1)


def true_grades(X: np.ndarray) -> np.ndarray:
    """Grades 0-3 from a nonlinear function of the first four features."""
    latent = X[:, 0] + 0.7 * X[:, 1] * (X[:, 2] > 0) - 0.5 * np.abs(X[:, 3])
    return np.digitize(latent, [0.8, 1.6, 2.4])


def logged_lists(
    n_lists: int, n_features: int, rng: np.random.Generator
) -> tuple[list[LoggedList], list[Outcome]]:
    """Lists ordered by the biased logging ranker, and the clicks PBM users make on them."""
    lists, outcomes = [], []
    for i in range(n_lists):
        X = rng.normal(size=(LIST_SIZE, n_features))
        grades = true_grades(X)
        logging_score = 0.5 * X[:, 0] + X[:, 4] + rng.normal(scale=1.0, size=LIST_SIZE)
        order = np.argsort(-logging_score)
        X, grades = X[order], grades[order]
        clicked = rng.random(LIST_SIZE) < THETA * ATTRACTION[grades]
        items = tuple((f"d{j}", j + 1, tuple(X[j].tolist())) for j in range(LIST_SIZE))
        lists.append(LoggedList(f"r{i}", float(i), DIGEST, items))
        outcomes += [Outcome(f"r{i}", f"d{j}", "click", i + 1.0) for j in np.flatnonzero(clicked)]
    return lists, outcomes


def with_weights(data: TrainingData, theta: np.ndarray) -> TrainingData:
    """``data`` as ``ips`` training data weighted by the given propensities."""
    train = data.train
    weights = ips_weights(train.y, train.positions, theta)
    rows = RankerRows(train.X, train.y, train.groups, train.positions, weights, train.served_at)
    return replace(data, train=rows, debias="ips")


def with_position_feature(data: TrainingData) -> TrainingData:
    """``data`` with the served position appended as the last feature (no other debiasing)."""

    def add(rows: RankerRows) -> RankerRows:
        X = np.hstack([rows.X, rows.positions[:, None].astype(np.float32)])
        return RankerRows(X, rows.y, rows.groups, rows.positions, rows.weights, rows.served_at)

    return replace(data, train=add(data.train), valid=add(data.valid), debias="none")


def one_seed(seed: int, n_lists: int, n_test: int, n_features: int) -> dict[str, float]:
    """Every treatment's test nDCG@10 (true grades) for one seed, and the fitted theta."""
    rng = np.random.default_rng(seed)
    lists, outcomes = logged_lists(n_lists, n_features, rng)
    X_test = rng.normal(size=(n_test * LIST_SIZE, n_features)).astype(np.float32)
    y_test = true_grades(X_test)
    groups = np.full(n_test, LIST_SIZE)
    logging_test = 0.5 * X_test[:, 0] + X_test[:, 4] + rng.normal(size=len(X_test))
    config = LambdaMARTConfig(seed=seed)

    base = build_training_data(lists, outcomes, DIGEST, n_features, debias="none")
    theta = estimate_propensities(base.train)
    arms = {  # name: (training data, early stopping on held-out clicks)
        "none": (base, True),
        "ips": (with_weights(base, theta), False),
        "ips_true_theta": (with_weights(base, THETA), False),
        "position": (replace(base, debias="position"), False),
        "ips_early_stopped": (with_weights(base, theta), True),
        "position_early_stopped": (replace(base, debias="position"), True),
    }
    result = {}
    for name, (data, stop) in arms.items():
        model = train_ranker(data, config, early_stopping=stop)
        result[name] = mean_ndcg(model.predict_many(X_test), y_test, groups)
    feature_model = train_ranker(with_position_feature(base), config)
    at_top = np.hstack([X_test, np.ones((len(X_test), 1), np.float32)])
    result["position_feature"] = mean_ndcg(feature_model.predict_many(at_top), y_test, groups)
    result["logging"] = mean_ndcg(logging_test, y_test, groups)
    result["truth"] = mean_ndcg(y_test.astype(float), y_test, groups)
    result["theta_fitted"] = [round(float(t), 3) for t in theta[:LIST_SIZE]]
    result["train_lists_with_clicks"] = base.train.n_lists
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists", type=int, default=8000, help="logged lists per seed")
    parser.add_argument("--test-lists", type=int, default=2000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    start = time.perf_counter()
    runs = [one_seed(s, args.lists, args.test_lists, args.features) for s in range(args.seeds)]
    names = [k for k, v in runs[0].items() if isinstance(v, float)]
    report = {
        "command": "python bench/train_ranker.py " + " ".join(sys.argv[1:]),
        "lists_per_seed": args.lists,
        "list_size": LIST_SIZE,
        "true_theta": [round(float(t), 3) for t in THETA],
        "ndcg@10_true_grades_median": {
            n: round(float(np.median([r[n] for r in runs])), 4) for n in names
        },
        "per_seed": runs,
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
