"""The click simulator on TREC DL 2019: a short run improves nDCG@10."""

from __future__ import annotations

import hashlib
import json

import pytest

from streamrank.models.evaluation.simulator import OfflineSystem, load_queries, simulate
from streamrank.models.retrieval.corpus import CACHE_DIR
from tests.helpers import SHARED_DATA

DL19 = SHARED_DATA / "trec-dl-2019"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("shared_data"),
    pytest.mark.skipif(not DL19.is_dir(), reason=f"shared data not found at {DL19}"),
]


def test_a_short_simulation_on_trec_dl_2019_improves_ndcg() -> None:
    """25 sessions per query from the cross-encoder when its DL19 scores are cached (the first
    ``streamrank simulate`` run computes and caches them, about 20 minutes on 2 cores), else
    from BM25, which every checkout can run."""
    candidates, qrels = DL19 / "bm25-top100.json", DL19 / "qrels.txt"
    cached = sorted((CACHE_DIR / "simulate").glob("scores-*-reranker_en-*.json"))
    digest = hashlib.sha256(candidates.read_bytes()).hexdigest()[:16]
    cached = [p for p in cached if p.name.startswith(f"scores-{digest}-")]
    scores = json.loads(cached[0].read_text()) if cached else None  # else BM25 (0.506)
    queries = load_queries(candidates, qrels, scores)
    assert len(queries) == 43
    result = simulate(queries, OfflineSystem(), "navigational", 25, [5, 25], seed=0)
    gain = 0.03 if scores else 0.08
    assert result["final_ndcg@10"] >= result["start_ndcg@10"] + gain, result
    assert result["min_ndcg@10"] >= result["start_ndcg@10"] - 0.02
