"""An offline graph rewrite for cross-encoders: the last layer computes only ``[CLS]``.

A sequence-classification BERT reads one position of its last layer, ``[CLS]``. In the
exported graph the last layer still computes its query projection, attention rows, output
projection and feed-forward block for every token. :func:`cls_only_last_layer` slices the
query, the attention mask and the residual to the first position, so those run on one row
per pair instead of ~95: about 8 % more pairs per second on DL19, same weights. The keys and
values still see every token, so the logits only move by int8 rounding (the activations of
the last layer are quantized over fewer rows).

Needs the ``onnx`` package (the ``[export]`` extra); ``streamrank models fetch`` runs it when
``onnx`` is there and the graph has the layout ``torch.onnx.export`` gives a Hugging Face
BERT, and :class:`models.cross_encoder.CrossEncoder` uses the result when present.

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


def last_layer_prefix(node_names: Iterable[str]) -> str:
    """The name prefix of the last encoder layer's nodes (``.../encoder/layer.N/``)."""
    layers = {}
    for name in node_names:
        match = LAYER.match(name)
        if match:
            layers[int(match.group(2))] = f"{match.group(1)}{match.group(2)}/"
    if not layers:
        raise GraphRewriteError("no '/encoder/layer.N/' nodes: not a BERT export")
    return layers[max(layers)]


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


def _is_graph_input(graph: Any, name: str) -> bool:
    return any(i.name == name for i in graph.input)


def max_logit_difference(original: Path, rewritten: Path, seed: int = 0) -> float:
    """Largest absolute difference of the two models' logits on random padded inputs."""
    from models.buckets import pad_batch
    from models.session import load_session

    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, 120, size=12)
    ids = [[101, *rng.integers(1000, 20000, n - 2).tolist(), 102] for n in lengths]
    feed = pad_batch(ids, [[0] * len(row) for row in ids])
    outputs = []
    for path in (original, rewritten):
        session = load_session(path)
        names = {i.name for i in session.get_inputs()}
        outputs.append(session.run(None, {k: v for k, v in feed.items() if k in names})[0])
    return float(np.abs(outputs[0] - outputs[1]).max())


def write_cls_only(source: str | Path, target: str | Path, tolerance: float = 0.1) -> Path:
    """Write the rewritten ``source`` to ``target`` after checking it scores like the original.

    Raises
    ------
    GraphRewriteError
        When the graph cannot be rewritten or the rewritten logits differ by more than
        ``tolerance`` (the target is then not written).
    """
    import onnx

    source, target = Path(source), Path(target)
    model = cls_only_last_layer(onnx.load(str(source)))
    partial = target.with_suffix(".partial")
    onnx.save(model, str(partial))
    difference = max_logit_difference(source, partial)
    if difference > tolerance:
        partial.unlink()
        raise GraphRewriteError(f"rewritten logits differ by {difference:.3f} > {tolerance}")
    partial.replace(target)
    return target
