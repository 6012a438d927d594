"""The feature-based final ranker: LambdaMART (LightGBM ``lambdarank``) and its linear baseline.

:func:`train_lambdamart` fits gradient-boosted trees to graded labels (0-4) with the LambdaRank
gradient, which weighs each swapped pair by the change in nDCG@10 it causes. The result is a
:class:`FinalRanker`: ``predict_many`` scores rows of features, and it saves as LightGBM's own
text model plus a JSON sidecar (feature names, config, the text's sha256 as ``digest``), so a
model is identified by its content and a corrupt or edited file is refused on load.

:class:`LinearRanker` is the baseline LambdaMART must beat on the same rows: pointwise ridge
regression of the label on standardised features (closed form in numpy, no iterations, no
seed), optionally on ``sign(x) log1p(|x|)`` to tame heavy-tailed counts.

Training is deterministic: LightGBM's ``deterministic`` mode, one thread and a fixed seed
(one thread also because on a shared, busy machine OpenMP's threads spin against each other:
100 rounds on 5,000 rows took ~1 s on one thread and ~18 s on two under load).

Examples
--------
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(400, 3)).astype(np.float32)
>>> y = np.digitize(X[:, 0], [-1.0, 0.0, 1.0])  # grades 0-3 from the first feature alone
>>> groups = np.full(20, 20)  # 20 queries of 20 rows each
>>> ranker = train_lambdamart(X, y, groups, LambdaMARTConfig(n_estimators=20))
>>> ranker.feature_names
('f1', 'f2', 'f3')
>>> scores = ranker.predict_many(X[:20])
>>> bool(np.corrcoef(scores, X[:20, 0])[0, 1] > 0.9)
True
>>> len(ranker.digest)
64
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SIDECAR_SUFFIX = ".json"
FORMAT = "lightgbm-text"


@dataclass(frozen=True)
class LambdaMARTConfig:
    """LightGBM ``lambdarank`` settings; the defaults suit a few thousand rows.

    The defaults were chosen by 4-fold cross-validation by query on the first MSLR-WEB10K
    sample only (43 queries; ``docs/notes/2026-12-07-final-ranker.md``): small trees
    (``num_leaves`` 7, at least 50 rows a leaf) and row bagging keep 5,000 rows from being
    memorised, and ``label_gain`` is linear (grade ``g`` gains ``g``), the gain of the
    project's nDCG (trec_eval's ``ndcg_cut``). LightGBM's default ``2**g - 1`` is the
    alternative when grades 3 and 4 matter far more than 1 and 2.
    """

    num_leaves: int = 7
    learning_rate: float = 0.05
    n_estimators: int = 200
    min_data_in_leaf: int = 50
    feature_fraction: float = 1.0
    bagging_fraction: float = 0.8
    lambda_l2: float = 0.0
    label_gain: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 4.0)
    eval_at: int = 10
    early_stopping_rounds: int | None = 30  # only with a validation set
    seed: int = 0
    num_threads: int = 1

    def params(self) -> dict[str, Any]:
        """The LightGBM parameter dictionary for :func:`lightgbm.train`."""
        return {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [self.eval_at],
            "label_gain": list(self.label_gain),
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1 if self.bagging_fraction < 1.0 else 0,
            "lambda_l2": self.lambda_l2,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,  # no timing-based choice between layouts: same trees each run
            "num_threads": self.num_threads,
            "verbosity": -1,
        }


def _lightgbm() -> Any:
    """LightGBM, imported on first use (its import takes ~1 s on a busy machine)."""
    import lightgbm

    return lightgbm


def default_feature_names(n_features: int) -> tuple[str, ...]:
    """``f1`` .. ``fN``: 1-based, like the LETOR feature indices."""
    return tuple(f"f{i}" for i in range(1, n_features + 1))


@dataclass
class FinalRanker:
    """A trained LambdaMART model: scores rows, saves and loads by content.

    Build one with :func:`train_lambdamart` or :meth:`load`. ``model_text`` is LightGBM's text
    model exactly as saved; ``digest`` is its sha256.
    """

    model_text: str
    feature_names: tuple[str, ...]
    config: dict[str, Any] = field(default_factory=dict)
    _booster: Any = field(default=None, init=False, repr=False, compare=False)
    _compiled: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def digest(self) -> str:
        """The hex sha256 of the model text: the model's identity."""
        return hashlib.sha256(self.model_text.encode("utf-8")).hexdigest()

    @property
    def booster(self) -> Any:
        """The :class:`lightgbm.Booster`, parsed from ``model_text`` on first use."""
        if self._booster is None:
            self._booster = _lightgbm().Booster(model_str=self.model_text)
        return self._booster

    @property
    def num_trees(self) -> int:
        """How many trees score a row."""
        return int(self.booster.num_trees())

    def predict_many(self, X: np.ndarray, num_threads: int | None = 1) -> np.ndarray:
        """One score per row of ``X`` (rows x features, in ``feature_names`` order).

        ``num_threads`` 1 is the worker's setting (a thread pool per call costs more than it
        saves on 1,000 rows under load); ``None`` is LightGBM's default (all cores).
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ValueError(
                f"expected rows of {len(self.feature_names)} features, got shape {X.shape}"
            )
        if self._compiled is not None:
            jobs = num_threads or os.cpu_count() or 1
            return np.asarray(self._compiled.predict(np.ascontiguousarray(X), n_jobs=jobs))
        extra = {} if num_threads is None else {"num_threads": num_threads}
        return np.asarray(self.booster.predict(X, **extra), dtype=np.float64)

    def compile(self, cache_dir: str | Path) -> bool:
        """Score with an LLVM-compiled forest (lleaves) from now on, when lleaves is installed.

        On 1,000 MSLR rows this is ~5x faster than ``Booster.predict`` with the same scores
        to ~1e-14 (``bench/final_ranker.py``). The machine code is cached in ``cache_dir``
        under the model's digest and the host CPU's name, since lleaves reuses a cache file
        without checking it: a restarted worker loads it (compiling 200 trees takes ~2 s) and
        a new model never picks up an old one. Returns ``False``, leaving ``Booster.predict``
        in place, when lleaves (the ``fast-trees`` extra) is not installed.
        """
        try:
            import lleaves
            from llvmlite import binding
        except ImportError:
            return False
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        model_file = cache_dir / f"{self.digest}.txt"
        if not model_file.is_file():
            model_file.write_text(self.model_text, encoding="utf-8")
        model = lleaves.Model(model_file=str(model_file))
        model.compile(cache=str(cache_dir / f"{self.digest}.{binding.get_host_cpu_name()}.o"))
        self._compiled = model
        return True

    def save(self, path: str | Path) -> Path:
        """Write the model text to ``path`` and the sidecar to ``path`` + ``.json``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_text, encoding="utf-8")
        sidecar = {
            "format": FORMAT,
            "sha256": self.digest,
            "feature_names": list(self.feature_names),
            "config": self.config,
        }
        _sidecar(path).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> FinalRanker:
        """Read a saved model; ``ValueError`` when the text does not match its recorded sha256."""
        path = Path(path)
        meta = json.loads(_sidecar(path).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{_sidecar(path)} is not a {FORMAT} sidecar")
        ranker = cls(path.read_text(encoding="utf-8"), tuple(meta["feature_names"]), meta["config"])
        if ranker.digest != meta["sha256"]:
            raise ValueError(f"{path} does not match the sha256 in its sidecar")
        return ranker


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def train_lambdamart(
    X: np.ndarray,
    y: np.ndarray,
    groups: Sequence[int] | np.ndarray,
    config: LambdaMARTConfig | None = None,
    valid: tuple[np.ndarray, np.ndarray, Sequence[int] | np.ndarray] | None = None,
    feature_names: Sequence[str] | None = None,
    weight: np.ndarray | None = None,
    position: np.ndarray | None = None,
) -> FinalRanker:
    """Fit LambdaMART to rows ``X`` with graded labels ``y``.

    Parameters
    ----------
    X
        Rows x features; the rows of each query contiguous.
    y
        Integer grades, 0 up to ``len(config.label_gain) - 1``.
    groups
        Rows per query, in order (LightGBM's ``group``;
        :func:`streamrank.models.evaluation.letor.group_sizes` turns query ids into it).
    config
        The settings; :class:`LambdaMARTConfig` defaults when ``None``.
    valid
        ``(X, y, groups)`` of held-out queries: training stops once their nDCG@``eval_at`` has
        not improved for ``config.early_stopping_rounds`` rounds and keeps the best round.
    feature_names
        Names stored with the model; ``f1`` .. ``fN`` by default.
    weight
        Per-row weights (LightGBM multiplies each row's gradient by its own): inverse
        propensities, say.
    position
        Each row's 0-based served position: LightGBM's unbiased LambdaMART then learns a
        position bias alongside the model, and the model scores features alone.
    """
    lgb = _lightgbm()
    config = config or LambdaMARTConfig()
    names = tuple(feature_names or default_feature_names(np.shape(X)[1]))
    train = lgb.Dataset(
        X,
        label=y,
        group=np.asarray(groups),
        weight=weight,
        position=position,
        feature_name=list(names),
        free_raw_data=True,
    )
    sets, callbacks = [], []
    if valid is not None:
        sets = [lgb.Dataset(valid[0], label=valid[1], group=np.asarray(valid[2]), reference=train)]
        if config.early_stopping_rounds:
            callbacks = [lgb.early_stopping(config.early_stopping_rounds, verbose=False)]
    booster = lgb.train(
        config.params(),
        train,
        num_boost_round=config.n_estimators,
        valid_sets=sets,
        callbacks=callbacks,
    )
    text = booster.model_to_string(num_iteration=booster.best_iteration or None)
    settings = asdict(config) | {"best_iteration": int(booster.best_iteration or 0)}
    return FinalRanker(text, names, settings)


@dataclass(frozen=True)
class LinearRanker:
    """Pointwise ridge regression on standardised features: the linear baseline.

    Each feature is (optionally ``sign(x) log1p(|x|)``-transformed, then) centred and scaled to
    unit variance on the training rows; the weights solve ``(Z'Z + alpha I) w = Z'(y - mean y)``
    in closed form. Pointwise rather than pairwise (RankNet-linear) because it has no step size,
    epochs or pair sampling to tune, so the comparison with LambdaMART is about the model
    class, not about optimisation. The default ``alpha`` won the same 4-fold cross-validation
    by query on the first MSLR sample that chose :class:`LambdaMARTConfig`'s defaults.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> X = rng.normal(size=(200, 4))
    >>> y = (2 * X[:, 1] - X[:, 3] > 0).astype(int)
    >>> ranker = LinearRanker.fit(X, y, alpha=1.0)
    >>> [round(float(w), 2) for w in ranker.weights / abs(ranker.weights).max()]
    [0.02, 1.0, 0.13, -0.51]
    """

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    log1p: bool = False

    @classmethod
    def fit(
        cls, X: np.ndarray, y: np.ndarray, alpha: float = 1000.0, log1p: bool = False
    ) -> LinearRanker:
        """Solve the ridge regression of ``y`` on the standardised rows of ``X``."""
        A = _transform(X, log1p)
        mean, scale = A.mean(axis=0), A.std(axis=0)
        scale[scale == 0] = 1.0  # constant features get weight 0 instead of a division by 0
        Z = (A - mean) / scale
        target = np.asarray(y, dtype=np.float64)
        gram = Z.T @ Z + alpha * np.eye(Z.shape[1])
        weights = np.linalg.solve(gram, Z.T @ (target - target.mean()))
        return cls(mean, scale, weights, float(target.mean()), log1p)

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """One score per row (the predicted grade)."""
        return ((_transform(X, self.log1p) - self.mean) / self.scale) @ self.weights + self.bias


def _transform(X: np.ndarray, log1p: bool) -> np.ndarray:
    A = np.asarray(X, dtype=np.float64)
    return np.sign(A) * np.log1p(np.abs(A)) if log1p else A
