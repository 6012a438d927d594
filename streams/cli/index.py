"""``streamrank index``: build and inspect first-stage indexes (BM25 and dense vectors).

::

    streamrank index build CORPUS.jsonl [--out DIR] [--dense/--no-dense] [--model-dir DIR]
                                        [--to-redis]
    streamrank index info DIR

Document vectors are made here (in batches, with a progress bar) and by the ``items`` agent,
never on the request path. A worker that loads the index (``STREAMRANK_INDEX_DIR``) reads them
from it; ``--to-redis`` also stores them in the workers' Redis vector store, under the keys the
dense tier reads (encoder version, text hash, id), for workers that serve candidates from
another first stage.

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
    from streamrank.streams.config import Settings


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
@click.option(
    "--to-redis",
    is_flag=True,
    help="also store the dense vectors in the workers' Redis vector store "
    "($STREAMRANK_REDIS_URL, the deployment's prefix, STREAMRANK_VECTOR_CACHE_TTL_S)",
)
@click.option("--json", "as_json", is_flag=True, help="print the summary as one JSON object")
def index_build(
    corpus: Path,
    out: Path | None,
    dense: bool | None,
    model_dir: Path,
    to_redis: bool,
    as_json: bool,
) -> None:
    """Build the BM25 index (and dense vectors) of a BEIR corpus.jsonl.

    Malformed lines are reported with their line numbers and skipped; the rest is indexed.
    The re-ranker's dense tier reads the vectors from the index in a worker that loads it,
    and from Redis with --to-redis (it never encodes a document in a request).

    \b
    Example:
      streamrank index build ../shared/data/scifact/corpus.jsonl --out /tmp/scifact-index
      streamrank index build corpus.jsonl --out /srv/index --to-redis
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
    if to_redis and dense is False:
        fail("--to-redis stores dense vectors: it needs --dense", "leave out --no-dense")
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
    if to_redis:
        stored = store_vectors_in_redis(out)
        errors.print(f"{stored:,} document vectors stored in Redis")
    if as_json:
        click.echo(json.dumps(summary.to_json()))
    else:
        console.print(build_summary_table(summary))


def store_vectors_in_redis(
    directory: Path, settings: Settings | None = None, batch: int = 1000
) -> int:
    """Write an index's dense vectors to the workers' Redis vector store; how many.

    Keys are the dense tier's (:func:`~streamrank.models.scoring.score_cache.vector_key`: the
    encoder version the index recorded, the hash of the text it indexed, the id), so a worker
    reads them for candidates that carry the same text (what the retrieve agent sends).
    """
    from streamrank.models.retrieval.first_stage import FirstStage
    from streamrank.models.scoring.score_cache import vector_key
    from streamrank.streams.config import get_settings
    from streamrank.streams.state.connections import key, redis_client
    from streamrank.streams.state.redis_cache import RedisVectorCache

    settings = settings or get_settings()
    stage = FirstStage.load(directory)
    if stage.dense is None or not stage.dense.version:
        fail(f"the index in {directory} has no versioned dense vectors", "rebuild it with --dense")
    version = stage.dense.version
    store = RedisVectorCache(
        redis_client(settings), key(settings, "vec:"), settings.vector_cache_ttl_s
    )
    ids = stage.doc_ids()
    with (
        progress_bar(errors) as bars,
        RichProgress(bars).stage("store (Redis)", len(ids)) as advance,
    ):
        for start in range(0, len(ids), batch):
            chunk = stage.stored_vectors(ids[start : start + batch])
            store.set_many(
                {vector_key(version, doc.id, doc.content): vector for doc, vector in chunk if doc}
            )
            if store.failures:
                fail(f"Redis did not take the vectors ({settings.redis_url})", "start Redis")
            advance(len(chunk))
    return len(ids)


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
