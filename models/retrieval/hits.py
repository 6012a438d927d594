"""Ranked hits: the record every first-stage retriever returns, top-k selection, and fusion.

Examples
--------
>>> import numpy as np
>>> top_k(np.array([0.0, 2.0, 1.0, 2.0]), k=2, min_score=0.0)
[(1, 2.0), (3, 2.0)]
>>> fused = reciprocal_rank_fusion({"bm25": [Hit("a", 9.0), Hit("b", 5.0)],
...                                 "dense": [Hit("b", 0.8), Hit("c", 0.7)]}, k=2, constant=60)
>>> [hit.doc_id for hit in fused]
['b', 'a']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved document and its score (higher is better; scales differ per method)."""

    doc_id: str
    score: float


def top_k(scores: np.ndarray, k: int, min_score: float | None = None) -> list[tuple[int, float]]:
    """Positions and scores of the ``k`` best entries, best first.

    Parameters
    ----------
    scores
        One score per position; ``-inf`` marks positions that must never be returned.
    k
        How many to return at most.
    min_score
        When given, only entries scoring strictly above it count (BM25: 0 means no term
        matched, so such documents are not hits at all).

    Ties are broken by position, so results are deterministic.
    """
    if k <= 0 or scores.size == 0:
        return []
    eligible = np.isfinite(scores)
    if min_score is not None:
        eligible &= scores > min_score
    candidates = np.flatnonzero(eligible)
    if candidates.size > k:
        # argpartition finds the k best in linear time; the boundary score may be shared by
        # more entries than fit, so keep every entry at the boundary before the final sort.
        chosen = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
        boundary = scores[chosen].min()
        candidates = candidates[scores[candidates] >= boundary]
    order = np.lexsort((candidates, -scores[candidates]))[:k]
    picked = candidates[order]
    return [(int(position), float(scores[position])) for position in picked]


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[Hit]],
    k: int,
    constant: float = 60.0,
    weights: Mapping[str, float] | None = None,
) -> list[Hit]:
    """Fuse rankings by weighted reciprocal rank: ``sum_m w_m / (constant + rank_m(d))``.

    RRF needs no score calibration between lexical and dense scores, only ranks, which is why
    it is the default hybrid; ``constant`` damps the influence of the very top ranks (60 is the
    value from Cormack et al., 2009). A document missing from a ranking gets nothing from it.

    Parameters
    ----------
    rankings
        Name -> hits, best first.
    k
        How many fused hits to return.
    constant
        The RRF ``k`` constant.
    weights
        Name -> weight (default 1.0 each).
    """
    fused: dict[str, float] = {}
    for name, hits in rankings.items():
        weight = 1.0 if weights is None else weights.get(name, 1.0)
        if weight == 0:
            continue
        for rank, hit in enumerate(hits, start=1):
            fused[hit.doc_id] = fused.get(hit.doc_id, 0.0) + weight / (constant + rank)
    # Ties (same fused score) keep the order of first appearance, which is deterministic.
    best = sorted(fused.items(), key=lambda item: -item[1])[:k]
    return [Hit(doc_id, score) for doc_id, score in best]
