"""A student is found by its model hash, so two students never share a name; without a hash
the shipped one serves, and a missing one is an error that names the command to build it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streamrank.models.assets import student_files
from streamrank.models.assets.model_files import ModelFilesError, sha256_file
from streamrank.models.scoring.cascade import PipelineError, Stage, parse_pipeline


def _student(root: Path, content: bytes, age_s: float = 0.0) -> Path:
    folder = root / "students" / content.hex()[:12]
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(content)
    stamp = 1_000_000_000 - age_s
    os.utime(folder, (stamp, stamp))
    return folder


def test_a_student_is_found_by_a_prefix_of_its_model_hash(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(student_files, "shipped_student", lambda: tmp_path / "none")
    old = _student(tmp_path, b"old student", age_s=100)
    new = _student(tmp_path, b"new student")
    wanted = sha256_file(old / "model.onnx")
    assert student_files.student_folder(tmp_path, wanted[:12]) == old
    assert student_files.student_folder(tmp_path, wanted) == old
    assert student_files.student_folder(tmp_path) == new  # no hash, none shipped: the newest
    with pytest.raises(ModelFilesError, match="streamrank models distill"):
        student_files.student_folder(tmp_path, "0" * 12)


def test_the_shipped_student_serves_when_no_hash_is_asked(tmp_path: Path, monkeypatch):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "model.onnx").write_bytes(b"shipped")
    monkeypatch.setattr(student_files, "shipped_student", lambda: shipped)
    _student(tmp_path, b"built later")
    assert student_files.student_folder(tmp_path) == shipped


def test_a_pipeline_names_its_student_by_hash():
    stages = parse_pipeline("dense>student@1a2b3c4d5e6f:50>ce:5")
    assert stages[1] == Stage("student", 50, "1a2b3c4d5e6f")
    assert parse_pipeline("dense>student:50")[1] == Stage("student", 50, None)
    for bad in ("dense@1a2b3c4d5e6f", "student@XYZ12345", "student@", "student@1a2b"):
        with pytest.raises(PipelineError, match="student@"):
            parse_pipeline(bad)
