"""Training rows for the final ranker: logged impressions joined with the interactions after them.

The worker logs, for every ranking it serves, what it showed and the feature vector each shown
item was ranked with (:class:`LoggedList`). Users' interactions arrive later (:class:`Outcome`).
:func:`build_training_data` joins the two by ``request_id`` and ``doc_id`` into LambdaMART
rows, one query group per served list:

- **Graded labels**, the strongest interaction with the item in that request: purchase 3,
  add to cart 2, click 1, shown and not acted on 0 (:data:`GRADES`). Interactions more than
  ``window_s`` after the list was served are ignored: the default is the worker's click window
  (``click_window_s``, 300 s), so an offline label means what the online learner's does, and a
  user returning hours later to a bookmarked item does not credit the ranking of that day.
- **Lists without a positive label are dropped** (and counted): every pair in them is tied, so
  LambdaRank gets no gradient from them, only rows that cost time.
- **Lists of another feature set are skipped** (and counted): a vector is only meaningful in
  the column order of the ``features_digest`` it was logged with, never mixed with another.
- **Time split**: the newest ``holdout`` (20%) of the lists by ``served_at`` are held out, for
  early stopping and the reported figures; a model is judged on traffic after its training data.

Clicks are biased by position: a result at rank 8 is clicked less because fewer users look at
it. Three treatments (``debias``), measured in ``bench/train_ranker.py`` (docs/learning.md):

- ``"none"``: the clicks as they are.
- ``"ips"``: inverse propensity scoring. Each clicked row is weighted ``theta_1 / theta_r``,
  the inverse of how much less its rank ``r`` is examined than rank 1, with ``theta`` fitted to
  the logged lists by regression EM (:func:`estimate_propensities`). LightGBM multiplies each
  row's lambda gradient and hessian by its own weight (``rank_objective.hpp``,
  ``RankingObjective::GetGradients``: weights are per row, not per query), so weighting the
  clicked row scales every pair it wins by its inverse propensity (Wang et al. 2018, Hu et al.
  2019); unclicked rows keep weight 1.
- ``"position"``: LightGBM's own unbiased LambdaMART (``lgb.Dataset(position=...)``, LightGBM
  4.1 and later): it learns an additive score bias per served position during training and
  leaves it out of the model, so serving scores no position at all.

Examples
--------
>>> lists = [
...     LoggedList(f"r{i}", float(i), "fs1", (("a", 1, (0.0,)), ("b", 2, (1.0,))))
...     for i in range(5)
... ]
>>> outcomes = [Outcome(f"r{i}", "b", "click", float(i) + 1) for i in range(4)]
>>> data = build_training_data(lists, outcomes, "fs1", n_features=1, debias="none")
>>> data.train.n_lists, data.valid.n_lists, data.counts.no_positive
(3, 1, 1)
>>> data.train.y.tolist()
[0, 1, 0, 1, 0, 1]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from streamrank.models.learning.lambdamart import (
    FinalRanker,
    LambdaMARTConfig,
    train_lambdamart,
)

GRADES: dict[str, int] = {"click": 1, "add_to_cart": 2, "purchase": 3}
"""The label an interaction type earns; any other type (impression, dwell) earns 0."""
DEBIAS = ("none", "ips", "position")
DEFAULT_WINDOW_S = 300.0
"""The worker's default ``click_window_s``: how late an interaction still labels its list."""
MAX_IPS_WEIGHT = 20.0
"""Inverse propensities are clipped here: a rank examined 1/50 as often as rank 1 would
otherwise let one lucky click outweigh fifty lists (the usual variance/bias trade of IPS)."""

ShownItem = tuple[str, int, Sequence[float | None]]
"""One shown item: (doc_id, served position 1-based, features in column order, None missing)."""


@dataclass(frozen=True)
class LoggedList:
    """One served ranking as logged: what was shown, where, and with which features."""

    request_id: str
    served_at: float
    features_digest: str
    items: tuple[ShownItem, ...]


