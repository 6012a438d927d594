"""Recall-bottleneck analysis: where did the relevant documents get lost?

When quality drops a team asks two things: did the first stage fail (the relevant document
never reached the re-ranker) or did the re-ranker fail (it was there and not lifted)? For every
relevant document of every judged query, :func:`recall_bottlenecks` says which of four places
it ended in, for a cascade *first stage (top K1) -> cheap tier keeps K2 -> cross-encoder*:

(a) ``not_retrieved``: not in the first stage's top K1;
(b) ``dropped_by_cheap_tier``: retrieved, but not among the K2 the cheap tier kept;
(c) ``below_top``: reached the cross-encoder but ended below rank 10 of the final ranking;
and ``in_top``: in the final top 10.

The four add up to the number of relevant documents. Without neural tiers, the cheap tier is
the first-stage order cut at K2 and the final ranking that same order, which still answers (a).

:func:`k_sweep` shows the other side of the trade: recall@K of the first stage against the
cross-encoder's cost (K pairs per query) for K from 10 to 1000.

Examples
--------
>>> qrels = {"q": {"d1": 1, "d2": 1, "d3": 1, "d4": 0}}
>>> first = {"q": ["d9", "d1", "d2", "d8"]}          # d3 never retrieved
>>> kept = {"q": ["d1", "d9"]}                        # K2 = 2: d2 dropped
>>> report = recall_bottlenecks(qrels, first, kept, k1=4, k2=2, top=1)
>>> report.totals()
{'queries': 1, 'relevant': 3, 'not_retrieved': 1, 'dropped_by_cheap_tier': 1, 'below_top': 0, \
'in_top': 1}
>>> [(row.k, row.recall) for row in k_sweep(qrels, first, ks=(1, 2, 4))]
[(1, 0.0), (2, 0.3333), (4, 0.6667)]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamrank.models.retrieval.corpus import Qrels, relevant

Run = Mapping[str, Sequence[str]]
K_SWEEP = (10, 20, 30, 50, 100, 200, 500, 1000)
CATEGORIES = ("not_retrieved", "dropped_by_cheap_tier", "below_top", "in_top")


@dataclass(frozen=True)
class QueryBottleneck:
    """Where one query's relevant documents ended up."""

    qid: str
    relevant: int
    not_retrieved: int
    dropped_by_cheap_tier: int
    below_top: int
    in_top: int

    @property
    def lost(self) -> int:
        return self.relevant - self.in_top


@dataclass
class BottleneckReport:
    """Per-query and total counts, with the cascade's K values and tier names."""

    k1: int
    k2: int
    top: int
    per_query: list[QueryBottleneck]
    tiers: dict[str, str] = field(default_factory=dict)

    def totals(self) -> dict[str, int]:
        totals = {"queries": len(self.per_query), "relevant": 0} | dict.fromkeys(CATEGORIES, 0)
        for row in self.per_query:
            totals["relevant"] += row.relevant
            for name in CATEGORIES:
                totals[name] += getattr(row, name)
        return totals

    def to_json(self) -> dict[str, Any]:
        return {
            "k1": self.k1,
            "k2": self.k2,
            "top": self.top,
            "tiers": self.tiers,
            "totals": self.totals(),
            "per_query": [asdict(row) for row in self.per_query],
        }


def recall_bottlenecks(
    qrels: Qrels,
    first_stage: Run,
    kept: Run | None = None,
    final: Run | None = None,
    *,
    k1: int = 1000,
    k2: int = 100,
    top: int = 10,
    tiers: Mapping[str, str] | None = None,
) -> BottleneckReport:
    """Classify every relevant document of every query in ``first_stage``.

    Parameters
    ----------
    qrels
        Judgments; grade > 0 is relevant. Queries without a relevant document are left out.
    first_stage
        Query id -> first-stage ranking (cut at ``k1`` here).
    kept
        Query id -> what the cheap tier passed to the cross-encoder, best first (cut at
        ``k2``). Default: the first-stage ranking cut at ``k2``.
    final
        Query id -> the final ranking. Default: the ``kept`` order.
    k1, k2, top
        The cascade's cut-offs and the depth that counts as a success.
    """
    rows = []
    for qid, ranking in first_stage.items():
        wanted = relevant(qrels.get(qid, {}))
        if not wanted:
            continue
        retrieved = set(ranking[:k1])
        passed = list(kept[qid] if kept is not None and qid in kept else ranking)[:k2]
        ordered = list(final[qid] if final is not None and qid in final else passed)
        reached, shown = set(passed), set(ordered[:top])
        a = len(wanted - retrieved)
        b = len((wanted & retrieved) - reached)
        in_top = len(wanted & retrieved & reached & shown)
        rows.append(QueryBottleneck(qid, len(wanted), a, b, len(wanted) - a - b - in_top, in_top))
    return BottleneckReport(k1, k2, top, rows, dict(tiers or {}))


