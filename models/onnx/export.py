"""Export a Hugging Face BERT cross-encoder to ONNX and quantize it to int8 (``models export``).

For users who can reach the hub, or have a checkpoint folder: ``config.json``,
``model.safetensors`` and ``tokenizer.json`` of a ``BertForSequenceClassification`` (the
ms-marco cross-encoders and other BERT/MiniLM rerankers). The graph is written directly from
the weights with ``onnx`` (no torch: CPU-only torch wheels are not on PyPI, and the default
ones pull several GB of CUDA libraries), checked against a numpy forward pass of the same
weights, then quantized with ``onnxruntime.quantization.quantize_dynamic`` (int8 weights,
dynamic int8 activations), like the default reranker. A checkpoint without a classification
head (a plain ``BertModel``) gets a fresh, seeded one-logit head: useful to test the path, not
to rank. The output folder loads with ``CrossEncoder(out)``.

Needs the ``[export]`` extra (``onnx``, ``safetensors``; ``huggingface_hub`` for hub ids).

Examples
--------
>>> export_cross_encoder("cross-encoder/ms-marco-MiniLM-L-6-v2", "./ce6")  # doctest: +SKIP
{'source': 'cross-encoder/ms-marco-MiniLM-L-6-v2', 'layers': 6, 'quantized': True, ...}
"""

from __future__ import annotations

import importlib
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 17
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


class ExportError(RuntimeError):
    """The export cannot go on; ``fix`` says what to do."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ExportError(
            f"the export needs the {module!r} package",
            "pip install 'streamrank[export]' (onnx, safetensors; huggingface_hub for hub ids)",
        ) from error


def resolve_source(source: str | Path) -> Path:
    """A local checkpoint folder, or a hub id downloaded with ``huggingface_hub``."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists() or str(source).count("/") != 1:
        raise ExportError(f"no checkpoint folder at {path}", "pass a folder or a hub id ORG/NAME")
    hub = _require("huggingface_hub")
    try:
        return Path(
            hub.snapshot_download(str(source), allow_patterns=["*.json", "*.safetensors", "*.txt"])
        )
    except Exception as error:  # network, auth, missing repo: all mean "no checkpoint"
        raise ExportError(
            f"could not download {source}: {error}", "check hub access, or pass a local folder"
        ) from error


def load_weights(folder: Path) -> dict[str, np.ndarray]:
    """The checkpoint's float32 tensors by name, ``bert.`` prefix removed."""
    safetensors_numpy = _require("safetensors.numpy")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ExportError(f"no *.safetensors in {folder}", "export a safetensors checkpoint")
    weights: dict[str, np.ndarray] = {}
    for file in files:
        for name, tensor in safetensors_numpy.load_file(str(file)).items():
            weights[name.removeprefix("bert.")] = tensor.astype(np.float32)
    return weights


def add_head(weights: dict[str, np.ndarray], hidden: int, seed: int = 0) -> bool:
    """Add a fresh pooler/one-logit classifier where the checkpoint has none; True if added."""
    rng = np.random.default_rng(seed)
    fresh = False
    if "pooler.dense.weight" not in weights:
        weights["pooler.dense.weight"] = rng.normal(0, 0.02, (hidden, hidden)).astype(np.float32)
        weights["pooler.dense.bias"] = np.zeros(hidden, np.float32)
        fresh = True
    if "classifier.weight" not in weights:
        weights["classifier.weight"] = rng.normal(0, 0.02, (1, hidden)).astype(np.float32)
        weights["classifier.bias"] = np.zeros(1, np.float32)
        fresh = True
    return fresh


