"""`streamrank eval rerank` on TREC DL 2019 (../shared/data): the figures of issue 3.

Skips with a message when the shared data folder or the models are absent. The dense>ce:30
run encodes 4,300 passages once (~45 s on 2 cores) and scores 1,290 pairs.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from streamrank.models.assets.model_files import ModelFilesError, verify_models
from streamrank.streams.cli.evaluate import eval_group
from streamrank.streams.config import Settings
from tests.helpers import SHARED_DATA

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_data")]

DL19 = SHARED_DATA / "trec-dl-2019"
CANDIDATES, QRELS = DL19 / "bm25-top100.json", DL19 / "qrels.txt"
MODEL_DIR = Settings().model_dir
KEYS = {"queries", "ndcg@10", "mrr@10", "recall@10", "pairs_scored", "pairs_per_second"}

needs_data = pytest.mark.skipif(
    not CANDIDATES.exists(), reason=f"shared evaluation data not found at {DL19}"
)


def run(*args: str) -> str:
    result = CliRunner().invoke(
        eval_group, ["rerank", "--candidates", str(CANDIDATES), "--qrels", str(QRELS), *args]
    )
    assert result.exit_code == 0, result.output
    return result.stdout


@needs_data
def test_first_stage_reproduces_bm25_exactly():
    report = json.loads(run("--pipeline", "first-stage", "--json"))
    assert KEYS | {"latency_ms", "doc_encode_seconds"} <= set(report)
    assert report["queries"] == 43
    assert round(report["ndcg@10"], 4) == 0.5058
    assert set(report["latency_ms"]) == {"p50", "p95", "p99"}
    assert report["pairs_scored"] == 0 and report["doc_encode_seconds"] == 0


@needs_data
def test_table_output_and_bad_pipeline():
    assert "ndcg@10" in run("--pipeline", "first-stage")
    result = CliRunner().invoke(
        eval_group,
        ["rerank", "--candidates", str(CANDIDATES), "--qrels", str(QRELS), "--pipeline", "bm25>ce"],
    )
    assert result.exit_code == 2 and "unknown tier" in result.output


@needs_data
def test_dense_then_cross_encoder_on_30():
    try:
        verify_models(MODEL_DIR)
    except ModelFilesError:
        pytest.skip(f"models not fetched into {MODEL_DIR}: run `streamrank models fetch`")
    report = json.loads(run("--pipeline", "dense>ce:30", "--max-length", "256", "--json"))
    assert report["ndcg@10"] >= 0.715
    assert report["pairs_scored"] == 43 * 30
    assert report["doc_encode_seconds"] > 0 and report["degraded_queries"] == 0


class CountingTier:
    """A tier whose cost model needs ``min_calls`` calls; counts the calls it gets."""

    name = version = "counting"

    def __init__(self, min_calls: int) -> None:
        from streamrank.models.scoring.budget import CostModel

        self.cost = CostModel(seconds_per_unit=1e-6, min_calls=min_calls)
        self.calls = 0

    def score(self, query, candidates, budget_s):
        import numpy as np

        from streamrank.models.scoring.tiers import TierScores

        self.calls += 1
        return TierScores(np.arange(len(candidates), dtype=float), inferred=len(candidates))


def test_a_deadline_run_warms_the_cost_models_up_untimed_first():
    from streamrank.models.evaluation.rerank import Query, run_cascade
    from streamrank.models.scoring.cascade import Cascade
    from streamrank.models.types import TextCandidate

    queries = [Query(str(i), f"q{i}", [TextCandidate("a", "x", 1.0)]) for i in range(12)]
    tier = CountingTier(min_calls=5)
    report = run_cascade(Cascade("ce", {"ce": tier}), queries, {}, 0.25)
    assert report["warmup_queries"] == 5 and tier.calls == 12 + 5
    assert report["queries"] == 12  # the warm-up is not in the metrics or the latencies
    unhurried = CountingTier(min_calls=5)
    report = run_cascade(Cascade("ce", {"ce": unhurried}), queries, {}, None)
    assert report["warmup_queries"] == 0 and unhurried.calls == 12
