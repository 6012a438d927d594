"""A cross-encoder: scores (query, passage) pairs with an int8 ONNX BERT, fast on small CPUs.

``CrossEncoder(folder).predict(pairs)`` returns one relevance logit per pair, like
sentence-transformers' ``CrossEncoder.predict``. What makes it fast on a 2-core CPU:

- the model's own ``tokenizer.json`` with its fixed 512 padding switched off and truncation
  set to ``max_length`` (``longest_first``: a long passage is cut, a short query is kept);
- length-bucketed dynamic batches under a token budget (:mod:`streamrank.models.scoring.buckets`);
- one single-threaded onnxruntime run per physical core on different batches at the same
  time, longest batches first, with the session options of :mod:`streamrank.models.onnx.sessions`;
- where ``model.opt.onnx`` exists (:mod:`streamrank.models.onnx.graph_rewrites`, written by
  ``streamrank models fetch``), the last layer computes only the ``[CLS]`` position the classifier
  reads and the attention products run in int8 like the projections.

The scores of an int8 model with dynamic (per-batch) activation quantization depend very
slightly on which pairs share a batch; rankings do not change in practice.

Examples
--------
>>> encoder = CrossEncoder("~/.cache/streamrank/models/reranker_en")  # doctest: +SKIP
>>> encoder.predict([("what is a flea", "Fleas are small insects."),
...                  ("what is a flea", "Paris is in France.")])  # doctest: +SKIP
array([ 6.1, -11.2], dtype=float32)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from streamrank.models.assets.model_files import OPTIMIZED, sha256_file
from streamrank.models.onnx.sessions import load_session, physical_cores
from streamrank.models.scoring.buckets import pad_batch, token_budget_batches

Pair = tuple[str, str]
FOLDER = "reranker_en"
OPTIMIZED_FILE = OPTIMIZED[1]


def token_lengths(encodings: Sequence[Encoding]) -> np.ndarray:
    """Tokens in each encoded pair (after truncation)."""
    return np.array([len(e.ids) for e in encodings], dtype=np.int64)


def resolve_model_folder(path: str | Path, folder: str) -> Path:
    """The folder holding ``model.onnx``: ``path`` itself, or ``path/folder`` (a model dir)."""
    path = Path(path).expanduser()
    if (path / "model.onnx").is_file():
        return path
    if (path / folder / "model.onnx").is_file():
        return path / folder
    from streamrank.models.assets.model_files import FETCH_COMMAND, ModelFilesError

    raise ModelFilesError(
        f"missing model file: {path / 'model.onnx'}\nfix: run `{FETCH_COMMAND}` "
        "to download the models (or point to a folder with model.onnx and tokenizer.json)"
    )


def load_tokenizer(folder: Path, max_length: int) -> Tokenizer:
    """The folder's ``tokenizer.json`` without padding, truncating to ``max_length``."""
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length, strategy="longest_first")
    return tokenizer