@dataclass(frozen=True)
class SweepRow:
    """Recall of the first stage at depth K, and what re-ranking K candidates costs."""

    k: int
    recall: float
    relevant_found: int
    ce_pairs_per_query: float
    ce_pairs_total: int
    ce_ms_per_query: float | None = None


def k_sweep(
    qrels: Qrels,
    first_stage: Run,
    ks: Sequence[int] = K_SWEEP,
    pairs_per_second: float | None = None,
) -> list[SweepRow]:
    """Recall@K (mean over judged queries) and cross-encoder cost for each K.

    The cost is the pairs the cross-encoder would score: K per query, or fewer when the first
    stage returned fewer. With ``pairs_per_second`` (a measured throughput) it is also given
    as milliseconds per query.
    """
    qids = [qid for qid in first_stage if relevant(qrels.get(qid, {}))]
    rows = []
    for k in ks:
        recalls, found, pairs = [], 0, []
        for qid in qids:
            wanted = relevant(qrels[qid])
            hits = len(wanted.intersection(first_stage[qid][:k]))
            recalls.append(hits / len(wanted))
            found += hits
            pairs.append(min(k, len(first_stage[qid])))
        mean_pairs = float(np.mean(pairs)) if pairs else 0.0
        rows.append(
            SweepRow(
                k=k,
                recall=round(float(np.mean(recalls)), 4) if recalls else 0.0,
                relevant_found=found,
                ce_pairs_per_query=round(mean_pairs, 1),
                ce_pairs_total=int(sum(pairs)),
                ce_ms_per_query=(
                    round(1000 * mean_pairs / pairs_per_second, 1) if pairs_per_second else None
                ),
            )
        )
    return rows


# ---- plotting ----------------------------------------------------------------------------


def plot_sweep(rows: Sequence[SweepRow], path: str | Path, title: str = "") -> Path:
    """Save recall@K and cross-encoder pairs per query against K (log scale) as a PNG.

    Raises
    ------
    RuntimeError
        matplotlib is not installed (it is an optional dependency).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # headless: no display on servers and CI
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise RuntimeError("the plot needs matplotlib: pip install matplotlib") from error
    ks = [row.k for row in rows]
    figure, recall_axis = plt.subplots(figsize=(7, 4.2), dpi=120)
    recall_axis.plot(ks, [row.recall for row in rows], "o-", color="tab:blue", label="recall@K")
    for row in rows:
        recall_axis.annotate(
            f"{row.recall:.3f}",
            (row.k, row.recall),
            textcoords="offset points",
            xytext=(0, 7),
            ha="center",
            fontsize=7,
        )
    recall_axis.set_xscale("log")
    recall_axis.set_xticks(ks, [str(k) for k in ks])
    recall_axis.set_xlabel("K (first-stage candidates passed on)")
    recall_axis.set_ylabel("first-stage recall@K", color="tab:blue")
    recall_axis.set_ylim(0, 1.05)
    recall_axis.grid(True, which="major", alpha=0.3)
    cost_axis = recall_axis.twinx()
    cost_axis.plot(
        ks,
        [row.ce_pairs_per_query for row in rows],
        "s--",
        color="tab:red",
        label="cross-encoder pairs/query",
    )
    cost_axis.set_yscale("log")
    cost_axis.set_ylabel("cross-encoder pairs per query", color="tab:red")
    recall_axis.set_title(title or "Recall vs. re-ranking cost")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
