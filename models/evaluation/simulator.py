"""The click simulator: simulated users against a ranking system, and its learning curve.

Each *round* visits every query once, in a fresh random order. A session asks the system for
a ranking (with exploration, as live traffic would get), shows the top ``k`` to a user from
:mod:`streamrank.models.learning.click_models`, and hands the impression and its clicks back
to the system. A round's users arrive together (:func:`serve_round`): all are served before
the system learns from any of them, and each round is served from everything learned before
it, so a query's users never see a ranking that has not yet heard of its previous user. At
each checkpoint (in sessions per query) it records nDCG@10 of the ranking the system would
now serve to every query without exploration.

The system is anything with the :class:`RankingSystem` verbs. :class:`OfflineSystem` runs
the :class:`~streamrank.models.learning.online_ranker.OnlineRanker` and
:class:`~streamrank.models.learning.exploration.SafeExplorer` in-process; a streaming system
implements the same three verbs by publishing each session's impressions and clicks (the
``shown`` and ``clicked`` that :meth:`RankingSystem.feedback` gets) and reading rankings
back, and reuses everything else here unchanged.

Examples
--------
>>> import numpy as np
>>> queries = [SimQuery("q1", "volga", [ScoredCandidate(f"d{i}", ce=-i) for i in range(20)],
...                     np.array([0] * 15 + [3] * 5), ideal_dcg=dcg([3] * 5))]
>>> result = simulate(queries, OfflineSystem(), "navigational", sessions_per_query=60,
...                   checkpoints=[30, 60], seed=0)
>>> result["start_ndcg@10"], result["final_ndcg@10"] > 0.5
(0.0, True)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamrank.models.learning.click_models import click_model
from streamrank.models.learning.exploration import SafeExplorer, Served
from streamrank.models.learning.online_ranker import (
    OnlineRanker,
    RankerConfig,
    Scored,
    ScoredCandidate,
    base_scores,
)
from streamrank.models.retrieval.corpus import read_qrels

K = 10
Progress = Callable[[int, int], None]
"""Called with (sessions done, sessions in all)."""


@dataclass(frozen=True)
class SimQuery:
    """One query of the simulation: its candidates with their true grades."""

    qid: str
    text: str
    candidates: list[ScoredCandidate]
    grades: np.ndarray
    ideal_dcg: float

    def grades_of(self, doc_ids: Iterable[str]) -> list[int]:
        index = {c.doc_id: i for i, c in enumerate(self.candidates)}
        return [int(self.grades[index[d]]) for d in doc_ids]


class RankingSystem(Protocol):
    """What the simulator drives: serve with exploration, take feedback, serve without."""

    def serve(self, query: SimQuery, session_id: str) -> list[str]:
        """The documents shown for this session, best first (at least the top ``k``)."""
        ...

    def feedback(self, query: SimQuery, session_id: str, shown: list[str], clicked: list[int]):
        """The user saw ``shown`` (top ``k``) and clicked these 0-based ranks."""
        ...

    def exploit(self, query: SimQuery) -> list[str]:
        """The ranking the system would serve now with no exploration."""
        ...


class OfflineSystem:
    """The online ranker and safe explorer in-process (``streamrank simulate --offline``).

    ``top_k``: how many of the starting ranker's best candidates the online ranker orders, as
    a worker hands it the cascade's top ``STREAMRANK_ONLINE_TOP_K``; the rest follow in the
    starting ranker's order. None: every candidate.
    """

    def __init__(
        self,
        ranker: OnlineRanker | None = None,
        explorer: SafeExplorer | None = None,
        top_k: int | None = None,
    ) -> None:
        self.ranker = ranker or OnlineRanker()
        self.explorer = explorer or SafeExplorer(k=K, seed=0)
        self.top_k = top_k
        self._pending: dict[str, tuple[Scored, Served]] = {}

    def serve(self, query: SimQuery, session_id: str) -> list[str]:
        top, rest = self._split(query)
        scored = self.ranker.score_one(query.text, top)
        wanted = self.ranker.position_bias.wants_interventions
        served = self.explorer.rank_one(scored, interventions=wanted)
        self._pending[session_id] = (scored, served)
        return [scored.docs[i] for i in served.order] + rest

    def feedback(self, query: SimQuery, session_id: str, shown: list[str], clicked: list[int]):
        scored, served = self._pending.pop(session_id)
        impression = scored.impression(
            session_id, served.order, clicked, k=len(shown), randomized=served.randomized
        )
        self.ranker.learn_one(impression)

    def exploit(self, query: SimQuery) -> list[str]:
        top, rest = self._split(query)
        return self.ranker.rank_one(query.text, top) + rest

    def propensities(self) -> list[float]:
        return self.ranker.position_bias.estimates()

    def _split(self, query: SimQuery) -> tuple[list[ScoredCandidate], list[str]]:
        """The candidates the online ranker orders, and the ids of the rest in the start's order."""
        if self.top_k is None or self.top_k >= len(query.candidates):
            return query.candidates, []
        order = np.argsort(-base_scores(query.candidates), kind="stable")
        top = [query.candidates[i] for i in sorted(order[: self.top_k])]  # in their given order
        return top, [query.candidates[i].doc_id for i in order[self.top_k :]]


