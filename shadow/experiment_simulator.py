"""Simulated users against a primary and a shadow ranker: interleaving against an A/B split.

How many sessions does each way of comparing two rankers need before it names the better one
(p < alpha) and names it right? Each *seed* is one simulated experiment:

- **interleaving**: a session picks a random query, team-drafts the two rankers' top ``k``
  (:func:`streamrank.shadow.interleaving.team_draft`), a simulated user
  (:mod:`streamrank.models.learning.click_models`) clicks, and the ranker with more credited clicks
  wins the session. The always-valid :class:`~streamrank.shadow.statistics.SequentialTest` (mSPRT)
  decides; the binomial :func:`~streamrank.shadow.statistics.sign_test` is checked at the same peeks
  for comparison (a fixed-horizon test, so peeking inflates its false positives).
- **A/B**: a session's simulated user id is hashed to one arm (50/50), which alone shows that
  user its top ``k``. The metric is CTR (sessions with at least one click), with clicks@k and
  the reciprocal rank of the first click (MRR) beside it; each is tested with Welch's t-test
  (:func:`~streamrank.shadow.statistics.two_sample_p_value`, here from running sums) at the same
  peeks, and CTR also with an always-valid two-sample mSPRT (:class:`TwoSampleSequentialTest`).

Both methods see the same sequence of queries. A test *decides* at the first peek where its
p-value is below alpha, and stops there, as an operator would; the decision is *correct* when
its winner is the ranker with the higher mean nDCG@10 on the judgments. A seed's
sessions-to-decision is that peek for a correct decision, and the cap for a wrong decision or
none. With no right winner (same ranker on both sides, or equal nDCG), every decision is a
false one.

Examples
--------
Two rankers of one query; only the shadow puts the relevant documents in its top 10:

>>> docs = [f"d{i}" for i in range(20)]
>>> query = ShadowQuery("q1", {d: 3 for d in docs[:4]}, tuple(docs[4:]), tuple(docs))
>>> run = simulate_seed([query], "informational", seed=0, max_sessions=5000)
>>> run.tests["interleaving"].winner, run.tests["interleaving"].sessions
('shadow', 20)
>>> run.tests["ab"].winner, run.tests["ab"].sessions  # A/B on CTR
('shadow', 940)
>>> print(round(run.ab_means["shadow"]["ctr"] - run.ab_means["primary"]["ctr"], 4))
0.0102
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from streamrank.models.evaluation.metrics import ndcg_at_k
from streamrank.models.learning.click_models import click_model
from streamrank.models.progress import ProgressReporter, SilentProgress
from streamrank.models.retrieval.corpus import CACHE_DIR
from streamrank.shadow.interleaving import PRIMARY, SHADOW, Interleaving, team_draft
from streamrank.shadow.statistics import SequentialTest, sign_test

K = 10
ALPHA = 0.05
AB_TAU = 0.1
"""Mixture scale of the A/B mSPRT, in standard deviations of the metric (see docs/shadow.md)."""
INTERLEAVING_TESTS = ("interleaving", "interleaving_sign_test")
AB_METRICS = ("ctr", "clicks@10", "mrr")
AB_TESTS = ("ab", "ab_always_valid", "ab_clicks@10", "ab_mrr")
TESTS = INTERLEAVING_TESTS + AB_TESTS
Progress = Callable[[int], None]
"""Called with the number of sessions (of the cap) just simulated."""


# -- the queries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShadowQuery:
    """One query: its judgments and both rankers' rankings (best first)."""

    qid: str
    judged: Mapping[str, int]
    primary: tuple[str, ...]
    shadow: tuple[str, ...]

    def grades(self, docs: Sequence[str]) -> list[int]:
        """True grades of these documents (unjudged: 0)."""
        return [int(self.judged.get(doc, 0)) for doc in docs]


def build_queries(
    primary: Mapping[str, Sequence[str]],
    shadow: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
) -> list[ShadowQuery]:
    """The queries both rankers ranked that have judgments, in the primary's order."""
    return [
        ShadowQuery(qid, dict(qrels[qid]), tuple(primary[qid]), tuple(shadow[qid]))
        for qid in primary
        if qid in shadow and qrels.get(qid)
    ]


