"""Time estimates for a latency budget: seconds per unit of work, learned from measured calls.

A tier under a deadline must decide, before it starts, how much of its work fits in the time
left. :class:`CostModel` keeps an estimate of seconds per unit (tokens for the transformer
tiers), starts from a calibration run, follows the measured calls with an exponential moving
average, and answers how many items of a given cost fit in a budget, with a safety margin.

Examples
--------
>>> model = CostModel(seconds_per_unit=0.001, overhead_s=0.002)
>>> model.fits([100, 100, 100], budget_s=0.25)
2
>>> model.observe(units=1000, seconds=0.502)
>>> round(model.seconds_per_unit, 6)
0.00075
"""

from __future__ import annotations

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
        Estimates are multiplied by this, so that a request finishes before its deadline.
    """

    def __init__(
        self,
        seconds_per_unit: float,
        overhead_s: float = 0.0,
        alpha: float = 0.5,
        safety: float = 1.1,
    ) -> None:
        self.seconds_per_unit = seconds_per_unit
        self.overhead_s = overhead_s
        self.alpha = alpha
        self.safety = safety

    def estimate(self, units: float) -> float:
        """Seconds expected for ``units`` of work in one call, safety included."""
        return self.safety * (self.overhead_s + units * self.seconds_per_unit)

    def fits(self, costs: Sequence[float] | np.ndarray, budget_s: float | None) -> int:
        """How many of ``costs`` (units per item, in order) fit in ``budget_s`` (all if None)."""
        costs = np.asarray(costs, dtype=float)
        if budget_s is None:
            return len(costs)
        spent = self.safety * (self.overhead_s + np.cumsum(costs) * self.seconds_per_unit)
        return int(np.searchsorted(spent, budget_s, side="right"))

    def observe(self, units: float, seconds: float) -> None:
        """Fold one measured call into the estimate."""
        if units <= 0:
            return
        measured = max(seconds - self.overhead_s, 0.0) / units
        self.seconds_per_unit += self.alpha * (measured - self.seconds_per_unit)