def offline_system(seed: int, max_loss: float, top_k: int | None) -> OfflineSystem:
    """The system ``streamrank simulate --offline`` runs: a fresh online ranker and explorer.

    Both are seeded with ``seed``, so two runs with the same seed learn the same thing; the
    benches build theirs here too, to measure exactly what the command runs.
    """
    return OfflineSystem(
        OnlineRanker(config=RankerConfig(seed=seed)), SafeExplorer(K, max_loss, seed=seed), top_k
    )


def dcg(grades: Sequence[float], k: int = K) -> float:
    """DCG@k with linear gain (trec_eval's ``ndcg_cut``)."""
    g = np.asarray(grades[:k], dtype=float)
    return float((g / np.log2(np.arange(len(g)) + 2.0)).sum())


def ndcg(query: SimQuery, ranking: Sequence[str], k: int = K) -> float:
    if query.ideal_dcg <= 0:
        return 0.0
    return dcg(query.grades_of(ranking[:k]), k) / query.ideal_dcg


def mean_ndcg(queries: Sequence[SimQuery], system: RankingSystem) -> float:
    if hasattr(system, "exploit_all"):  # one round trip for every query
        rankings = system.exploit_all(queries)
        return float(np.mean([ndcg(q, rankings[q.qid]) for q in queries]))
    return float(np.mean([ndcg(q, system.exploit(q)) for q in queries]))


def serve_round(system: RankingSystem, sessions: Sequence[tuple[SimQuery, str]]) -> list[list[str]]:
    """Serve a round's users together: every ranking is made before any of their clicks is learned.

    Users of different queries are in flight at once, as live traffic is, so the clicks of a
    round are learned only after the whole round was served, in both modes: offline and
    streaming then run the same experiment. A streaming system serves the round in one batch
    (``serve_all``) once the learner has caught up with every earlier round.
    """
    if hasattr(system, "serve_all"):
        return system.serve_all(sessions)
    return [system.serve(query, session_id) for query, session_id in sessions]


def simulate(
    queries: Sequence[SimQuery],
    system: RankingSystem,
    user: str,
    sessions_per_query: int,
    checkpoints: Sequence[int],
    seed: int = 0,
    progress: Progress | None = None,
    eta: float | None = None,
) -> dict[str, Any]:
    """Run the sessions and return the learning curve (the ``simulate --json`` object).

    ``served_ndcg@10`` is the mean nDCG@10 of the lists users actually saw (exploration
    included), the price paid for learning.
    """
    clicker, rng = click_model(user, eta), np.random.default_rng(seed)
    marks = sorted({c for c in checkpoints if 0 < c <= sessions_per_query} | {sessions_per_query})
    start = mean_ndcg(queries, system)
    curve, served, done, total = [], [], 0, sessions_per_query * len(queries)
    for round_ in range(1, sessions_per_query + 1):
        order = [queries[index] for index in rng.permutation(len(queries))]
        ids = [f"s{seed}-{round_}-{query.qid}" for query in order]
        rankings = serve_round(system, list(zip(order, ids, strict=True)))
        for query, session_id, ranking in zip(order, ids, rankings, strict=True):
            shown = ranking[:K]
            clicked = clicker.clicks(query.grades_of(shown), rng)
            system.feedback(query, session_id, shown, clicked)
            served.append(ndcg(query, shown))
            done += 1
            if progress:
                progress(done, total)
        if round_ in marks:
            curve.append({"sessions_per_query": round_, "ndcg@10": mean_ndcg(queries, system)})
    result: dict[str, Any] = {
        "click_model": user,
        "queries": len(queries),
        "sessions_per_query": sessions_per_query,
        "seed": seed,
        "start_ndcg@10": start,
        "checkpoints": curve,
        "final_ndcg@10": curve[-1]["ndcg@10"] if curve else start,
        "min_ndcg@10": min([start] + [c["ndcg@10"] for c in curve]),
        "served_ndcg@10": float(np.mean(served)) if served else start,
    }
    if hasattr(system, "propensities"):
        result["propensities"] = system.propensities()
        result["examination_model"] = getattr(
            getattr(getattr(system, "ranker", None), "position_bias", None), "family", None
        )
    return result


