"""How much two rankings of the same request agree: Kendall's tau, RBO and overlap@k.

Examples
--------
>>> primary, shadow = ["a", "b", "c", "d"], ["b", "a", "c", "d"]
>>> round(kendall_tau(primary, shadow), 3)
0.667
>>> round(rank_biased_overlap(primary, shadow, p=0.9), 3)
0.9
>>> overlap_at_k(primary, ["a", "x"], k=2)
0.5
"""

from __future__ import annotations

from collections.abc import Sequence


def kendall_tau(first: Sequence[str], second: Sequence[str]) -> float:
    """Kendall's tau-b over the items both rankings contain (1 = same order, -1 = reversed)."""
    position = {item: index for index, item in enumerate(second)}
    shared = [item for item in first if item in position]
    n = len(shared)
    if n < 2:
        return 1.0
    ranks = [position[item] for item in shared]
    concordant = discordant = 0
    for i in range(n):
        for j in range(i + 1, n):
            if ranks[i] < ranks[j]:
                concordant += 1
            else:
                discordant += 1
    return (concordant - discordant) / (n * (n - 1) / 2)


def rank_biased_overlap(first: Sequence[str], second: Sequence[str], p: float = 0.9) -> float:
    """Rank-biased overlap (Webber, Moffat and Zobel 2010), extrapolated to full depth.

    Top-weighted: with p = 0.9 the first 10 ranks carry about 86% of the weight. Works on
    lists of different lengths and with items that appear in only one of them (RBO_ext).
    """
    if not first and not second:
        return 1.0
    depth = max(len(first), len(second))
    seen_first: set[str] = set()
    seen_second: set[str] = set()
    overlap = 0
    total = 0.0
    for d in range(1, depth + 1):
        a = first[d - 1] if d <= len(first) else None
        b = second[d - 1] if d <= len(second) else None
        if a is not None:
            overlap += a in seen_second
            seen_first.add(a)
        if b is not None:
            overlap += b in seen_first  # seen_first holds a by now, so a == b counts once
            seen_second.add(b)
        total += (overlap / d) * p**d
    agreement_at_depth = overlap / depth
    return (1 - p) / p * total + agreement_at_depth * p**depth


def overlap_at_k(first: Sequence[str], second: Sequence[str], k: int = 10) -> float:
    """The share of the top k that both rankings have in common."""
    top_first, top_second = set(first[:k]), set(second[:k])
    size = max(len(top_first), len(top_second))
    return len(top_first & top_second) / size if size else 1.0
