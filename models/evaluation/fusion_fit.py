"""Setting a cascade's fusion for a corpus from a few judged queries, and checking it on the rest.

How much a tier should count against the order it received depends on the corpus: on the
web-search passages it was trained on, the cross-encoder alone is best; on scientific
abstracts the first stage knows more. :func:`fit_fusion` tries a grid of
:class:`~streamrank.models.scoring.fusion.Fusion` settings on ``fit`` judged queries (drawn at
random with a seed), keeps the best by mean nDCG@10, and reports it on the other queries next
to no fusion and the default, so the figure that decides is never the one that was fitted.

Each tier scores a (query, document) pair once for the whole grid (:class:`MemoTier`): the
settings differ only in which candidates reach the later tiers, so a grid costs little more
than one run.

Examples
--------
>>> [str(f) for f in fusion_grid(("minmax",), (0.5, 1.0))]
['none', 'minmax:0.5', 'minmax:1']
>>> split_queries(["q1", "q2", "q3", "q4"], fit=1, seed=0)
(['q4'], ['q1', 'q2', 'q3'])
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamrank.models.evaluation.metrics import mean_metrics, ndcg_at_k
from streamrank.models.evaluation.rerank import Query, encode_documents
from streamrank.models.progress import ProgressReporter, SilentProgress
from streamrank.models.scoring.cascade import Cascade, PipelineError, parse_pipeline
from streamrank.models.scoring.fusion import DEFAULT_FUSION, METHODS, NO_FUSION, Fusion
from streamrank.models.scoring.tiers import TierScores
from streamrank.models.types import CandidateLike

GRID_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
GRID_METHODS = ("minmax", "zscore", "rrf")


class MemoTier:
    """A tier that scores each (query, document) pair once and answers repeats from memory.

    Evaluation only: nothing is ever evicted, and ``budget_s`` is ignored.
    """

    def __init__(self, tier: Any) -> None:
        self.tier = tier
        self.name = tier.name
        self.version = tier.version
        self.memo: dict[tuple[str, str], float] = {}

    def score(
        self, query: str, candidates: Sequence[CandidateLike], budget_s: float | None
    ) -> TierScores:
        missing = [c for c in candidates if (query, c.doc_id) not in self.memo]
        if missing:
            fresh = self.tier.score(query, missing, None)
            for candidate, value in zip(missing, fresh.scores, strict=True):
                self.memo[(query, candidate.doc_id)] = float(value)
        scores = np.array([self.memo[(query, c.doc_id)] for c in candidates])
        return TierScores(scores, inferred=len(missing), cached=len(candidates) - len(missing))

    def ensure_vectors(self, candidates: Sequence[CandidateLike]) -> int:
        """The wrapped tier's document encoding (0 for a tier without vectors)."""
        ensure = getattr(self.tier, "ensure_vectors", None)
        return ensure(candidates) if ensure else 0


def memoised(cascade: Cascade) -> Cascade:
    """``cascade`` over :class:`MemoTier` copies of its tiers."""
    tiers = {name: MemoTier(tier) for name, tier in cascade.tiers.items()}
    return Cascade(cascade.spec, tiers, cascade.confidence, cascade.fusion)


def fusion_grid(
    methods: Sequence[str] = GRID_METHODS, weights: Sequence[float] = GRID_WEIGHTS
) -> list[Fusion]:
    """``none`` and every method at every weight."""
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        Fusion(unknown[0])  # raises FusionError naming the methods
    return [NO_FUSION] + [Fusion(m, w) for m in methods if m != "none" for w in weights]