@dataclass(frozen=True)
class Outcome:
    """One interaction with a served item (``type`` as in :data:`GRADES`)."""

    request_id: str
    doc_id: str
    type: str
    timestamp: float


@dataclass
class JoinCounts:
    """What the join kept and what it left out, and why."""

    lists: int = 0
    joined: int = 0
    no_positive: int = 0
    foreign_digest: int = 0
    malformed: int = 0
    duplicates: int = 0
    outcomes: int = 0
    matched: int = 0
    late: int = 0
    unmatched: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class RankerRows:
    """LambdaMART rows: one query group per list, rows in served order.

    ``X`` holds NaN where a feature was missing; ``positions`` are the served ranks (1-based);
    ``weights`` are the IPS weights (all 1 unless ``debias="ips"``).
    """

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    positions: np.ndarray
    weights: np.ndarray
    served_at: np.ndarray  # one per list

    @property
    def n_lists(self) -> int:
        return len(self.groups)


@dataclass(frozen=True)
class TrainingData:
    """Train and held-out rows, the join's counts and the position propensities used."""

    train: RankerRows
    valid: RankerRows
    counts: JoinCounts
    debias: str
    propensities: tuple[float, ...] = field(default=())

    def _ranks_shown(self) -> int:
        return int(self.train.positions.max()) if len(self.train.positions) else 0

    def summary(self) -> dict[str, Any]:
        """The counts and sizes, for a report (propensities of the ranks shown)."""
        return {
            "counts": self.counts.as_dict(),
            "train_lists": self.train.n_lists,
            "train_rows": len(self.train.y),
            "valid_lists": self.valid.n_lists,
            "valid_rows": len(self.valid.y),
            "debias": self.debias,
            "propensities": [round(p, 4) for p in self.propensities[: self._ranks_shown()]],
        }


@dataclass(frozen=True)
class _Joined:
    served_at: float
    request_id: str
    X: np.ndarray
    y: np.ndarray
    positions: np.ndarray


def grade(kind: str) -> int:
    """The label one interaction type earns (0 for impressions, dwell and unknown types)."""
    return GRADES.get(kind, 0)


def join_lists(
    lists: Iterable[LoggedList],
    outcomes: Iterable[Outcome],
    features_digest: str,
    n_features: int,
    window_s: float = DEFAULT_WINDOW_S,
) -> tuple[list[_Joined], JoinCounts]:
    """Labelled lists (each with a positive label) in served order, and the counts."""
    counts = JoinCounts()
    logged: dict[str, LoggedList] = {}
    for item in lists:
        counts.lists += 1
        if item.request_id in logged:  # a replayed or re-published impression: first one wins
            counts.duplicates += 1
        elif item.features_digest != features_digest:
            counts.foreign_digest += 1
        elif not _well_formed(item, n_features):
            counts.malformed += 1
        else:
            logged[item.request_id] = item
    best: dict[tuple[str, str], int] = {}
    for outcome in outcomes:
        counts.outcomes += 1
        served = logged.get(outcome.request_id)
        if served is None:
            counts.unmatched += 1
            continue
        if outcome.timestamp - served.served_at > window_s:
            counts.late += 1
            continue
        counts.matched += 1
        key = (outcome.request_id, outcome.doc_id)
        best[key] = max(best.get(key, 0), grade(outcome.type))
    joined = []
    for request_id, served in logged.items():
        items = sorted(served.items, key=lambda item: item[1])
        y = np.array([best.get((request_id, doc), 0) for doc, _, _ in items], dtype=np.int32)
        if not y.any():
            counts.no_positive += 1
            continue
        X = np.array([features for _, _, features in items], dtype=np.float32)  # None -> NaN
        positions = np.array([position for _, position, _ in items], dtype=np.int32)
        joined.append(_Joined(served.served_at, request_id, X, y, positions))
    counts.joined = len(joined)
    return joined, counts


