"""``streamrank index``: build and inspect first-stage indexes (BM25 and dense vectors).

::

    streamrank index build CORPUS.jsonl [--out DIR] [--dense/--no-dense] [--model-dir DIR]
    streamrank index info DIR

Progress bars and messages go to stderr, results to stdout, so ``--json`` output can be piped.
bm25s and onnxruntime are imported inside the commands: every other command of ``streamrank``
would otherwise pay for them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table

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
    from streamrank.models.retrieval.first_stage import BuildSummary


@click.group("index")
def index_group() -> None:
    """Build and inspect first-stage indexes (BM25 and dense vectors)."""


@index_group.command("build")
@click.argument("corpus", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="index directory  [default: <cache>/streamrank/index/<corpus name>-<content key>]",
)
@click.option(
    "--dense/--no-dense",
    default=None,
    help="also encode documents with the bi-encoder  [default: when it is fetched]",
)
@model_dir_option
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
    from streamrank.models.retrieval.corpus import CollectionError
    from streamrank.models.retrieval.first_stage import (
        build_index,
        corpus_sha256,
        default_index_dir,
    )
    from streamrank.models.scoring.bi_encoder import bi_encoder_available

    if dense is None:
        dense = bi_encoder_available(model_dir)
        if not dense:
            errors.print(f"[dim]no bi-encoder in {model_dir}: BM25 only (--dense to insist)[/]")
    fix = "run `streamrank models fetch`, or build with --no-dense"
    encoder = load_bi_encoder_or_fail(model_dir, fix) if dense else None
    corpus_fix = 'point CORPUS at a BEIR corpus.jsonl ({"_id","title","text"} per line)'
    if not corpus.is_file():
        fail(f"corpus file not found: {corpus}", corpus_fix)
    digest = corpus_sha256(corpus)
    out = out or default_index_dir(corpus, encoder, digest)
    try:
        with progress_bar(errors) as bars:
            summary = build_index(corpus, out, encoder, RichProgress(bars), corpus_digest=digest)
    except CollectionError as error:
        fail(str(error), corpus_fix)
    if as_json:
        click.echo(json.dumps(summary.to_json()))
    else:
        console.print(build_summary_table(summary))


def build_summary_table(summary: BuildSummary) -> Table:
    """What ``index build`` did, for a terminal."""
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