class _Graph:
    """A small builder over ``onnx.helper``: named nodes, initializers, unique names."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.onnx = _require("onnx")
        self.weights = weights
        self.nodes: list[Any] = []
        self.initializers: dict[str, Any] = {}
        self.count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        if name not in self.initializers:
            self.initializers[name] = self.onnx.numpy_helper.from_array(value, name)
        return name

    def weight(self, name: str, transpose: bool = False) -> str:
        value = self.weights[name]
        return self.const(
            name + (".T" if transpose else ""), value.T.copy() if transpose else value
        )

    def op(self, op_type: str, inputs: list[str], name: str, **attributes: Any) -> str:
        self.count += 1
        output = f"{name}_{self.count}"
        self.nodes.append(
            self.onnx.helper.make_node(op_type, inputs, [output], name=output, **attributes)
        )
        return output

    def linear(self, x: str, prefix: str) -> str:
        y = self.op("MatMul", [x, self.weight(prefix + ".weight", transpose=True)], prefix)
        return self.op("Add", [y, self.weight(prefix + ".bias")], prefix + "_bias")

    def layer_norm(self, x: str, prefix: str, eps: float) -> str:
        return self.op(
            "LayerNormalization",
            [x, self.weight(prefix + ".weight"), self.weight(prefix + ".bias")],
            prefix,
            axis=-1,
            epsilon=eps,
        )


def _first(graph: _Graph, x: str, axis: int, name: str) -> str:
    """``x`` sliced to its first position along ``axis`` (kept as a size-1 axis)."""
    start = graph.const("zero1", np.array([0], np.int64))
    end = graph.const("one1", np.array([1], np.int64))
    axes = graph.const(f"axis{axis}", np.array([axis], np.int64))
    return graph.op("Slice", [x, start, end, axes], name)


def _attention(graph: _Graph, x: str, mask: str, p: str, heads: int, last: bool) -> str:
    hidden = graph.weights[p + "query.weight"].shape[0]
    size = hidden // heads
    split = graph.const(f"heads{heads}", np.array([0, 0, heads, size], np.int64))
    merge = graph.const("merge", np.array([0, 0, hidden], np.int64))
    query_in = _first(graph, x, 1, p + "cls") if last else x
    q = graph.op("Reshape", [graph.linear(query_in, p + "query"), split], p + "q")
    k = graph.op("Reshape", [graph.linear(x, p + "key"), split], p + "k")
    v = graph.op("Reshape", [graph.linear(x, p + "value"), split], p + "v")
    q = graph.op("Transpose", [q], p + "qt", perm=[0, 2, 1, 3])
    k = graph.op("Transpose", [k], p + "kt", perm=[0, 2, 3, 1])
    v = graph.op("Transpose", [v], p + "vt", perm=[0, 2, 1, 3])
    scale = graph.const(f"scale{size}", np.array(1 / math.sqrt(size), np.float32))
    scores = graph.op("Mul", [graph.op("MatMul", [q, k], p + "scores"), scale], p + "scaled")
    probs = graph.op(
        "Softmax", [graph.op("Add", [scores, mask], p + "masked")], p + "probs", axis=-1
    )
    context = graph.op(
        "Transpose", [graph.op("MatMul", [probs, v], p + "ctx")], p + "ctxt", perm=[0, 2, 1, 3]
    )
    return graph.op("Reshape", [context, merge], p + "merged")


def _layer(graph: _Graph, x: str, mask: str, index: int, heads: int, eps: float, last: bool) -> str:
    p = f"encoder.layer.{index}."
    context = _attention(graph, x, mask, p + "attention.self.", heads, last)
    residual = _first(graph, x, 1, p + "residual") if last else x
    attended = graph.op(
        "Add", [graph.linear(context, p + "attention.output.dense"), residual], p + "res1"
    )
    x = graph.layer_norm(attended, p + "attention.output.LayerNorm", eps)
    h = graph.linear(x, p + "intermediate.dense")
    root2 = graph.const("sqrt2", np.array(math.sqrt(2), np.float32))
    half = graph.const("half", np.array(0.5, np.float32))
    one = graph.const("one", np.array(1.0, np.float32))
    erf = graph.op("Erf", [graph.op("Div", [h, root2], p + "gelu_div")], p + "gelu_erf")
    gelu = graph.op(
        "Mul",
        [graph.op("Mul", [h, half], p + "gelu_half"), graph.op("Add", [erf, one], p + "gelu_add")],
        p + "gelu",
    )
    out = graph.op("Add", [graph.linear(gelu, p + "output.dense"), x], p + "res2")
    return graph.layer_norm(out, p + "output.LayerNorm", eps)


def build_graph(
    weights: dict[str, np.ndarray], config: dict[str, Any], cls_only: bool = True
) -> Any:
    """An ONNX ``ModelProto`` of BertForSequenceClassification with these weights.

    Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, [batch, sequence]);
    output ``logits`` [batch, labels]. With ``cls_only`` the last layer computes only the
    ``[CLS]`` position (the only one the classifier reads; see
    :mod:`streamrank.models.onnx.graph_rewrites`).
    """
    graph = _Graph(weights)
    onnx = graph.onnx
    eps = float(config.get("layer_norm_eps", 1e-12))
    heads = int(config["num_attention_heads"])
    layers = int(config["num_hidden_layers"])
    words = graph.op(
        "Gather", [graph.weight("embeddings.word_embeddings.weight"), "input_ids"], "words"
    )
    types = graph.op(
        "Gather",
        [graph.weight("embeddings.token_type_embeddings.weight"), "token_type_ids"],
        "types",
    )
    length = graph.op(
        "Gather",
        [graph.op("Shape", ["input_ids"], "shape"), graph.const("idx1", np.array(1, np.int64))],
        "length",
    )
    positions = graph.op(
        "Range",
        [
            graph.const("zero", np.array(0, np.int64)),
            length,
            graph.const("step", np.array(1, np.int64)),
        ],
        "positions",
    )
    where = graph.op(
        "Gather", [graph.weight("embeddings.position_embeddings.weight"), positions], "where"
    )
    x = graph.op("Add", [graph.op("Add", [words, types], "emb_sum"), where], "emb")
    x = graph.layer_norm(x, "embeddings.LayerNorm", eps)
    keep = graph.op("Cast", ["attention_mask"], "mask_float", to=onnx.TensorProto.FLOAT)
    blocked = graph.op("Sub", [graph.const("one", np.array(1.0, np.float32)), keep], "mask_inverse")
    additive = graph.op(
        "Mul", [blocked, graph.const("minus", np.array(-10000.0, np.float32))], "mask_add"
    )
    mask = graph.op(
        "Unsqueeze", [additive, graph.const("axes12", np.array([1, 2], np.int64))], "mask"
    )
    for index in range(layers):
        x = _layer(graph, x, mask, index, heads, eps, last=cls_only and index == layers - 1)
    cls = graph.op("Gather", [x, graph.const("idx0", np.array(0, np.int64))], "cls", axis=1)
    pooled = graph.op("Tanh", [graph.linear(cls, "pooler.dense")], "pooled")
    logits = graph.linear(pooled, "classifier")
    graph.nodes.append(onnx.helper.make_node("Identity", [logits], ["logits"], name="logits"))
    int_input = [
        onnx.helper.make_tensor_value_info(n, onnx.TensorProto.INT64, ["batch", "sequence"])
        for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    labels = weights["classifier.weight"].shape[0]
    output = onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", labels])
    model = onnx.helper.make_model(
        onnx.helper.make_graph(
            graph.nodes, "cross_encoder", int_input, [output], list(graph.initializers.values())
        ),
        opset_imports=[onnx.helper.make_opsetid("", OPSET)],
        producer_name="streamrank.models.export",
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def reference_logits(
    weights: dict[str, np.ndarray], config: dict[str, Any], ids: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """A plain numpy forward pass of the same network, to check the graph against."""
    eps, heads = float(config.get("layer_norm_eps", 1e-12)), int(config["num_attention_heads"])
    w = weights

    def norm(x: np.ndarray, p: str) -> np.ndarray:
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

    def lin(x: np.ndarray, p: str) -> np.ndarray:
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    erf = np.vectorize(math.erf)
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.token_type_embeddings.weight"][np.zeros_like(ids)]
    )
    x = norm(
        x + w["embeddings.position_embeddings.weight"][np.arange(ids.shape[1])],
        "embeddings.LayerNorm",
    )
    additive = (1.0 - mask[:, None, None, :]) * -10000.0
    batch, length, hidden = x.shape
    size = hidden // heads
    for index in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{index}."
        split = lambda t: t.reshape(batch, length, heads, size).transpose(0, 2, 1, 3)  # noqa: E731
        q, k, v = (split(lin(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size) + additive
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
        x = norm(lin(context, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        h = lin(x, p + "intermediate.dense")
        x = norm(
            lin(h * 0.5 * (1 + erf(h / math.sqrt(2))), p + "output.dense") + x,
            p + "output.LayerNorm",
        )
    return lin(np.tanh(lin(x[:, 0], "pooler.dense")), "classifier")


def _probe(config: dict[str, Any], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, int(config["vocab_size"]) - 1, (3, 24))
    ids[:, 0] = 101
    mask = np.ones_like(ids)
    mask[1, 16:] = 0
    return ids, mask


def _run(path: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from streamrank.models.onnx.sessions import load_session

    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return load_session(path).run(["logits"], feed)[0]


def export_cross_encoder(
    source: str | Path,
    out: str | Path,
    max_length: int = 512,
    quantize: bool = True,
    cls_only: bool = True,
) -> dict[str, Any]:
    """Export ``source`` (folder or hub id) to ``out/model.onnx`` + tokenizer files.

    Returns
    -------
    dict
        What was done: source, layers, hidden size, whether the head is fresh, whether it is
        quantized, the fp32 graph's largest difference from the numpy reference, and the
        int8 model's agreement with fp32 on a probe batch.

    Raises
    ------
    ExportError
        Missing packages or files, an architecture other than BERT, or a graph that does
        not match the reference.
    """
    folder = resolve_source(source)
    out = Path(out).expanduser()
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type", "bert") != "bert":
        raise ExportError(
            f"{config.get('model_type')!r} models are not supported, only BERT-family ones",
            "use a BERT/MiniLM cross-encoder (model_type 'bert')",
        )
    if not (folder / "tokenizer.json").is_file():
        raise ExportError(
            f"no tokenizer.json in {folder}", "save the fast tokenizer with the model"
        )
    weights = load_weights(folder)
    fresh = add_head(weights, int(config["hidden_size"]))
    model = build_graph(weights, config, cls_only=cls_only)
    onnx = _require("onnx")
    out.mkdir(parents=True, exist_ok=True)
    fp32 = out / "model.fp32.onnx"
    onnx.save(model, str(fp32))
    ids, mask = _probe(config)
    reference = reference_logits(weights, config, ids, mask.astype(np.float32))
    exported = _run(fp32, ids, mask)
    difference = float(np.abs(exported - reference).max())
    if difference > 1e-3:
        raise ExportError(
            f"exported graph differs from the reference by {difference}", "report this bug"
        )
    report: dict[str, Any] = {
        "source": str(source),
        "layers": int(config["num_hidden_layers"]),
        "hidden_size": int(config["hidden_size"]),
        "fresh_head": fresh,
        "cls_only_last_layer": cls_only,
        "fp32_max_difference_from_reference": difference,
        "quantized": quantize,
    }
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            str(fp32),
            str(out / "model.onnx"),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gather"],
        )
        fp32.unlink()
        report["int8_max_difference_from_fp32"] = float(
            np.abs(_run(out / "model.onnx", ids, mask) - exported).max()
        )
    else:
        fp32.replace(out / "model.onnx")
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, out / name)
    shutil.copyfile(folder / "config.json", out / "config.json")
    report["max_length"] = max_length
    (out / "export.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