def _well_formed(served: LoggedList, n_features: int) -> bool:
    """At least one item, each with ``n_features`` values, at distinct positions, distinct ids."""
    if not served.items:
        return False
    docs = {doc for doc, _, _ in served.items}
    positions = {position for _, position, _ in served.items}
    if len(docs) != len(served.items) or len(positions) != len(served.items):
        return False
    return all(len(features) == n_features for _, _, features in served.items)


def split_by_time(
    joined: Sequence[_Joined], holdout: float = 0.2
) -> tuple[list[_Joined], list[_Joined]]:
    """(older, newest ``holdout`` share) of the lists by ``served_at`` (ties by request id)."""
    ordered = sorted(joined, key=lambda item: (item.served_at, item.request_id))
    n_valid = math.ceil(len(ordered) * holdout) if len(ordered) > 1 else 0
    cut = len(ordered) - n_valid
    return ordered[:cut], ordered[cut:]


def _rows(joined: Sequence[_Joined], n_features: int) -> RankerRows:
    if not joined:
        empty = np.zeros(0, dtype=np.int32)
        return RankerRows(
            np.zeros((0, n_features), np.float32), empty, empty, empty, np.zeros(0), np.zeros(0)
        )
    return RankerRows(
        X=np.concatenate([item.X for item in joined]),
        y=np.concatenate([item.y for item in joined]),
        groups=np.array([len(item.y) for item in joined], dtype=np.int64),
        positions=np.concatenate([item.positions for item in joined]),
        weights=np.ones(sum(len(item.y) for item in joined)),
        served_at=np.array([item.served_at for item in joined]),
    )


def estimate_propensities(
    rows: RankerRows,
    iterations: int = 30,
    max_rows: int = 50_000,
    max_position: int = 50,
    seed: int = 0,
) -> np.ndarray:
    """Examination probability of ranks 1.. ``max_position`` relative to rank 1, by regression EM.

    The position-based model: a row at rank ``r`` is clicked when it is examined (probability
    ``theta_r``) and attractive (``gamma(x)``, a logistic regression on its features). EM
    alternates the posterior of examination and attraction of each unclicked row with a refit
    of both (Wang et al. 2018, "Position bias estimation for unbiased learning to rank in
    personal search"). Unlike the per-pair EM of :mod:`~streamrank.models.learning.propensity`,
    it needs no document shown at several ranks: the features carry attractiveness across
    lists. Fitted on at most ``max_rows`` rows (whole lists, drawn at random): thousands of
    rows per rank fix theta well beyond its use as a weight. Ranks past ``max_position``
    share its value.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> n, k = 4000, 5
    >>> X = rng.normal(size=(n * k, 1)).astype(np.float32)
    >>> positions = np.tile(np.arange(1, k + 1), n)
    >>> theta = 1.0 / positions
    >>> clicks = rng.random(n * k) < theta / (1 + np.exp(-2 * X[:, 0]))
    >>> rows = RankerRows(X, clicks.astype(int), np.full(n, k), positions, np.ones(n * k), None)
    >>> np.round(estimate_propensities(rows)[:k], 1).tolist()
    [1.0, 0.5, 0.3, 0.2, 0.2]
    """
    X, clicked, positions = _sample(rows, max_rows, seed)
    ranks = np.minimum(positions, max_position) - 1
    n_ranks = int(ranks.max()) + 1 if len(ranks) else 1
    Z = _standardise(X)
    w = np.zeros(Z.shape[1])
    theta = np.full(n_ranks, 0.5)
    gamma = np.full(len(clicked), 0.5)
    for _ in range(iterations):
        t = theta[ranks]
        # E-step: an unclicked row was examined and unattractive, or unexamined.
        unclicked = 1.0 - t * gamma
        examined = np.where(clicked, 1.0, t * (1.0 - gamma) / unclicked)
        attractive = np.where(clicked, 1.0, (1.0 - t) * gamma / unclicked)
        # M-step: theta per rank; gamma by a few Newton steps of a weighted logistic fit.
        theta = np.bincount(ranks, examined, n_ranks) / np.maximum(
            np.bincount(ranks, None, n_ranks), 1
        )
        theta = np.clip(theta, 1e-3, 1.0)
        w = _logistic_newton(Z, attractive, w, steps=1)  # warm-started: one step per round
        gamma = 1.0 / (1.0 + np.exp(-np.clip(Z @ w, -30, 30)))
    relative = np.minimum(theta / theta[0], 1.0)
    return np.concatenate([relative, np.full(max(0, max_position - n_ranks), relative[-1])])


