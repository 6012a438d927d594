"""Distillation on real code paths: the trained JAX network is the exported ONNX graph, training
lowers the loss and a stopped run resumes to the same weights (a tiny BERT), and
``streamrank models distill`` builds a loadable student from the real teacher on the shared
collections (a smoke run of a few steps). JAX compiles per shape: seconds to minutes, hence
this tier.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("jax", reason="distillation needs the [distill] extra (jax, optax)")
pytest.importorskip("optax", reason="distillation needs the [distill] extra (jax, optax)")

from streamrank.models.learning.distill import (  # noqa: E402
    DistillConfig,
    Tokenized,
    padded_batch,
    train,
)
from streamrank.models.learning.student import keep_layers, logits, tiny_weights  # noqa: E402
from tests.helpers import SHARED_DATA, tiny_tokenized  # noqa: E402

HEADS = 2


def test_the_trained_network_is_the_exported_onnx_graph(tmp_path: Path):
    pytest.importorskip("onnx")
    import onnx

    from streamrank.models.onnx.export import build_graph
    from streamrank.models.onnx.sessions import load_session

    weights = tiny_weights(layers=2, hidden=8, heads=HEADS, vocab=20)
    config = {"num_hidden_layers": 2, "num_attention_heads": HEADS, "layer_norm_eps": 1e-12}
    onnx.save(build_graph(weights, config, cls_only=False), str(tmp_path / "m.onnx"))
    batch = padded_batch(tiny_tokenized(), [0, 1])  # padded rows: the mask must hide the padding
    feed = {
        "input_ids": batch["ids"].astype(np.int64),
        "attention_mask": batch["mask"].astype(np.int64),
        "token_type_ids": batch["types"].astype(np.int64),
    }
    exported = load_session(tmp_path / "m.onnx").run(["logits"], feed)[0][:, 0]
    trained = np.asarray(logits(weights, batch["ids"], batch["types"], batch["mask"], HEADS))
    np.testing.assert_allclose(trained, exported, atol=1e-4)


def test_padding_does_not_change_a_pair_score():
    weights = tiny_weights(layers=1, hidden=8, heads=HEADS, vocab=20)
    ids, types = np.array([[1, 5, 7, 2]]), np.array([[0, 0, 1, 1]])
    alone = logits(weights, ids, types, np.ones((1, 4)), HEADS)
    padded = logits(
        weights,
        np.pad(ids, ((0, 0), (0, 4))),
        np.pad(types, ((0, 0), (0, 4))),
        np.array([[1, 1, 1, 1, 0, 0, 0, 0]]),
        HEADS,
    )
    np.testing.assert_allclose(np.asarray(alone), np.asarray(padded), atol=1e-5)


class _StopAfter:
    """Progress that raises after ``steps`` training steps, like a killed run."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    @contextmanager
    def stage(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if done > self.steps:
                raise KeyboardInterrupt

        yield advance


def test_training_lowers_the_loss_and_a_stopped_run_resumes_to_the_same_weights(tmp_path: Path):
    teacher = tiny_weights(layers=2, hidden=8, heads=HEADS, vocab=20)
    data = tiny_tokenized(groups=8)
    config = DistillConfig(
        layers=(0,), epochs=3, batch_groups=2, learning_rate=5e-3, checkpoint_every=4
    )
    student = keep_layers(teacher, (0,))
    straight, report = train(config, student, data, tmp_path / "a", heads=HEADS)
    with pytest.raises(KeyboardInterrupt):
        train(config, student, data, tmp_path / "b", _StopAfter(5), heads=HEADS)
    resumed, again = train(config, student, data, tmp_path / "b", heads=HEADS)
    assert again["resumed_at_step"] == 4
    for name, value in straight.items():
        np.testing.assert_allclose(resumed[name], value, atol=1e-6, err_msg=name)
    before = np.asarray(logits(keep_layers(teacher, (0,)), *_arrays(data), HEADS))
    after = np.asarray(logits(straight, *_arrays(data), HEADS))
    assert np.mean((after - data.teacher) ** 2) < np.mean((before - data.teacher) ** 2)
    assert report["steps"] == 12


def _arrays(data: Tokenized) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    batch = padded_batch(data, list(range(data.groups)))
    return batch["ids"], batch["types"], batch["mask"]


def test_models_distill_builds_a_student_that_loads_and_a_rerun_resumes(tmp_path: Path):
    """A smoke distillation: a few steps on a few pairs from the shared collections."""
    import json
    import subprocess
    import sys

    from streamrank.models.scoring.cross_encoder import CrossEncoder
    from streamrank.streams.config import Settings

    teacher = Settings().model_dir / "reranker_en"
    if not (teacher / "model.onnx").is_file():
        pytest.skip("the teacher is not fetched: run `streamrank models fetch`")
    if not (SHARED_DATA / "scifact").is_dir():
        pytest.skip(f"the shared judged collections are not at {SHARED_DATA}")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "reranker_en").symlink_to(teacher)
    command = [
        sys.executable, "-m", "streamrank.streams.cli", "models", "distill",
        "--model-dir", str(tmp_path / "models"), "--data", str(SHARED_DATA),
        "--queries", "0.01", "--steps", "3", "--no-evaluate",
    ]  # fmt: skip
    first = json.loads(subprocess.run(command, capture_output=True, check=True, text=True).stdout)
    folder = Path(first["folder"])
    assert folder.parent == tmp_path / "models" / "students"
    assert folder.name == first["model_sha256"][:12]
    assert first["teacher"]["sha256"] and first["layers"] == 3
    assert first["training"]["steps"] == 3 and first["data"]["pairs"] > 0
    assert "--steps 3" in first["command"] and "--queries 0.01" in first["command"]
    assert (folder / "model.onnx").stat().st_size < 20_000_000
    scores = CrossEncoder(folder).predict([("what is a flea", "Fleas are small insects.")] * 2)
    assert np.isfinite(scores).all()
    again = json.loads(subprocess.run(command, capture_output=True, check=True, text=True).stdout)
    assert again["training"]["resumed_at_step"] == 3
    assert again["model_sha256"] == first["model_sha256"]
