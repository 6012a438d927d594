"""The cross-encoder's offline graph rewrites (models/onnx/graph_rewrites.py) on the shipped
int8 reranker: each rewrites and scores the real 12-layer graph, seconds of CPU, hence this
tier."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from streamrank.models.assets.model_files import (
    OPTIMIZED,
    PROVENANCE_FILE,
    ModelFilesError,
    verify_models,
)
from streamrank.streams.config import Settings

onnx = pytest.importorskip("onnx", reason="the [export] extra (onnx) is not installed")

pytestmark = pytest.mark.slow

MODEL_DIR = Settings().model_dir
PAIRS = [
    ("how long do fleas live", "Adult fleas live for two to three months on a host."),
    ("how long do fleas live", "The Eiffel Tower is in Paris."),
    ("how long do fleas live", "Fleas are wingless insects that feed on blood."),
    ("what is wifi", "Wi-Fi is a family of wireless network protocols."),
    ("what is wifi", "Bananas are rich in potassium."),
    ("what is wifi", "A router sends data between networks, often over Wi-Fi."),
]


@pytest.fixture(scope="module")
def shipped() -> Path:
    try:
        verify_models(MODEL_DIR)
    except ModelFilesError:
        pytest.skip(f"models not fetched into {MODEL_DIR}: run `streamrank models fetch`")
    return MODEL_DIR / "reranker_en"


def test_optimized_graph_runs_attention_in_int8_and_scores_like_the_original(
    shipped: Path, tmp_path: Path
) -> None:
    from streamrank.models.onnx.graph_rewrites import write_optimized_graph
    from streamrank.models.scoring.cross_encoder import CrossEncoder

    folder = tmp_path / "reranker_en"
    folder.mkdir()
    for name in ("model.onnx", "tokenizer.json"):
        shutil.copyfile(shipped / name, folder / name)
    write_optimized_graph(folder / "model.onnx", folder / OPTIMIZED[1])

    graph = onnx.load(str(folder / OPTIMIZED[1])).graph
    ops = [node.op_type for node in graph.node]
    assert "MatMul" not in ops  # both attention products of all 12 layers are int8 now
    assert ops.count("MatMulIntegerToFloat") >= 24
    assert sum(1 for node in graph.node if node.name.endswith("_slice")) == 3  # [CLS]-only

    optimized = CrossEncoder(folder)
    assert optimized.model_path.name == OPTIMIZED[1]
    ours = optimized.predict(PAIRS)
    reference = CrossEncoder(folder, optimized=False).predict(PAIRS)
    assert np.abs(ours - reference).mean() < 0.3  # int8 rounding, not a broken graph
    for start in (0, 3):  # each query's passages in the same order
        assert list(np.argsort(ours[start : start + 3])) == list(
            np.argsort(reference[start : start + 3])
        )


def test_fetch_replaces_an_earlier_optimized_graph(shipped: Path, tmp_path: Path) -> None:
    """A model directory from before int8 attention gets the new graph on the next fetch,
    and the old file and its provenance entry are removed."""
    from streamrank.models.assets.model_files import write_optimized

    folder = tmp_path / "reranker_en"
    folder.mkdir()
    shutil.copyfile(shipped / "model.onnx", folder / "model.onnx")
    (folder / "model.cls.onnx").write_bytes(b"an older rewrite")
    provenance = {"derived": {"reranker_en/model.cls.onnx": {"sha256": "0" * 64}}}
    (tmp_path / PROVENANCE_FILE).write_text(json.dumps(provenance))

    written = write_optimized(tmp_path)

    assert written == folder / OPTIMIZED[1] and written.is_file()
    assert not (folder / "model.cls.onnx").exists()
    derived = json.loads((tmp_path / PROVENANCE_FILE).read_text())["derived"]
    assert list(derived) == [f"reranker_en/{OPTIMIZED[1]}"]
    assert "int8_attention" in derived[f"reranker_en/{OPTIMIZED[1]}"]["rewrite"]
