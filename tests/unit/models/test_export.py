"""`streamrank models export` refuses what it cannot convert, clearly and before any work.

The exports of real checkpoints (a local BERT, a rebuild of the shipped reranker) quantize
whole models and live in tests/data/models/test_export.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def test_export_rejects_what_it_cannot_do(tmp_path: Path):
    from streamrank.models.onnx.export import ExportError, export_cross_encoder

    with pytest.raises(ExportError):
        export_cross_encoder(tmp_path / "nothing-here", tmp_path / "out")
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ExportError, match="only BERT"):
        export_cross_encoder(tmp_path / "gpt", tmp_path / "out")
