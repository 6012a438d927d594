"""BM25 on BEIR SciFact (5,183 abstracts, 300 test queries) reaches the issue's target.

Needs ``../shared/data/scifact`` beside the repository; skips with a message when it is absent.
About 3 seconds on a 2-core machine.
"""

from __future__ import annotations

import pytest

from streamrank.models.evaluation.first_stage import evaluate_first_stage, judged_queries
from streamrank.models.retrieval.corpus import Document, read_corpus, read_qrels, read_queries
from streamrank.models.retrieval.first_stage import FirstStage
from tests.helpers import SHARED_DATA

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_data")]

SCIFACT = SHARED_DATA / "scifact"


@pytest.fixture(scope="module")
def scifact() -> tuple[FirstStage, dict[str, str], dict]:
    if not (SCIFACT / "corpus.jsonl").exists():
        pytest.skip(f"SciFact not found at {SCIFACT} (the shared evaluation data folder)")
    qrels = read_qrels(SCIFACT / "qrels-test.txt").items
    queries = judged_queries(read_queries(SCIFACT / "queries.jsonl").items, qrels)
    return FirstStage.build(read_corpus(SCIFACT / "corpus.jsonl").items), queries, qrels


def test_bm25_reaches_the_target(scifact):
    stage, queries, qrels = scifact
    result = evaluate_first_stage(stage, queries, qrels, "bm25")
    assert result["queries"] == 300
    assert result["ndcg@10"] >= 0.665  # published BEIR BM25; bm25s + stemming measures 0.686
    assert result["recall@100"] >= 0.90 and result["recall@1000"] >= 0.96
    assert result["latency_ms"]["p95"] < 100


def test_updates_keep_scores_comparable(scifact):
    """Re-sending a tenth of the corpus through the delta must not change any score.

    Runs last: it leaves the module's index with a delta.
    """
    stage, queries, _ = scifact
    sample = list(queries.values())[:30]
    before = [{h.doc_id: h.score for h in stage.retrieve(text, 20)} for text in sample]
    docs = [stage.get(doc_id) for doc_id in stage.doc_ids()[::10]]
    # Same tokens, different record (trailing space): counts as a change, goes to the delta.
    changed = [Document(doc.id, doc.title, doc.text + " ") for doc in docs if doc]
    assert stage.upsert(changed) == len(changed)
    assert stage.stats()["bm25"]["delta_documents"] == len(changed)
    for text, scores in zip(sample, before, strict=True):
        after = {h.doc_id: h.score for h in stage.retrieve(text, 20)}
        # Near-ties at the cut-off may swap; scores of documents in both must agree.
        common = scores.keys() & after.keys()
        assert len(common) >= 18
        assert all(after[d] == pytest.approx(scores[d], rel=1e-5) for d in common)