def split_queries(qids: Sequence[str], fit: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``fit`` query ids drawn at random (seeded) and the rest, each in the given order."""
    chosen = set(random.Random(seed).sample(list(qids), min(fit, len(qids))))
    return [q for q in qids if q in chosen], [q for q in qids if q not in chosen]


def grid_rankings(
    cascade: Cascade,
    queries: list[Query],
    grid: Sequence[Fusion],
    progress: ProgressReporter | None = None,
) -> dict[str, dict[str, list[str]]]:
    """Every query's ranking under every fusion of ``grid``, keyed by ``str(fusion)``."""
    progress = progress or SilentProgress()
    memo = memoised(cascade)
    encode_documents(memo, queries, progress)
    out: dict[str, dict[str, list[str]]] = {}
    with progress.stage(f"fusion grid ({cascade.spec})", len(grid) * len(queries)) as advance:
        for fusion in grid:
            variant = memo.with_fusion(fusion)
            runs = {}
            for query in queries:
                runs[query.qid] = variant.rank(query.text, query.candidates).doc_ids
                advance(1)
            out[str(fusion)] = runs
    return out


def ndcg(runs: dict[str, list[str]], qrels: dict[str, dict[str, int]], qids: list[str]) -> float:
    """Mean nDCG@10 over ``qids``."""
    chosen = {q: runs[q] for q in qids}
    return round(mean_metrics(chosen, qrels, k=10)["ndcg@10"], 4) if chosen else 0.0


def choose(
    runs: dict[str, dict[str, list[str]]],
    qrels: dict[str, dict[str, int]],
    qids: list[str],
    reference: str = "none",
) -> str:
    """The best setting on ``qids``, unless it beats ``reference`` by less than one standard
    error of their per-query difference: then ``reference``.

    A few queries make a noisy fit, and the best of a grid of 28 settings is chosen for
    its luck as much as for its merit; the reference (the tier's own order) is kept unless
    the gain stands out of that noise.
    """
    if not qids:
        return reference
    per_query = {
        name: np.array([ndcg_at_k(r[q], qrels[q], 10) for q in qids]) for name, r in runs.items()
    }
    best = max(per_query, key=lambda name: per_query[name].mean())  # first of ties
    gain = per_query[best] - per_query[reference]
    error = gain.std(ddof=1) / np.sqrt(len(qids)) if len(qids) > 1 else 0.0
    return best if gain.mean() > error else reference


def fit_fusion(
    cascade: Cascade,
    queries: list[Query],
    qrels: dict[str, dict[str, int]],
    fit: int,
    seed: int = 0,
    grid: Sequence[Fusion] | None = None,
    progress: ProgressReporter | None = None,
) -> dict[str, Any]:
    """The best fusion on ``fit`` random judged queries, and how it does on the rest.

    Parameters
    ----------
    cascade
        The pipeline to fit (its own fusion is ignored).
    queries
        Queries with candidates; only those with judgments count.
    fit
        How many queries to fit on; the others are held out.
    seed
        Which queries are drawn.
    grid
        Settings tried; default :func:`fusion_grid`.

    Returns
    -------
    dict
        ``fusion`` (the best on the fitted queries, see :func:`choose`), ``fit_queries``,
        ``held_out_queries``, ``fit_ndcg@10``, and on the held-out queries
        ``held_out_ndcg@10`` for the fitted fusion, ``none`` and the default, and ``grid``
        (every setting's fitted and held-out nDCG@10).
    """
    judged = [q for q in queries if qrels.get(q.qid)]
    fitted_ids, held_ids = split_queries([q.qid for q in judged], fit, seed)
    grid = list(grid) if grid is not None else fusion_grid()
    names = {str(f) for f in grid}
    grid += [f for f in (NO_FUSION, DEFAULT_FUSION) if str(f) not in names]
    runs = grid_rankings(cascade, judged, grid, progress)
    table = {
        name: {"fit": ndcg(r, qrels, fitted_ids), "held_out": ndcg(r, qrels, held_ids)}
        for name, r in runs.items()
    }
    best = choose(runs, qrels, fitted_ids)
    return {
        "pipeline": cascade.spec,
        "fusion": best,
        "fit_queries": len(fitted_ids),
        "held_out_queries": len(held_ids),
        "seed": seed,
        "fit_ndcg@10": table[best]["fit"],
        "held_out_ndcg@10": {
            "fitted": table[best]["held_out"],
            "none": table["none"]["held_out"],
            "default": table[str(DEFAULT_FUSION)]["held_out"],
        },
        "default": str(DEFAULT_FUSION),
        "grid": table,
    }


def fit_on_candidates(
    candidates_file: str | Path,
    qrels_file: str | Path,
    pipeline: str,
    fit: int,
    seed: int = 0,
    grid: Sequence[Fusion] | None = None,
    model_dir: str | Path | None = None,
    max_length: int = 256,
    progress: ProgressReporter | None = None,
) -> dict[str, Any]:
    """:func:`fit_fusion` over a rank_llm candidate file (``eval rerank``'s input)."""
    from streamrank.models.assets.model_files import default_model_dir
    from streamrank.models.evaluation.rerank import load_candidates, load_qrels
    from streamrank.models.scoring.factory import build_cascade

    parse_pipeline(pipeline)
    queries = load_candidates(candidates_file)
    qrels = load_qrels(qrels_file)
    cascade = build_cascade(pipeline, model_dir or default_model_dir(), max_length)
    return fit_fusion(cascade, queries, qrels, fit, seed, grid, progress)


def fit_on_corpus(
    corpus: Path,
    queries_file: Path,
    qrels_file: Path,
    pipeline: str,
    fit: int,
    seed: int = 0,
    grid: Sequence[Fusion] | None = None,
    model_dir: Path | None = None,
    max_length: int = 256,
    index_dir: Path | None = None,
    progress: ProgressReporter | None = None,
) -> dict[str, Any]:
    """:func:`fit_fusion` over a BEIR corpus and a first stage (``eval pipeline``'s input).

    Raises
    ------
    streamrank.models.scoring.cascade.PipelineError
        When ``pipeline`` has no tier after its first stage (nothing to fuse).
    """
    from streamrank.models.assets.model_files import default_model_dir
    from streamrank.models.evaluation.first_stage import judged_queries
    from streamrank.models.evaluation.pipeline import load_stage, retrieve_all, split_pipeline
    from streamrank.models.retrieval.corpus import read_qrels, read_queries
    from streamrank.models.scoring.factory import build_cascade

    method, k1, cascade_spec = split_pipeline(pipeline)
    if cascade_spec is None:
        raise PipelineError(f"{pipeline!r} has no tier after its first stage: nothing to fuse")
    model_dir = model_dir or default_model_dir()
    stage = load_stage(corpus, index_dir, method, model_dir)
    qrels = read_qrels(qrels_file).items
    texts = judged_queries(read_queries(queries_file).items, qrels)
    queries, _ = retrieve_all(stage, texts, method, k1)
    cascade = build_cascade(cascade_spec, model_dir, max_length)
    report = fit_fusion(cascade, queries, qrels, fit, seed, grid, progress)
    return report | {"pipeline": pipeline}
