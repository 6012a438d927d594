"""Distil the teacher cross-encoder into a smaller student: data, teacher scores, training, export.

The student starts as the teacher itself with fewer layers (its embeddings, pooler, classifier
and the layers :attr:`DistillConfig.layers` names: by default its first three, an early exit,
which learns several times faster per step than layers spread over the depth; dequantised
from the int8 ONNX by :mod:`streamrank.models.onnx.dequantize`) and learns the teacher's
logits on unlabelled groups of (query, passage) pairs
(:mod:`streamrank.models.learning.distill_data`). The loss is MSE on the logits plus
Margin-MSE within each query's group: a cascade only uses a tier's order, and the margins are
what order the candidates, while the MSE term keeps the scale (the confidence
rule and fusion read scores). The word embeddings stay frozen: most of the parameters, the
teacher's already, and AdamW over them would cost more than the layers' own gradients.

Training runs in JAX (:mod:`streamrank.models.learning.student`) on whatever device JAX has, a
GPU when ``jax[cuda]`` is installed. Batches are padded to a multiple of
:data:`LENGTH_STEP` tokens, so the step compiles a few times, not once per batch. A checkpoint
(weights, optimizer state, step) is written every ``checkpoint_every`` steps under a folder
named by the hash of everything that decides the result, so ``models distill`` run again
resumes where it stopped and a changed setting starts afresh.

The trained weights are written as ONNX by :func:`streamrank.models.onnx.export.build_graph`
(the last layer computes ``[CLS]`` only), quantized to int8 like the teacher, and land in
``<model dir>/students/<sha256 of model.onnx>/`` with ``PROVENANCE.json``.

Examples
--------
>>> config = DistillConfig(layers=(0, 1, 2), steps=10)
>>> config.digest(teacher_sha256="ab", data_sha256="cd") == config.digest("ab", "cd")
True
>>> margin_pairs(3)
(array([0, 0, 1]), array([1, 2, 2]))
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamrank.models.learning.distill_data import Group, groups_digest
from streamrank.models.progress import ProgressReporter, SilentProgress

LENGTH_STEP = 32
HEADS = 12  # MiniLM-L-12-H384's attention heads (the teacher's config)


class DistillError(RuntimeError):
    """Distillation cannot go on; ``fix`` says what to do."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


@dataclass(frozen=True)
class DistillConfig:
    """Everything that decides the student (with the teacher and the data).

    Attributes
    ----------
    layers
        Teacher layers the student keeps, bottom first.
    epochs, steps
        Passes over the groups; ``steps`` caps the total (0: no cap), for smoke runs.
    batch_groups
        Query groups per step (each ``per_query`` pairs).
    learning_rate, warmup
        AdamW's peak rate, reached linearly over the first ``warmup`` fraction of the steps,
        then decayed linearly to 0.
    margin_weight
        Weight of the Margin-MSE term next to the logit MSE.
    max_length
        Tokens per pair, as the cascade scores them.
    """

    layers: tuple[int, ...] = (0, 1, 2)
    epochs: int = 1
    steps: int = 150
    batch_groups: int = 4
    learning_rate: float = 5e-4
    warmup: float = 0.1
    weight_decay: float = 0.01
    margin_weight: float = 1.0
    max_length: int = 128
    seed: int = 0
    checkpoint_every: int = 100

    def digest(self, teacher_sha256: str, data_sha256: str) -> str:
        """Hash of the settings, teacher and data: names the checkpoint folder."""
        record = asdict(self) | {"checkpoint_every": 0, "teacher": teacher_sha256}
        record["data"] = data_sha256
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Tokenized:
    """Every pair's token ids and token types, group by group."""

    ids: list[list[int]]
    types: list[list[int]]
    per_query: int
    teacher: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def groups(self) -> int:
        return len(self.ids) // self.per_query


def margin_pairs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)``, ``i < j``, within one group: the margins the loss compares."""
    first, second = np.triu_indices(size, k=1)
    return first, second


def tokenize_groups(groups: Sequence[Group], tokenizer: Any) -> Tokenized:
    """Token ids of every pair, in group order (``tokenizer`` truncates, does not pad)."""
    per_query = len(groups[0].passages)
    pairs = [(group.query, text) for group in groups for text in group.passages]
    encodings = tokenizer.encode_batch(pairs)
    return Tokenized([e.ids for e in encodings], [e.type_ids for e in encodings], per_query)


def teacher_scores(
    groups: Sequence[Group], teacher: Any, cache: Path, progress: ProgressReporter
) -> np.ndarray:
    """The teacher's logit for every pair, cached in ``cache`` (keyed by the caller)."""
    if cache.is_file():
        return np.load(cache)
    pairs = [(group.query, text) for group in groups for text in group.passages]
    scores = np.zeros(len(pairs), np.float32)
    chunk = 256
    with progress.stage("teacher scores", len(pairs)) as advance:
        for start in range(0, len(pairs), chunk):
            scores[start : start + chunk] = teacher.predict(pairs[start : start + chunk])
            advance(min(chunk, len(pairs) - start))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache.with_suffix(".partial.npy"), scores)
    cache.with_suffix(".partial.npy").replace(cache)
    return scores


