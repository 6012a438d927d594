"""What the final ranker adds to a request in the worker: feature fetch and scoring, 1,000 rows.

The worker's :class:`~streamrank.streams.final_ranking.FinalStage` runs once per request after
the cascade: it reads every candidate's features (the default config, 49 columns) from the
feature state and scores them with a LambdaMART model. This bench times that whole call on
the synthetic stream of ``bench/features.py`` learnt into Redis (a unique key prefix, deleted
at the end), against the same call on a ``MemoryState`` in the same run (the baseline: no
Redis), with the model scored by LightGBM and, when the ``fast-trees`` extra is installed, by
the lleaves-compiled forest. The model is LambdaMART with the default settings (200 trees of
7 leaves), trained on synthetic graded lists.

It prints one JSON object: median, p95 and p99 wall-clock milliseconds of each variant over
``--repeats`` requests, the matrix and scoring parts alone, and the load average.

Example: python bench/final_stage.py --repeats 200
(a Redis Cluster: STREAMRANK_REDIS_URL=redis://127.0.0.1:7000/0 STREAMRANK_REDIS_CLUSTER=true)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.feature_fetch import bench_client, delete_prefix, learn, timed  # noqa: E402
from bench.features import add_synthetic_arguments, request_for, synthetic_events  # noqa: E402
from streamrank.models.features.defaults import default_features  # noqa: E402
from streamrank.models.features.events import FeatureRequest  # noqa: E402
from streamrank.models.features.state import FeatureState, MemoryState  # noqa: E402
from streamrank.models.features.vector import FeatureVector  # noqa: E402
from streamrank.models.learning.lambdamart import (  # noqa: E402
    FinalRanker,
    LambdaMARTConfig,
    train_lambdamart,
)
from streamrank.models.scoring.cascade import CascadeItem, CascadeResult  # noqa: E402
from streamrank.streams.events import Candidate, Candidates  # noqa: E402
from streamrank.streams.final_ranking import FinalStage  # noqa: E402
from streamrank.streams.state.feature_state import RedisFeatureState  # noqa: E402


def trained_model(state: MemoryState, request: FeatureRequest, lists: int) -> FinalRanker:
    """LambdaMART (default settings, no early stopping) on ``lists`` graded lists of the
    request's candidates, graded by a noisy mix of their features."""
    features = default_features()
    matrix = FeatureVector(features, state).matrix(request)
    rng = np.random.default_rng(0)
    rows = np.nan_to_num(matrix, nan=0.0)
    weights = rng.normal(size=rows.shape[1])
    X, y = [], []
    for _ in range(lists):
        pick = rng.choice(len(rows), 100, replace=False)
        utility = rows[pick] @ weights + rng.normal(size=100) * rows.std()
        X.append(matrix[pick])
        y.append(np.digitize(utility, np.quantile(utility, [0.6, 0.8, 0.9, 0.97])))
    config = LambdaMARTConfig()
    return train_lambdamart(
        np.concatenate(X), np.concatenate(y), [100] * lists, config, feature_names=features.columns
    )


def served_request(request: FeatureRequest) -> tuple[Candidates, CascadeResult]:
    """The request as the worker sees it after a ``dense>ce:50`` cascade."""
    scores = np.asarray(request.values["first_stage_score"])
    candidates = Candidates(
        request_id="bench",
        query=str(request.query),
        user_id=request.user_id,
        candidates=[
            Candidate(doc_id=d, first_stage_score=float(s))
            for d, s in zip(request.doc_ids, scores, strict=True)
        ],
    )
    ce = np.asarray(request.values["ce"])
    dense = np.asarray(request.values["dense"])
    result = CascadeResult(
        items=[
            CascadeItem(d, float(s), i, "dense")
            for i, (d, s) in enumerate(zip(request.doc_ids, dense, strict=True), 1)
        ],
        model_version="bench",
        tier_scores={
            "dense": dict(zip(request.doc_ids, dense.tolist(), strict=True)),
            "ce": {d: float(c) for d, c in zip(request.doc_ids, ce, strict=True) if c == c},
        },
    )
    return candidates, result


def stage_figures(
    stage: FinalStage, request: FeatureRequest, repeats: int
) -> dict[str, dict[str, float]]:
    candidates, result = served_request(request)
    matrix = stage.featuriser.matrix(candidates, result.doc_ids, result, request.now)
    return {
        "stage": timed(lambda: stage.rank(candidates, result, request.now), repeats),
        "matrix": timed(
            lambda: stage.featuriser.matrix(candidates, result.doc_ids, result, request.now),
            repeats,
        ),
        "score": timed(lambda: stage.ranker.predict_many(matrix), repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_synthetic_arguments(parser, repeats=200)
    parser.add_argument(
        "--redis-url", default=os.environ.get("STREAMRANK_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--lists", type=int, default=300, help="training lists of 100 rows")
    args = parser.parse_args()

    features = default_features()
    events = synthetic_events(args)
    request = request_for(args)
    client = bench_client(args.redis_url)  # a cluster when STREAMRANK_REDIS_CLUSTER=true
    prefix = f"bench-final-stage-{uuid.uuid4().hex[:10]}:"
    memory = MemoryState(days=features.max_window_days)
    remote = RedisFeatureState(
        client, prefix=prefix, days=features.max_window_days, buffer_writes=True
    )
    try:
        learn(memory, events)
        learn(remote, events)
        started = time.perf_counter()
        model = trained_model(memory, request, args.lists)
        train_s = time.perf_counter() - started
        states: dict[str, FeatureState] = {"memory": memory, "redis": remote}
        result: dict[str, object] = {
            "candidates": args.candidates,
            "columns": len(features.columns),
            "trees": model.num_trees,
            "train_seconds": round(train_s, 1),
        }
        with tempfile.TemporaryDirectory() as compiled_dir:
            for scorer in ("lightgbm", "lleaves"):
                for name, state in states.items():
                    ranker = FinalRanker(model.model_text, model.feature_names)
                    stage = FinalStage(ranker, features, state)
                    if scorer == "lleaves" and not ranker.compile(compiled_dir):
                        result["lleaves"] = "not installed (the fast-trees extra)"
                        break
                    result[f"{name}/{scorer}"] = stage_figures(stage, request, args.repeats)
        result["loadavg"] = os.getloadavg()
    finally:
        delete_prefix(client, prefix)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