class CrossEncoder:
    """Relevance scores for (query, passage) pairs from an ONNX sequence-classification BERT.

    Parameters
    ----------
    model_dir
        The model's folder (``model.onnx`` + ``tokenizer.json``), or a model directory holding
        a ``reranker_en`` folder.
    max_length
        Most tokens per pair, special tokens included; longer passages are truncated.
    batch_tokens
        Token budget of one batch (``rows x longest``); 256-768 is best on a 2-core CPU.
    threads
        Batches run at the same time, one thread each; default: the physical cores.
    optimized
        Use ``model.opt.onnx`` when it is in the folder (same weights; see
        :mod:`streamrank.models.onnx.graph_rewrites`).

    Attributes
    ----------
    version : str
        Model file hash and max length, e.g. ``reranker_en-5199b2c62968-L256``: scores from
        different versions never mix in a cache.
    pairs_scored, tokens_scored, seconds : int, int, float
        Running totals over every ``predict`` call (tokens include padding).
    """

    def __init__(
        self,
        model_dir: str | Path,
        max_length: int = 256,
        batch_tokens: int = 512,
        threads: int | None = None,
        optimized: bool = True,
    ) -> None:
        self.folder = resolve_model_folder(model_dir, FOLDER)
        self.max_length = max_length
        self.batch_tokens = batch_tokens
        self.threads = threads or physical_cores()
        self.model_path = self.folder / "model.onnx"
        if optimized and (self.folder / OPTIMIZED_FILE).is_file():
            self.model_path = self.folder / OPTIMIZED_FILE
        self.tokenizer = load_tokenizer(self.folder, max_length)
        self.session = load_session(self.model_path, threads=1)
        self.output = self.session.get_outputs()[0].name
        self.inputs = {i.name for i in self.session.get_inputs()}
        digest = sha256_file(self.model_path)[:12]
        self.version = f"{self.folder.name}-{digest}-L{max_length}"
        self.name = self.folder.name
        self.pairs_scored = 0
        self.tokens_scored = 0
        self.seconds = 0.0
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="cross-encoder")
        self._lock = threading.Lock()

    def encode(self, pairs: Sequence[Pair]) -> list[Encoding]:
        """Tokenize pairs (truncated, unpadded)."""
        return self.tokenizer.encode_batch([(q, d) for q, d in pairs])

    def token_counts(self, pairs: Sequence[Pair]) -> np.ndarray:
        """Tokens each pair costs (after truncation); used to estimate time under a deadline."""
        return token_lengths(self.encode(pairs))

    def predict(self, pairs: Sequence[Pair]) -> np.ndarray:
        """One relevance logit per pair, float32, in the order given."""
        return self.predict_encoded(self.encode(pairs))

    def predict_encoded(self, encodings: Sequence[Encoding]) -> np.ndarray:
        """Scores for already tokenized pairs (see :meth:`encode`)."""
        scores = np.zeros(len(encodings), dtype=np.float32)
        if not encodings:
            return scores
        started = time.perf_counter()
        lengths = token_lengths(encodings)
        batches = self._batches(lengths)
        padded = [len(b) * int(lengths[b].max()) for b in batches]
        for batch, logits in zip(batches, self._run_all(encodings, batches, padded), strict=True):
            scores[batch] = logits
        with self._lock:
            self.pairs_scored += len(encodings)
            self.tokens_scored += sum(padded)
            self.seconds += time.perf_counter() - started
        return scores

    def _batches(self, lengths: np.ndarray) -> list[np.ndarray]:
        # Small requests are cut finer so that every core gets a share of them.
        per_core = int(np.ceil(lengths.sum() / self.threads))
        budget = max(int(lengths.max()), min(self.batch_tokens, per_core))
        return token_budget_batches(lengths, budget)

    def _run_all(
        self, encodings: Sequence[Encoding], batches: list[np.ndarray], padded: list[int]
    ) -> list[np.ndarray]:
        if self.threads == 1 or len(batches) == 1:
            return [self._run(encodings, b) for b in batches]
        # Longest batches first (by padded tokens), so that the cores finish together.
        order = sorted(range(len(batches)), key=lambda i: -padded[i])
        futures = {i: self._pool.submit(self._run, encodings, batches[i]) for i in order}
        return [futures[i].result() for i in range(len(batches))]

    def _run(self, encodings: Sequence[Encoding], batch: np.ndarray) -> np.ndarray:
        feed = pad_batch([encodings[i].ids for i in batch], [encodings[i].type_ids for i in batch])
        feed = {name: value for name, value in feed.items() if name in self.inputs}
        logits = self.session.run([self.output], feed)[0]
        return np.asarray(logits, dtype=np.float32).reshape(len(batch), -1)[:, 0]

    @property
    def pairs_per_second(self) -> float:
        """Measured throughput so far (0 before the first call)."""
        return self.pairs_scored / self.seconds if self.seconds else 0.0

    @property
    def seconds_per_token(self) -> float | None:
        """Measured seconds per (padded) token so far; ``None`` before the first call."""
        return self.seconds / self.tokens_scored if self.tokens_scored else None

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=False)
