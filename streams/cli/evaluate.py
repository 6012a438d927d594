"""``streamrank eval``: re-ranking pipelines against relevance judgments.

::

    streamrank eval rerank --candidates FILE.json --qrels QRELS.txt --pipeline P
                           [--fusion METHOD[:WEIGHT]] [--max-length N] [--deadline-ms MS]
                           [--model-dir DIR] [--json]
    streamrank eval pipeline --corpus C --queries Q --qrels R --pipeline P [--pipeline P2 ...]
                             [--fusion METHOD[:WEIGHT]] [--index DIR] [--max-length N]
                             [--model-dir DIR] [--json]
    streamrank eval fit-fusion (--candidates FILE.json | --corpus C --queries Q) --qrels R
                               --pipeline P [--fit N] [--seed S] [--json]
    streamrank eval shop --offline [--seed S] [--train-queries N] [--test-queries N]
                         [--candidates K] [--data DIR] [--model-dir DIR] [--json]

``--fusion`` defaults to the configured one (``STREAMRANK_FUSION``, ``STREAMRANK_FUSION_WEIGHT``),
so an evaluation ranks as the worker would; ``fit-fusion`` prints the setting that did best on
``--fit`` random judged queries and how it, no fusion and the default do on the others.

The evaluations themselves are library code (:mod:`streamrank.models.evaluation.rerank`,
:mod:`streamrank.models.evaluation.pipeline`); these commands read the options, draw the
progress on stderr and print the results to stdout, so ``--json`` output can be piped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from streamrank.streams.cli.helpers import (
    EXISTING_FILE,
    RichProgress,
    console,
    errors,
    fail,
    judged_candidates,
    load_bi_encoder_or_fail,
    model_dir_option,
    no_broker,
    progress_bar,
)

PIPELINE_FIX = "use tiers first-stage, dense, colbert, student, ce joined by '>', e.g. dense>ce:30"
FUSION_HELP = "none, minmax, zscore or rrf, with :WEIGHT (the tier's share, 0-1); default: config"


def parse_fusion(context: click.Context, parameter: click.Parameter, value: str | None) -> Any:
    """``--fusion`` as a :class:`~streamrank.models.scoring.fusion.Fusion` (the configured one
    when not given); a bad one is a usage error that names the methods."""
    from streamrank.models.scoring.fusion import Fusion, FusionError

    if value is None:
        from streamrank.streams.config import get_settings

        return get_settings().cascade_fusion()
    try:
        return Fusion.parse(value)
    except FusionError as error:
        raise click.BadParameter(str(error)) from None


fusion_option = click.option(
    "--fusion", callback=parse_fusion, metavar="METHOD[:WEIGHT]", help=FUSION_HELP
)


@click.group("eval")
def eval_group() -> None:
    """Evaluate re-ranking pipelines against relevance judgments."""


@eval_group.command("rerank")
@judged_candidates
@click.option("--pipeline", default="dense>ce:30", show_default=True, help="e.g. ce, dense>ce:20")
@click.option("--max-length", default=256, show_default=True, help="cross-encoder tokens/pair")
@click.option("--deadline-ms", type=float, default=None, help="per-query latency budget")
@fusion_option
@model_dir_option
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def rerank(
    candidates: Path,
    qrels: Path,
    pipeline: str,
    max_length: int,
    deadline_ms: float | None,
    fusion: Any,
    model_dir: Path,
    as_json: bool,
) -> None:
    """Re-rank every query's candidates with PIPELINE; nDCG@10, MRR@10, recall@10, speed.

    Example: streamrank eval rerank --candidates bm25-top100.json --qrels qrels.txt
    --pipeline "dense>ce:30" --json
    """
    from streamrank.models.assets.model_files import ModelFilesError
    from streamrank.models.evaluation.rerank import evaluate_rerank
    from streamrank.models.scoring.cascade import PipelineError

    try:
        with progress_bar(errors) as bars:
            report = evaluate_rerank(
                candidates,
                qrels,
                pipeline,
                max_length=max_length,
                model_dir=model_dir,
                deadline_s=None if deadline_ms is None else deadline_ms / 1000,
                progress=RichProgress(bars),
                fusion=fusion,
            )
    except PipelineError as error:
        fail(str(error), PIPELINE_FIX)
    except ModelFilesError as error:
        fail(str(error).splitlines()[0], "run `streamrank models fetch`")
    if as_json:
        click.echo(json.dumps(report))
    else:
        console.print(report_table(report))


def report_table(report: dict[str, Any]) -> Table:
    """The evaluation report as a rich table."""
    title = f"{report['pipeline']} (max length {report['max_length']}, fusion {report['fusion']})"
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in ("queries", "ndcg@10", "mrr@10", "recall@10", "pairs_scored", "pairs_per_second"):
        table.add_row(name, str(report[name]))
    for name, value in report["latency_ms"].items():
        table.add_row(f"latency {name} (ms)", f"{value:.1f}")
    table.add_row("doc encode (s, once)", f"{report['doc_encode_seconds']:.1f}")
    table.add_row("degraded queries", str(report["degraded_queries"]))
    return table


@eval_group.command("pipeline")
@click.option(
    "--corpus",
    type=EXISTING_FILE,
    required=True,
    help="BEIR corpus.jsonl",
)
@click.option(
    "--queries",
    type=EXISTING_FILE,
    required=True,
    help="BEIR queries.jsonl",
)
@click.option(
    "--qrels",
    type=EXISTING_FILE,
    required=True,
    help="TREC or BEIR qrels",
)
@click.option(
    "--pipeline",
    "specs",
    multiple=True,
    required=True,
    help="e.g. bm25, hybrid:1000, hybrid:1000>dense:100>ce:20 (repeatable)",
)
@click.option(
    "--index",
    "index_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="index directory (default: the cache; built when missing)",
)
@click.option("--max-length", default=256, show_default=True)
@fusion_option
@model_dir_option
@click.option("--json", "as_json", is_flag=True, help="one JSON object per pipeline")
def pipeline(
    corpus: Path,
    queries: Path,
    qrels: Path,
    specs: tuple[str, ...],
    index_dir: Path | None,
    max_length: int,
    fusion: Any,
    model_dir: Path,
    as_json: bool,
) -> None:
    """Evaluate first stage + cascade pipelines on a BEIR collection.

    Example: streamrank eval pipeline --corpus ../shared/data/scifact/corpus.jsonl
    --queries ../shared/data/scifact/queries.jsonl
    --qrels ../shared/data/scifact/qrels-test.txt --pipeline hybrid:1000>dense:100>ce:20
    """
    from streamrank.models.assets.model_files import ModelFilesError
    from streamrank.models.evaluation.pipeline import evaluate_pipeline, load_stage, split_pipeline
    from streamrank.models.retrieval.corpus import read_qrels, read_queries
    from streamrank.models.retrieval.first_stage import IndexMismatchError
    from streamrank.models.scoring.cascade import PipelineError
    from streamrank.models.scoring.factory import build_cascade

    try:
        methods = {split_pipeline(spec)[0] for spec in specs}
    except PipelineError as error:
        raise click.UsageError(str(error)) from None
    method = "hybrid" if methods - {"bm25"} else "bm25"
    try:
        stage = load_stage(corpus, index_dir, method, model_dir)
        query_texts = read_queries(queries).items
        judgments = read_qrels(qrels).items
        with progress_bar(errors, transient=True, disable=as_json) as bars:
            results = [
                evaluate_pipeline(
                    stage,
                    query_texts,
                    judgments,
                    spec,
                    lambda cascade_spec: build_cascade(
                        cascade_spec, model_dir, max_length
                    ).with_fusion(fusion),
                    progress=RichProgress(bars),
                )
                for spec in specs
            ]
    except PipelineError as error:
        fail(str(error), "a first stage, then the tiers: e.g. hybrid:1000>dense:100>ce:20")
    except ModelFilesError as error:
        fail(str(error).splitlines()[0], "run `streamrank models fetch`")
    except IndexMismatchError as error:
        fail(str(error), "rebuild the index, or leave out --index to use the cache")
    if as_json:
        for result in results:
            click.echo(json.dumps(result))
        return
    console.print(pipeline_table(results))


def pipeline_table(results: list[dict[str, Any]]) -> Table:
    """One row per evaluated pipeline: quality, first-stage recall, cost and latency."""
    table = Table("pipeline", "nDCG@10", "R@100", "R@1000", "pairs", "p50 ms", "p95 ms")
    for r in results:
        table.add_row(
            r["pipeline"],
            f"{r['ndcg@10']:.4f}",
            f"{r['recall@100']:.3f}",
            f"{r['recall@1000']:.3f}",
            str(r["pairs_scored"]),
            f"{r['latency_ms']['p50']:.0f}",
            f"{r['latency_ms']['p95']:.0f}",
        )
    return table


@eval_group.command("fit-fusion")
@click.option(
    "--candidates",
    type=EXISTING_FILE,
    help="rank_llm JSON candidate lists (as `eval rerank`), or give --corpus and --queries",
)
@click.option(
    "--corpus",
    type=EXISTING_FILE,
    help="BEIR corpus.jsonl (as `eval pipeline`)",
)
@click.option(
    "--queries",
    type=EXISTING_FILE,
    help="BEIR queries.jsonl (with --corpus)",
)
@click.option(
    "--qrels",
    type=EXISTING_FILE,
    required=True,
    help="TREC or BEIR qrels",
)
@click.option("--pipeline", required=True, help="e.g. dense>ce:30, or hybrid:1000>dense:100>ce:20")
@click.option("--fit", default=20, show_default=True, help="judged queries to fit on")
@click.option("--seed", default=0, show_default=True, help="which queries are drawn")
@click.option(
    "--methods", default="minmax,zscore,rrf", show_default=True, help="fusion methods to try"
)
@click.option(
    "--index",
    "index_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="index directory, with --corpus (default: the cache)",
)
@click.option("--max-length", default=256, show_default=True)
@model_dir_option
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def fit_fusion_command(
    candidates: Path | None,
    corpus: Path | None,
    queries: Path | None,
    qrels: Path,
    pipeline: str,
    fit: int,
    seed: int,
    methods: str,
    index_dir: Path | None,
    max_length: int,
    model_dir: Path,
    as_json: bool,
) -> None:
    """Fit the fusion weight on FIT random judged queries; report it on the rest.

    Example: streamrank eval fit-fusion --corpus ../shared/data/scifact/corpus.jsonl
    --queries ../shared/data/scifact/queries.jsonl --qrels ../shared/data/scifact/qrels-test.txt
    --pipeline hybrid:1000>dense:100>ce:20 --fit 30
    """
    from streamrank.models.assets.model_files import ModelFilesError
    from streamrank.models.evaluation.fusion_fit import (
        fit_on_candidates,
        fit_on_corpus,
        fusion_grid,
    )
    from streamrank.models.scoring.cascade import PipelineError
    from streamrank.models.scoring.fusion import FusionError

    if (candidates is None) == (corpus is None) or (corpus is not None and queries is None):
        raise click.UsageError("give --candidates, or --corpus with --queries")
    if fit < 1:
        raise click.BadParameter("at least one query to fit on", param_hint="--fit")
    try:
        grid = fusion_grid(tuple(m.strip() for m in methods.split(",") if m.strip()))
    except FusionError as error:
        raise click.BadParameter(str(error), param_hint="--methods") from None
    try:
        with progress_bar(errors, transient=True, disable=as_json) as bars:
            progress = RichProgress(bars)
            if candidates is not None:
                report = fit_on_candidates(
                    candidates, qrels, pipeline, fit, seed, grid, model_dir, max_length, progress
                )
            else:
                report = fit_on_corpus(
                    corpus,  # type: ignore[arg-type]
                    queries,  # type: ignore[arg-type]
                    qrels,
                    pipeline,
                    fit,
                    seed,
                    grid,
                    model_dir,
                    max_length,
                    index_dir,
                    progress,
                )
    except PipelineError as error:
        fail(str(error), PIPELINE_FIX)
    except ModelFilesError as error:
        fail(str(error).splitlines()[0], "run `streamrank models fetch`")
    if as_json:
        click.echo(json.dumps(report))
        return
    console.print(fit_table(report))


def fit_table(report: dict[str, Any]) -> Table:
    """The fitted fusion, its held-out figure beside none and the default, and how to set it."""
    method, _, weight = report["fusion"].partition(":")
    held = report["held_out_ndcg@10"]
    table = Table(
        title=f"{report['pipeline']}: fitted on {report['fit_queries']} queries, "
        f"held out {report['held_out_queries']}"
    )
    table.add_column("fusion")
    table.add_column("nDCG@10 fitted", justify="right")
    table.add_column("nDCG@10 held out", justify="right")
    rows = [(report["fusion"], "fitted"), ("none", "none"), (report["default"], "default")]
    for name, key in rows:
        table.add_row(f"{name} ({key})", f"{report['grid'][name]['fit']:.4f}", f"{held[key]:.4f}")
    setting = f"STREAMRANK_FUSION={method}"
    if weight:
        setting += f" STREAMRANK_FUSION_WEIGHT={weight}"
    table.caption = f"to serve it: {setting}"
    return table


@eval_group.command("shop")
@click.option("--seed", default=0, show_default=True, help="draws stock, promotions, queries")
@click.option(
    "--offline",
    is_flag=True,
    help="library only: no live worker, no streaming figure (no services needed)",
)
@click.option(
    "--streaming-searches",
    default=500,
    show_default=True,
    type=click.IntRange(min=1),
    help="held-out searches the streaming replay answers through a live worker",
)
@click.option(
    "--train-queries",
    default=3000,
    show_default=True,
    type=click.IntRange(min=10),
    help="training searches sampled",
)
@click.option(
    "--test-queries",
    default=None,
    type=click.IntRange(min=10),
    help="held-out searches sampled  [default: all]",
)
@click.option("--candidates", default=200, show_default=True, type=click.IntRange(min=10))
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="the MovieLens folder  [default: <cache>/streamrank/data/movielens]",
)
@model_dir_option
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def shop_command(
    seed: int,
    offline: bool,
    streaming_searches: int,
    train_queries: int,
    test_queries: int | None,
    candidates: int,
    data_dir: Path | None,
    model_dir: Path,
    as_json: bool,
) -> None:
    """The shop: the cascade, popularity and LambdaMART with and without personal features,
    on MovieLens users' held-out purchases (nDCG@10, purchases@10, latency, rules).

    Without --offline, the streaming figure too: the training period replayed through a live
    worker (its own topics and keys, removed afterwards) serving the personalised model, up to
    each of --streaming-searches held-out searches (needs the services; a few minutes).

    Example: streamrank eval shop --offline --json
    """
    from streamrank.models.assets.movielens import DEFAULT_OUT, MovieLensMissing, load_movielens
    from streamrank.models.evaluation.shop import build_shop
    from streamrank.models.evaluation.shop_eval import ShopEvalConfig, run_shop_eval
    from streamrank.streams.shop_demo import shop_table

    try:
        data = load_movielens(data_dir or DEFAULT_OUT)
    except MovieLensMissing as error:
        fail(str(error).splitlines()[0], "run `streamrank data fetch movielens`")
    encoder = load_bi_encoder_or_fail(model_dir, "run `streamrank models fetch`")
    config = ShopEvalConfig(
        seed, candidates, train_queries, test_queries, streaming_searches=streaming_searches
    )
    log = (lambda message: None) if as_json else errors.print
    shop = build_shop(data, seed)
    streaming = None if offline else streaming_replay(data, shop, as_json)
    report = run_shop_eval(
        data, shop, encoder, config, model_dir / "shop", log=log, streaming=streaming
    )
    if as_json:
        click.echo(json.dumps(report))
        return
    console.print(shop_table(report))


def streaming_replay(data: Any, shop: Any, quiet: bool) -> Any:
    """The streaming half of `eval shop`: a replay through a live worker, with a progress bar
    (:func:`~streamrank.streams.shop_replay.replay_shop`)."""
    from streamrank.streams.config import get_settings
    from streamrank.streams.kafka.topics import UNREACHABLE
    from streamrank.streams.shop_replay import replay_shop

    settings = get_settings()

    def run(tests: list, ranker: Any, features: Any) -> dict[str, Any]:
        with progress_bar(disable=quiet) as bars:
            task = bars.add_task("replaying through a live worker", total=None)

            def progress(what: str, done: int, total: int) -> None:
                bars.update(task, description=what, completed=done, total=total)

            try:
                return replay_shop(
                    settings, data, shop, tests, ranker, features, Path(".run"), progress
                )[0]
            except UNREACHABLE:
                no_broker(settings)
                raise

    return run
