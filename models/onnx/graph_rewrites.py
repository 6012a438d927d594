"""Offline graph rewrites that make the int8 cross-encoder faster on CPUs.

:func:`cls_only_last_layer`: a sequence-classification BERT reads one position of its last
layer, ``[CLS]``. In the exported graph the last layer still computes its query projection,
attention rows, output projection and feed-forward block for every token; the rewrite slices
the query, the attention mask and the residual to the first position, so those run on one row
per pair instead of every token, with the same weights. The keys and
values still see every token, so the logits only move by int8 rounding (the activations of
the last layer are quantized over fewer rows).

:func:`int8_attention`: the quantized model runs its projections in int8 but the two attention
products, ``Q K^T`` and ``softmax(.) V``, in fp32, at about a third of the int8 speed. The
rewrite quantizes their operands per tensor, as the projections' inputs already are (``Q``
asymmetric uint8 like ``DynamicQuantizeLinear``; ``K`` and ``V`` symmetric int8; the softmax
output, which lies in [0, 1], with the fixed scale 1/255) and runs both as onnxruntime's
``MatMulIntegerToFloat``; the ``1/sqrt(sqrt(d))`` scaling of ``Q`` and ``K`` moves into their
int8 scales. The gain in speed, and the quality it keeps (changes within what batch
composition alone moves an int8 model), are in docs/models.md.

Needs the ``onnx`` package (the ``[export]`` extra); ``streamrank models fetch`` writes
``model.opt.onnx`` with both when ``onnx`` is there and the graph has the layout
``torch.onnx.export`` gives a Hugging Face BERT, and
:class:`streamrank.models.scoring.cross_encoder.CrossEncoder` uses it when present.

Examples
--------
>>> last_layer_prefix(["/bert/encoder/layer.0/x", "/bert/encoder/layer.11/y", "other"])
'/bert/encoder/layer.11/'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

LAYER = re.compile(r"^(.*/encoder/layer\.)(\d+)/")


class GraphRewriteError(ValueError):
    """The graph does not have the layout the rewrite expects; the model is left as it is."""


def layer_prefixes(node_names: Iterable[str]) -> list[str]:
    """The name prefixes of the encoder layers' nodes (``.../encoder/layer.N/``), in order."""
    layers = {}
    for name in node_names:
        match = LAYER.match(name)
        if match:
            layers[int(match.group(2))] = f"{match.group(1)}{match.group(2)}/"
    if not layers:
        raise GraphRewriteError("no '/encoder/layer.N/' nodes: not a BERT export")
    return [layers[n] for n in sorted(layers)]


def last_layer_prefix(node_names: Iterable[str]) -> str:
    """The name prefix of the last encoder layer's nodes (``.../encoder/layer.N/``)."""
    return layer_prefixes(node_names)[-1]


def _node(nodes: dict[str, Any], name: str) -> Any:
    if name not in nodes:
        raise GraphRewriteError(f"node {name!r} not found")
    return nodes[name]


def _slice_first(onnx: Any, source: str, output: str, axis_name: str) -> Any:
    return onnx.helper.make_node(
        "Slice", [source, "cls_start", "cls_end", axis_name], [output], name=f"{output}_slice"
    )


def cls_only_last_layer(model: Any) -> Any:
    """Rewrite an ``onnx.ModelProto`` in place so its last layer computes only position 0.

    Raises
    ------
    GraphRewriteError
        When the expected nodes are not there.
    """
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    nodes = {node.name: node for node in graph.node}
    prefix = last_layer_prefix(nodes)
    query = _node(nodes, prefix + "attention/self/query/Add").output[0]
    reshape = _node(nodes, prefix + "attention/self/Reshape")
    context_shape = _node(nodes, prefix + "attention/self/Concat_3")
    mask_add = _node(nodes, prefix + "attention/self/Add")
    residual = _node(nodes, prefix + "attention/output/Add")
    dense = prefix + "attention/output/dense/"
    layer_input = [i for i in residual.input if not i.startswith(dense)]
    if reshape.input[0] != query or len(layer_input) != 1 or len(context_shape.input) != 3:
        raise GraphRewriteError("the last layer's attention is not laid out as expected")
    constants = {
        "cls_start": [0],
        "cls_end": [1],
        "cls_axis1": [1],
        "cls_axis2": [2],
        "cls_minus_one": [-1],
    }
    graph.initializer.extend(
        numpy_helper.from_array(np.array(v, dtype=np.int64), k) for k, v in constants.items()
    )
    mask = mask_add.input[1]
    slices = {
        query: _slice_first(onnx, query, "cls_query", "cls_axis1"),
        layer_input[0]: _slice_first(onnx, layer_input[0], "cls_residual", "cls_axis1"),
        mask: _slice_first(onnx, mask, "cls_mask", "cls_axis2"),
    }
    reshape.input[0] = "cls_query"
    context_shape.input[1] = "cls_minus_one"
    mask_add.input[1] = "cls_mask"
    residual.input[list(residual.input).index(layer_input[0])] = "cls_residual"
    ordered = []
    for node in graph.node:
        ordered.append(node)
        ordered.extend(slices[out] for out in node.output if out in slices)
    ordered = [*(slices[name] for name in slices if _is_graph_input(graph, name)), *ordered]
    del graph.node[:]
    graph.node.extend(ordered)
    onnx.checker.check_model(model)
    return model


