"""Bad messages for every topic kind, generated from a seed: the poison the fuzz tests feed
to the decoder (tests/unit) and to a real worker (tests/integration).

Plain ``random``, not hypothesis: a corpus of thousands costs milliseconds, is the same on
every run of a seed, and can be sent to a broker as one list. The hypothesis fuzzer
(tests/unit/streams/test_fuzz_events.py) explores the same families with shrinking.

Families: ``bytes`` (random bytes, a null record), ``json`` (random JSON values: huge
integers, NaN, Infinity, nesting), ``field`` (a valid message with one field replaced,
removed or added), ``token`` (a raw token spliced in as a field's value: NaN, Infinity,
1e999, a 5,000-digit integer, a lone surrogate, 5,000 open brackets), ``deep`` (nesting
around and far beyond the limit), ``cut`` (a valid message cut, bytes spliced in), ``big``
(over a size limit), ``duplicate`` (a candidate id twice).
"""

from __future__ import annotations

import json
import random
from typing import Any

from streamrank.streams.events import MAX_NESTING

VALID: dict[str, dict[str, Any]] = {
    "queries": {"request_id": "r1", "query": "river in russia", "k": 5},
    "candidates": {
        "request_id": "r1",
        "query": "river in russia",
        "candidates": [
            {"doc_id": "d1", "text": "The Volga", "first_stage_score": 3.5, "features": {"f": 1}},
            {"doc_id": "d2", "first_stage_score": 1.0},
        ],
        "context": {"device": "phone"},
    },
    "rankings": {
        "request_id": "r1",
        "model_version": "ce",
        "items": [{"doc_id": "d1", "score": 0.5, "position": 1}],
        "timings_ms": {"ce": 3.0},
    },
    "interactions": {
        "event_id": "e1",
        "request_id": "r1",
        "doc_id": "d1",
        "type": "dwell",
        "position": 1,
        "value": 12.5,
    },
    "items": {"doc_id": "d1", "text": "The Volga", "features": {"popularity": 0.3}},
    "users": {"user_id": "u1", "features": {"age_days": 30}},
    "control": {"command_id": "c1", "action": "promote", "version": "v2"},
    "comparisons": {
        "request_id": "r1",
        "primary_version": "v1",
        "shadow_version": "v2",
        "kendall_tau": 0.5,
    },
    "impressions": {
        "request_id": "r1",
        "query": "river",
        "model_version": "v1",
        "features_digest": "ab12",
        "served_at": 1.0,
        "items": [{"doc_id": "d1", "position": 1, "features": [0.5, None]}],
    },
    "deadletter": {
        "original_b64": "e30=",
        "topic": "streamrank.candidates",
        "reason": "contract",
        "error": "bad",
    },
}
NASTY_TOKENS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "9" * 5000,
    "-" + "9" * 5000,
    "null",
    "[" * 5000,
    "{" * 5000,
    '"\\ud800"',
    '"\\udfff tail"',
    "1." + "0" * 5000,
    "[" * 10_000 + "]" * 10_000,
]
FAMILIES = ("bytes", "json", "field", "token", "deep", "cut", "big", "duplicate")


def raw_json(value: object) -> str:
    """``value`` as JSON text, NaN and Infinity written as Python's json writes them."""
    return json.dumps(value, allow_nan=True)


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value; containers become rarer with depth."""
    roll = rng.random()
    if depth < 4 and roll < 0.25:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 4 and roll < 0.4:
        return {f"k{n}": random_value(rng, depth + 1) for n in range(rng.randint(0, 3))}
    return rng.choice(
        [
            None,
            True,
            rng.randint(-(10**6), 10**6),
            rng.randint(10**99, 10**120),
            float("nan"),
            float("inf"),
            -float("inf"),
            rng.uniform(-1e308, 1e308),
            "",
            "d1",
            "click",
            "x" * rng.randint(0, 40),
            "\x00",
        ]
    )


def nested(depth: int, opener: str) -> str:
    if opener == "[":
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def with_field(kind: str, field: str, raw_value: str) -> str:
    """The valid message of ``kind`` with ``field`` set to a raw JSON token."""
    text = raw_json({k: v for k, v in VALID[kind].items() if k != field})
    return text[:-1] + f', "{field}": {raw_value}' + "}"


def bad_message(kind: str, family: str, rng: random.Random) -> bytes | None:
    """One message of ``family`` for ``kind`` (most are bad; a few may happen to be valid)."""
    valid = VALID[kind]
    if family == "bytes":
        return None if rng.random() < 0.2 else rng.randbytes(rng.randint(0, 200))
    if family == "json":
        return raw_json(random_value(rng)).encode()
    if family == "field":
        changed = dict(valid)
        field = rng.choice([*valid, "unknown_field", "schema_version"])
        if field in changed and rng.random() < 0.3:
            del changed[field]
        else:
            changed[field] = random_value(rng)
        return raw_json(changed).encode()
    if family == "token":
        field = rng.choice([*valid, "schema_version", "features", "position", "value", "k"])
        return with_field(kind, field, rng.choice(NASTY_TOKENS)).encode()
    if family == "deep":
        depth = rng.randint(MAX_NESTING - 2, MAX_NESTING * 4)
        if rng.random() < 0.02:
            depth = 100_000
        inner = nested(depth, rng.choice("[{"))
        return (inner if rng.random() < 0.5 else with_field(kind, "context", inner)).encode()
    if family == "cut":
        text = raw_json(valid).encode()
        cut = rng.randint(0, len(text) - 1)
        return text[:cut] + rng.randbytes(rng.randint(0, 8)) + text[cut + rng.randint(1, 3) :]
    if family == "big":
        field = rng.choice(["query", "text", "request_id", "doc_id", "event_id"])
        return raw_json(valid | {field: "q" * rng.choice([1001, 20_001, 300_000])}).encode()
    if family == "duplicate" and kind == "candidates":
        candidate = {"doc_id": f"dup{rng.randint(0, 9)}", "first_stage_score": 1.0}
        return raw_json(valid | {"candidates": [candidate, dict(candidate)]}).encode()
    return with_field(kind, "schema_version", rng.choice(["NaN", "2", "null"])).encode()


def corpus(kind: str, count: int, seed: int = 0) -> list[tuple[str, bytes | None]]:
    """``count`` messages of every family in turn, as (family, raw) pairs."""
    rng = random.Random(f"{kind}:{seed}")
    return [
        (FAMILIES[n % len(FAMILIES)], bad_message(kind, FAMILIES[n % len(FAMILIES)], rng))
        for n in range(count)
    ]