def mean_ndcg(queries: Sequence[ShadowQuery], side: str, k: int = K) -> float:
    """Mean nDCG@k (trec_eval ``ndcg_cut``) of one side's rankings."""
    if not queries:
        return 0.0
    return float(np.mean([ndcg_at_k(getattr(q, side), q.judged, k) for q in queries]))


def right_winner(queries: Sequence[ShadowQuery], k: int = K) -> str | None:
    """The side with the higher mean nDCG@k; ``None`` when they are equal (an A/A test)."""
    primary, shadow = mean_ndcg(queries, PRIMARY, k), mean_ndcg(queries, SHADOW, k)
    if math.isclose(primary, shadow, rel_tol=0.0, abs_tol=1e-12):
        return None
    return SHADOW if shadow > primary else PRIMARY


# -- the tests --------------------------------------------------------------------------------


def peek_schedule(max_sessions: int, step: int = 10, growth: float = 0.01) -> list[int]:
    """Session counts at which every test is checked: every ``step`` sessions, then every 1%.

    Examples
    --------
    >>> peeks = peek_schedule(5000)
    >>> peeks[:3], peeks[-1], len(peeks)
    ([10, 20, 30], 5000, 230)
    """
    peeks, n = [], step
    while n < max_sessions:
        peeks.append(n)
        n = max(n + step, math.ceil(n * (1 + growth) / step) * step)
    peeks.append(max_sessions)
    return peeks


@dataclass
class Moments:
    """Running count, sum and sum of squares of one arm's per-session metric."""

    n: int = 0
    total: float = 0.0
    squares: float = 0.0

    def add(self, value: float) -> None:
        self.n += 1
        self.total += value
        self.squares += value * value

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """Sample variance (ddof 1)."""
        if self.n < 2:
            return 0.0
        return max(self.squares - self.total * self.total / self.n, 0.0) / (self.n - 1)


def welch_p_value(first: Moments, second: Moments) -> float:
    """Welch's t-test from running sums.

    The same p-value as :func:`streamrank.shadow.statistics.two_sample_p_value`.
    """
    if first.n < 2 or second.n < 2:
        return 1.0
    var_a, var_b = first.variance, second.variance
    if var_a <= 1e-15 and var_b <= 1e-15:
        return 1.0 if math.isclose(first.mean, second.mean) else 0.0
    result = stats.ttest_ind_from_stats(
        first.mean, math.sqrt(var_a), first.n, second.mean, math.sqrt(var_b), second.n, False
    )
    return float(result.pvalue)


@dataclass
class TwoSampleSequentialTest:
    """Always-valid p-value for a difference of two arms' means (two-sample mSPRT).

    The estimated difference ``d = mean_b - mean_a`` has variance ``V = s_a^2/n_a +
    s_b^2/n_b``; with a normal mixture ``N(0, tau^2)`` over the true difference the mixture
    likelihood ratio is ``sqrt(V / (V + tau^2)) exp(tau^2 d^2 / (2 V (V + tau^2)))`` (Johari,
    Pekelis and Walsh 2017; the form Optimizely's Stats Engine uses), and ``p`` is the
    running minimum of its reciprocal. ``tau`` is given in standard deviations of the metric.
    """

    tau: float = AB_TAU
    p_value: float = 1.0

    def check(self, first: Moments, second: Moments) -> float:
        """Update with both arms' sums so far; returns the always-valid p-value."""
        if first.n < 2 or second.n < 2:
            return self.p_value
        var_a, var_b = first.variance, second.variance
        v = var_a / first.n + var_b / second.n
        if v <= 1e-15:
            return self.p_value
        tau2 = self.tau * self.tau * (var_a + var_b) / 2
        d = second.mean - first.mean
        log_ratio = 0.5 * math.log(v / (v + tau2)) + tau2 * d * d / (2 * v * (v + tau2))
        self.p_value = min(self.p_value, math.exp(-min(log_ratio, 700.0)), 1.0)
        return self.p_value


