"""What reading 1,000 document vectors costs the request path, per source.

The dense tier reads one stored vector per candidate (never encodes one). This measures, for
``--candidates`` documents of ``--dim`` float32 values keyed by content
(:func:`~streamrank.models.scoring.score_cache.vector_key`: encoder version, text hash, id):

- ``redis``: :class:`~streamrank.streams.state.redis_cache.RedisVectorCache` alone (one MGET and
  decoding every value), the baseline;
- ``lru+redis``: the worker's layered store, the in-process LRU answering (warm);
- ``lru``: the in-process LRU alone (:class:`~streamrank.models.scoring.score_cache.InMemoryCache`);
- ``index``: the first stage's own vector matrix
  (:class:`~streamrank.models.scoring.vector_store.IndexVectors`), text hashes checked;
- ``keys``: only building the 1,000 content keys (hashing the texts), which every source pays.

Each figure is the median (and p95) of ``--repeats`` lookups of the same 1,000 keys, in one
run, against the Redis of ``$STREAMRANK_REDIS_URL`` (else local). Prints one JSON object.

Example: python bench/vector_lookup.py --candidates 1000 --repeats 50
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamrank.models.retrieval.bm25 import BM25Index  # noqa: E402
from streamrank.models.retrieval.corpus import Document  # noqa: E402
from streamrank.models.retrieval.dense import DenseIndex  # noqa: E402
from streamrank.models.retrieval.first_stage import FirstStage  # noqa: E402
from streamrank.models.retrieval.index_vectors import IndexVectors  # noqa: E402
from streamrank.models.scoring.score_cache import (  # noqa: E402
    InMemoryCache,
    LayeredVectors,
    vector_key,
)
from streamrank.streams.config import get_settings  # noqa: E402
from streamrank.streams.state.connections import redis_client  # noqa: E402
from streamrank.streams.state.redis_cache import RedisVectorCache  # noqa: E402

VERSION = "bench-encoder-L512"


def timed(call: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median and p95 milliseconds of ``call`` (one untimed warm-up call first)."""
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - started))
    return {
        "median_ms": round(float(np.median(times)), 3),
        "p95_ms": round(float(np.percentile(times, 95)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--text-chars", type=int, default=600, help="length of each text")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    ids = [f"doc-{i}" for i in range(args.candidates)]
    docs = [Document(d, "", f"{i} " + "x" * args.text_chars) for i, d in enumerate(ids)]
    texts = [doc.content for doc in docs]
    vectors = rng.standard_normal((args.candidates, args.dim)).astype(np.float32)
    keys = [vector_key(VERSION, d, t) for d, t in zip(ids, texts, strict=True)]

    client = redis_client(get_settings())
    prefix = f"bench-vectors-{uuid.uuid4().hex[:8]}:"
    redis_cache = RedisVectorCache(client, prefix, ttl_s=600)
    redis_cache.set_many(dict(zip(keys, vectors, strict=True)))
    lru = InMemoryCache(max_items=args.candidates * 2)
    lru.set_many(dict(zip(keys, vectors, strict=True)))
    layered = LayeredVectors([InMemoryCache(max_items=args.candidates * 2), redis_cache])
    dense = DenseIndex(vectors, ids, model=VERSION, version=VERSION)
    from_index = IndexVectors(FirstStage(docs, BM25Index.build(docs), dense))
    try:
        assert all(v is not None for v in redis_cache.get_many(keys)), "Redis lost vectors"
        assert all(v is not None for v in from_index.get_many(keys)), "index lookup failed"
        results = {
            "redis": timed(lambda: np.stack(redis_cache.get_many(keys)), args.repeats),
            "lru+redis": timed(lambda: np.stack(layered.get_many(keys)), args.repeats),
            "lru": timed(lambda: np.stack(lru.get_many(keys)), args.repeats),
            "index": timed(lambda: np.stack(from_index.get_many(keys)), args.repeats),
            "keys": timed(
                lambda: [vector_key(VERSION, d, t) for d, t in zip(ids, texts, strict=True)],
                args.repeats,
            ),
        }
    finally:
        for name in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(name)
    baseline = results["redis"]["median_ms"]
    print(
        json.dumps(
            {
                "candidates": args.candidates,
                "dim": args.dim,
                "repeats": args.repeats,
                "bytes_per_vector": args.dim * 4,
                "baseline": "redis",
                "sources": results,
                "speedup_vs_redis": {
                    name: round(baseline / max(r["median_ms"], 1e-6), 1)
                    for name, r in results.items()
                    if name != "keys"
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
