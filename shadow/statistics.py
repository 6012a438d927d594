"""Deciding between two rankers from session outcomes.

A session outcome is +1 (primary won), -1 (shadow won) or 0 (tie), from interleaving. From a
list of them:

- :func:`preference` is Delta = (wins + ties / 2) / N - 0.5 for the shadow: > 0 means users
  prefer the shadow;
- :func:`sign_test` is the two-sided binomial test of wins against losses (ties left out);
- :func:`bootstrap_interval` is a percentile bootstrap confidence interval for Delta;
- :class:`SequentialTest` is the mixture sequential probability ratio test (mSPRT; Johari,
  Pekelis and Walsh 2017): its p-value is valid at every session, so an operator may look after
  every click and stop as soon as it is below alpha without inflating false positives, which
  the fixed-sample sign test does not allow.

Examples
--------
>>> outcomes = [-1] * 30 + [1] * 12 + [0] * 8
>>> round(preference(outcomes), 2)
0.18
>>> round(sign_test(outcomes), 4)
0.0079
>>> test = SequentialTest()
>>> for outcome in outcomes:
...     _ = test.update(-outcome)  # the shadow's point of view: +1 = shadow won
>>> test.p_value < 0.05
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats


def preference(outcomes: Sequence[int]) -> float:
    """Delta for the shadow: (shadow wins + ties / 2) / N - 0.5; 0 when there are no sessions."""
    if not outcomes:
        return 0.0
    values = np.asarray(outcomes)
    wins, ties = np.sum(values < 0), np.sum(values == 0)
    return float((wins + ties / 2) / len(values) - 0.5)


def sign_test(outcomes: Sequence[int]) -> float:
    """Two-sided binomial p-value of shadow wins against primary wins (ties ignored)."""
    values = np.asarray(outcomes)
    shadow_wins, primary_wins = int(np.sum(values < 0)), int(np.sum(values > 0))
    if shadow_wins + primary_wins == 0:
        return 1.0
    return float(stats.binomtest(shadow_wins, shadow_wins + primary_wins, 0.5).pvalue)


def bootstrap_interval(
    outcomes: Sequence[int], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval for :func:`preference`, resampling sessions."""
    if not outcomes:
        return (0.0, 0.0)
    values = np.asarray(outcomes)
    scores = np.where(values < 0, 1.0, np.where(values == 0, 0.5, 0.0))
    rng = np.random.default_rng(seed)
    samples = rng.choice(scores, size=(resamples, len(scores)), replace=True).mean(axis=1) - 0.5
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


@dataclass
class SequentialTest:
    """mSPRT for a zero mean of per-session scores, with a normal mixture over the effect.

    ``tau`` is the mixture's standard deviation: the scale of effects the test is tuned to
    detect fastest (on the outcome's -1..1 scale). The variance is the one the null
    hypothesis implies (mean zero, so the second moment E[score^2]: the share of sessions
    that were not ties), estimated as outcomes arrive; a run of identical outcomes therefore
    cannot shrink it to zero and fake certainty.
    """

    tau: float = 0.2
    variance_floor: float = 0.05
    n: int = 0
    total: float = 0.0
    total_squares: float = 0.0
    p_value: float = 1.0
    history: list[float] = field(default_factory=list, repr=False)

    def update(self, score: float) -> float:
        """Add one session's score; returns the always-valid p-value so far."""
        self.n += 1
        self.total += score
        self.total_squares += score * score
        self.p_value = min(self.p_value, 1.0 / max(self.likelihood_ratio(), 1e-300))
        self.p_value = min(self.p_value, 1.0)
        self.history.append(self.p_value)
        return self.p_value

    def likelihood_ratio(self) -> float:
        n, mean = self.n, self.total / self.n
        variance = max(self.total_squares / n, self.variance_floor)
        tau2 = self.tau * self.tau
        log_ratio = 0.5 * math.log(variance / (variance + n * tau2)) + (
            n * n * tau2 * mean * mean / (2 * variance * (variance + n * tau2))
        )
        return math.exp(min(log_ratio, 700.0))

    def decided(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha


def two_sample_p_value(first: Sequence[float], second: Sequence[float]) -> float:
    """Welch's t-test p-value for a difference in means (A/B metrics: CTR, clicks@k, MRR)."""
    if len(first) < 2 or len(second) < 2:
        return 1.0
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if a.var() == 0 and b.var() == 0:
        return 1.0 if a.mean() == b.mean() else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)
