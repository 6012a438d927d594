"""Learner throughput and memory: synthetic interactions through ``OnlineRanker.learn_one``.

Each session shows 10 of a query's candidates (queries drawn Zipf-like from a large pool, so
the store's caps are reached and eviction runs) to a simulated ``navigational`` user; its
impression and clicks are one ``learn_one`` call. Interactions counted are what the
``interactions`` topic would carry: one impression per shown result plus one per click.
Prints one JSON object.

Example: python bench/learner.py --interactions 1000000 --json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamrank.models.learning.click_models import click_model
from streamrank.models.learning.online_ranker import Impression, InMemoryStore, OnlineRanker
from streamrank.models.learning.propensity import PositionBias


def rss_mb() -> float:
    """Current resident memory of this process (Linux), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_sessions(queries: int, seed: int):
    """Endless (query, docs, grades, features) with 10 shown results each."""
    rng = np.random.default_rng(seed)
    user = click_model("navigational")
    weights = 1.0 / np.arange(1, queries + 1) ** 0.8
    weights /= weights.sum()
    while True:
        for q in rng.choice(queries, size=4096, p=weights):
            docs = tuple(f"d{(q * 7919 + i) % (queries * 5)}" for i in range(10))
            grades = np.random.default_rng(q).integers(0, 4, 10)
            z = np.sort(rng.normal(size=10))[::-1]
            features = tuple(
                {"base_z": float(v), "ce_z": float(v), "ce_top": 1 / np.log2(2 + i)}
                for i, v in enumerate(z)
            )
            yield f"q{q}", docs, user.clicks(grades.tolist(), rng), features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--max-pairs", type=int, default=200_000)
    parser.add_argument("--max-docs", type=int, default=100_000)
    parser.add_argument("--max-events", type=int, default=200_000)
    parser.add_argument("--window", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    before = rss_mb()
    store = InMemoryStore(args.max_pairs, args.max_docs, args.max_events)
    ranker = OnlineRanker(store, position_bias=PositionBias(window=args.window))
    interactions = sessions = 0
    learn_seconds = 0.0
    for n, (query, docs, clicked, features) in enumerate(
        synthetic_sessions(args.queries, args.seed)
    ):
        impression = Impression(f"e{n}", query, docs, tuple(clicked), features)
        start = time.perf_counter()
        ranker.learn_one(impression)
        learn_seconds += time.perf_counter() - start
        interactions += len(docs) + len(clicked)
        sessions += 1
        if interactions >= args.interactions:
            break
    ranker.save()
    state_bytes = len(json.dumps(store.state_dict()).encode())
    result = {
        "interactions": interactions,
        "sessions": sessions,
        "learn_seconds": round(learn_seconds, 2),
        "interactions_per_second": round(interactions / learn_seconds),
        "sessions_per_second": round(sessions / learn_seconds),
        "rss_mib_before": round(before, 1),
        "rss_mib_after": round(rss_mb(), 1),
        "pairs_kept": len(store),
        "caps": {
            "max_pairs": args.max_pairs,
            "max_docs": args.max_docs,
            "max_events": args.max_events,
            "position_window": args.window,
        },
        "checkpoint_json_mib": round(state_bytes / 2**20, 1),
        "examination_model": ranker.position_bias.family,
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
