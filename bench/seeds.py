"""What the simulator benches share: seed lists and a per-variant summary of final nDCG@10.

Seeds do not pair two variants' runs (the first list that differs changes every later draw),
so variants are compared by their means, with standard errors, not seed by seed.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def seed_range(text: str) -> list[int]:
    """``0-11`` or ``0,3,5``."""
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(x) for x in text.split(",")]


def summarize(rows: list[dict], variants: Sequence[str], baseline: str) -> dict[str, Any]:
    """Per variant: each seed's final nDCG@10, their mean, median, standard error, the mean
    of the ``set`` figure where rows have one, and the difference of means against
    ``baseline`` (from unrounded means)."""
    by_variant = {v: [r for r in rows if r["variant"] == v] for v in variants}
    means = {v: statistics.fmean(r["final"] for r in mine) for v, mine in by_variant.items()}
    out: dict[str, Any] = {}
    for variant, mine in by_variant.items():
        finals = [r["final"] for r in mine]
        error = statistics.stdev(finals) / len(finals) ** 0.5 if len(finals) > 1 else None
        out[variant] = {
            "final_ndcg@10": [round(x, 4) for x in finals],
            "mean": round(means[variant], 4),
            "median": round(statistics.median(finals), 4),
            "standard_error": None if error is None else round(error, 4),
        }
        if all("set" in r for r in mine):
            out[variant]["set_mean"] = round(statistics.fmean(r["set"] for r in mine), 4)
        if baseline in means:
            out[variant][f"minus_{baseline}"] = round(means[variant] - means[baseline], 4)
    return out