def padded_batch(data: Tokenized, groups: Sequence[int]) -> dict[str, np.ndarray]:
    """Ids, types, mask and teacher scores of some groups, padded to a multiple of the step."""
    rows = [g * data.per_query + i for g in groups for i in range(data.per_query)]
    longest = max(len(data.ids[r]) for r in rows)
    length = -(-longest // LENGTH_STEP) * LENGTH_STEP
    ids = np.zeros((len(rows), length), np.int32)
    types = np.zeros_like(ids)
    mask = np.zeros(ids.shape, np.float32)
    for row, r in enumerate(rows):
        n = len(data.ids[r])
        ids[row, :n], types[row, :n], mask[row, :n] = data.ids[r], data.types[r], 1.0
    return {"ids": ids, "types": types, "mask": mask, "teacher": data.teacher[rows]}


def _loss_fn(config: DistillConfig, per_query: int, heads: int) -> Any:
    import jax.numpy as jnp

    from streamrank.models.learning.student import logits

    first, second = margin_pairs(per_query)

    def loss(trainable: Any, frozen: Any, batch: Any) -> Any:
        scores = logits(trainable | frozen, batch["ids"], batch["types"], batch["mask"], heads)
        mse = jnp.mean((scores - batch["teacher"]) ** 2)
        s = scores.reshape(-1, per_query)
        t = batch["teacher"].reshape(-1, per_query)
        margins = (s[:, first] - s[:, second]) - (t[:, first] - t[:, second])
        return mse + config.margin_weight * jnp.mean(margins**2)

    return loss


def _optimizer(config: DistillConfig, total_steps: int) -> Any:
    import optax

    warm = max(1, int(config.warmup * total_steps))
    schedule = optax.join_schedules(
        [
            optax.linear_schedule(0.0, config.learning_rate, warm),
            optax.linear_schedule(config.learning_rate, 0.0, max(1, total_steps - warm)),
        ],
        [warm],
    )
    return optax.adamw(schedule, weight_decay=config.weight_decay)


def _save_checkpoint(folder: Path, step: int, trainable: Any, opt_state: Any) -> None:
    import jax

    leaves = jax.tree_util.tree_leaves(opt_state)
    arrays = {f"w:{k}": np.asarray(v) for k, v in trainable.items()}
    arrays |= {f"opt:{i}": np.asarray(v) for i, v in enumerate(leaves)}
    partial = folder / "checkpoint.partial.npz"
    np.savez(partial, step=np.array(step), **arrays)
    partial.replace(folder / "checkpoint.npz")


def _load_checkpoint(folder: Path, trainable: Any, opt_state: Any) -> tuple[int, Any, Any]:
    import jax
    import jax.numpy as jnp

    path = folder / "checkpoint.npz"
    if not path.is_file():
        return 0, trainable, opt_state
    saved = np.load(path)
    trainable = {k: jnp.asarray(saved[f"w:{k}"]) for k in trainable}
    leaves, tree = jax.tree_util.tree_flatten(opt_state)
    opt_state = jax.tree_util.tree_unflatten(
        tree, [jnp.asarray(saved[f"opt:{i}"]) for i in range(len(leaves))]
    )
    return int(saved["step"]), trainable, opt_state


def schedule_of(config: DistillConfig, groups: int) -> list[list[int]]:
    """The groups of every step, all epochs, shuffled per epoch with ``config.seed``."""
    rng = np.random.default_rng(config.seed)
    steps = []
    for _ in range(config.epochs):
        order = rng.permutation(groups)
        for start in range(0, groups - config.batch_groups + 1, config.batch_groups):
            steps.append(order[start : start + config.batch_groups].tolist())
    return steps[: config.steps] if config.steps else steps


def train(
    config: DistillConfig,
    initial: dict[str, np.ndarray],
    data: Tokenized,
    folder: Path,
    progress: ProgressReporter | None = None,
    heads: int = HEADS,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Train the student from ``initial`` on ``data``; resumes from ``folder``'s checkpoint.

    Returns the trained weights (every tensor, frozen ones included) and what it took.
    """
    import jax
    import jax.numpy as jnp

    progress = progress or SilentProgress()
    frozen_names = {"embeddings.word_embeddings.weight"}
    trainable = {k: jnp.asarray(v) for k, v in initial.items() if k not in frozen_names}
    frozen = {k: jnp.asarray(v) for k, v in initial.items() if k in frozen_names}
    steps = schedule_of(config, data.groups)
    if not steps:
        raise DistillError("too few groups for one batch", "use more queries or a smaller batch")
    optimizer = _optimizer(config, len(steps))
    opt_state = optimizer.init(trainable)
    folder.mkdir(parents=True, exist_ok=True)
    done, trainable, opt_state = _load_checkpoint(folder, trainable, opt_state)
    loss_fn = _loss_fn(config, data.per_query, heads)

    @jax.jit
    def step(trainable: Any, opt_state: Any, batch: Any) -> tuple[Any, Any, Any]:
        loss, grads = jax.value_and_grad(loss_fn)(trainable, frozen, batch)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        return jax.tree_util.tree_map(jnp.add, trainable, updates), opt_state, loss

    losses: list[float] = []
    started = time.perf_counter()
    with progress.stage(f"training ({len(steps)} steps)", len(steps)) as advance:
        advance(done)
        for number in range(done, len(steps)):
            batch = padded_batch(data, steps[number])
            trainable, opt_state, loss = step(trainable, opt_state, batch)
            losses.append(float(loss))
            advance(1)
            if (number + 1) % config.checkpoint_every == 0:
                _save_checkpoint(folder, number + 1, trainable, opt_state)
    _save_checkpoint(folder, len(steps), trainable, opt_state)
    weights = {k: np.asarray(v) for k, v in (trainable | frozen).items()}
    report = {
        "steps": len(steps),
        "resumed_at_step": done,
        "train_seconds": round(time.perf_counter() - started, 1),
        "final_loss": float(np.mean(losses[-50:])) if losses else float("nan"),
        "device": str(jax.devices()[0]),
    }
    return weights, report


def export_student(
    weights: dict[str, np.ndarray],
    config: dict[str, Any],
    teacher_folder: Path,
    students_dir: Path,
    provenance: dict[str, Any],
) -> Path:
    """Write the student as int8 ONNX with the teacher's tokenizer; returns its folder.

    The folder is named by the model file's hash, so it never overwrites another student.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from streamrank.models.assets.model_files import sha256_file
    from streamrank.models.onnx.export import TOKENIZER_FILES, _require, build_graph

    onnx = _require("onnx")
    students_dir.mkdir(parents=True, exist_ok=True)
    staging = students_dir / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    layers = sum(1 for k in weights if k.endswith("attention.self.query.weight"))
    graph_config = config | {"num_hidden_layers": layers, "num_attention_heads": HEADS}
    onnx.save(build_graph(weights, graph_config, cls_only=True), str(staging / "model.fp32.onnx"))
    quantize_dynamic(
        str(staging / "model.fp32.onnx"),
        str(staging / "model.onnx"),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gather"],
    )
    (staging / "model.fp32.onnx").unlink()
    for name in TOKENIZER_FILES:
        if (teacher_folder / name).is_file():
            shutil.copyfile(teacher_folder / name, staging / name)
    digest = sha256_file(staging / "model.onnx")
    provenance = provenance | {"model_sha256": digest, "layers": layers}
    (staging / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n")
    target = students_dir / digest[:12]
    shutil.rmtree(target, ignore_errors=True)
    staging.replace(target)
    return target


def environment() -> dict[str, str]:
    """The versions a rebuild should match."""
    import jax
    import onnxruntime
    import optax

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "onnxruntime": onnxruntime.__version__,
        "machine": platform.machine(),
    }


def compare_on_candidates(
    student: Path, teacher: Path, candidates: Path, qrels: Path, max_length: int = 256
) -> dict[str, float]:
    """nDCG@10 and pairs/s of the student and the teacher alone, over the same candidates.

    Both score every candidate of every query in one run, so the speed ratio is measured
    under the same load; the student at the length it was trained on, as the cascade runs it.
    """
    from streamrank.models.assets.student_files import trained_length
    from streamrank.models.evaluation.metrics import ndcg_at_k
    from streamrank.models.evaluation.rerank import load_candidates, load_qrels
    from streamrank.models.scoring.cross_encoder import CrossEncoder

    queries = load_candidates(candidates)
    judged = load_qrels(qrels)
    queries = [q for q in queries if q.qid in judged]
    figures: dict[str, float] = {"queries": len(queries)}
    lengths = {"student": min(max_length, trained_length(student)), "teacher": max_length}
    for name, folder in (("student", student), ("teacher", teacher)):
        encoder = CrossEncoder(folder, max_length=lengths[name])
        encoder.predict([("warm up", "the encoder's first call")] * 8)
        pairs, seconds, ndcgs = 0, 0.0, []
        for query in queries:
            texts = [(query.text, c.text or "") for c in query.candidates]
            began = time.perf_counter()
            scores = encoder.predict(texts)
            seconds += time.perf_counter() - began
            pairs += len(texts)
            order = np.argsort(-scores, kind="stable")
            ranking = [query.candidates[i].doc_id for i in order]
            ndcgs.append(ndcg_at_k(ranking, judged[query.qid]))
        encoder.close()
        figures[f"{name}_ndcg@10"] = round(float(np.mean(ndcgs)), 4)
        figures[f"{name}_pairs_per_second"] = round(pairs / seconds, 1)
    figures["speedup"] = round(
        figures["student_pairs_per_second"] / figures["teacher_pairs_per_second"], 2
    )
    return figures


def distill_student(
    config: DistillConfig,
    sources: Any,
    model_dir: Path,
    work_dir: Path,
    progress: ProgressReporter | None = None,
    evaluation: tuple[Path, Path] | None = None,
    command: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Build, label, train, export and (optionally) evaluate a student; returns its folder.

    Parameters
    ----------
    sources
        A :class:`streamrank.models.learning.distill_data.Sources`.
    model_dir
        Holds the teacher (``reranker_en``); the student goes to ``students/<hash>/``.
    work_dir
        Teacher scores and checkpoints, keyed by content: a rerun resumes.
    evaluation
        ``(candidates, qrels)`` to measure the student against the teacher on, e.g. DL19's
        top 100; the figures go into ``PROVENANCE.json``.
    command
        The command line that rebuilds it, for the provenance (default: from ``config``).
    """
    from streamrank.models.assets.model_files import sha256_file
    from streamrank.models.learning.distill_data import build_groups
    from streamrank.models.learning.student import keep_layers
    from streamrank.models.onnx.dequantize import dequantized_weights
    from streamrank.models.scoring.cross_encoder import CrossEncoder, load_tokenizer

    progress = progress or SilentProgress()
    teacher_folder = model_dir / "reranker_en"
    teacher_model = teacher_folder / "model.onnx"
    if not teacher_model.is_file():
        raise DistillError(f"no teacher at {teacher_model}", "run `streamrank models fetch`")
    teacher_sha = sha256_file(teacher_model)
    with progress.stage("building training pairs (BM25 candidates)", None):
        groups = build_groups(sources, seed=config.seed)
    if len(groups) < config.batch_groups:
        raise DistillError("no training data found", "fetch the wiki corpus or point to SciFact")
    data_sha = groups_digest(groups)
    folder = work_dir / config.digest(teacher_sha, data_sha)
    teacher = CrossEncoder(teacher_folder, max_length=config.max_length, optimized=False)
    scores = teacher_scores(
        groups,
        teacher,
        work_dir / f"teacher-{teacher_sha[:12]}-{data_sha[:12]}-L{config.max_length}.npy",
        progress,
    )
    teacher.close()
    data = tokenize_groups(groups, load_tokenizer(teacher_folder, config.max_length))
    data.teacher = scores
    weights, model_config = dequantized_weights(teacher_model)
    trained, training = train(config, keep_layers(weights, config.layers), data, folder, progress)
    provenance: dict[str, Any] = {
        "teacher": {"folder": "reranker_en", "sha256": teacher_sha},
        "config": asdict(config),
        "data": {
            "sha256": data_sha,
            "groups": len(groups),
            "pairs": len(groups) * data.per_query,
            "by_source": {
                s: sum(g.source == s for g in groups) for s in sorted({g.source for g in groups})
            },
        },
        "training": training,
        "environment": environment(),
        "command": command or rebuild_command(config),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    student = export_student(
        trained, model_config, teacher_folder, model_dir / "students", provenance
    )
    if evaluation is not None:
        with progress.stage("measuring student and teacher on the evaluation set", None):
            figures = compare_on_candidates(student, teacher_folder, *evaluation)
        provenance = json.loads((student / "PROVENANCE.json").read_text())
        provenance["figures"] = figures | {"candidates": str(evaluation[0].name)}
        (student / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return student, json.loads((student / "PROVENANCE.json").read_text())


def rebuild_command(config: DistillConfig) -> str:
    """The ``streamrank models distill`` command line that builds this configuration."""
    default = DistillConfig()
    parts = ["streamrank models distill"]
    if config.layers != default.layers:
        parts.append("--layers " + ",".join(map(str, config.layers)))
    for name in ("epochs", "steps", "batch_groups", "learning_rate", "max_length", "seed"):
        value = getattr(config, name)
        if value != getattr(default, name):
            parts.append(f"--{name.replace('_', '-')} {value}")
    return " ".join(parts)