def _sample(rows: RankerRows, max_rows: int, seed: int) -> tuple[np.ndarray, ...]:
    """Whole lists, at random, up to about ``max_rows`` rows: (X, clicked, positions)."""
    clicked = rows.y > 0
    if len(rows.y) <= max_rows:
        return rows.X, clicked, rows.positions
    starts = np.concatenate([[0], np.cumsum(rows.groups)[:-1]])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows.groups))
    keep = order[: np.searchsorted(np.cumsum(rows.groups[order]), max_rows) + 1]
    index = np.concatenate([np.arange(starts[g], starts[g] + rows.groups[g]) for g in keep])
    return rows.X[index], clicked[index], rows.positions[index]


def _standardise(X: np.ndarray) -> np.ndarray:
    """Centred, unit-variance columns with NaN at the column mean (0), plus an intercept."""
    A = np.asarray(X, dtype=np.float64)
    with warnings.catch_warnings():  # an all-missing column is fine: it becomes 0
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nan_to_num(np.nanmean(A, axis=0)) if len(A) else np.zeros(A.shape[1])
        scale = np.nan_to_num(np.nanstd(A, axis=0)) if len(A) else np.ones(A.shape[1])
    scale[scale == 0] = 1.0
    Z = np.nan_to_num((A - mean) / scale, nan=0.0, posinf=0.0, neginf=0.0)
    return np.hstack([Z, np.ones((len(Z), 1))])


def _logistic_newton(Z: np.ndarray, target: np.ndarray, w: np.ndarray, steps: int) -> np.ndarray:
    """Newton steps of a logistic regression on soft targets, with a small ridge for safety."""
    ridge = 1e-3 * len(Z) * np.eye(Z.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(Z @ w, -30, 30)))
        hessian = (Z * (p * (1 - p))[:, None]).T @ Z + ridge
        w = w - np.linalg.solve(hessian, Z.T @ (p - target) + ridge @ w)
    return w


def ips_weights(
    y: np.ndarray, positions: np.ndarray, propensities: np.ndarray, clip: float = MAX_IPS_WEIGHT
) -> np.ndarray:
    """1 / propensity of its rank for each row with a positive label, clipped; 1 elsewhere.

    Examples
    --------
    >>> ips_weights(np.array([1, 0, 2]), np.array([1, 2, 3]), np.array([1.0, 0.5, 0.25]))
    array([1., 1., 4.])
    """
    ranks = np.minimum(positions, len(propensities)) - 1
    inverse = np.minimum(1.0 / np.maximum(propensities[ranks], 1.0 / clip), clip)
    return np.where(y > 0, inverse, 1.0)


def build_training_data(
    lists: Iterable[LoggedList],
    outcomes: Iterable[Outcome],
    features_digest: str,
    n_features: int,
    window_s: float = DEFAULT_WINDOW_S,
    holdout: float = 0.2,
    debias: str = "ips",
) -> TrainingData:
    """Join, label, split by time and (for ``debias="ips"``) weight; see the module docstring."""
    if debias not in DEBIAS:
        raise ValueError(f"debias must be one of {DEBIAS}, not {debias!r}")
    joined, counts = join_lists(lists, outcomes, features_digest, n_features, window_s)
    older, newest = split_by_time(joined, holdout)
    train, valid = _rows(older, n_features), _rows(newest, n_features)
    # Fitted whatever the treatment: the held-out figures are also reported debiased by them.
    theta = estimate_propensities(train) if train.n_lists else np.ones(1)
    if debias == "ips":
        weights = ips_weights(train.y, train.positions, theta)
        train = RankerRows(
            train.X, train.y, train.groups, train.positions, weights, train.served_at
        )
    return TrainingData(train, valid, counts, debias, tuple(float(t) for t in theta))


