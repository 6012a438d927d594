"""The cross-encoder's graph rewrites (models/onnx/graph_rewrites.py) refuse a graph
without the BERT layout they rewrite.

The rewrites of the shipped int8 reranker itself live in tests/data/models/test_graph_rewrites.py.
"""

from __future__ import annotations

import pytest

pytest.importorskip("onnx", reason="the [export] extra (onnx) is not installed")


def test_a_graph_without_the_bert_layout_is_refused() -> None:
    from onnx import TensorProto, helper

    from streamrank.models.onnx.graph_rewrites import (
        GraphRewriteError,
        cls_only_last_layer,
        int8_attention,
    )

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="/encoder/layer.0/relu")],
        "not-bert",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    for rewrite in (cls_only_last_layer, int8_attention):
        with pytest.raises(GraphRewriteError, match="not found"):
            rewrite(helper.make_model(graph))
