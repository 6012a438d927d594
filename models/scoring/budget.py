"""Time estimates for a latency budget: seconds per unit of work, learned from measured calls.

A tier under a deadline must decide, before it starts, how much of its work fits in the time
left. :class:`CostModel` keeps an estimate of seconds per unit (tokens for the transformer
tiers), starts from a calibration run, follows the measured calls with an exponential moving
average, and answers how many items of a given cost fit in a budget, with a safety margin.

The margin is learned too: calls of the same size vary (thread scheduling, how a request's
pairs fall into batches, other work on the machine), so an estimate that is right on average
runs late on about half the calls. After ``min_calls`` measured calls the margin is the
``quantile`` (0.95 by default) of measured over estimated time in the last ``window`` calls,
so a request overruns its deadline about as often as the quantile allows, where a fixed
margin overruns as often as the machine's variation happens to exceed it (the comparison is
in docs/models.md).

Examples
--------
>>> model = CostModel(seconds_per_unit=0.001, overhead_s=0.002)
>>> model.fits([100, 100, 100], budget_s=0.25)
2
>>> model.observe(units=1000, seconds=0.502)
>>> round(model.seconds_per_unit, 6)
0.00075
>>> for _ in range(20):                    # calls vary: every fourth one takes 30 % longer
...     for slow in (1.0, 1.0, 1.0, 1.3):
...         model.observe(units=1000, seconds=slow * model.estimate(1000) / model.margin)
>>> round(model.margin, 2)
1.3
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np


class CostModel:
    """Estimated seconds for ``units`` of work: ``overhead_s + units x seconds_per_unit``.

    Parameters
    ----------
    seconds_per_unit
        Starting estimate, e.g. from a calibration run.
    overhead_s
        Fixed cost of one call.
    alpha
        Weight of a new measurement in the moving average.
    safety
        The margin estimates are multiplied by until ``min_calls`` calls were measured.
    quantile
        Then the margin is this quantile of measured over estimated time (at least 1).
    window
        Recent calls the quantile is taken over.
    min_calls
        Calls measured before the learned margin replaces ``safety``.
    probe_every
        When this many calls in a row with time left fit nothing, the next fits one item, so
        that an estimate made too high is measured again rather than believed for good.
    """

    def __init__(
        self,
        seconds_per_unit: float,
        overhead_s: float = 0.0,
        alpha: float = 0.5,
        safety: float = 1.1,
        quantile: float = 0.95,
        window: int = 100,
        min_calls: int = 20,
        probe_every: int = 5,
    ) -> None:
        self.seconds_per_unit = seconds_per_unit
        self.overhead_s = overhead_s
        self.alpha = alpha
        self.safety = safety
        self.quantile = quantile
        self.min_calls = min_calls
        self.probe_every = probe_every
        self.starved = 0
        self.ratios: deque[float] = deque(maxlen=window)

    @property
    def margin(self) -> float:
        """The factor estimates are multiplied by (``safety`` until enough calls are seen)."""
        if len(self.ratios) < self.min_calls:
            return self.safety
        return max(1.0, float(np.quantile(self.ratios, self.quantile)))

    def estimate(self, units: float) -> float:
        """Seconds expected for ``units`` of work in one call, margin included."""
        return self.margin * self._expected(units)

    def fits(self, costs: Sequence[float] | np.ndarray, budget_s: float | None) -> int:
        """How many of ``costs`` (units per item, in order) fit in ``budget_s`` (all if None)."""
        costs = np.asarray(costs, dtype=float)
        if budget_s is None:
            return len(costs)
        spent = self.margin * (self.overhead_s + np.cumsum(costs) * self.seconds_per_unit)
        fit = int(np.searchsorted(spent, budget_s, side="right"))
        if fit or not len(costs) or budget_s <= 0:
            self.starved = 0
            return fit
        # An estimate that fits nothing is never measured again, so one made too high (a
        # calibration on a busy machine) would starve the tier for good: every
        # ``probe_every``-th such call scores one item anyway, and its time corrects it.
        self.starved += 1
        if self.starved >= self.probe_every:
            self.starved = 0
            return 1
        return 0

    def _expected(self, units: float) -> float:
        """Seconds the current estimate gives ``units`` of work, before the margin."""
        return self.overhead_s + units * self.seconds_per_unit

    def observe(self, units: float, seconds: float) -> None:
        """Fold one measured call into the estimate and into the margin's record."""
        if units <= 0:
            return
        self.ratios.append(seconds / self._expected(units))
        measured = max(seconds - self.overhead_s, 0.0) / units
        self.seconds_per_unit += self.alpha * (measured - self.seconds_per_unit)