@dataclass
class Decision:
    """When a test first had p < alpha, for whom, and its p-value then (or at the end)."""

    sessions: int | None = None
    winner: str | None = None
    p_value: float = 1.0

    @property
    def decided(self) -> bool:
        return self.sessions is not None

    def settle(self, p_value: float, sessions: int, winner: str | None, alpha: float) -> None:
        """Record a peek; the first one with p < alpha (and a winner) is the decision."""
        if self.decided:
            return
        self.p_value = p_value
        if p_value < alpha and winner is not None:
            self.sessions, self.winner = sessions, winner


def _leader(first: float, second: float) -> str | None:
    """Who is ahead: the shadow when ``second`` is larger, the primary when ``first`` is."""
    if first == second:
        return None
    return SHADOW if second > first else PRIMARY


# -- one seed ---------------------------------------------------------------------------------


class _Coins:
    """Stands in for the generator :func:`~streamrank.shadow.interleaving.team_draft` flips coins
    with: its flips are the bits of one number (bit set: the primary picks first)."""

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def random(self) -> float:
        bit, self.bits = self.bits & 1, self.bits >> 1
        return 0.25 if bit else 0.75


class TeamDrafts:
    """A query's team-draft interleavings, one per sequence of coin flips, made once each.

    Team draft flips a coin only when both teams have picked equally often, and the next
    pick then makes them unequal, so it flips at most ``ceil(k / 2)`` coins: that many
    uniform random bits give an interleaving with exactly the distribution fresh coins would.
    A query has at most ``2 ** ceil(k / 2)`` of them (32 for k = 10): each is drafted once.
    """

    def __init__(self, query: ShadowQuery, k: int = K) -> None:
        self.query, self.k = query, k
        self.primary, self.shadow = list(query.primary[:k]), list(query.shadow[:k])
        self._made: dict[int, tuple[Interleaving, list[int]]] = {}

    def draft(self, bits: int) -> tuple[Interleaving, list[int]]:
        """The interleaving these coin flips give, with its documents' true grades."""
        made = self._made.get(bits)
        if made is None:
            shown = team_draft(self.primary, self.shadow, self.k, _Coins(bits))  # type: ignore[arg-type]
            made = self._made[bits] = (shown, self.query.grades(shown.docs))
        return made


@dataclass
class SeedRun:
    """One seeded experiment: each test's decision and what the sessions looked like."""

    seed: int
    tests: dict[str, Decision]
    outcomes: dict[str, int]
    ab_means: dict[str, dict[str, float]]
    ab_sessions: dict[str, int]
    sessions: dict[str, int]

    def to_dict(self, winner: str | None) -> dict[str, Any]:
        return {
            "seed": self.seed,
            **{
                name: {
                    "sessions": d.sessions,
                    "winner": d.winner,
                    "correct": d.decided and winner is not None and d.winner == winner,
                    "p_value": d.p_value,
                }
                for name, d in self.tests.items()
            },
            "interleaving_outcomes": self.outcomes,
            "ab_means": self.ab_means,
            "ab_arm_sessions": self.ab_sessions,
            "sessions_simulated": self.sessions,
        }


def ab_arm(user_id: str) -> str:
    """The A/B arm of a user: a stable 50/50 split on a hash of the id.

    Examples
    --------
    >>> ab_arm("user-7"), ab_arm("user-7") == ab_arm("user-7")
    ('primary', True)
    """
    return SHADOW if hashlib.blake2b(user_id.encode(), digest_size=8).digest()[0] & 1 else PRIMARY