def train_ranker(
    data: TrainingData,
    config: LambdaMARTConfig | None = None,
    feature_names: Sequence[str] | None = None,
    early_stopping: bool | None = None,
) -> FinalRanker:
    """LambdaMART on ``data.train`` with its debiasing.

    :func:`~streamrank.models.learning.lambdamart.train_lambdamart` with per-row weights
    (``"ips"``) or served positions (``"position"``) passed to LightGBM's dataset; the model
    saved is the same kind of :class:`FinalRanker` and scores features alone.

    ``early_stopping`` (default: only for ``debias="none"``) stops on the held-out lists'
    nDCG. Those labels are clicks, as biased by position as the training ones: a debiased
    model that moves away from the served order looks worse on them the better it gets, and
    was stopped after one or two trees in ``bench/train_ranker.py``. So a debiased model is
    trained for ``config.n_estimators`` rounds.
    """
    train, valid = data.train, data.valid
    if early_stopping is None:
        early_stopping = data.debias == "none"
    ranker = train_lambdamart(
        train.X,
        train.y,
        train.groups,
        config,
        valid=(valid.X, valid.y, valid.groups) if early_stopping and valid.n_lists else None,
        feature_names=feature_names,
        weight=train.weights if data.debias == "ips" else None,
        position=train.positions - 1 if data.debias == "position" else None,
    )
    return replace(ranker, config=ranker.config | {"debias": data.debias})


def mean_ndcg(scores: np.ndarray, y: np.ndarray, groups: np.ndarray, k: int = 10) -> float:
    """Mean nDCG@k over the groups (linear gain; ties keep the rows' order, the served one).

    Examples
    --------
    >>> y, groups = np.array([0, 1, 2, 0]), np.array([2, 2])
    >>> round(mean_ndcg(np.array([0.0, 1.0, 1.0, 0.0]), y, groups), 4)
    1.0
    >>> round(mean_ndcg(np.zeros(4), y, groups), 4)
    0.8155
    """
    values, start = [], 0
    for size in groups:
        labels = y[start : start + size].astype(np.float64)
        order = np.argsort(-scores[start : start + size], kind="stable")[:k]
        discounts = 1.0 / np.log2(np.arange(2, min(k, size) + 2))
        ideal = float(np.sort(labels)[::-1][:k] @ discounts)
        if ideal > 0:
            values.append(float(labels[order] @ discounts) / ideal)
        start += size
    return float(np.mean(values)) if values else 0.0


def heldout_ndcg(
    ranker: FinalRanker, rows: RankerRows, propensities: Sequence[float] = (), k: int = 10
) -> dict[str, float]:
    """nDCG@k on held-out lists of the new model and of the served order.

    ``ndcg@k_model`` and ``ndcg@k_served`` grade by the logged labels, which favour the served
    order (its top ranks were examined most). With ``propensities``, ``ips_ndcg@k_model`` and
    ``ips_ndcg@k_served`` grade each label by the inverse propensity of the rank it was
    earned at (clipped at :data:`MAX_IPS_WEIGHT`), an estimate of the figures under
    examination-free labels.
    """
    if not rows.n_lists:
        return {}
    scores = ranker.predict_many(rows.X, num_threads=None)
    served = -rows.positions.astype(np.float64)
    result = {
        f"ndcg@{k}_model": mean_ndcg(scores, rows.y, rows.groups, k),
        f"ndcg@{k}_served": mean_ndcg(served, rows.y, rows.groups, k),
    }
    if len(propensities):
        gains = rows.y * ips_weights(rows.y, rows.positions, np.asarray(propensities))
        result[f"ips_ndcg@{k}_model"] = mean_ndcg(scores, gains, rows.groups, k)
        result[f"ips_ndcg@{k}_served"] = mean_ndcg(served, gains, rows.groups, k)
    return result
