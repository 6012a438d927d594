"""What merchandising rules cost a ranking: ``apply_rules`` against a plain sort, one run.

``--items`` random candidates (seeded), with every rule on: out-of-stock items buried, a
bounded boost for promoted ones, pins for the query, a bury list and a brand cap in the top
10. Each repeat times :func:`streamrank.models.scoring.rules.apply_rules` on them and, as the
baseline, a plain ``sorted`` of the same items by score (what ranking costs without rules),
in alternation so both see the same machine. The items arrive shuffled unless
``--presorted`` (the final ranker's order; Python's sort then runs in linear time). Prints
one JSON object: median and p95 microseconds of each, and their ratio. No data or service is
needed.

Example: python bench/rules.py --json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamrank.models.scoring.rules import (  # noqa: E402
    RuleItem,
    RulesConfig,
    apply_rules,
    load_rules,
)

QUERY = "running shoes"


def random_items(n: int, seed: int) -> list[RuleItem]:
    """Candidates with the fields the rules read: 10 % out of stock, 10 % promoted."""
    rng = random.Random(seed)
    return [
        RuleItem(
            f"doc{i}",
            rng.gauss(0.0, 1.0),
            {
                "in_stock": rng.random() > 0.1,
                "promoted": rng.random() < 0.1,
                "brand": f"brand{rng.randrange(20)}",
                "category": f"category{rng.randrange(10)}",
            },
        )
        for i in range(n)
    ]


def all_rules(items: list[RuleItem], seed: int) -> RulesConfig:
    rng = random.Random(seed + 1)
    ids = [item.doc_id for item in items]
    raw = {
        "out_of_stock": "bury",
        "promoted_boost": 0.5,
        "max_boost_positions": 5,
        "pins": {QUERY: rng.sample(ids, 3), "other query": rng.sample(ids, 3)},
        "bury": rng.sample(ids, min(20, len(ids))),
        "diversity": {"field": "brand", "max_per_value": 2, "top": 10},
    }
    return load_rules(raw, {"in_stock", "promoted", "brand", "category"})


def percentiles_us(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "median_us": round(1e6 * statistics.median(times), 1),
        "p95_us": round(1e6 * times[int(0.95 * (len(times) - 1))], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--presorted", action="store_true", help="items arrive in score order")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    items = random_items(args.items, args.seed)
    if args.presorted:
        items.sort(key=lambda item: item.score, reverse=True)
    config = all_rules(items, args.seed)
    ruled = apply_rules(QUERY, items, config)  # warm up, and the rules it fired
    rules_s, sort_s = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        apply_rules(QUERY, items, config)
        rules_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        sorted(items, key=lambda item: item.score, reverse=True)
        sort_s.append(time.perf_counter() - started)
    result = {
        "items": args.items,
        "repeats": args.repeats,
        "presorted": args.presorted,
        "fired": {name: len(doc_ids) for name, doc_ids in ruled.fired.items()},
        "apply_rules": percentiles_us(rules_s),
        "plain_sort": percentiles_us(sort_s),
        "median_ratio": round(statistics.median(rules_s) / statistics.median(sort_s), 1),
    }
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
