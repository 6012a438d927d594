"""``streamrank analyze``: where relevant documents get lost in a cascade.

::

    streamrank analyze --corpus C --queries Q --qrels R [--k1 1000 --k2 100] [--plot PNG] [--json]

The analysis is library code (:mod:`streamrank.models.evaluation.recall_analysis`); this
command runs the first stage (and a dense cheap tier) over the judged queries, hands the
rankings to it and renders its report as tables, or as one JSON object with ``--json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
from rich.table import Table

from streamrank.models.evaluation.recall_analysis import (
    CATEGORIES,
    BottleneckReport,
    SweepRow,
    k_sweep,
    plot_sweep,
    recall_bottlenecks,
)
from streamrank.models.retrieval.corpus import (
    CollectionError,
    read_corpus,
    read_qrels,
    read_queries,
)
from streamrank.streams.cli.helpers import (
    RichProgress,
    console,
    errors,
    fail,
    load_bi_encoder_or_fail,
    model_dir_option,
    progress_bar,
)

if TYPE_CHECKING:
    from streamrank.models.retrieval.dense import Encoder
    from streamrank.models.retrieval.first_stage import FirstStage

# streamrank.models.retrieval.first_stage.METHODS, without importing bm25s for every command
METHODS = ("bm25", "dense", "hybrid")


@click.command("analyze")
@click.option(
    "--corpus",
    type=click.Path(dir_okay=False, path_type=Path),
    help="BEIR corpus.jsonl (indexed on the fly unless --index is given)",
)
@click.option(
    "--index",
    "index_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="an index directory from `streamrank index build`",
)
@click.option("--queries", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--qrels", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option(
    "--first-stage", "method", type=click.Choice(METHODS), default="bm25", show_default=True
)
@click.option(
    "--cheap-tier",
    type=click.Choice(["none", "dense"]),
    default="none",
    show_default=True,
    help="re-orders the K1 candidates before the cut at K2",
)
@click.option("--k1", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--k2", type=click.IntRange(1), default=100, show_default=True)
@click.option("--top", type=click.IntRange(1), default=10, show_default=True)
@click.option(
    "--pairs-per-second",
    type=float,
    default=None,
    help="measured cross-encoder throughput, to turn pairs into milliseconds",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write the K sweep as a PNG here",
)
@model_dir_option
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of tables")
def analyze(
    corpus: Path | None,
    index_dir: Path | None,
    queries: Path,
    qrels: Path,
    method: str,
    cheap_tier: str,
    k1: int,
    k2: int,
    top: int,
    pairs_per_second: float | None,
    plot: Path | None,
    model_dir: Path,
    as_json: bool,
) -> None:
    """Where relevant documents get lost: first stage, cheap tier or cross-encoder.

    Per query and in total, counts the relevant documents (a) not retrieved in the top K1,
    (b) dropped by the cheap tier before the cross-encoder, (c) that reached it but ended below
    rank 10; plus recall@K and cross-encoder cost for K from 10 to 1000. Without a cheap tier
    the K2 cut is the first-stage order.

    \b
    Example:
      streamrank analyze --corpus ../shared/data/scifact/corpus.jsonl \\
        --queries ../shared/data/scifact/queries.jsonl \\
        --qrels ../shared/data/scifact/qrels-test.txt --plot sweep.png
    """
    from streamrank.models.evaluation.first_stage import judged_queries, score_run

    needs_dense = method != "bm25" or cheap_tier == "dense"
    fix = "run `streamrank models fetch`, or use --first-stage bm25 --cheap-tier none"
    encoder = load_bi_encoder_or_fail(model_dir, fix) if needs_dense else None
    try:
        judged = read_qrels(qrels).items
        texts = judged_queries(read_queries(queries).items, judged)
        stage = _stage_for_analysis(corpus, index_dir, encoder)
    except (CollectionError, FileNotFoundError) as error:
        fail(str(error), "check the --corpus/--index, --queries and --qrels paths")
    if needs_dense and not stage.has_dense:
        fail("the index has no dense vectors", "rebuild it with `streamrank index build --dense`")
    first, kept = _run_cascade(stage, texts, method, cheap_tier, k1, k2)
    tiers = {
        "first_stage": f"{method} top {k1}",
        "cheap_tier": f"{cheap_tier} keeps {k2}"
        if cheap_tier != "none"
        else f"none (first-stage order cut at {k2})",
        "final": "cheap-tier order (no cross-encoder in this analysis)",
    }
    report = recall_bottlenecks(judged, first, kept, None, k1=k1, k2=k2, top=top, tiers=tiers)
    sweep = k_sweep(judged, first, pairs_per_second=pairs_per_second)
    if plot is not None:
        plot_sweep(sweep, plot, title=f"{method} first stage: recall@K vs. cross-encoder cost")
    _print_analysis(report, sweep, score_run(first, judged), plot, as_json)


def _stage_for_analysis(
    corpus: Path | None, index_dir: Path | None, encoder: Encoder | None
) -> FirstStage:
    from streamrank.models.retrieval.first_stage import FirstStage

    if index_dir is not None:
        return FirstStage.load(index_dir, encoder)
    if corpus is None:
        fail("give --corpus or --index", "e.g. --corpus ../shared/data/scifact/corpus.jsonl")
    with progress_bar(errors) as bars:
        docs = read_corpus(corpus).items
        return FirstStage.build(docs, encoder, RichProgress(bars))


def _run_cascade(
    stage: FirstStage, texts: dict[str, str], method: Any, cheap_tier: str, k1: int, k2: int
) -> tuple[dict[str, list[str]], dict[str, list[str]] | None]:
    """First-stage rankings and, with a dense cheap tier, what it keeps."""
    first: dict[str, list[str]] = {}
    kept: dict[str, list[str]] | None = {} if cheap_tier == "dense" else None
    with (
        progress_bar(errors) as bars,
        RichProgress(bars).stage(f"retrieve ({method})", len(texts)) as advance,
    ):
        for qid, text in texts.items():
            first[qid] = [hit.doc_id for hit in stage.retrieve(text, k1, method)]
            if kept is not None:
                kept[qid] = _dense_keep(stage, text, first[qid], k2)
            advance(1)
    return first, kept


def _dense_keep(stage: FirstStage, text: str, candidates: Sequence[str], k2: int) -> list[str]:
    """The dense cheap tier: re-order candidates by inner product, keep the best ``k2``."""
    from streamrank.models.retrieval.dense import encode_queries

    assert stage.dense is not None and stage.encoder is not None
    vector = encode_queries(stage.encoder, [text])[0]
    # A candidate without a vector (should not happen) sinks to the end instead of breaking.
    scores = np.nan_to_num(stage.dense.scores_for(vector, candidates), nan=-np.inf)
    order = sorted(range(len(candidates)), key=lambda i: (-scores[i], i))
    return [candidates[i] for i in order[:k2]]


def _print_analysis(
    report: BottleneckReport,
    sweep: list[SweepRow],
    first_metrics: dict[str, float],
    plot: Path | None,
    as_json: bool,
) -> None:
    if as_json:
        payload = report.to_json() | {
            "first_stage_metrics": first_metrics,
            "sweep": [row.__dict__ for row in sweep],
            "plot": str(plot) if plot else None,
        }
        click.echo(json.dumps(payload))
        return
    console.print(totals_table(report))
    console.print(per_query_table(report))
    console.print(sweep_table(sweep))
    console.print(
        "first stage: " + ", ".join(f"{name} {value:.4f}" for name, value in first_metrics.items())
    )
    if plot is not None:
        console.print(f"plot: {plot}")


def totals_table(report: BottleneckReport) -> Table:
    """The totals as a rich table: count and share of the relevant documents per category."""
    totals = report.totals()
    table = Table(
        title=f"Where the {totals['relevant']} relevant documents of "
        f"{totals['queries']} queries ended up"
    )
    table.add_column("category")
    table.add_column("documents", justify="right")
    table.add_column("share", justify="right")
    labels = {
        "not_retrieved": f"(a) not in first-stage top {report.k1}",
        "dropped_by_cheap_tier": f"(b) dropped by the cheap tier (kept {report.k2})",
        "below_top": f"(c) reached the cross-encoder, ended below {report.top}",
        "in_top": f"in the final top {report.top}",
    }
    for name in CATEGORIES:
        share = totals[name] / totals["relevant"] if totals["relevant"] else 0.0
        table.add_row(labels[name], str(totals[name]), f"{share:.1%}")
    return table


def per_query_table(report: BottleneckReport, limit: int = 15) -> Table:
    """The queries that lost the most relevant documents, worst first."""
    worst = sorted((r for r in report.per_query if r.lost), key=lambda r: (-r.lost, r.qid))
    table = Table(title=f"Queries losing relevant documents ({len(worst)}; worst {limit} shown)")
    for column in ("query", "relevant", "(a)", "(b)", "(c)", f"top {report.top}"):
        table.add_column(column, justify="left" if column == "query" else "right")
    for row in worst[:limit]:
        values = (row.relevant, row.not_retrieved, row.dropped_by_cheap_tier, row.below_top)
        table.add_row(row.qid, *map(str, values), str(row.in_top))
    return table


def sweep_table(rows: Sequence[SweepRow]) -> Table:
    """The K sweep as a rich table."""
    table = Table(title="First-stage recall@K and cross-encoder cost")
    for column in ("K", "recall@K", "relevant found", "CE pairs/query", "CE pairs total"):
        table.add_column(column, justify="right")
    timed = any(row.ce_ms_per_query is not None for row in rows)
    if timed:
        table.add_column("CE ms/query", justify="right")
    for row in rows:
        cells = [
            str(row.k),
            f"{row.recall:.4f}",
            str(row.relevant_found),
            f"{row.ce_pairs_per_query:g}",
            str(row.ce_pairs_total),
        ]
        if timed:
            cells.append("" if row.ce_ms_per_query is None else f"{row.ce_ms_per_query:g}")
        table.add_row(*cells)
    return table