def simulate_seed(
    queries: Sequence[ShadowQuery],
    user: str,
    seed: int,
    max_sessions: int,
    alpha: float = ALPHA,
    k: int = K,
    tau: float = 0.2,
    ab_tau: float = AB_TAU,
    progress: Progress | None = None,
) -> SeedRun:
    """Run one seeded experiment: interleaving and A/B side by side, up to ``max_sessions``.

    Each method stops simulating once all its tests have decided; the peeks are
    :func:`peek_schedule`. ``tau`` is the interleaving mSPRT's mixture scale
    (:class:`~streamrank.shadow.statistics.SequentialTest`), ``ab_tau`` the A/B one's.
    """
    if not queries:
        raise ValueError("no queries to simulate")
    clicker = click_model(user)
    # one stream per purpose, so a seed's first n sessions do not depend on the cap
    query_rng, coin_rng, il_rng, ab_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    picks = query_rng.integers(0, len(queries), size=max_sessions).tolist()
    coins = coin_rng.integers(0, 1 << (k + 1) // 2, size=max_sessions).tolist()  # TeamDrafts
    drafts = [TeamDrafts(q, k) for q in queries]
    ab_grades = [
        {PRIMARY: q.grades(q.primary[:k]), SHADOW: q.grades(q.shadow[:k])} for q in queries
    ]
    tests = {name: Decision() for name in TESTS}
    sequential = SequentialTest(tau=tau)
    outcomes = np.zeros(max_sessions, dtype=np.int8)  # +1 primary won, -1 shadow won, 0 tie
    ab_valid = TwoSampleSequentialTest(ab_tau)
    moments = {m: {PRIMARY: Moments(), SHADOW: Moments()} for m in AB_METRICS}
    il_done = ab_done = 0
    il_active = ab_active = True
    peeks = iter(peek_schedule(max_sessions))
    next_peek, reported = next(peeks), 0
    for i in range(max_sessions):
        index = picks[i]
        if il_active:
            shown, grades = drafts[index].draft(coins[i])
            clicked = clicker.clicks(grades, il_rng)
            outcome = shown.outcome([shown.docs[j] for j in clicked])
            outcomes[i] = outcome
            sequential.update(-outcome)  # the shadow's point of view
            il_done += 1
        if ab_active:
            arm = ab_arm(f"user-{seed}-{i}")
            clicked = clicker.clicks(ab_grades[index][arm], ab_rng)
            moments["ctr"][arm].add(1.0 if clicked else 0.0)
            moments["clicks@10"][arm].add(float(len(clicked)))
            moments["mrr"][arm].add(1.0 / (clicked[0] + 1) if clicked else 0.0)
            ab_done += 1
        if i + 1 != next_peek:
            continue
        n = i + 1
        if il_active:
            shadow_lead = _leader(0.0, sequential.total)
            tests["interleaving"].settle(sequential.p_value, n, shadow_lead, alpha)
            if not tests["interleaving_sign_test"].decided:
                seen = outcomes[:n]
                lead = _leader(float(np.sum(seen > 0)), float(np.sum(seen < 0)))
                tests["interleaving_sign_test"].settle(sign_test(seen), n, lead, alpha)
            il_active = not all(tests[t].decided for t in INTERLEAVING_TESTS)
        if ab_active:
            for metric, name in zip(AB_METRICS, ("ab", "ab_clicks@10", "ab_mrr"), strict=True):
                a, b = moments[metric][PRIMARY], moments[metric][SHADOW]
                tests[name].settle(welch_p_value(a, b), n, _leader(a.mean, b.mean), alpha)
            a, b = moments["ctr"][PRIMARY], moments["ctr"][SHADOW]
            tests["ab_always_valid"].settle(ab_valid.check(a, b), n, _leader(a.mean, b.mean), alpha)
            ab_active = not all(tests[t].decided for t in AB_TESTS)
        if progress:
            progress(n - reported)
            reported = n
        if not (il_active or ab_active):
            break
        next_peek = next(peeks, max_sessions + 1)
    if progress and reported < max_sessions:
        progress(max_sessions - reported)
    seen = outcomes[:il_done]
    return SeedRun(
        seed=seed,
        tests=tests,
        outcomes={
            "primary_wins": int(np.sum(seen > 0)),
            "shadow_wins": int(np.sum(seen < 0)),
            "ties": int(np.sum(seen == 0)),
        },
        ab_means={
            side: {m: moments[m][side].mean for m in AB_METRICS} for side in (PRIMARY, SHADOW)
        },
        ab_sessions={side: moments["ctr"][side].n for side in (PRIMARY, SHADOW)},
        sessions={"interleaving": il_done, "ab": ab_done},
    )


# -- many seeds -------------------------------------------------------------------------------


def summarize_test(
    runs: Sequence[SeedRun], name: str, winner: str | None, max_sessions: int
) -> dict[str, Any]:
    """Median sessions-to-decision and decision rates of one test over the seeds.

    A seed counts its decision's session when the decision is correct, else the cap; with no
    right winner (A/A) every decision is false and counts its session.
    """
    decisions = [run.tests[name] for run in runs]
    correct = [d.decided and winner is not None and d.winner == winner for d in decisions]
    false = [d.decided and not ok for d, ok in zip(decisions, correct, strict=True)]
    if winner is None:
        sessions = [d.sessions if d.sessions is not None else max_sessions for d in decisions]
    else:
        sessions = [
            d.sessions if ok and d.sessions is not None else max_sessions
            for d, ok in zip(decisions, correct, strict=True)
        ]
    seeds = len(decisions)
    capped = sum(s >= max_sessions for s in sessions)
    return {
        "median_sessions": float(statistics.median(sessions)),
        # the upper middle value is a capped run: the true median is at least this
        "median_is_lower_bound": capped >= seeds - seeds // 2,
        "sessions": sessions,
        "correct_winner_rate": None if winner is None else sum(correct) / seeds,
        "false_decision_rate": sum(false) / seeds,
        "undecided": sum(not d.decided for d in decisions),
        "wrong_winner": sum(false) if winner is not None else 0,
    }


def simulate_shadow(
    queries: Sequence[ShadowQuery],
    user: str,
    seeds: Sequence[int],
    max_sessions: int,
    alpha: float = ALPHA,
    k: int = K,
    tau: float = 0.2,
    ab_tau: float = AB_TAU,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run one experiment per seed and summarize (the ``shadow simulate --json`` object)."""
    winner = right_winner(queries, k)
    runs = [
        simulate_seed(queries, user, seed, max_sessions, alpha, k, tau, ab_tau, progress)
        for seed in seeds
    ]
    tests = {name: summarize_test(runs, name, winner, max_sessions) for name in TESTS}
    il, sign = tests["interleaving"], tests["interleaving_sign_test"]
    ab, ab_peeking = tests["ab_always_valid"], tests["ab"]

    def ratio(first: dict[str, Any], second: dict[str, Any]) -> float | None:
        return first["median_sessions"] / second["median_sessions"] if winner else None

    # The headline compares like with like: both methods decide with an always-valid
    # sequential test, the only kind an operator may check after every session. The other
    # pairings are reported too: fixed-horizon tests re-checked at every peek on both sides,
    # and the always-valid interleaving test against a peeking Welch test on CTR (which
    # favours A/B, since peeking inflates its false decisions).
    return {
        "interleaving_sessions": il["median_sessions"],
        "ab_sessions": ab["median_sessions"],
        "ratio": ratio(ab, il),
        "ratio_is_lower_bound": bool(winner)
        and ab["median_is_lower_bound"]
        and not il["median_is_lower_bound"],
        "ab_peeking_sessions": ab_peeking["median_sessions"],
        "ratio_vs_peeking_ab": ratio(ab_peeking, il),
        "interleaving_sign_test_sessions": sign["median_sessions"],
        "ratio_fixed_horizon": ratio(ab_peeking, sign),
        "correct_winner_rate": {
            "interleaving": il["correct_winner_rate"],
            "ab": ab["correct_winner_rate"],
            "ab_peeking": ab_peeking["correct_winner_rate"],
        },
        "false_decision_rate": {
            "interleaving": il["false_decision_rate"],
            "ab": ab["false_decision_rate"],
            "ab_peeking": ab_peeking["false_decision_rate"],
        },
        "undecided": {
            "interleaving": il["undecided"],
            "ab": ab["undecided"],
            "ab_peeking": ab_peeking["undecided"],
        },
        "ndcg@10": {PRIMARY: mean_ndcg(queries, PRIMARY, k), SHADOW: mean_ndcg(queries, SHADOW, k)},
        "right_winner": winner,
        "aa": winner is None,
        "tests": tests,
        "interleaving_preference": _mean_preference(runs),
        "ab_means": {
            side: {m: float(np.mean([r.ab_means[side][m] for r in runs])) for m in AB_METRICS}
            for side in (PRIMARY, SHADOW)
        },
        "settings": {
            "click_model": user,
            "seeds": list(seeds),
            "max_sessions": max_sessions,
            "alpha": alpha,
            "k": k,
            "queries": len(queries),
            "sequential_tau": tau,
            "ab_tau": ab_tau,
            "peeks": "every 10 sessions, then every 1% (rounded up to 10)",
        },
        "per_seed": [run.to_dict(winner) for run in runs],
    }


def _mean_preference(runs: Sequence[SeedRun]) -> float:
    """Pooled Delta for the shadow over every interleaved session (0.5 = no preference)."""
    wins = sum(r.outcomes["shadow_wins"] for r in runs)
    ties = sum(r.outcomes["ties"] for r in runs)
    total = wins + ties + sum(r.outcomes["primary_wins"] for r in runs)
    return (wins + ties / 2) / total - 0.5 if total else 0.0


# -- pipeline rankings, cached ----------------------------------------------------------------


@dataclass
class PipelineRankings:
    """Every query's full ranking by one pipeline (``eval rerank``'s cascade)."""

    pipeline: str
    rankings: dict[str, list[str]]
    model_version: str
    cache_file: str | None = None
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def model_identity(spec: str, model_dir: str | Path, max_length: int) -> str:
    """What a pipeline's rankings depend on besides the candidates: models and max length.

    Verifies the models the pipeline needs first (``ModelFilesError`` names the fetch
    command) and hashes every ONNX file of their folders, so a re-fetched or re-derived
    model never hits stale rankings. ``first-stage`` needs no model.
    """
    from streamrank.models.assets.model_files import MODELS, sha256_file, verify_models
    from streamrank.models.assets.student_files import student_folder
    from streamrank.models.scoring.cascade import parse_pipeline
    from streamrank.models.scoring.factory import FOLDERS

    needed = sorted({stage.tier for stage in parse_pipeline(spec)})
    if not needed:
        return "no-models"
    root = Path(model_dir).expanduser()
    folders = {FOLDERS[tier] for tier in needed if tier in FOLDERS}
    verify_models(root, tuple(m for m in MODELS if m.folder in folders))
    parts = [
        f"{folder}/{path.name}={sha256_file(path)[:12]}"
        for folder in sorted(folders)
        for path in sorted((root / folder).glob("*.onnx"))
    ]
    for stage in parse_pipeline(spec):
        if stage.tier == "student":  # named by hash, or the shipped one: hash it either way
            model = student_folder(root, stage.model) / "model.onnx"
            parts.append(f"student/model.onnx={sha256_file(model)[:12]}")
    return ";".join([f"L{max_length}", *parts])


def rankings_cache_path(
    candidates: Path, spec: str, identity: str, cache_dir: Path = CACHE_DIR / "shadow"
) -> Path:
    """Where a pipeline's rankings of a candidate file are cached (file hash, spec, models)."""
    digest = hashlib.sha256(candidates.read_bytes()).hexdigest()[:16]
    key = hashlib.sha256(f"{spec}|{identity}".encode()).hexdigest()[:12]
    return cache_dir / f"rankings-{digest}-{_safe(spec)}-{key}.json"


def pipeline_rankings(
    candidates: Path,
    spec: str,
    model_dir: str | Path,
    max_length: int = 256,
    cache_dir: Path = CACHE_DIR / "shadow",
    score_dir: Path = CACHE_DIR / "simulate",
    progress: ProgressReporter | None = None,
    vector_cache: Any = None,
    fusion: Any = None,
) -> PipelineRankings:
    """Each query's ranking by ``spec`` with the real cascade, computed once and cached.

    Parameters
    ----------
    candidates
        rank_llm candidate file.
    spec
        Pipeline spec of ``streamrank eval rerank`` (``first-stage``, ``dense``, ``ce``,
        ``dense>ce:30``, ...).
    model_dir
        The model directory of ``streamrank models fetch``.
    max_length
        Cross-encoder tokens per pair.
    cache_dir
        Where rankings are cached, keyed by candidate file hash, spec and model identity.
    score_dir
        ``streamrank simulate``'s cross-encoder score cache (same file hash and model
        version keys): the cascade's score cache starts from it, and a run that scored every
        candidate writes it when it is missing.
    progress
        Told about each stage (encoding, ranking); silent by default.
    vector_cache
        Document vectors for the dense and ColBERT tiers; pass one cache to several calls
        so pipelines that share a tier encode the documents once.
    fusion
        How the tiers' scores combine (a :class:`~streamrank.models.scoring.fusion.Fusion`);
        ``None``: the cascade's default. Part of the cache key.

    Raises
    ------
    streamrank.models.scoring.cascade.PipelineError
        On a bad spec.
    streamrank.models.assets.model_files.ModelFilesError
        When a model the pipeline needs is missing (names ``streamrank models fetch``).
    """
    from streamrank.models.scoring.cascade import Cascade, parse_pipeline
    from streamrank.models.scoring.fusion import DEFAULT_FUSION

    parse_pipeline(spec)
    fusion = DEFAULT_FUSION if fusion is None else fusion
    identity = model_identity(spec, model_dir, max_length)
    if parse_pipeline(spec) and fusion.active:
        identity += f";fusion={fusion}"
    path = rankings_cache_path(candidates, spec, identity, cache_dir)
    if path.exists():
        saved = json.loads(path.read_text())
        return PipelineRankings(spec, saved["rankings"], saved["model_version"], str(path), True)
    from streamrank.models.evaluation.rerank import encode_documents, load_candidates

    queries = load_candidates(candidates)
    if parse_pipeline(spec):
        from streamrank.models.scoring.factory import build_cascade
        from streamrank.models.scoring.score_cache import InMemoryCache

        scores = InMemoryCache(max_items=None)
        cascade = build_cascade(
            spec,
            Path(model_dir).expanduser(),
            max_length,
            score_cache=scores,
            vector_cache=vector_cache,
        ).with_fusion(fusion)
    else:
        cascade, scores = Cascade(spec, {}), None
    score_file = _seed_scores(cascade, scores, queries, candidates, score_dir)
    rankings: dict[str, list[str]] = {}
    progress = progress or SilentProgress()
    encode_documents(cascade, queries, progress)
    with progress.stage(f"ranking ({spec})", len(queries)) as advance:
        for query in queries:
            rankings[query.qid] = cascade.rank(query.text, query.candidates).doc_ids
            advance(1)
    if score_file is not None and not score_file.exists():
        _save_scores(cascade, scores, queries, score_file)
    _write_json(
        path, {"pipeline": spec, "model_version": cascade.model_version, "rankings": rankings}
    )
    return PipelineRankings(spec, rankings, cascade.model_version, str(path), False)


def _score_items(cascade: Any, queries: Sequence[Any]) -> tuple[str, list[list[str]]] | None:
    """The cross-encoder's version and each query's score keys, in candidate order."""
    from streamrank.models.scoring.score_cache import score_key

    tier = cascade.tiers.get("ce")
    if tier is None:
        return None
    keys = [
        [score_key(tier.version, q.text, c.doc_id, c.text or "") for c in q.candidates]
        for q in queries
    ]
    return tier.version, keys


def _seed_scores(
    cascade: Any, scores: Any, queries: Sequence[Any], candidates: Path, score_dir: Path
) -> Path | None:
    """Fill the cascade's score cache from ``streamrank simulate``'s cached scores, if any."""
    items = _score_items(cascade, queries)
    if items is None or scores is None:
        return None
    version, keys = items
    digest = hashlib.sha256(candidates.read_bytes()).hexdigest()[:16]
    path = score_dir / f"scores-{digest}-{_safe(version)}.json"
    if path.exists():
        saved = json.loads(path.read_text())
        for query, query_keys in zip(queries, keys, strict=True):
            values = saved.get(query.qid)
            if values is not None and len(values) == len(query_keys):
                scores.set_many(dict(zip(query_keys, map(float, values), strict=True)))
    return path


def _save_scores(cascade: Any, scores: Any, queries: Sequence[Any], path: Path) -> None:
    """Write ``streamrank simulate``'s score file when every candidate got a score."""
    items = _score_items(cascade, queries)
    if items is None:
        return
    out = {}
    for query, query_keys in zip(queries, items[1], strict=True):
        values = scores.get_many(query_keys)
        if any(v is None for v in values):
            return
        out[query.qid] = [float(v) for v in values]
    _write_json(path, out)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)  # atomic: a killed run never leaves a half-written cache
