"""How much could better-placed looks win? An oracle explorer against the default one.

A diagnostic for docs/notes/2026-11-26-informational-gap.md (what limits informational
users), never a product setting. The oracle explorer is told the true grades; the learner is not. In
every list it shows first, in random order, the candidates that are *misplaced*:

- *missing*: outside the exploit top ``k``, with a grade that belongs in the ideal top ``k``;
- *intruders*: inside it, with a grade that does not.

Below those come the default explorer's choices in its own order (a Thompson draw, ordered by
look value), and the same loss bound repairs the list. Every variant runs the offline
simulator with the ``streamrank simulate --offline`` defaults on the same queries and seeds,
except that the online ranker orders all the candidates (``--online-top-k 100`` on DL19, as
the simulator did when these figures were taken; its default is now the worker's 50).
For each it also reports the ``set`` figure: nDCG@10 of the learner's final top ten put in
the order of its true grades. Where that is above ``final``, the loss is in the order within
the top ten; where it is below the ideal, the loss is in which passages made the top ten.

Prints one JSON object: per variant, each seed's final nDCG@10, the mean, median and standard
error, and the difference of means against ``default``. Seeds do not pair runs (the first
list that differs changes every later draw), so compare means, not seed by seed.

Example: python bench/allocation_oracle.py --seeds 0-11 --json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
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
from streamrank.models.evaluation.simulator import K, OfflineSystem, SimQuery, simulate
from streamrank.models.learning.exploration import SafeExplorer, _with_prefix
from streamrank.models.learning.online_ranker import OnlineRanker, RankerConfig, Scored

VARIANTS = {
    # name: (kinds of misplaced candidates shown first, max_loss: 0.3 is the simulator's)
    "default": ((), 0.3),
    "oracle": (("missing", "intruders"), 0.3),
    "oracle-unbounded": (("missing", "intruders"), 1.0),
    "intruders-unbounded": (("intruders",), 1.0),
    "missing-unbounded": (("missing",), 1.0),
}


class OracleExplorer(SafeExplorer):
    """The default explorer, told the true grades (``queries``: the simulated ones by text)."""

    def __init__(self, queries: Sequence[SimQuery], kinds: Sequence[str], **kwargs: Any):
        super().__init__(**kwargs)
        self.queries = {q.text: q for q in queries}
        self.kinds = kinds

    def _proposal(self, scored: Scored, exploit: np.ndarray, k: int) -> np.ndarray:
        default = super()._proposal(scored, exploit, k)
        grade = np.array(self.queries[scored.query].grades_of(scored.docs))
        top = exploit[:k]
        border = np.sort(grade)[::-1][k - 1]  # the grade the ideal top k reaches down to
        missing = [d for d in exploit[k:] if grade[d] >= border and grade[d] > grade[top].min()]
        intruders = [d for d in top if grade[d] < border]
        forced = np.array(
            (missing if "missing" in self.kinds else [])
            + (intruders if "intruders" in self.kinds else []),
            dtype=int,
        )
        self.rng.shuffle(forced)
        return _with_prefix(forced[:k], default)


def run_one(queries: list[SimQuery], variant: str, seed: int, sessions: int, user: str) -> dict:
    """One simulation: final nDCG@10 and the ``set`` figure of the learner's top tens."""
    kinds, max_loss = VARIANTS[variant]
    explorer = OracleExplorer(queries, kinds, k=K, max_loss=max_loss, seed=seed)
    system = OfflineSystem(OnlineRanker(config=RankerConfig(seed=seed)), explorer)
    result = simulate(queries, system, user, sessions, [sessions], seed)
    final = result["final_ndcg@10"]
    tops = top_tens(system, queries)
    return {"variant": variant, "seed": seed, "final": final, "set": set_ndcg(queries, tops)}


def main() -> None:
    parser = simulation_parser(__doc__.splitlines()[0])
    parser.add_argument("--variants", default="default,oracle,oracle-unbounded")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    queries = simulated_queries(parser, args)
    jobs = [
        (queries, v, s, args.sessions_per_query, args.click_model)
        for s in args.seeds
        for v in variants
    ]
    rows = run_all(run_one, jobs, args.processes)
    report = {
        "candidates": str(args.candidates),
        "click_model": args.click_model,
        "sessions_per_query": args.sessions_per_query,
        "seeds": args.seeds,
        "variants": summarize(rows, variants, "default"),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
