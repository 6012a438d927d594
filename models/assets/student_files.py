"""Where the distilled student cross-encoder lives: built ones by content hash, or the shipped one.

``streamrank models distill`` writes each student it builds to
``<model dir>/students/<sha256 of model.onnx, 12 hex>/``, so two students never share a folder
and a registry version names its student by hash. The student this package ships (package data
in ``streamrank/models/assets/student/``, with its ``PROVENANCE.json`` and the command that
rebuilds it) is the default when no hash is asked for.

Examples
--------
>>> shipped_student().name
'student'
"""

from __future__ import annotations

import json
from pathlib import Path

from streamrank.models.assets.model_files import ModelFilesError, sha256_file

STUDENTS = "students"
DISTILL_COMMAND = "streamrank models distill"


def shipped_student() -> Path:
    """The folder of the student shipped with the package."""
    return Path(__file__).parent / "student"


def student_folder(model_dir: str | Path, sha256: str | None = None) -> Path:
    """The folder of the student with this model hash (a prefix will do), or the default one.

    The default is the shipped student; without one (a source checkout that dropped it), the
    newest student built in ``model_dir``.

    Raises
    ------
    ModelFilesError
        When no student matches, naming the command that builds one.
    """
    built = Path(model_dir).expanduser() / STUDENTS
    newest_first = sorted(built.glob("*/"), key=lambda p: p.stat().st_mtime, reverse=True)
    candidates = [shipped_student(), *newest_first]
    for folder in candidates:
        model = folder / "model.onnx"
        if not model.is_file():
            continue
        if sha256 is None or sha256_file(model).startswith(sha256):
            return folder
    wanted = f" with model hash {sha256}" if sha256 else ""
    raise ModelFilesError(
        f"missing model file: no student cross-encoder{wanted} in {built} or the package\n"
        f"fix: run `{DISTILL_COMMAND}` to build one"
    )


def trained_length(folder: Path, default: int = 512) -> int:
    """The max tokens per pair the student in ``folder`` was trained on (its provenance).

    A student scores pairs as it learned them: cut longer, its positions past this length
    were never trained, and each pair costs more.
    """
    try:
        provenance = json.loads((folder / "PROVENANCE.json").read_text())
        return int(provenance["config"]["max_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return default
