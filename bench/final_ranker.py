"""The final ranker on MSLR-WEB10K: LambdaMART against a linear ranker, and how fast it scores.

Trains :func:`~streamrank.models.learning.lambdamart.train_lambdamart` and the ridge
:class:`~streamrank.models.learning.lambdamart.LinearRanker` (on standardised features, and on
``log1p``-compressed ones) on the ``train`` sample (5,000 rows, 43 queries) and reports
nDCG@10 (linear gain, queries with a positive label) on the disjoint ``test`` sample; with
``--swap`` also the other way round. Then times scoring ``--rows`` rows of the test sample,
``--repeats`` calls each, median / p95 / p99 in ms, with every scorer that imports here:

- ``lightgbm``: ``Booster.predict`` with ``num_threads=1`` (the worker's setting) and with
  LightGBM's default (all cores);
- ``treelite_gtil``: treelite's interpreter (``treelite.gtil.predict``), no compiler;
- ``tl2cgen``: the model compiled to a shared library by gcc (``tl2cgen.export_lib``);
- ``lleaves``: the model compiled by LLVM (:meth:`FinalRanker.compile`, ``lleaves``);
- ``onnxruntime``: the model converted by ``onnxmltools`` and run by onnxruntime, one thread;
- ``linear``: the baseline's matrix-vector product.

``--cv`` adds the 4-fold cross-validation by query on the train sample that chose
:class:`~streamrank.models.learning.lambdamart.LambdaMARTConfig`'s defaults.

Each scorer's scores are checked against ``Booster.predict`` (max abs diff); a scorer whose
package is missing or fails is reported as ``"unavailable: <reason>"``. Prints one JSON object.

Example: python bench/final_ranker.py --repeats 200 --swap --cv --json
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamrank.models.evaluation.letor import (  # noqa: E402
    group_sizes,
    mean_ndcg,
    ndcg_per_query,
    read_letor,
)
from streamrank.models.evaluation.metrics import latency_percentiles  # noqa: E402
from streamrank.models.learning.lambdamart import (  # noqa: E402
    FinalRanker,
    LambdaMARTConfig,
    LinearRanker,
    train_lambdamart,
)

DATA = ROOT.parent / "shared" / "data" / "mslr-sample"
TRAIN, TEST = "msn1.fold1.train.5k.txt", "msn1.fold1.test.5k.txt"
N_FEATURES = 136

Scorer = Callable[[np.ndarray], np.ndarray]


def timed(call: Callable[[], object], repeats: int) -> dict[str, float]:
    """p50 / p95 / p99 milliseconds of ``call`` (three untimed warm-up calls first)."""
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - started))
    return latency_percentiles(times)


def compare(train: tuple, test: tuple, config: LambdaMARTConfig, alpha: float) -> dict:
    """Train every ranker on ``train``; nDCG@10 on ``test`` and per-query wins of LambdaMART."""
    X, y, qids = train
    started = time.perf_counter()
    ranker = train_lambdamart(X, y, group_sizes(qids), config)
    lambdamart_seconds = time.perf_counter() - started
    started = time.perf_counter()
    linear = LinearRanker.fit(X, y, alpha=alpha)
    linear_seconds = time.perf_counter() - started
    linear_log = LinearRanker.fit(X, y, alpha=alpha, log1p=True)
    Xt, yt, qt = test
    per_query = {
        "lambdamart": ndcg_per_query(ranker.predict_many(Xt), yt, qt),
        "linear": ndcg_per_query(linear.predict_many(Xt), yt, qt),
        "linear_log1p": ndcg_per_query(linear_log.predict_many(Xt), yt, qt),
        "random_order": ndcg_per_query(np.random.default_rng(0).random(len(yt)), yt, qt),
    }
    result: dict = {
        "queries": len(per_query["lambdamart"]),
        "ndcg@10": {
            name: round(float(np.mean(list(v.values()))), 4) for name, v in per_query.items()
        },
        "train_seconds": {
            "lambdamart": round(lambdamart_seconds, 3),
            "linear": round(linear_seconds, 4),
        },
    }
    for baseline in ("linear", "linear_log1p"):
        diff = np.array(
            [per_query["lambdamart"][q] - per_query[baseline][q] for q in per_query[baseline]]
        )
        result[f"lambdamart_vs_{baseline}"] = {
            "wins": int((diff > 1e-9).sum()),
            "losses": int((diff < -1e-9).sum()),
            "mean_diff": round(float(diff.mean()), 4),
            "stderr": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 4),
        }
    return {"result": result, "ranker": ranker, "linear": linear}


def lightgbm_scorer(ranker: FinalRanker, threads: int | None, workdir: Path) -> Scorer:
    return lambda X: ranker.predict_many(X, num_threads=threads)


def treelite_model(ranker: FinalRanker, workdir: Path):
    import treelite

    path = workdir / "model.txt"
    path.write_text(ranker.model_text, encoding="utf-8")
    return treelite.frontend.load_lightgbm_model(str(path))


def gtil_scorer(ranker: FinalRanker, threads: int | None, workdir: Path) -> Scorer:
    import treelite

    model = treelite_model(ranker, workdir)
    return lambda X: treelite.gtil.predict(model, X.astype(np.float32), nthread=1).ravel()


def tl2cgen_scorer(ranker: FinalRanker, threads: int | None, workdir: Path) -> Scorer:
    import tl2cgen

    libpath = workdir / "model.so"
    tl2cgen.export_lib(treelite_model(ranker, workdir), "gcc", libpath, nthread=1)
    predictor = tl2cgen.Predictor(libpath, nthread=1)
    return lambda X: predictor.predict(tl2cgen.DMatrix(X.astype(np.float32))).ravel()


def lleaves_scorer(ranker: FinalRanker, threads: int | None, workdir: Path) -> Scorer:
    compiled = FinalRanker(ranker.model_text, ranker.feature_names, ranker.config)
    if not compiled.compile(workdir):  # the library's own path: FinalRanker.compile
        raise ImportError("lleaves is not installed (the fast-trees extra)")
    return lambda X: compiled.predict_many(X, num_threads=threads)


def onnx_scorer(ranker: FinalRanker, threads: int | None, workdir: Path) -> Scorer:
    import onnxruntime
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    width = len(ranker.feature_names)
    graph = convert_lightgbm(
        ranker.booster, initial_types=[("input", FloatTensorType([None, width]))]
    )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        graph.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    return lambda X: session.run(None, {name: X.astype(np.float32)})[0].ravel()


SCORERS: dict[str, tuple[Callable[..., Scorer], int | None]] = {
    "lightgbm_1_thread": (lightgbm_scorer, 1),
    "lightgbm_default_threads": (lightgbm_scorer, None),
    "treelite_gtil": (gtil_scorer, 1),
    "tl2cgen": (tl2cgen_scorer, 1),
    "lleaves": (lleaves_scorer, 1),
    "onnxruntime": (onnx_scorer, 1),
}


def query_folds(qids: np.ndarray, k: int = 4, seed: int = 0):
    """``k`` (train mask, held-out mask) pairs that split the queries, not the rows."""
    queries = np.unique(qids)
    np.random.default_rng(seed).shuffle(queries)
    for i in range(k):
        held_out = np.isin(qids, queries[i::k])
        yield ~held_out, held_out


def cross_validate(train: tuple, alphas: list[float]) -> dict:
    """nDCG@10 of a small LambdaMART grid and the ridge alphas, 4 folds by query of ``train``.

    How :class:`LambdaMARTConfig`'s defaults were chosen, on the training sample only.
    """
    X, y, qids = train
    grid = itertools.product((7, 15), (20, 50), (0.5, 1.0), ("exp", "linear"))
    gains = {"exp": (0.0, 1.0, 3.0, 7.0, 15.0), "linear": (0.0, 1.0, 2.0, 3.0, 4.0)}
    out: dict[str, float] = {}
    for leaves, min_leaf, fraction, gain in grid:
        config = LambdaMARTConfig(
            num_leaves=leaves,
            min_data_in_leaf=min_leaf,
            feature_fraction=fraction,
            label_gain=gains[gain],
        )
        scores = []
        for fit, held in query_folds(qids):
            ranker = train_lambdamart(X[fit], y[fit], group_sizes(qids[fit]), config)
            scores.append(mean_ndcg(ranker.predict_many(X[held]), y[held], qids[held]))
        out[f"lambdamart leaves={leaves} min_leaf={min_leaf} ff={fraction} gain={gain}"] = scores
    for alpha, log1p in itertools.product(alphas, (False, True)):
        scores = []
        for fit, held in query_folds(qids):
            linear = LinearRanker.fit(X[fit], y[fit], alpha=alpha, log1p=log1p)
            scores.append(mean_ndcg(linear.predict_many(X[held]), y[held], qids[held]))
        out[f"linear alpha={alpha:g} log1p={log1p}"] = scores
    return {name: round(float(np.mean(v)), 4) for name, v in out.items()}


@contextlib.contextmanager
def stdout_to_stderr():
    """Send file descriptor 1 to stderr: compilers and C++ logs must not break the JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def scoring(ranker: FinalRanker, linear: LinearRanker, rows: np.ndarray, repeats: int) -> dict:
    """Latency over ``rows`` per scorer, its setup seconds and its largest deviation."""
    reference = ranker.predict_many(rows)
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (build, threads) in SCORERS.items():
            workdir = Path(tmp) / name
            workdir.mkdir()
            try:
                started = time.perf_counter()
                with stdout_to_stderr():
                    scorer = build(ranker, threads, workdir)
                    scores = np.asarray(scorer(rows), dtype=np.float64)
                setup = time.perf_counter() - started
            except Exception as error:  # a scorer that cannot run is a result, not a crash
                out[name] = f"unavailable: {type(error).__name__}: {str(error)[:200]}"
                continue
            out[name] = {
                "latency_ms": timed(lambda s=scorer: s(rows), repeats),
                "setup_seconds": round(setup, 2),
                "max_abs_diff": float(np.abs(scores - reference).max()),
            }
    out["linear"] = {"latency_ms": timed(lambda: linear.predict_many(rows), repeats)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--alpha", type=float, default=1000.0, help="the linear ranker's ridge")
    parser.add_argument("--swap", action="store_true", help="also train on test, score train")
    parser.add_argument(
        "--cv", action="store_true", help="also cross-validate the config grid on train (~2 min)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (args.data / TRAIN).is_file():
        sys.exit(f"MSLR sample not found at {args.data} (../shared/data/mslr-sample)")

    started = time.perf_counter()
    train = read_letor(args.data / TRAIN, N_FEATURES)
    test = read_letor(args.data / TEST, N_FEATURES)
    read_seconds = time.perf_counter() - started
    config = LambdaMARTConfig()
    import lightgbm  # noqa: F401  (imported here so that its ~1 s import is not training time)

    runs = compare(train, test, config, args.alpha)
    result = {
        "rows": {"train": len(train[1]), "test": len(test[1])},
        "read_seconds": round(read_seconds, 2),
        "config": {k: v for k, v in vars(config).items()},
        "linear_alpha": args.alpha,
        "train_to_test": runs["result"],
    }
    if args.swap:
        result["test_to_train"] = compare(test, train, config, args.alpha)["result"]
    if args.cv:
        result["cv_ndcg@10_on_train"] = cross_validate(train, [10.0, 100.0, 1000.0])
    ranker = runs["ranker"]
    result["trees"] = ranker.num_trees
    rows = np.ascontiguousarray(test[0][: args.rows], dtype=np.float64)
    result["scoring_rows"] = len(rows)
    result["scoring"] = scoring(ranker, runs["linear"], rows, args.repeats)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
