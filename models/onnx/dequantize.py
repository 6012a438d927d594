"""Float weights of a dynamically quantized ONNX BERT, under Hugging Face names.

The shipped cross-encoder is int8 only: ``quantize_dynamic`` stored every projection as an
int8 ``MatMulInteger`` weight with a per-tensor scale and zero point, and the embeddings as
uint8 behind ``DequantizeLinear``. A student initialised from the teacher needs the float
tensors back: ``(q - zero_point) * scale`` per tensor, named like
``BertForSequenceClassification``'s state dict without its ``bert.`` prefix (the names
:func:`streamrank.models.onnx.export.build_graph` reads), with projections as
``[out, in]`` like ``torch.nn.Linear``. The projections' initializers have anonymous names
(``onnx::MatMul_1662``), so each is named by the ``MatMulInteger`` node that reads it
(``/bert/encoder/layer.0/attention/self/query/MatMul_quant``).

Examples
--------
>>> module_name("/bert/encoder/layer.3/attention/self/query/MatMul_quant")
'encoder.layer.3.attention.self.query'
>>> module_name("/classifier/Gemm_MatMul_quant")
'classifier'
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from streamrank.models.onnx.export import ExportError, _require

QUANT_NODE = re.compile(r"^/(?:bert/)?(.+)/(?:Gemm_)?MatMul_quant$")


def module_name(node_name: str) -> str:
    """The Hugging Face module a ``MatMulInteger`` node belongs to, ``bert.`` dropped."""
    match = QUANT_NODE.match(node_name)
    if not match:
        raise ExportError(f"unexpected quantized node {node_name!r}", "use a BERT export")
    return match.group(1).replace("/", ".")


def _dequantized(values: dict[str, np.ndarray], stem: str) -> np.ndarray:
    quantized = values[f"{stem}_quantized"].astype(np.float32)
    zero = values[f"{stem}_zero_point"].astype(np.float32)
    return (quantized - zero) * values[f"{stem}_scale"].astype(np.float32)


def dequantized_weights(model_path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The float weights of the int8 BERT at ``model_path`` and the config they imply.

    Returns
    -------
    weights, config
        Tensors by name (``embeddings.word_embeddings.weight``, ``encoder.layer.0...``,
        ``pooler.dense.weight``, ``classifier.weight``, ...) and ``hidden_size``,
        ``num_hidden_layers``, ``intermediate_size``, ``vocab_size``.

    Raises
    ------
    ExportError
        When the graph is not a dynamically quantized BERT.
    """
    onnx = _require("onnx")
    model = onnx.load(str(model_path))
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    weights: dict[str, np.ndarray] = {}
    for name, value in values.items():
        if value.dtype == np.float32 and not name.endswith("_scale"):
            weights[name.removeprefix("bert.")] = value  # biases and LayerNorms
        elif name.endswith(".weight_quantized") and "embeddings" in name:
            stem = name.removesuffix("_quantized")
            weights[stem.removeprefix("bert.")] = _dequantized(values, stem)
    for node in model.graph.node:
        if node.op_type == "MatMulInteger" and node.input[1] in values:
            stem = node.input[1].removesuffix("_quantized")
            weights[f"{module_name(node.name)}.weight"] = _dequantized(values, stem).T.copy()
    if "classifier.weight" not in weights or "embeddings.word_embeddings.weight" not in weights:
        raise ExportError(f"{model_path} is not a quantized BERT classifier", "use model.onnx")
    layers = 1 + max(int(n.split(".")[2]) for n in weights if n.startswith("encoder.layer."))
    vocab, hidden = weights["embeddings.word_embeddings.weight"].shape
    config = {
        "hidden_size": int(hidden),
        "num_hidden_layers": layers,
        "intermediate_size": int(weights["encoder.layer.0.intermediate.dense.weight"].shape[0]),
        "vocab_size": int(vocab),
        "layer_norm_eps": 1e-12,
    }
    return weights, config
