"""The student cross-encoder's forward pass in JAX: a BERT, as a pure function of its weights.

The same network as ``BertForSequenceClassification`` (post-LayerNorm layers, exact-erf GELU,
additive attention mask, tanh pooler on ``[CLS]``, one logit), written over a dict of arrays so
that ``jax.grad`` differentiates it and the trained dict goes straight to
:func:`streamrank.models.onnx.export.build_graph`, which writes the same network as ONNX. JAX
rather than torch: its CPU wheels on PyPI are ~100 MB where torch's pull several GB of CUDA
libraries, and a pure function over a weight dict needs no framework of modules.

Examples
--------
>>> import numpy as np
>>> weights = tiny_weights(layers=1, hidden=8, heads=2, vocab=20)
>>> ids = np.array([[1, 5, 2, 7]]); types = np.array([[0, 0, 1, 1]]); mask = np.ones((1, 4))
>>> logits(weights, ids, types, mask, heads=2).shape
(1,)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

LAYER_NAME = re.compile(r"^encoder\.layer\.(\d+)\.")


def _jnp() -> Any:
    import jax.numpy as jnp

    return jnp


def _norm(w: Mapping[str, Any], x: Any, name: str, eps: float = 1e-12) -> Any:
    jnp = _jnp()
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * w[name + ".weight"] + w[name + ".bias"]


def _linear(w: Mapping[str, Any], x: Any, name: str) -> Any:
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def _layer(w: Mapping[str, Any], x: Any, additive: Any, index: int, heads: int) -> Any:
    import jax

    p = f"encoder.layer.{index}."
    batch, length, hidden = x.shape
    size = hidden // heads

    def split(t: Any) -> Any:
        return t.reshape(batch, length, heads, size).transpose(0, 2, 1, 3)

    q, k, v = (split(_linear(w, x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size) + additive
    context = (jax.nn.softmax(scores, axis=-1) @ v).transpose(0, 2, 1, 3)
    context = context.reshape(batch, length, hidden)
    x = _norm(
        w, _linear(w, context, p + "attention.output.dense") + x, p + "attention.output.LayerNorm"
    )
    h = _linear(w, x, p + "intermediate.dense")
    h = h * 0.5 * (1.0 + jax.scipy.special.erf(h / math.sqrt(2.0)))
    return _norm(w, _linear(w, h, p + "output.dense") + x, p + "output.LayerNorm")


def layer_count(weights: Mapping[str, Any]) -> int:
    """How many encoder layers the weights hold."""
    found = {int(m.group(1)) for name in weights if (m := LAYER_NAME.match(name))}
    return max(found) + 1 if found else 0


def logits(weights: Mapping[str, Any], ids: Any, types: Any, mask: Any, heads: int = 12) -> Any:
    """One relevance logit per row of ``ids`` ([batch, length]; ``mask`` 1 for real tokens)."""
    jnp = _jnp()
    w = weights
    length = ids.shape[1]
    x = (
        jnp.take(w["embeddings.word_embeddings.weight"], ids, axis=0)
        + jnp.take(w["embeddings.token_type_embeddings.weight"], types, axis=0)
        + w["embeddings.position_embeddings.weight"][:length]
    )
    x = _norm(w, x, "embeddings.LayerNorm")
    additive = (1.0 - jnp.asarray(mask, jnp.float32)[:, None, None, :]) * -10000.0
    for index in range(layer_count(w)):
        x = _layer(w, x, additive, index, heads)
    pooled = jnp.tanh(_linear(w, x[:, 0], "pooler.dense"))
    return _linear(w, pooled, "classifier")[:, 0]


def keep_layers(weights: Mapping[str, np.ndarray], layers: Sequence[int]) -> dict[str, np.ndarray]:
    """A student's initial weights: the teacher's embeddings, head and the given layers.

    Teacher layer ``layers[i]`` becomes the student's layer ``i``.
    """
    kept = {name: value for name, value in weights.items() if not LAYER_NAME.match(name)}
    for student, teacher in enumerate(layers):
        prefix = f"encoder.layer.{teacher}."
        for name, value in weights.items():
            if name.startswith(prefix):
                kept[f"encoder.layer.{student}." + name[len(prefix) :]] = value
    if layer_count(kept) != len(layers):
        raise ValueError(f"the teacher has no layer among {list(layers)}")
    return kept


def tiny_weights(
    layers: int = 1, hidden: int = 8, heads: int = 2, vocab: int = 20, seed: int = 0
) -> dict[str, np.ndarray]:
    """Random weights of a tiny BERT classifier, for tests and examples."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.2, shape).astype(np.float32)

    w = {
        "embeddings.word_embeddings.weight": normal(vocab, hidden),
        "embeddings.token_type_embeddings.weight": normal(2, hidden),
        "embeddings.position_embeddings.weight": normal(64, hidden),
        "pooler.dense.weight": normal(hidden, hidden),
        "pooler.dense.bias": np.zeros(hidden, np.float32),
        "classifier.weight": normal(1, hidden),
        "classifier.bias": np.zeros(1, np.float32),
    }
    norms = ["embeddings.LayerNorm"]
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value"):
            w[p + name + ".weight"], w[p + name + ".bias"] = normal(hidden, hidden), normal(hidden)
        w[p + "attention.output.dense.weight"] = normal(hidden, hidden)
        w[p + "attention.output.dense.bias"] = normal(hidden)
        w[p + "intermediate.dense.weight"] = normal(4 * hidden, hidden)
        w[p + "intermediate.dense.bias"] = normal(4 * hidden)
        w[p + "output.dense.weight"] = normal(hidden, 4 * hidden)
        w[p + "output.dense.bias"] = normal(hidden)
        norms += [p + "attention.output.LayerNorm", p + "output.LayerNorm"]
    for name in norms:
        w[name + ".weight"] = np.ones(hidden, np.float32)
        w[name + ".bias"] = np.zeros(hidden, np.float32)
    return w