# -- loading ----------------------------------------------------------------------------------


def load_queries(
    candidates_path: str | Path,
    qrels_path: str | Path,
    scores: Mapping[str, Sequence[float]] | None = None,
) -> list[SimQuery]:
    """Queries from a candidate-list file (rank_llm format) and TREC qrels.

    ``scores`` (query id -> one score per hit, in file order) become each candidate's
    cross-encoder score; the hit's own ``score`` is its first-stage score. Queries without
    judgments are left out (nDCG is undefined for them).
    """
    entries = json.loads(Path(candidates_path).read_text())
    qrels = read_qrels(qrels_path).items
    queries = []
    for entry in entries:
        hits = entry["hits"]
        if not hits:
            continue
        qid = str(hits[0]["qid"])
        judged = qrels.get(qid)
        if not judged:
            continue
        ce = scores.get(qid) if scores else None
        if ce is not None and len(ce) != len(hits):
            raise ValueError(f"query {qid}: {len(ce)} scores for {len(hits)} candidates")
        candidates = [
            ScoredCandidate(
                doc_id=str(hit["docid"]),
                ce=None if ce is None else float(ce[i]),
                first_stage=float(hit.get("score", -i)),
            )
            for i, hit in enumerate(hits)
        ]
        grades = np.array([judged.get(c.doc_id, 0) for c in candidates])
        ideal = dcg(sorted(judged.values(), reverse=True))
        queries.append(SimQuery(qid, entry["query"], candidates, grades, ideal))
    return queries


def passages(candidates_path: str | Path) -> dict[str, tuple[str, list[str]]]:
    """query id -> (query text, passage texts in file order): what a scorer needs."""
    entries = json.loads(Path(candidates_path).read_text())
    return {
        str(e["hits"][0]["qid"]): (e["query"], [h.get("content", "") for h in e["hits"]])
        for e in entries
        if e["hits"]
    }


# -- plotting ---------------------------------------------------------------------------------


def plot_curve(results: Sequence[dict[str, Any]], path: Path) -> None:
    """Learning curve(s) of :func:`simulate` results as a PNG: nDCG@10 against sessions per
    query, with the starting level; the x axis is linear up to 5 sessions and logarithmic
    beyond, where the checkpoints spread out."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for result in results:
        xs = [0] + [c["sessions_per_query"] for c in result["checkpoints"]]
        ys = [result["start_ndcg@10"]] + [c["ndcg@10"] for c in result["checkpoints"]]
        ax.plot(xs, ys, marker="o", label=f"{result['click_model']} (seed {result['seed']})")
    ax.axhline(results[0]["start_ndcg@10"], color="grey", ls="--", lw=1, label="starting ranker")
    ax.set_xscale("symlog", linthresh=5)
    marks = sorted({0} | {c["sessions_per_query"] for r in results for c in r["checkpoints"]})
    ax.set_xlim(0, marks[-1] * 1.1)
    ax.set_xticks(marks, [str(m) for m in marks])
    ax.minorticks_off()
    ax.set_xlabel("sessions per query")
    ax.set_ylabel("nDCG@10 (no exploration)")
    ax.set_title("streamrank: learning from simulated clicks")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
