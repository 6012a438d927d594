"""What the simulator benches share: their options, DL19 loading, parallel runs, summaries.

Seeds do not pair two variants' runs (the first list that differs changes every later draw),
so variants are compared by their means, with standard errors, not seed by seed.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress

from streamrank.models.assets.model_files import default_model_dir
from streamrank.models.evaluation.simulator import K, RankingSystem, SimQuery, dcg, load_queries
from streamrank.models.evaluation.start_scores import cached_scores, cross_encoder_scorer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "trec-dl-2019"


def seed_range(text: str) -> list[int]:
    """``0-11`` or ``0,3,5``."""
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(x) for x in text.split(",")]


def simulation_parser(description: str) -> argparse.ArgumentParser:
    """The options every simulator bench takes (data, users, sessions, seeds, processes)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--candidates", type=Path, default=DATA / "bm25-top100.json")
    parser.add_argument("--qrels", type=Path, default=DATA / "qrels.txt")
    parser.add_argument("--click-model", default="informational")
    parser.add_argument("--sessions-per-query", type=int, default=200)
    parser.add_argument("--seeds", type=seed_range, default=seed_range("0-11"))
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true", help="Print one JSON object (always).")
    return parser


def simulated_queries(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[SimQuery]:
    """The judged queries with the cross-encoder's scores (cached after the first run)."""
    if not args.candidates.exists():
        parser.error(f"{args.candidates} not found: pass --candidates and --qrels")
    scores = cached_scores(args.candidates, lambda: cross_encoder_scorer(default_model_dir()))
    return load_queries(args.candidates, args.qrels, scores)


def run_all(run: Callable[..., dict], jobs: Sequence[tuple], processes: int) -> list[dict]:
    """``run(*job)`` for every job, in ``processes`` processes, with a progress bar."""
    with (
        ProcessPoolExecutor(processes) as pool,
        Progress(console=Console(stderr=True), transient=True) as bar,
    ):
        task = bar.add_task("simulations", total=len(jobs))
        futures = [pool.submit(run, *job) for job in jobs]
        rows = []
        for future in futures:
            rows.append(future.result())
            bar.advance(task)
    return rows


def top_tens(system: RankingSystem, queries: Sequence[SimQuery]) -> list[list[str]]:
    """Each query's top ten as the system would serve it now, without exploration."""
    return [system.exploit(q)[:K] for q in queries]


def set_ndcg(queries: Sequence[SimQuery], tops: Sequence[Sequence[str]]) -> float:
    """Mean nDCG@10 of the top tens (one per query) put in the order of their true grades."""
    return float(
        np.mean(
            [
                dcg(sorted(q.grades_of(top), reverse=True)) / q.ideal_dcg
                for q, top in zip(queries, tops, strict=True)
                if q.ideal_dcg > 0
            ]
        )
    )


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
