"""Position bias: how likely a user is to look at each rank, estimated online from clicks.

A click needs two things: the user examined the result, and it attracted them. Learning
relevance from clicks means dividing out the first, so this module fits a *click model* to a
bounded window of logged sessions by expectation-maximisation and hands the learner, for each
new session, how much each shown position was examined and (for cascade users) whether the
last click satisfied the user.

Two model families are fitted, and the one that predicts held-out sessions better is used
(``family="auto"``, the default):

- ``pbm``, the position-based model: rank r is examined with probability theta_r, independently
  of everything else (Richardson et al. 2007). Fitted by EM over (query, doc, position) click
  data, the Regression-EM recipe of Wang et al. (2018) with a per-pair attractiveness.
- ``cascade``, the simplified dynamic Bayesian network (SDBN, Chapelle & Zhang 2009): users scan
  top-down, and after clicking a result stop if it satisfied them. Everything above the last
  click was examined; below it, only if the last click did not satisfy.

Where the ``pbm`` theta comes from: clicks per impression at each rank in *randomized
intervention* lists (the exploit top 10 in a uniformly random order, RandTop-k of Joachims et
al. 2017, served by :mod:`streamrank.models.learning.exploration` only while the ``pbm`` family is
in use), over the same at rank 1. Every other list's order depends on the documents' own past clicks
(Thompson sampling, uncertainty-first ordering), and every estimator fitted on such adaptive logs is
biased, the per-pair EM above in a direction set by how the sparse pairs' attractiveness is
smoothed. The randomized ratio needs no model of attractiveness at all; its error is click
noise, which shrinks with the number of intervention lists
(docs/notes/2026-11-25-online-ranker-rework.md). Until
``min_interventions`` of them are in, theta is the EM estimate (with a hierarchical prior on
attractiveness and over-relaxed steps, see :func:`_fit_pbm`). The EM fits also decide the
family, by held-out likelihood.

Until that first decision (``min_sessions`` into the stream) the family is open, and reading
every session as a cascade (the old default) misreads position-based users: a result at
rank 9 above a click, or in a list nobody clicked, counts as examined and rejected. So the
learner keeps the *prequential* log Bayes factor of the two families
(:meth:`PositionBias.observe_family`: each session's likelihood under each family, from the
learner's estimates before it learns from that session, Dawid 1984) and, while the family is
open, weighs the two readings by it (:meth:`PositionBias.family_weights`). Randomized
interventions start as soon as it favours ``pbm``, so theta comes from them from the first
fit on instead of from the biased EM estimate.

Examples
--------
>>> import numpy as np
>>> from streamrank.models.learning.click_models import click_model
>>> rng, user = np.random.default_rng(0), click_model("pbm")
>>> bias = PositionBias(positions=4, family="pbm", refit_every=500)
>>> for _ in range(3000):
...     docs = rng.permutation(8)[:4]              # every document visits every rank
...     clicked = user.clicks([int(d) % 4 for d in docs], rng)
...     bias.learn_one([f"q:{d}" for d in docs], clicked)
>>> bias.family, np.allclose(bias.estimates(), [1, 1 / 2, 1 / 3, 1 / 4], atol=0.02)
('pbm', True)
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

FAMILIES = ("auto", "pbm", "cascade")
_EPS = 1e-6


def pair_key(*parts: Hashable) -> int:
    """A stable 63-bit integer for a (query, doc) pair: compact in the window and checkpoints."""
    text = "\x1f".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") >> 1


def click_mask(clicked: Sequence[int], n: int) -> np.ndarray:
    """Which of ``n`` shown ranks were clicked (clicked ranks at or past ``n`` are ignored)."""
    mask = np.zeros(n, dtype=bool)
    mask[[c for c in clicked if c < n]] = True
    return mask


class PositionBias:
    """Examination propensities estimated online by EM over a window of logged sessions.

    Parameters
    ----------
    positions
        How many ranks are shown (and modelled).
    family
        ``"pbm"``, ``"cascade"`` or ``"auto"`` (pick by held-out likelihood once
        ``min_sessions`` sessions are in the window; ``initial_family`` until then).
    window
        How many recent sessions the fit sees; memory is bounded by it.
    refit_every
        Sessions between refits, or a quarter of the window if that is more (a refit is a few
        numpy passes over the window; in a stream, run :meth:`fit` off the hot path).
    iterations
        EM iterations of the first fit; later ones start from it and run a quarter as many.
    min_sessions
        Sessions needed before the family is chosen from data.
    initial_family
        The family used until ``min_sessions`` sessions are in.
    min_interventions
        Randomized intervention lists needed before theta comes from them alone.
    recheck_every
        Once chosen, the family is re-checked on every this many refits.
    """

    def __init__(
        self,
        positions: int = 10,
        family: str = "auto",
        window: int = 20_000,
        refit_every: int = 500,
        iterations: int = 40,
        min_sessions: int = 500,
        initial_family: str = "cascade",
        min_interventions: int = 200,
        recheck_every: int = 10,
    ) -> None:
        if family not in FAMILIES or initial_family not in FAMILIES[1:]:
            raise ValueError(f"family must be one of {FAMILIES}")
        self.positions = positions
        self.requested = family
        self.window = window
        self.refit_every = refit_every
        self.iterations = iterations
        self.min_sessions = min_sessions
        self.min_interventions = min_interventions
        self.recheck_every = recheck_every
        self.family = family if family != "auto" else initial_family
        # theta starts flat-ish (not at the answer): 1/sqrt(rank) is a guess EM moves away from.
        self.theta = 1.0 / np.sqrt(np.arange(1, positions + 1))
        self.scores: dict[str, float] = {}
        self._sessions: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=window)
        self._since_fit = 0
        self._alpha: tuple[np.ndarray, np.ndarray] | None = None
        self._fits = 0
        # clicks and impressions per rank in randomized intervention lists (see estimates())
        self.randomized = np.zeros((2, positions))
        # log P(sessions | pbm) - log P(sessions | cascade), prequential (see observe_family)
        self.family_log_odds = 0.0

    # -- learning -------------------------------------------------------------------------

    @property
    def undecided(self) -> bool:
        """Whether the family is still open (``"auto"`` before the first held-out choice)."""
        return self.requested == "auto" and not self.scores

    @property
    def wants_interventions(self) -> bool:
        """Whether randomized intervention lists are needed: for the ``pbm`` family, and while
        the family is open and the sessions so far favour it (so theta comes from them, not
        from the biased EM fit, from the moment ``pbm`` is chosen)."""
        return self.family == "pbm" or (self.undecided and self.family_log_odds > 0)

    def family_weights(self) -> dict[str, float]:
        """How much each family's reading of the evidence counts: all on the chosen family,
        or, while it is open, the posterior odds from :meth:`observe_family` (even odds to
        start)."""
        if not self.undecided:
            return {self.family: 1.0}
        w = 1.0 / (1.0 + np.exp(-np.clip(self.family_log_odds, -50.0, 50.0)))
        return {"cascade": float(1.0 - w), "pbm": float(w)}

    def relative_theta(self, n: int) -> np.ndarray:
        """Examination probability of the first ``n`` ranks relative to rank 1 (at most 1);
        ranks past ``positions`` share the last one's."""
        ranks = np.minimum(np.arange(n), self.positions - 1)
        return np.minimum(self.theta[ranks] / self.theta[0], 1.0)

    def observe_family(
        self,
        clicked: Sequence[int],
        attract: dict[str, np.ndarray],
        satisfy: np.ndarray,
    ) -> None:
        """Add one session's log-likelihood ratio of ``pbm`` over ``cascade`` to the family
        odds. ``attract`` holds each family's estimate for the shown documents and ``satisfy``
        the cascade's, all from *before* learning from this session (prequential, so the
        odds are an honest out-of-sample comparison, not a fit to the same clicks)."""
        a_c = np.clip(attract["cascade"], _EPS, 1 - _EPS)
        a_p = np.clip(attract["pbm"], _EPS, 1 - _EPS)
        s = np.clip(satisfy, _EPS, 1 - _EPS)
        n = len(a_c)
        clicks = click_mask(clicked, n)
        p = np.clip(self.relative_theta(n) * a_p, _EPS, 1 - _EPS)
        pbm = float(np.where(clicks, np.log(p), np.log1p(-p)).sum())
        if clicks.any():
            last = int(np.flatnonzero(clicks)[-1])
            seen = slice(0, last + 1)
            cascade = float(np.where(clicks[seen], np.log(a_c[seen]), np.log1p(-a_c[seen])).sum())
            cascade += float(np.log1p(-s[:last][clicks[:last]]).sum())  # went on after clicks
            quiet = float(np.prod(1.0 - a_c[last + 1 :]))
            cascade += float(np.log(s[last] + (1.0 - s[last]) * quiet))
        else:
            cascade = float(np.log1p(-a_c).sum())
        self.family_log_odds += pbm - cascade

    def learn_one(
        self, pairs: Sequence[Hashable], clicked: Sequence[int], randomized: bool = False
    ) -> None:
        """Log one session: the shown pairs in rank order, the 0-based clicked ranks, and
        whether the order was a randomized intervention."""
        keys = np.array(
            [p if isinstance(p, int) else pair_key(p) for p in pairs[: self.positions]],
            dtype=np.int64,
        )
        clicks = click_mask(clicked, len(keys))
        if randomized:
            self.randomized[0, : len(keys)] += clicks
            self.randomized[1, : len(keys)] += 1
        self._sessions.append((keys, clicks))
        self._since_fit += 1
        # refits get rarer as the window fills, so their cost per session stays flat
        if self._since_fit >= max(self.refit_every, len(self._sessions) // 4):
            self.fit()

    def fit(self) -> None:
        """Refit the click model(s) on the window and, with ``family="auto"``, pick one."""
        self._since_fit = 0
        if not self._sessions:
            return
        data = _Window.build(self._sessions, self.positions)
        alpha = None
        if self._alpha is not None:  # warm start: last fit's alpha for the pairs still here
            keys, values = self._alpha
            at = np.clip(np.searchsorted(keys, data.keys), 0, max(len(keys) - 1, 0))
            alpha = np.where(keys[at] == data.keys, values[at], 0.5) if len(keys) else None
        iterations = self.iterations if alpha is None else max(self.iterations // 4, 5)
        self.theta, fitted = _fit_pbm(data, self.theta, iterations, alpha)
        self._alpha = (data.keys, fitted)
        self._fits += 1
        clicks, shown = self.randomized
        if shown[0] >= self.min_interventions and (clicks > 0).all():
            # randomized lists: every document is equally likely at every rank, so clicks per
            # impression at rank r over rank 1 is theta_r / theta_1, with no model of alpha
            rates = clicks / shown
            self.theta = np.clip(rates / rates[0], 0.001, 1.0)
        if self.requested != "auto":
            self.family = self.requested
        elif len(self._sessions) >= self.min_sessions and (
            not self.scores or self._fits % self.recheck_every == 0
        ):  # the family is settled early; re-checking it on every refit is wasted work
            self.scores = _heldout_loglik(data, self.theta, self.iterations)
            self.family = max(self.scores, key=self.scores.__getitem__)

    # -- what the learner uses ----------------------------------------------------------

    def estimates(self) -> list[float]:
        """Marginal examination probability at each rank, relative to rank 1."""
        if self.family == "pbm" or not self._sessions:
            return (self.theta / self.theta[0]).tolist()
        data = _Window.build(self._sessions, self.positions)
        _, exam, _ = _cascade_posteriors(data, *_fit_cascade(data, self.iterations))
        rates = exam.sum(0) / np.maximum(data.shown.sum(0), 1)
        return (rates / max(rates[0], _EPS)).tolist()

    def weights(
        self,
        clicked: Sequence[int],
        attract: np.ndarray,
        satisfy: np.ndarray,
        family: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Examination and satisfaction evidence for the shown positions of one session.

        ``attract`` and ``satisfy`` are the learner's current estimates for the shown documents
        (used by the cascade family to judge whether the user stopped at the last click).
        Returns ``(exam, sat)``: expected examinations per position, and for the last click the
        probability that it satisfied the user (all zero under ``pbm``, which has no notion of
        it). Under ``pbm`` ``exam`` is theta_r for every impression: clicks over expected
        examinations (COEC) is then unbiased for attractiveness. ``family`` overrides the
        fitted choice.
        """
        n = len(attract)
        clicks = click_mask(clicked, n)
        sat = np.zeros(n)
        if (family or self.family) == "pbm":
            return self.relative_theta(n), sat
        exam = np.ones(n)
        if clicks.any():
            last = int(np.flatnonzero(clicks)[-1])
            quiet = float(np.prod(1.0 - attract[last + 1 :]))  # P(no click below | continued)
            s = float(satisfy[last])
            stopped = s / max(s + (1.0 - s) * quiet, _EPS)
            sat[last] = stopped
            exam[last + 1 :] = 1.0 - stopped
        return exam, sat

    # -- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state: parameters and the logged window (pairs as 63-bit ints)."""
        return {
            "family": self.family,
            "theta": self.theta.tolist(),
            "scores": self.scores,
            "since_fit": self._since_fit,
            "fits": self._fits,
            "sessions": [[k.tolist(), np.flatnonzero(c).tolist()] for k, c in self._sessions],
            "alpha": None if self._alpha is None else [a.tolist() for a in self._alpha],
            "randomized": self.randomized.tolist(),
            "family_log_odds": self.family_log_odds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.family = state["family"]
        self.theta = np.asarray(state["theta"], dtype=float)
        self.scores = dict(state.get("scores", {}))
        self._since_fit = int(state.get("since_fit", 0))
        self._fits = int(state.get("fits", 0))
        self.randomized = np.asarray(state.get("randomized", self.randomized), dtype=float)
        self.family_log_odds = float(state.get("family_log_odds", 0.0))
        alpha = state.get("alpha")
        self._alpha = None
        if alpha is not None:
            self._alpha = (np.asarray(alpha[0], dtype=np.int64), np.asarray(alpha[1], dtype=float))
        self._sessions.clear()
        for keys, clicked in state.get("sessions", []):
            clicks = np.zeros(len(keys), dtype=bool)
            clicks[clicked] = True
            self._sessions.append((np.asarray(keys, dtype=np.int64), clicks))


# -- EM over the window -----------------------------------------------------------------------


class _Window:
    """The logged sessions as dense (sessions x positions) arrays, pairs renumbered 0..P-1."""

    def __init__(
        self,
        pair: np.ndarray,
        clicks: np.ndarray,
        shown: np.ndarray,
        n_pairs: int,
        keys: np.ndarray | None = None,
    ):
        self.pair, self.clicks, self.shown, self.n_pairs = pair, clicks, shown, n_pairs
        self.keys = keys if keys is not None else np.arange(n_pairs)

    @classmethod
    def build(cls, sessions: Sequence[tuple[np.ndarray, np.ndarray]], positions: int) -> _Window:
        n = len(sessions)
        keys = np.zeros((n, positions), dtype=np.int64)
        clicks = np.zeros((n, positions), dtype=bool)
        shown = np.zeros((n, positions), dtype=bool)
        for i, (k, c) in enumerate(sessions):
            keys[i, : len(k)], clicks[i, : len(c)], shown[i, : len(k)] = k, c, True
        uniq, inverse = np.unique(keys[shown], return_inverse=True)
        pair = np.zeros((n, positions), dtype=np.int64)
        pair[shown] = inverse
        return cls(pair, clicks & shown, shown, len(uniq), uniq)

    def subset(self, rows: slice) -> _Window:
        rows_of = (self.pair[rows], self.clicks[rows], self.shown[rows])
        return _Window(*rows_of, self.n_pairs, self.keys)


def _pair_mean(data: _Window, values: np.ndarray, prior: float, prior_n: float = 1.0) -> np.ndarray:
    """Per-pair mean of ``values`` over its impressions, smoothed towards ``prior``."""
    sums = np.bincount(data.pair[data.shown], values[data.shown], data.n_pairs)
    counts = np.bincount(data.pair[data.shown], None, data.n_pairs)
    return (sums + prior * prior_n) / (counts + prior_n)


def _fit_pbm(
    data: _Window,
    theta: np.ndarray,
    iterations: int,
    alpha: np.ndarray | None = None,
    relax: float = 1.8,
) -> tuple[np.ndarray, np.ndarray]:
    """EM for theta (per rank) and alpha (per pair); theta is normalised to theta_1 = 1.

    Most pairs are seen a handful of times, and with a free alpha each they bias theta (the
    incidental-parameter problem, in a direction set by how alpha is smoothed). So alpha gets a
    hierarchical prior: one pseudo-impression at the mean attractiveness per impression, itself
    re-estimated every iteration (empirical Bayes). Plain EM crawls along the theta/alpha trade-off,
    so every step is over-relaxed by ``relax`` (1 = plain EM), and refits start from the previous
    fit's theta and alpha.
    """
    theta = np.clip(theta, 0.01, 1.0)
    alpha = np.full(data.n_pairs, 0.5) if alpha is None else alpha.copy()
    counts = np.bincount(data.pair[data.shown], None, data.n_pairs)
    mean = float(alpha @ counts / max(counts.sum(), 1))
    for _ in range(iterations):
        t, a = theta[None, :], alpha[data.pair]
        denom = np.maximum(1.0 - t * a, _EPS)
        examined = np.where(data.clicks, 1.0, t * (1.0 - a) / denom)
        attracted = np.where(data.clicks, 1.0, a * (1.0 - t) / denom)
        step = _pair_mean(data, attracted, mean) - alpha
        alpha = np.clip(alpha + relax * step, 0.001, 0.999)
        mean = float(alpha @ counts / max(counts.sum(), 1))
        target = (examined * data.shown).sum(0) / np.maximum(data.shown.sum(0), 1)
        # rank 1 is examined by definition of "relative to rank 1"; this also fixes EM's scale
        target /= max(target[0], _EPS)
        theta = np.clip(theta + relax * (target - theta), 0.001, 1.0)
    return theta, alpha


def _fit_cascade(data: _Window, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """EM for the SDBN: attractiveness and satisfaction per pair."""
    attract = np.full(data.n_pairs, 0.5)
    satisfy = np.full(data.n_pairs, 0.5)
    click = data.clicks.astype(float)
    for _ in range(iterations):
        _, exam, sat = _cascade_posteriors(data, attract, satisfy)
        clicks_per = np.bincount(data.pair[data.shown], click[data.shown], data.n_pairs)
        exams_per = np.bincount(data.pair[data.shown], exam[data.shown], data.n_pairs)
        sats_per = np.bincount(data.pair[data.shown], sat[data.shown], data.n_pairs)
        attract = np.clip((clicks_per + 0.5) / (exams_per + 1.0), 0.001, 0.999)
        satisfy = np.clip((sats_per + 0.5) / (clicks_per + 1.0), 0.001, 0.999)
    return attract, satisfy


def _cascade_posteriors(
    data: _Window, attract: np.ndarray, satisfy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per session: log-likelihood, P(examined) per position, P(satisfied) at the last click."""
    a = np.where(data.shown, attract[data.pair], 0.0)
    s = satisfy[data.pair]
    n, k = data.pair.shape
    any_click = data.clicks.any(1)
    ranks = np.arange(k)[None, :]
    last = np.where(any_click, k - 1 - np.argmax(data.clicks[:, ::-1], axis=1), -1)
    below = ranks > last[:, None]
    # P(no click below the last click | the user went on): product over the shown results below
    quiet = np.prod(np.where(below & data.shown, 1.0 - a, 1.0), axis=1)
    s_last = np.where(any_click, s[np.arange(n), np.maximum(last, 0)], 0.0)
    stop_or_quiet = s_last + (1.0 - s_last) * quiet
    stopped = np.where(any_click, s_last / np.maximum(stop_or_quiet, _EPS), 0.0)
    exam = np.where(below & any_click[:, None], (1.0 - stopped)[:, None], 1.0) * data.shown
    sat = np.where(ranks == last[:, None], stopped[:, None], 0.0)
    above = (~below) & data.shown
    ll_above = np.where(data.clicks, np.log(np.maximum(a, _EPS)), np.log(np.maximum(1 - a, _EPS)))
    ll_continue = np.where(
        data.clicks & (ranks < last[:, None]), np.log(np.maximum(1 - s, _EPS)), 0
    )
    loglik = (ll_above * above).sum(1) + (ll_continue * above).sum(1)
    loglik += np.where(
        any_click, np.log(np.maximum(stop_or_quiet, _EPS)), np.log(np.maximum(quiet, _EPS))
    )
    return loglik, exam, sat


def _pbm_loglik(data: _Window, theta: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    p = np.clip(theta[None, :] * alpha[data.pair], _EPS, 1 - _EPS)
    ll = np.where(data.clicks, np.log(p), np.log(1 - p))
    return (ll * data.shown).sum(1)


def _heldout_loglik(data: _Window, theta: np.ndarray, iterations: int) -> dict[str, float]:
    """Mean log-likelihood of the newest 20% of sessions under each family fitted on the rest.

    Pairs first seen in the held-out part get the training mean (they carry no information
    about the family, only noise).
    """
    cut = int(len(data.pair) * 0.8)
    train, test = data.subset(slice(0, cut)), data.subset(slice(cut, None))
    seen = np.zeros(data.n_pairs, dtype=bool)
    seen[train.pair[train.shown]] = True
    theta, alpha = _fit_pbm(train, theta, iterations)
    attract, satisfy = _fit_cascade(train, iterations)
    for values in (alpha, attract, satisfy):
        values[~seen] = values[seen].mean() if seen.any() else 0.5
    return {
        "pbm": float(_pbm_loglik(test, theta, alpha).mean()),
        "cascade": float(_cascade_posteriors(test, attract, satisfy)[0].mean()),
    }