INT8_CONSTANTS = {
    "i8_zero": np.array(0, np.int8),
    "u8_zero": np.array(0, np.uint8),
    "i8_levels": np.array(127, np.float32),
    "i8_tiny": np.array(1e-12, np.float32),
    "probability_scale": np.array(1 / 255, np.float32),
}


def int8_attention(model: Any) -> Any:
    """Rewrite an ``onnx.ModelProto`` in place so each layer's attention products run in int8.

    Raises
    ------
    GraphRewriteError
        When the expected nodes are not there.
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    nodes = {node.name: node for node in graph.node}
    rewrite = _Rewrite(helper, {out: node for node in graph.node for out in node.output})
    for prefix in layer_prefixes(nodes):
        tag = prefix.strip("/").replace("/", "_")
        rewrite.scores(_node(nodes, prefix + "attention/self/MatMul"), tag)
        rewrite.context(_node(nodes, prefix + "attention/self/MatMul_1"), tag)
    ordered = []
    for node in graph.node:
        if node.name not in rewrite.dropped:
            ordered.extend(rewrite.before.get(node.name, []))
            ordered.extend(rewrite.replaced.get(node.name, [node]))
    del graph.node[:]
    graph.node.extend(ordered)
    del graph.value_info[:]  # recorded float types no longer hold for the quantized tensors
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in INT8_CONSTANTS.items())
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.checker.check_model(model)
    return model


class _Rewrite:
    """The new nodes of :func:`int8_attention`: by the name of the node they go ``before``,
    the nodes that replace one (``replaced``), and the nodes ``dropped``."""

    def __init__(self, helper: Any, producer: dict[str, Any]) -> None:
        self.helper, self.producer = helper, producer
        self.before: dict[str, list[Any]] = {}
        self.replaced: dict[str, list[Any]] = {}
        self.dropped: set[str] = set()

    def scores(self, matmul: Any, tag: str) -> None:
        """``Q K^T``: Q quantized like every other activation (uint8, zero point), K
        symmetric int8; a scalar scaling of either moves into its int8 scale."""
        make = self.helper.make_node
        query, query_factor = _unscaled(matmul.input[0], self.producer, self.dropped)
        key, key_factor = _unscaled(matmul.input[1], self.producer, self.dropped)
        q, k = f"{tag}_q", f"{tag}_k"
        self._quantize_heads(
            query, q, [make("DynamicQuantizeLinear", ["SOURCE"], [q, f"{q}_scale", f"{q}_zero"])]
        )
        self._quantize_heads(key, k, _symmetric_int8(self.helper, "SOURCE", k))
        scales, q_scale = _times(self.helper, f"{q}_scale", query_factor, f"{q}_scale_folded")
        more, k_scale = _times(self.helper, f"{k}_scale", key_factor, f"{k}_scale_folded")
        inputs = [query, key, q_scale, k_scale, f"{q}_zero", "i8_zero"]
        self.replaced[matmul.name] = [*scales, *more, _matmul_int8(self.helper, matmul, inputs)]

    def context(self, matmul: Any, tag: str) -> None:
        """``softmax(.) V``: probabilities in [0, 1] at a fixed 1/255, V symmetric int8."""
        v, p = f"{tag}_v", f"{tag}_p"
        self._quantize_heads(matmul.input[1], v, _symmetric_int8(self.helper, "SOURCE", v))
        inputs = [p, matmul.input[1], "probability_scale", f"{v}_scale", "u8_zero", "i8_zero"]
        self.replaced[matmul.name] = [
            self.helper.make_node(
                "QuantizeLinear", [matmul.input[0], "probability_scale", "u8_zero"], [p]
            ),
            _matmul_int8(self.helper, matmul, inputs),
        ]

    def _quantize_heads(self, operand: str, quantized: str, nodes: list[Any]) -> None:
        """Quantize what the heads' ``Reshape`` reads (``SOURCE`` in ``nodes``) and let it
        read ``quantized``: reshape and transpose then move a quarter of the bytes."""
        reshape = _head_reshape(operand, self.producer)
        for node in nodes:
            node.input[:] = [reshape.input[0] if i == "SOURCE" else i for i in node.input]
        self.before[reshape.name] = nodes
        reshape.input[0] = quantized


def _unscaled(name: str, producer: dict[str, Any], dropped: set[str]) -> tuple[str, str | None]:
    """``(tensor, factor)``: an attention operand without the scalar ``Mul`` that scales it
    (exports scale Q and K by ``d ** -0.25`` each); the factor moves into the int8 scale."""
    node = producer.get(name)
    if node is None or node.op_type != "Mul":
        return name, None
    data = [i for i in node.input if i in producer and producer[i].op_type == "Transpose"]
    if len(data) != 1:
        raise GraphRewriteError(f"{node.name}: not a scaling of the attention heads")
    dropped.add(node.name)
    return data[0], next(i for i in node.input if i != data[0])


def _head_reshape(name: str, producer: dict[str, Any]) -> Any:
    """The ``Reshape`` that splits heads, under the ``Transpose`` that makes ``name``."""
    transpose = producer.get(name)
    reshape = producer.get(transpose.input[0]) if transpose is not None else None
    if transpose is None or transpose.op_type != "Transpose" or reshape.op_type != "Reshape":
        raise GraphRewriteError(f"{name}: attention operand is not Reshape -> Transpose")
    return reshape


def _symmetric_int8(helper: Any, source: str, name: str) -> list[Any]:
    """Nodes quantizing ``source`` to int8 with scale ``max|x| / 127`` (outputs ``name``,
    ``name_scale``)."""
    return [
        helper.make_node("Abs", [source], [f"{name}_abs"]),
        helper.make_node("ReduceMax", [f"{name}_abs"], [f"{name}_max"], keepdims=0),
        helper.make_node("Div", [f"{name}_max", "i8_levels"], [f"{name}_raw_scale"]),
        helper.make_node("Max", [f"{name}_raw_scale", "i8_tiny"], [f"{name}_scale"]),
        helper.make_node("QuantizeLinear", [source, f"{name}_scale", "i8_zero"], [name]),
    ]


def _times(helper: Any, scale: str, factor: str | None, name: str) -> tuple[list[Any], str]:
    if factor is None:
        return [], scale
    return [helper.make_node("Mul", [scale, factor], [name])], name


def _matmul_int8(helper: Any, original: Any, inputs: list[str]) -> Any:
    return helper.make_node(
        "MatMulIntegerToFloat",
        inputs,
        list(original.output),
        domain="com.microsoft",
        name=f"{original.name}_int8",
    )


def _is_graph_input(graph: Any, name: str) -> bool:
    return any(i.name == name for i in graph.input)


def logit_differences(original: Path, rewritten: Path, seed: int = 0) -> np.ndarray:
    """Absolute differences of the two models' logits on random padded inputs."""
    from streamrank.models.onnx.sessions import load_session
    from streamrank.models.scoring.buckets import pad_batch

    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, 120, size=24)
    ids = [[101, *rng.integers(1000, 20000, n - 2).tolist(), 102] for n in lengths]
    feed = pad_batch(ids, [[0] * len(row) for row in ids])
    outputs = []
    for path in (original, rewritten):
        session = load_session(path)
        names = {i.name for i in session.get_inputs()}
        outputs.append(session.run(None, {k: v for k, v in feed.items() if k in names})[0])
    return np.abs(outputs[0] - outputs[1]).ravel()


def write_optimized_graph(
    source: str | Path, target: str | Path, mean_tolerance: float = 0.25, max_tolerance: float = 2.5
) -> Path:
    """Write ``source`` with both rewrites to ``target`` after checking it scores like it.

    A broken rewrite moves logits by several units. Int8 attention moves them by about 0.1
    on average and 1 at most on random token sequences, which leaves each query's order of
    its candidates nearly unchanged; the tolerances sit between the two.

    Raises
    ------
    GraphRewriteError
        When the graph cannot be rewritten or the rewritten logits differ by more than the
        tolerances on average or at most (the target is then not written).
    """
    import onnx

    source, target = Path(source), Path(target)
    model = int8_attention(cls_only_last_layer(onnx.load(str(source))))
    partial = target.with_suffix(".partial")
    onnx.save(model, str(partial))
    differences = logit_differences(source, partial)
    if differences.mean() > mean_tolerance or differences.max() > max_tolerance:
        partial.unlink()
        raise GraphRewriteError(
            f"rewritten logits differ by {differences.mean():.3f} on average and "
            f"{differences.max():.3f} at most (tolerances {mean_tolerance}, {max_tolerance})"
        )
    partial.replace(target)
    return target
