"""How a cascade tier's scores combine with the order the tier received.

A tier of a cascade re-scores the head of the order the tiers before it (and the first stage)
made. Taken alone, its scores throw that order away: a cross-encoder trained on web search
can then rank an out-of-domain corpus below the first stage it was given. A :class:`Fusion`
mixes the tier's scores with the scores that made the order it received, so what the earlier
stages knew still counts; its ``weight`` is the share of the new tier.

Methods
-------
``none``
    The tier's own scores (the order is the tier's alone).
``minmax``
    ``weight * minmax(new) + (1 - weight) * minmax(previous)``, each scaled to [0, 1] within
    the head. The scales of different tiers (logits, cosines, BM25, reciprocal ranks) never
    meet; only where each candidate falls between the head's best and worst does.
``zscore``
    The same with z-scores (mean 0, standard deviation 1 within the head): one outlier
    squeezes the others less than under min-max.
``rrf``
    Weighted reciprocal-rank fusion, ``weight / (c + rank_new) + (1 - weight) / (c +
    rank_previous)``: only the two orders count, not how far apart their scores are.

The fused score is what the next tier receives as ``previous``, so with several tiers the
first stage's share is ``(1 - weight)`` per tier after it. Scores normalised within the head
depend on who else is in it: a fused score orders one request's candidates and means nothing
across requests.

Examples
--------
>>> fusion = Fusion("minmax", weight=0.5)
>>> fusion.fuse(np.array([3.0, 2.0, 1.0]), np.array([0.0, 10.0, 5.0])).round(2).tolist()
[0.5, 0.75, 0.25]
>>> Fusion("none").fuse(np.array([3.0, 2.0]), np.array([1.0, 7.0])).tolist()
[1.0, 7.0]
>>> Fusion.parse("zscore:0.8")
Fusion(method='zscore', weight=0.8, rrf_constant=60.0)
>>> str(Fusion("rrf", 0.7))
'rrf:0.7'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("none", "minmax", "zscore", "rrf")
DEFAULT_METHOD = "minmax"
DEFAULT_WEIGHT = 0.9


class FusionError(ValueError):
    """A fusion method that does not exist, or a weight outside [0, 1]."""


@dataclass(frozen=True)
class Fusion:
    """Combines a tier's scores with the order it received.

    Parameters
    ----------
    method
        ``none``, ``minmax``, ``zscore`` or ``rrf`` (see the module docstring).
    weight
        The new tier's share, in [0, 1]; 1 orders as ``none`` does. Ignored by ``none``.
    rrf_constant
        ``c`` of reciprocal-rank fusion (the usual 60).

    Raises
    ------
    FusionError
        On an unknown method, a weight outside [0, 1] or a constant that is not positive.
    """

    method: str = DEFAULT_METHOD
    weight: float = DEFAULT_WEIGHT
    rrf_constant: float = 60.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise FusionError(f"unknown fusion {self.method!r}; methods: {', '.join(METHODS)}")
        if not (isinstance(self.weight, int | float) and 0.0 <= self.weight <= 1.0):
            raise FusionError(f"fusion weight {self.weight!r} must be a number in [0, 1]")
        if not self.rrf_constant > 0:
            raise FusionError(f"rrf constant {self.rrf_constant!r} must be positive")

    @classmethod
    def parse(cls, text: str) -> Fusion:
        """``method`` or ``method:weight``, e.g. ``minmax:0.5``, ``rrf:0.7``, ``none``."""
        method, _, weight = text.strip().partition(":")
        if not weight:
            return cls(method)
        try:
            value = float(weight)
        except ValueError:
            raise FusionError(f"fusion weight {weight!r} in {text!r} is not a number") from None
        return cls(method, value)

    def __str__(self) -> str:
        return "none" if self.method == "none" else f"{self.method}:{self.weight:g}"

    @property
    def active(self) -> bool:
        """Whether the fused order can differ from the tier's own."""
        return self.method != "none" and self.weight < 1.0

    def fuse(self, previous: np.ndarray, new: np.ndarray) -> np.ndarray:
        """Fused scores of a head (higher is better).

        Parameters
        ----------
        previous
            The scores that made the order the tier received, in that order (the first
            stage's, or the last fusion's): rank fusion uses the order, the others the values.
        new
            The tier's scores of the same candidates, in the same order.
        """
        new = np.asarray(new, dtype=np.float64)
        previous = np.asarray(previous, dtype=np.float64)
        if self.method == "none" or len(new) == 0:
            return new
        if self.method == "rrf":
            c = self.rrf_constant
            prior = 1.0 / (c + np.arange(1, len(new) + 1))
            return self.weight / (c + _ranks(new)) + (1 - self.weight) * prior
        scale = _minmax if self.method == "minmax" else _zscore
        return self.weight * scale(new) + (1 - self.weight) * scale(previous)


NO_FUSION = Fusion("none")
DEFAULT_FUSION = Fusion(DEFAULT_METHOD, DEFAULT_WEIGHT)


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks by descending score; ties keep the given order."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks


def _minmax(values: np.ndarray) -> np.ndarray:
    """Scaled to [0, 1]; a value that is not finite counts as the lowest."""
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros_like(values)
    low, high = values[finite].min(), values[finite].max()
    if high == low:
        return np.zeros_like(values)
    return np.where(finite, (values - low) / (high - low), 0.0)


def _zscore(values: np.ndarray) -> np.ndarray:
    """Mean 0, standard deviation 1; a value that is not finite counts as the lowest."""
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros_like(values)
    spread = values[finite].std()
    if spread == 0:
        return np.zeros_like(values)
    z = (values - values[finite].mean()) / spread
    return np.where(finite, z, z[finite].min())
