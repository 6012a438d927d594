"""When to skip the cross-encoder: a rule on the first stage's confidence.

Two signals, each off unless configured:

- ``skip_if_margin_at_least``: the first stage's top-1 stands far above the rest, so the
  cross-encoder would most likely keep it on top. The margin is normalized to the spread of
  the top ``depth`` scores, ``(s1 - s2) / (s1 - s_depth)``, which is scale-free and in [0, 1];
- ``skip_if_top_score_below``: even the best first-stage score is very low, so no candidate
  matches the query well and re-ranking has nothing good to promote.

The rule is off by default: on the judged passages it was tried on, every threshold that
skipped more than a few queries cost quality (docs/notes/2026-11-25-cheap-tiers-and-skips.md).

Examples
--------
>>> rule = ConfidenceRule(skip_if_margin_at_least=0.5)
>>> round(normalized_margin([9.0, 4.0, 3.0, 1.0], depth=4), 3)
0.625
>>> rule.skip_reason([9.0, 4.0, 3.0, 1.0])
'first-stage margin 0.62 >= 0.5'
>>> rule.skip_reason([9.0, 8.5, 3.0, 1.0]) is None
True
>>> ConfidenceRule().skip_reason([9.0, 1.0]) is None  # off by default
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def normalized_margin(scores: Sequence[float], depth: int = 10) -> float:
    """``(s1 - s2) / (s1 - s_depth)`` over the scores sorted high to low; 0 when undefined."""
    top = sorted(scores, reverse=True)[:depth]
    if len(top) < 2 or top[0] == top[-1]:
        return 0.0
    return (top[0] - top[1]) / (top[0] - top[-1])


@dataclass(frozen=True)
class ConfidenceRule:
    """Skip the cross-encoder when the first stage is very sure or has nothing good.

    Parameters
    ----------
    skip_if_margin_at_least
        Skip when :func:`normalized_margin` is at least this (e.g. 0.6); ``None``: never.
    skip_if_top_score_below
        Skip when the best first-stage score is below this (in the first stage's own units,
        e.g. BM25); ``None``: never.
    depth
        How many top scores the margin is normalized over.
    """

    skip_if_margin_at_least: float | None = None
    skip_if_top_score_below: float | None = None
    depth: int = 10

    @property
    def enabled(self) -> bool:
        """Whether any signal is configured."""
        return self.skip_if_margin_at_least is not None or self.skip_if_top_score_below is not None

    def skip_reason(self, scores: Sequence[float]) -> str | None:
        """Why to skip the cross-encoder for these first-stage scores, or ``None`` to run it."""
        if not scores or not self.enabled:
            return None
        if self.skip_if_top_score_below is not None:
            best = max(scores)
            if best < self.skip_if_top_score_below:
                return f"first-stage top score {best:.3g} < {self.skip_if_top_score_below}"
        if self.skip_if_margin_at_least is not None:
            margin = normalized_margin(scores, self.depth)
            if margin >= self.skip_if_margin_at_least:
                return f"first-stage margin {margin:.2f} >= {self.skip_if_margin_at_least}"
        return None
