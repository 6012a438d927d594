"""The online ranker: a cross-encoder ranking that keeps getting better from clicks.

Every (query, document) pair has an unknown *attractiveness* a (the probability a user who
looks at it clicks it) and, for users who stop once satisfied, a *satisfaction* s. The ranker
keeps a Bayesian posterior over both on a small grid (``attract_bins`` x ``satisfy_bins``):

- the **prior** over a comes from a River ``SoftmaxRegression`` over the candidate's features:
  cross-encoder, first-stage and dense scores (each as a within-list z-score and a rank
  discount), document-level click evidence from the document's *other* queries (smoothed,
  debiased CTR and its log count), the query's debiased CTR so far, and any item or user
  features. It starts as a tilt towards the starting ranker's order, so a fresh ranker
  serves exactly the cross-encoder order;
- the **evidence** is per-pair debiased click statistics (clicks, expected examinations from
  :class:`streamrank.models.learning.propensity.PositionBias`, satisfied clicks, unclicked
  impressions by rank), kept behind :class:`LearnerStore`. It is read under the examination family
  the position bias has chosen: for cascade users, skips above the last click and what the last
  click says about stopping; for position-based users, the exact likelihood with today's
  propensities (see :class:`Stats`). Until the family is chosen, both readings count, by the
  odds the sessions so far give each (:meth:`OnlineRanker._family_joints`);
- a table T(s | a), learned by stepwise EM, couples the two, so a click that ends a session
  also says something about a.

The served score is the posterior mean of a minus ``caution`` posterior standard deviations
(a few lucky clicks on a document seen three times must not put it above a document the
cross-encoder is sure of, which matters most for users who rarely look below rank 3);
candidates without evidence keep the starting ranker's relative order, and ties fall back to
its score.

Why this and not pairwise preferences or a plain logistic model: relevance levels make click
rates cluster (a few grades, each with its own click rate), so the posterior over a is
multi-modal; a grid posterior with a learned prior lets two or three clicks move a document
decisively while a single Beta (a Thompson counter) or a linear model needs many more. The
River model is trained Regression-EM style (Wang et al. 2018) towards each shown pair's
posterior (the expected update of a label drawn from it), so it learns from debiased
evidence, generalises to unseen pairs and gives new queries a calibrated prior.
Clicked-over-skipped-above preferences are biased towards reversing the shown order, and PDGD
needs many more sessions per query than the 200 this product is judged on.

Examples
--------
>>> ranker = OnlineRanker(config=RankerConfig(seed=0))
>>> shown = [ScoredCandidate(doc, ce=ce) for doc, ce in [("d1", 2.0), ("d2", 1.0), ("d3", 0.5)]]
>>> ranker.rank_one("q", shown)                       # no clicks yet: the cross-encoder order
['d1', 'd2', 'd3']
>>> scored = ranker.score_one("q", shown)
>>> for i in range(30):                                # users skip d1 and d2 for d3
...     _ = ranker.learn_one(scored.impression(f"e{i}", [0, 1, 2], clicked=[2]))
>>> ranker.rank_one("q", shown)[0]
'd3'
>>> ranker.learn_one(scored.impression("e0", [0, 1, 2], clicked=[2]))  # a replay is ignored
False
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
from river import linear_model, optim

from streamrank.models.learning.propensity import PositionBias, click_mask, pair_key

SCORE_KINDS = ("final", "ce", "dense", "first_stage")
"""Model scores a candidate may carry, in order of preference as the starting ranker."""


# -- data ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScoredCandidate:
    """One document the online ranker orders: the scores earlier stages gave it, item features.

    Scores only, no text: the learner reads what the final ranker (``final``), the cascade
    (``ce``, ``dense``) and the first stage (``first_stage``) already computed; a stage that
    did not score it leaves None. With a final ranker its score is the starting order and a
    feature of the prior, so the online learner corrects the final ranker between retrains.
    """

    doc_id: str
    final: float | None = None
    ce: float | None = None
    first_stage: float | None = None
    dense: float | None = None
    features: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Impression:
    """What the learner learns from: one served list, the clicks on it, and its event id.

    ``docs`` are the shown documents in rank order, ``clicked`` the 0-based ranks clicked and
    ``features`` the prior-model features of each shown document as they were when served
    (the rerank agent stores them with the impression); ``randomized`` marks a randomized
    intervention list (:class:`streamrank.models.learning.exploration.Served`), which position-bias
    estimation relies on.
    """

    event_id: str
    query: str
    docs: tuple[str, ...]
    clicked: tuple[int, ...]
    features: tuple[Mapping[str, float], ...]
    randomized: bool = False


PBM_RANKS = 10
"""Ranks with their own skip count in :class:`Stats` (the last one also counts lower ranks)."""

STATS_FIELDS = (
    "impressions",
    "clicks",
    "exams",
    "satisfied",
    "sat_clicks",
    "pbm_exams",
    *(f"skips_{r}" for r in range(1, PBM_RANKS + 1)),
)
"""The fields of :class:`Stats` in ``to_list`` order (what a store persists)."""


@dataclass(slots=True)
class Stats:
    """Click evidence for one (query, doc) pair or one document; also used as an increment.

    Evidence is kept under both examination models, so the ranker can switch family (when
    :class:`~streamrank.models.learning.propensity.PositionBias` finds the other one fits better)
    without losing or misreading anything: ``exams`` are expected examinations under the cascade
    model and ``satisfied`` its expected satisfied clicks out of ``sat_clicks`` clicks;
    ``pbm_exams`` are expected examinations under the position-based model (the propensities at the
    time, used for the click-rate features), and ``skips_r`` count the impressions at rank r
    (``skips_10``: rank 10 or below) that were not clicked.

    Why the skips by rank: under the position-based model a result skipped at rank r says
    ``1 - theta_r * a``, so the exact likelihood of a pair's evidence is
    ``a^clicks * prod_r (1 - theta_r * a)^skips_r``, which needs the ranks, not just the sum
    of the thetas. The former sum form ``a^c (1 - a)^(pbm_exams - c)`` penalises a skipped
    relevant document far too much (15 impressions at ranks 3-5 without a click: about 1000x
    against a=0.9 versus a=0.4 instead of 10x), so relevant documents once shown low never
    came back up; and it froze each impression at the theta of its day (the 1/sqrt(rank)
    start, then a biased EM fit), while counts by rank are re-read with the current theta
    (docs/notes/2026-11-25-online-ranker-rework.md).
    """

    impressions: float = 0.0
    clicks: float = 0.0
    exams: float = 0.0
    satisfied: float = 0.0
    sat_clicks: float = 0.0
    pbm_exams: float = 0.0
    skips_1: float = 0.0
    skips_2: float = 0.0
    skips_3: float = 0.0
    skips_4: float = 0.0
    skips_5: float = 0.0
    skips_6: float = 0.0
    skips_7: float = 0.0
    skips_8: float = 0.0
    skips_9: float = 0.0
    skips_10: float = 0.0

    # written out field by field: these run for every candidate of every request
    def add(self, other: Stats) -> None:
        self.impressions += other.impressions
        self.clicks += other.clicks
        self.exams += other.exams
        self.satisfied += other.satisfied
        self.sat_clicks += other.sat_clicks
        self.pbm_exams += other.pbm_exams
        # an increment has one rank at most: adding only that one keeps the others the shared
        # 0.0 (a new float per field and pair costs memory in every pair the store keeps)
        if other.skips_1:
            self.skips_1 += other.skips_1
        if other.skips_2:
            self.skips_2 += other.skips_2
        if other.skips_3:
            self.skips_3 += other.skips_3
        if other.skips_4:
            self.skips_4 += other.skips_4
        if other.skips_5:
            self.skips_5 += other.skips_5
        if other.skips_6:
            self.skips_6 += other.skips_6
        if other.skips_7:
            self.skips_7 += other.skips_7
        if other.skips_8:
            self.skips_8 += other.skips_8
        if other.skips_9:
            self.skips_9 += other.skips_9
        if other.skips_10:
            self.skips_10 += other.skips_10

    def to_list(self) -> list[float]:
        return [
            self.impressions,
            self.clicks,
            self.exams,
            self.satisfied,
            self.sat_clicks,
            self.pbm_exams,
            *self.skips,
        ]

    @property
    def skips(self) -> list[float]:
        """Unclicked impressions by rank (``PBM_RANKS`` values)."""
        return [
            self.skips_1,
            self.skips_2,
            self.skips_3,
            self.skips_4,
            self.skips_5,
            self.skips_6,
            self.skips_7,
            self.skips_8,
            self.skips_9,
            self.skips_10,
        ]

    @classmethod
    def from_list(cls, values: Sequence[float]) -> Stats:
        return cls(*map(float, values))


# -- the store -------------------------------------------------------------------------------


class LearnerStore(Protocol):
    """Where all learner state lives; :class:`InMemoryStore` here, Redis for the workers.

    ``apply`` is the only write of click evidence and must be atomic: if ``event_id`` was
    applied before it changes nothing and returns False; otherwise it adds each delta to the
    (query, doc) pair *and* to the document's cross-query totals, remembers the id, and
    returns True. Unknown pairs and documents read as zero ``Stats``.
    """

    def pair_stats(self, query: str, docs: Sequence[str]) -> list[Stats]: ...

    def doc_stats(self, docs: Sequence[str]) -> list[Stats]: ...

    def apply(self, event_id: str, query: str, deltas: Sequence[tuple[str, Stats]]) -> bool: ...

    def get_state(self, name: str) -> dict[str, Any] | None: ...

    def put_state(self, name: str, state: dict[str, Any]) -> None: ...


class InMemoryStore:
    """A bounded in-process :class:`LearnerStore`.

    Memory is capped by ``max_pairs``, ``max_docs`` and ``max_events`` (idempotence memory):
    the least recently updated entries are evicted first, which is what a TTL refreshed on
    every write does in Redis. An evicted pair starts again from its prior.

    Examples
    --------
    >>> store = InMemoryStore(max_pairs=2)
    >>> store.apply("e1", "q", [("d1", Stats(impressions=1, clicks=1, exams=1))])
    True
    >>> store.apply("e1", "q", [("d1", Stats(impressions=1, clicks=1, exams=1))])
    False
    >>> store.pair_stats("q", ["d1", "d9"])[0].clicks, store.doc_stats(["d1"])[0].clicks
    (1.0, 1.0)
    """

    def __init__(
        self, max_pairs: int = 1_000_000, max_docs: int = 500_000, max_events: int = 1_000_000
    ) -> None:
        self.max_pairs, self.max_docs, self.max_events = max_pairs, max_docs, max_events
        self._pairs: OrderedDict[tuple[str, str], Stats] = OrderedDict()
        self._docs: OrderedDict[str, Stats] = OrderedDict()
        self._events: OrderedDict[str, None] = OrderedDict()
        self._states: dict[str, dict[str, Any]] = {}

    def pair_stats(self, query: str, docs: Sequence[str]) -> list[Stats]:
        return [_copy(self._pairs.get((query, doc))) for doc in docs]

    def doc_stats(self, docs: Sequence[str]) -> list[Stats]:
        return [_copy(self._docs.get(doc)) for doc in docs]

    def apply(self, event_id: str, query: str, deltas: Sequence[tuple[str, Stats]]) -> bool:
        if event_id in self._events:
            return False
        _remember(self._events, event_id, None, self.max_events)
        for doc, delta in deltas:
            _increment(self._pairs, (query, doc), delta, self.max_pairs)
            _increment(self._docs, doc, delta, self.max_docs)
        return True

    def get_state(self, name: str) -> dict[str, Any] | None:
        return self._states.get(name)

    def put_state(self, name: str, state: dict[str, Any]) -> None:
        self._states[name] = state

    def __len__(self) -> int:
        return len(self._pairs)

    def state_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready lists (pairs and documents oldest first; trailing zero
        fields left out, which ``Stats.from_list`` reads back as zeros)."""
        return {
            "pairs": [[q, d, _trimmed(s.to_list())] for (q, d), s in self._pairs.items()],
            "docs": [[d, _trimmed(s.to_list())] for d, s in self._docs.items()],
            "events": list(self._events),
            "states": self._states,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pairs = OrderedDict(((q, d), Stats.from_list(s)) for q, d, s in state["pairs"])
        self._docs = OrderedDict((d, Stats.from_list(s)) for d, s in state["docs"])
        self._events = OrderedDict((e, None) for e in state["events"])
        self._states = dict(state["states"])


def _trimmed(values: list[float]) -> list[float]:
    while values and not values[-1]:
        values.pop()
    return values


def _copy(stats: Stats | None) -> Stats:
    if stats is None:
        return Stats()
    return Stats(*stats.to_list())


def _remember(table: OrderedDict, key: Any, value: Any, cap: int) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > cap:
        table.popitem(last=False)


def _increment(table: OrderedDict, key: Any, delta: Stats, cap: int) -> None:
    current = table.get(key)
    if current is None:
        current = Stats()
    current.add(delta)
    _remember(table, key, current, cap)


# -- the ranker ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankerConfig:
    """Knobs of :class:`OnlineRanker` (defaults tuned in the offline simulator, docs/learning.md).

    attract_bins, satisfy_bins
        Grid resolution of the posterior over attractiveness and satisfaction.
    prior_slope
        Initial tilt of the prior towards the starting ranker's within-list z-score: how sure
        the ranker is, before any click, that higher-scored candidates are more attractive.
    prior_warmup
        Labels over which the served prior moves from the initial tilt to the River model.
    prior_sample_rate
        Share of shown pairs whose sampled label trains the River model.
    learning_rate
        SGD step of the River prior model.
    doc_prior_clicks
        Pseudo-examinations smoothing the document-level CTR feature.
    guard_unexplored
        Candidates with no evidence for this query keep the starting ranker's relative order
        (their prior means are made monotone in it), so a new query ranks exactly as the
        starting ranker does while clicked documents still move.
    query_features
        Give the prior the query's debiased click-through rate so far (queries with many
        relevant candidates get more credit further down).
    caution
        Posterior standard deviations subtracted from the mean for the served score. 0.25
        since the prior learns from expected rather than drawn labels (see
        ``_learn_models``): with that label noise gone, half a standard deviation held newly
        found relevant documents back for longer than it protected against lucky clicks,
        while none at all costs position-based users
        (docs/notes/2026-11-25-online-ranker-rework.md).
    sync_every
        Learned sessions between writes of the model state to the store.
    seed
        Seed of the label sampling.
    """

    attract_bins: int = 8
    satisfy_bins: int = 5
    prior_slope: float = 6.0
    prior_warmup: int = 1_500
    prior_sample_rate: float = 0.3
    learning_rate: float = 0.02
    doc_prior_clicks: float = 5.0
    guard_unexplored: bool = True
    query_features: bool = True
    caution: float = 0.25
    sync_every: int = 1_000
    seed: int = 0


@dataclass
class Scored:
    """The ranker's beliefs about one candidate list (what exploration and serving need).

    ``mean``/``std``: posterior mean and standard deviation of attractiveness; ``attract``:
    posterior over the attractiveness grid (rows sum to 1) with grid values ``levels``;
    ``base``: the starting ranker's scores (tie-break); ``evidence``: impressions of each pair
    for this query; ``stop``: probability that a user who looks at the candidate clicks it and
    is satisfied, so looks no further (posterior mean of a * s, weighted by the cascade
    family's share; zero for position-based users, whose looking does not depend on what is
    above). Exploration orders by it (:mod:`streamrank.models.learning.exploration`).
    """

    query: str
    docs: list[str]
    table: FeatureTable
    mean: np.ndarray
    std: np.ndarray
    attract: np.ndarray
    levels: np.ndarray
    base: np.ndarray
    evidence: np.ndarray
    stop: np.ndarray | None = None

    @property
    def features(self) -> list[dict[str, float]]:
        """Each candidate's prior-model features as a dict (zeros left out)."""
        return self.table.rows()

    def exploit_order(self) -> np.ndarray:
        """Indices by posterior mean, ties by the starting ranker's score."""
        return np.lexsort((-self.base, -self.mean))

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """One Thompson draw of every candidate's attractiveness."""
        cumulative = np.cumsum(self.attract, axis=1)
        draws = (cumulative < rng.random((len(self.docs), 1))).sum(axis=1)
        return self.levels[np.minimum(draws, len(self.levels) - 1)]

    def impression(
        self,
        event_id: str,
        order: Sequence[int],
        clicked: Sequence[int],
        k: int | None = None,
        randomized: bool = False,
    ) -> Impression:
        """The :class:`Impression` for showing ``order[:k]`` and seeing clicks at ``clicked``."""
        shown = list(order[: k or len(order)])
        return Impression(
            event_id=event_id,
            query=self.query,
            docs=tuple(self.docs[i] for i in shown),
            clicked=tuple(int(c) for c in clicked if c < len(shown)),
            features=tuple(self.table.rows(shown)),
            randomized=randomized,
        )


@dataclass(frozen=True)
class FeatureTable:
    """Prior-model features of a candidate list: column ``names`` and an (n, F) matrix."""

    names: list[str]
    matrix: np.ndarray

    def rows(self, index: Sequence[int] | None = None) -> list[dict[str, float]]:
        picked = self.matrix if index is None else self.matrix[list(index)]
        return [
            {n: float(v) for n, v in zip(self.names, row, strict=True) if v != 0.0}
            for row in picked
        ]

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, float]]) -> FeatureTable:
        names = sorted({name for row in rows for name in row})
        return cls(names, np.array([[row.get(n, 0.0) for n in names] for row in rows]))


