"""The offline simulator over many seeds, for several sizes of the list the online ranker orders.

A worker hands the online ranker the cascade's top ``STREAMRANK_ONLINE_TOP_K`` (50 by default)
and serves the rest in the cascade's order; ``streamrank simulate --offline --online-top-k K``
does the same with the starting ranker's top ``K``. This bench runs the system that command
builds offline for every seed and every ``K`` given, in one run, and prints one JSON object: per
``K``, each seed's final nDCG@10, mean, median, standard error, the difference of means against the
first ``K`` given (the baseline), the mean nDCG@10 of the lists users saw, and the lowest checkpoint
of any seed. What the final top tens hold, summed over seeds and queries: ``intruders``, places held
by a passage whose grade does not belong in the ideal top ten; ``places_beyond`` and
``intruders_beyond``, places and intruders taken by candidates the smallest ``K`` given leaves out.
``set_mean``: the top tens put in the order of their true grades (its gap to the mean final nDCG@10
is what the order within them loses).

Example: python bench/simulate_seeds.py --online-top-k 100,50 --seeds 0-59 --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.seeds import (
    run_all,
    set_ndcg,
    simulated_queries,
    simulation_parser,
    summarize,
    top_tens,
)
from streamrank.models.evaluation.simulator import K, SimQuery, offline_system, simulate
from streamrank.models.learning.online_ranker import base_scores

CHECKPOINTS = [5, 10, 25, 50, 100, 200]


def run_one(
    queries: list[SimQuery], top_k: int, seed: int, args: argparse.Namespace, smallest: int
) -> dict[str, Any]:
    """One ``streamrank simulate --offline`` run, and what its final top tens hold."""
    system = offline_system(seed, args.max_loss, top_k)
    marks = [c for c in CHECKPOINTS if c < args.sessions_per_query] + [args.sessions_per_query]
    result = simulate(queries, system, args.click_model, args.sessions_per_query, marks, seed)
    tops = top_tens(system, queries)
    row = {
        "variant": f"top_k={top_k}",
        "seed": seed,
        "final": result["final_ndcg@10"],
        "served": result["served_ndcg@10"],
        "lowest": result["min_ndcg@10"],
        "set": set_ndcg(queries, tops),
        "intruders": 0,
        "places_beyond": 0,
        "intruders_beyond": 0,
    }
    for query, top in zip(queries, tops, strict=True):
        grades = query.grades_of(top)
        border = np.sort(query.grades)[::-1][K - 1]  # the grade the ideal top ten reaches
        start = np.argsort(-base_scores(query.candidates), kind="stable")
        beyond = {query.candidates[i].doc_id for i in start[smallest:]}
        for doc, grade in zip(top, grades, strict=True):
            row["intruders"] += int(grade < border)
            row["places_beyond"] += int(doc in beyond)
            row["intruders_beyond"] += int(doc in beyond and grade < border)
    return row


def main() -> None:
    parser = simulation_parser(__doc__.splitlines()[0])
    parser.add_argument("--max-loss", type=float, default=0.3)
    parser.add_argument("--online-top-k", default="100,50", help="Comma-separated; first: baseline")
    args = parser.parse_args()
    sizes = [int(k) for k in args.online_top_k.split(",")]
    queries = simulated_queries(parser, args)
    jobs = [(queries, k, s, args, min(sizes)) for s in args.seeds for k in sizes]
    rows = run_all(run_one, jobs, args.processes)
    variants = [f"top_k={k}" for k in sizes]
    summary = summarize(rows, variants, variants[0])
    for variant in variants:
        mine = [r for r in rows if r["variant"] == variant]
        summary[variant]["served_mean"] = round(float(np.mean([r["served"] for r in mine])), 4)
        summary[variant]["lowest_checkpoint"] = round(min(r["lowest"] for r in mine), 4)
        for count in ("intruders", "places_beyond", "intruders_beyond"):
            summary[variant][count] = sum(r[count] for r in mine)
    report = {
        "candidates": str(args.candidates),
        "click_model": args.click_model,
        "sessions_per_query": args.sessions_per_query,
        "max_loss": args.max_loss,
        "seeds": args.seeds,
        "variants": summary,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