class OnlineRanker:
    """Ranks candidate lists from the posterior and learns from every served impression.

    Parameters
    ----------
    store
        Where click statistics and model state live (default: a fresh :class:`InMemoryStore`).
        Saved model state in the store is loaded on construction.
    config
        :class:`RankerConfig`.
    position_bias
        The examination model (default: :class:`PositionBias` with ``family="auto"``).
    """

    def __init__(
        self,
        store: LearnerStore | None = None,
        config: RankerConfig | None = None,
        position_bias: PositionBias | None = None,
    ) -> None:
        self.store: LearnerStore = store if store is not None else InMemoryStore()
        self.config = config or RankerConfig()
        self.position_bias = position_bias or PositionBias()
        bins_a, bins_s = self.config.attract_bins, self.config.satisfy_bins
        self.levels = (np.arange(bins_a) + 0.5) / bins_a
        self.sat_levels = (np.arange(bins_s) + 0.5) / bins_s
        self.prior = _PriorModel(bins_a, self.config)
        # T(s | a) as expected counts; a flat start means satisfaction says nothing until learned
        self.sat_table = np.ones((bins_a, bins_s))
        self.learned = 0
        self.learned_sat = 0
        self._rng = np.random.default_rng(self.config.seed)
        self.load()

    # -- serving ------------------------------------------------------------------------------

    def score_one(
        self,
        query: str,
        candidates: Sequence[ScoredCandidate],
        user: Mapping[str, float] | None = None,
    ) -> Scored:
        """The posterior for every candidate of one request (the ``predict`` verb)."""
        docs = [c.doc_id for c in candidates]
        base = base_scores(candidates)
        stats = self.store.pair_stats(query, docs)
        table = self._features(candidates, user or {}, stats)
        log_prior = self.prior.log_proba(table)
        joints = self._family_joints(log_prior, stats)
        attract, mean, std = self._moments(_mix(joints))
        stop = np.zeros(len(docs))
        if "cascade" in joints:
            weight, joint = joints["cascade"]
            stop = weight * np.einsum("nas,a,s->n", joint, self.levels, self.sat_levels)
        evidence = np.array([s.impressions for s in stats])
        if self.config.caution:
            mean = mean - self.config.caution * std
        if self.config.guard_unexplored:
            mean = _guard(mean, base, evidence > 0)
        return Scored(query, docs, table, mean, std, attract, self.levels, base, evidence, stop)

    def rank_one(
        self,
        query: str,
        candidates: Sequence[ScoredCandidate],
        user: Mapping[str, float] | None = None,
    ) -> list[str]:
        """Document ids in the order the ranker would serve without exploration."""
        scored = self.score_one(query, candidates, user)
        return [scored.docs[i] for i in scored.exploit_order()]

    # -- learning -----------------------------------------------------------------------------

    def learn_one(self, impression: Impression) -> bool:
        """Learn from one served list and its clicks; False (and no change) for a replay."""
        docs, clicked = list(impression.docs), impression.clicked
        if not docs:
            return False
        stats = self.store.pair_stats(impression.query, docs)
        log_prior = self.prior.log_proba(FeatureTable.from_rows(impression.features))
        joints = self._family_joints(log_prior, stats)
        joint = _mix(joints)
        attract = joint.sum(2) @ self.levels
        satisfy = joint.sum(1) @ self.sat_levels
        exams, sat = self.position_bias.weights(clicked, attract, satisfy, family="cascade")
        pbm_exams, _ = self.position_bias.weights(clicked, attract, satisfy, family="pbm")
        clicks = click_mask(clicked, len(docs)).astype(float)
        skips = np.zeros((len(docs), PBM_RANKS))
        skips[np.arange(len(docs)), np.minimum(np.arange(len(docs)), PBM_RANKS - 1)] = 1 - clicks
        deltas = [
            Stats(
                1.0,
                clicks[i],
                float(exams[i]),
                float(sat[i]),
                clicks[i],
                float(pbm_exams[i]),
                *skips[i].tolist(),
            )
            for i in range(len(docs))
        ]
        if not self.store.apply(
            impression.event_id, impression.query, list(zip(docs, deltas, strict=True))
        ):
            return False
        if len(joints) == 2:  # the family is open: score this session under both, unseen
            self.position_bias.observe_family(
                clicked,
                {family: j.sum(2) @ self.levels for family, (_, j) in joints.items()},
                joints["cascade"][1].sum(1) @ self.sat_levels,
            )
        for current, delta in zip(stats, deltas, strict=True):
            current.add(delta)
        self._learn_models(impression, log_prior, stats)
        return True

    def _learn_models(
        self, impression: Impression, log_prior: np.ndarray, stats: list[Stats]
    ) -> None:
        joint = self._joint(log_prior, stats)
        self.position_bias.learn_one(
            [pair_key(impression.query, doc) for doc in impression.docs],
            impression.clicked,
            randomized=impression.randomized,
        )
        # Regression-EM: each shown pair's posterior trains the prior. The update is the
        # expected one of a label drawn from that posterior (gradient: model probabilities
        # minus posterior), not a drawn label: a drawn label from a pair with little evidence
        # is a draw from the prior itself, noise whose random walk, fed back through which
        # documents get shown, made the learned prior drift until it ranked the
        # cross-encoder's bottom candidates above its top ones (pbm users, caution 0: nDCG@10
        # 0.08 at 50 sessions per query). The expected update is zero for such pairs.
        # A sample of the shown pairs is enough (the softmax update is the hottest loop).
        marginal = joint.sum(2)
        for features, row in zip(impression.features, marginal, strict=True):
            if self._rng.random() >= self.config.prior_sample_rate:
                continue
            self.prior.learn_soft(features, row / row.sum())
        # stepwise EM for T(s | a), only from pairs whose satisfaction was observed
        observed = np.array([s.sat_clicks > 0 for s in stats])
        if observed.any() and self.position_bias.family == "cascade":
            self.learned_sat += 1
            step = (self.learned_sat + 10.0) ** -0.6
            counts = joint[observed].sum(0)
            target = counts / counts.sum() * self.sat_table.sum()
            self.sat_table = (1 - step) * self.sat_table + step * target
        self.learned += 1
        if self.learned % self.config.sync_every == 0:
            self.save()

    # -- posterior ---------------------------------------------------------------------------

    def _joint(self, log_prior: np.ndarray, stats: Sequence[Stats]) -> np.ndarray:
        """P(a_i, s_j | evidence) for each pair: (n, attract_bins, satisfy_bins)."""
        return _mix(self._family_joints(log_prior, stats))

    def _family_joints(
        self, log_prior: np.ndarray, stats: Sequence[Stats]
    ) -> dict[str, tuple[float, np.ndarray]]:
        """Each examination family's posterior with its weight (one family once chosen).

        While :class:`PositionBias` has not chosen, both readings count, by the odds the
        sessions so far give them: the posterior given an unknown family is the mixture of the
        per-family posteriors weighted by the family's posterior probability. Reading every
        session as a cascade until the choice (as before) sank the learned ranking under
        ``pbm`` users below the starting ranker (nDCG@10 0.67-0.70 at 5-10 sessions per query
        against 0.72 at the start); with the mixture it stays at 0.71-0.73.
        """
        # both are computed even when the odds are lopsided: learn_one scores every session
        # under both while the family is open, so early odds can still turn
        return {
            family: (weight, self._family_joint(family, log_prior, stats))
            for family, weight in self.position_bias.family_weights().items()
        }

    def _family_joint(
        self, family: str, log_prior: np.ndarray, stats: Sequence[Stats]
    ) -> np.ndarray:
        a, s = self.levels, self.sat_levels
        table = np.log(self.sat_table / self.sat_table.sum(1, keepdims=True))
        if family == "pbm":  # exact likelihood (see Stats), today's theta; no satisfaction
            c = np.array([s.clicks for s in stats])
            skips = np.array([s.skips for s in stats])
            theta = self.position_bias.relative_theta(PBM_RANKS)
            log_a = log_prior + c[:, None] * np.log(a) + skips @ np.log1p(-np.outer(theta, a))
            log_joint = log_a[:, :, None] + table[None]
        else:
            values = np.array([(s.clicks, s.exams, s.satisfied, s.sat_clicks) for s in stats])
            c, sat = values[:, 0], values[:, 2]
            e, opp = np.maximum(values[:, 1], c), np.maximum(values[:, 3], sat)
            log_a = log_prior + c[:, None] * np.log(a) + (e - c)[:, None] * np.log1p(-a)
            log_s = sat[:, None] * np.log(s) + (opp - sat)[:, None] * np.log1p(-s)
            log_joint = log_a[:, :, None] + table[None] + log_s[:, None, :]
        log_joint -= log_joint.max(axis=(1, 2), keepdims=True)
        joint = np.exp(log_joint)
        return joint / joint.sum(axis=(1, 2), keepdims=True)

    def _moments(self, joint: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        attract = joint.sum(2)
        mean = attract @ self.levels
        std = np.sqrt(np.maximum(attract @ self.levels**2 - mean**2, 0.0))
        return attract, mean, std

    # -- features ----------------------------------------------------------------------------

    def _features(
        self,
        candidates: Sequence[ScoredCandidate],
        user: Mapping[str, float],
        stats: Sequence[Stats],
    ) -> FeatureTable:
        n = len(candidates)
        columns: dict[str, np.ndarray] = {"base_z": _list_features(base_scores(candidates))[0]}
        for kind in SCORE_KINDS:
            values = [getattr(c, kind) for c in candidates]
            if all(v is None for v in values):
                continue
            columns[f"{kind}_z"], columns[f"{kind}_top"] = _list_features(values)
            if kind == "ce":  # absolute relevance across queries, bounded
                columns["ce_raw"] = np.tanh(np.array([v or 0.0 for v in values]) / 5.0)
        # document-level evidence from *other* queries: this pair's own clicks are already the
        # posterior's evidence, and counting them in the prior too would count them twice
        pbm = self.position_bias.family == "pbm"
        docs = self.store.doc_stats([c.doc_id for c in candidates])
        own = np.array([(s.clicks, s.pbm_exams if pbm else s.exams) for s in stats])
        other = np.array([(d.clicks, d.pbm_exams if pbm else d.exams) for d in docs]) - own
        clicks, exams = np.maximum(other[:, 0], 0.0), np.maximum(other[:, 1], 0.0)
        if (exams > 1e-9).any():
            k, seen = self.config.doc_prior_clicks, exams > 1e-9
            columns["doc_ctr"] = np.where(seen, (clicks + 0.5 * k) / (exams + k) - 0.5, 0.0)
            columns["doc_log_exams"] = np.log1p(exams) / 5.0
        if self.config.query_features:
            clicks = sum(s.clicks for s in stats)
            exams = sum(s.pbm_exams if pbm else s.exams for s in stats)
            if exams > 0:
                # how click-worthy this query's candidates are so far: rich queries have more
                # relevant documents further down, so their unexplored candidates deserve more
                ctr = (clicks + 0.5 * 10) / (exams + 10) - 0.5
                columns["query_ctr"] = np.full(n, ctr)
                columns["query_ctr_x_base"] = ctr * columns["base_z"]
        for i, candidate in enumerate(candidates):
            for name, value in candidate.features.items():
                columns.setdefault(f"item.{name}", np.zeros(n))[i] = _squash(value)
        for name, value in user.items():
            columns[f"user.{name}"] = np.full(n, _squash(value))
        names = sorted(columns)
        return FeatureTable(names, np.column_stack([columns[name] for name in names]))

    # -- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Model state (prior model, T table, position bias) as JSON-ready values."""
        return {
            "config": asdict(self.config),
            "prior": self.prior.state_dict(),
            "sat_table": self.sat_table.tolist(),
            "learned": self.learned,
            "learned_sat": self.learned_sat,
            "position_bias": self.position_bias.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prior.load_state_dict(state["prior"])
        self.sat_table = np.asarray(state["sat_table"], dtype=float)
        self.learned = int(state["learned"])
        self.learned_sat = int(state.get("learned_sat", 0))
        self.position_bias.load_state_dict(state["position_bias"])

    def save(self) -> None:
        """Write the model state into the store (the click statistics are already there)."""
        self.store.put_state("online_ranker", self.state_dict())

    def load(self) -> None:
        state = self.store.get_state("online_ranker")
        if state is not None:
            self.load_state_dict(state)


class _PriorModel:
    """P(attractiveness bin | features): River SoftmaxRegression, vectorised for serving.

    Its weights start as a tilt on ``base_z`` (the starting ranker's within-list z-score):
    higher bins likelier for higher scores. The served prior moves from that tilt to the learned
    model linearly over the first ``prior_warmup`` labels, because a softmax fitted on a few
    hundred labels from the top of a few lists extrapolates badly to the candidates nobody has
    seen yet.
    """

    def __init__(self, bins: int, config: RankerConfig) -> None:
        self.bins, self.config = bins, config
        centred = (np.arange(bins) - (bins - 1) / 2) / bins
        self.initial = {k: {"base_z": config.prior_slope * float(centred[k])} for k in range(bins)}
        self.model = self._fresh(self.initial)
        self.labels = 0

    def _fresh(self, weights: Mapping[int, Mapping[str, float]]) -> linear_model.SoftmaxRegression:
        model = linear_model.SoftmaxRegression(optimizer=optim.SGD(self.config.learning_rate))
        for k, row in weights.items():
            model.weights[int(k)].update(row)
        return model

    def log_proba(self, table: FeatureTable) -> np.ndarray:
        """log P(bin | features) for every row, (n, bins)."""
        names = [*table.names, "bias"]
        x = np.column_stack([table.matrix, np.ones(len(table.matrix))])
        # the learned model takes over gradually, so the prior never jumps at a checkpoint
        share = (
            min(1.0, self.labels / self.config.prior_warmup) if self.config.prior_warmup else 1.0
        )
        logits = (1.0 - share) * (x @ self._matrix(self.initial, names).T)
        if share > 0:
            logits += share * (x @ self._matrix(self.model.weights, names).T)
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def _matrix(self, weights: Mapping[int, Mapping[str, float]], names: list[str]) -> np.ndarray:
        return np.array(
            [
                [weights[k].get(n, 0.0) if k in weights else 0.0 for n in names]
                for k in range(self.bins)
            ]
        )

    def learn_one(self, row: Mapping[str, float], label: int) -> None:
        self.model.learn_one({**row, "bias": 1.0}, label)
        self.labels += 1

    def learn_soft(self, row: Mapping[str, float], target: np.ndarray) -> None:
        """One SGD step of the softmax towards a distribution over bins (a soft label).

        River's own ``learn_one`` step for a label y, with the one-hot y replaced by
        ``target``: the cross-entropy gradient for bin k is (P(k | x) - target_k) * x, applied
        by each bin's River optimizer. It is the expected step of a label drawn from
        ``target``.
        """
        x = {**row, "bias": 1.0}
        model = self.model
        for k, weights in model.weights.items():
            model.optimizers[k].look_ahead(w=weights)
        proba = model.predict_proba_one(x)
        for k in range(self.bins):
            g = proba.get(k, 0.0) - float(target[k])
            weights = model.weights[k]
            model.weights[k] = model.optimizers[k].step(
                w=weights, g={name: value * g for name, value in x.items()}
            )
        self.labels += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "weights": {str(k): dict(v) for k, v in self.model.weights.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.labels = int(state["labels"])
        self.model = self._fresh({int(k): v for k, v in state["weights"].items()})


# -- helpers -----------------------------------------------------------------------------------


def _mix(joints: Mapping[str, tuple[float, np.ndarray]]) -> np.ndarray:
    """The weighted mixture of per-family posteriors (weights sum to 1)."""
    parts = list(joints.values())
    if len(parts) == 1:
        return parts[0][1]
    return sum(weight * joint for weight, joint in parts)


def base_scores(candidates: Sequence[ScoredCandidate]) -> np.ndarray:
    """The starting ranker's score: cross-encoder, else dense, else first stage, else order."""
    for kind in SCORE_KINDS:
        values = [getattr(c, kind) for c in candidates]
        if any(v is not None for v in values):
            floor = min(v for v in values if v is not None)
            return np.array([floor - 1.0 if v is None else float(v) for v in values])
    return -np.arange(len(candidates), dtype=float)


def _list_features(values: Sequence[float | None] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Within-list z-score and rank discount 1/log2(2 + rank) of one score."""
    present = [v for v in values if v is not None]
    floor = min(present) if present else 0.0
    x = np.array([floor if v is None else float(v) for v in values])
    z = (x - x.mean()) / (x.std() + 1e-9) if len(x) > 1 else np.zeros(len(x))
    ranks = np.empty(len(x))
    ranks[np.argsort(-x, kind="stable")] = np.arange(len(x))
    return z, 1.0 / np.log2(2.0 + ranks)


def _squash(value: float) -> float:
    """Item and user features enter bounded, so one huge value cannot swamp the model."""
    return math.tanh(float(value))


def _guard(mean: np.ndarray, base: np.ndarray, has_evidence: np.ndarray) -> np.ndarray:
    """Make the means of evidence-free candidates non-increasing in the starting ranker's order.

    Pool-adjacent-violators over those candidates sorted by base score: their relative order
    becomes the starting ranker's, their average level stays the prior's.
    """
    free = np.flatnonzero(~has_evidence)
    if len(free) < 2:
        return mean
    order = free[np.argsort(-base[free], kind="stable")]
    fitted = _isotonic_decreasing(mean[order])
    out = mean.copy()
    out[order] = fitted
    return out


def _isotonic_decreasing(values: np.ndarray) -> np.ndarray:
    blocks: list[list[float]] = []  # [sum, count]
    for v in values:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return np.concatenate([np.full(int(c), s / c) for s, c in blocks])
