"""A bi-encoder: one L2-normalized vector per text (bge-small-en-v1.5, int8 ONNX).

Documents and queries are encoded separately, so document vectors can be computed once and
cached; relevance is then a dot product. Pooling is the ``[CLS]`` vector of the last layer,
L2-normalized, as bge does. Queries may get bge's retrieval instruction
(:data:`QUERY_INSTRUCTION`). The instruction leaves the quality of the dense order itself
about where it was but keeps more relevant passages in the top K that a cascade hands to the
cross-encoder, so the cascade's dense tier uses it (:mod:`streamrank.models.scoring.factory`;
docs/models.md); the class default is no instruction.

Implements the :class:`streamrank.models.retrieval.dense.Encoder` protocol (``encode``,
``encode_queries``, ``name``).

Examples
--------
>>> encoder = BiEncoder("~/.cache/streamrank/models/bge_small_en")  # doctest: +SKIP
>>> vectors = encoder.encode(["a flea is an insect", "Paris is in France"])  # doctest: +SKIP
>>> vectors.shape, vectors.dtype  # doctest: +SKIP
((2, 384), dtype('float32'))
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tokenizers import Encoding

from streamrank.models.assets.model_files import FETCH_COMMAND, ModelFilesError, sha256_file
from streamrank.models.onnx.sessions import load_session, physical_cores
from streamrank.models.scoring.buckets import pad_batch, token_budget_batches
from streamrank.models.scoring.cross_encoder import load_tokenizer, resolve_model_folder

FOLDER = "bge_small_en"
QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero).

    Examples
    --------
    >>> normalize(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6, 0.8], [0.0, 0.0]]
    """
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class BiEncoder:
    """Text -> unit vector with an ONNX BERT and ``[CLS]`` pooling.

    Parameters
    ----------
    model_dir
        The model's folder (``model.onnx`` + ``tokenizer.json``), or a model directory holding
        a ``bge_small_en`` folder.
    max_length
        Most tokens per text.
    query_instruction
        Text put before every query by :meth:`encode_queries`; ``""`` for none.
    batch_tokens
        Token budget of one batch.
    threads
        Batches run at the same time; default: the physical cores.
    """

    def __init__(
        self,
        model_dir: str | Path,
        max_length: int = 512,
        query_instruction: str = "",
        batch_tokens: int = 2048,
        threads: int | None = None,
    ) -> None:
        self.folder = resolve_model_folder(model_dir, FOLDER)
        self.max_length = max_length
        self.query_instruction = query_instruction
        self.batch_tokens = batch_tokens
        self.threads = threads or physical_cores()
        self.tokenizer = load_tokenizer(self.folder, max_length)
        self.session = load_session(self.folder / "model.onnx", threads=1)
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.name = f"{self.folder.name}-{sha256_file(self.folder / 'model.onnx')[:12]}"
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="bi-encoder")

    @property
    def version(self) -> str:
        """Model identity for cache keys (documents are encoded without any instruction)."""
        return f"{self.name}-L{self.max_length}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One unit float32 vector per text (documents, or queries without the instruction)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(list(texts))
        lengths = np.array([len(e.ids) for e in encodings])
        batches = token_budget_batches(lengths, max(self.batch_tokens, int(lengths.max())))
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for batch, pooled in zip(
            batches, self._pool.map(lambda b: self._run(encodings, b), batches), strict=True
        ):
            vectors[batch] = pooled
        return normalize(vectors)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors: :meth:`encode` with :attr:`query_instruction` put first."""
        return self.encode([self.query_instruction + text for text in texts])

    @property
    def dimension(self) -> int:
        """Vector size (384 for bge-small)."""
        return int(self.session.get_outputs()[0].shape[-1])

    def _run(self, encodings: Sequence[Encoding], batch: np.ndarray) -> np.ndarray:
        feed = pad_batch([encodings[i].ids for i in batch], [encodings[i].type_ids for i in batch])
        feed = {name: value for name, value in feed.items() if name in self.inputs}
        hidden = self.session.run(None, feed)[0]
        return hidden[:, 0, :]

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=False)


def bi_encoder_available(model_dir: str | Path) -> bool:
    """Whether the bi-encoder's files are in the model directory (``streamrank models fetch``)."""
    folder = Path(model_dir).expanduser() / FOLDER
    return (folder / "model.onnx").is_file() and (folder / "tokenizer.json").is_file()


def load_bi_encoder(model_dir: str | Path) -> BiEncoder:
    """The bi-encoder of a model directory, as the first stage's dense index uses it.

    The first stage encodes queries without the retrieval instruction (the class default),
    like the document vectors of an index built with ``streamrank index build``.

    Raises
    ------
    streamrank.models.assets.model_files.ModelFilesError
        When its files are missing: the first line names the folder, the last one the fix.
    """
    folder = Path(model_dir).expanduser() / FOLDER
    if not bi_encoder_available(model_dir):
        raise ModelFilesError(
            f"no bi-encoder in {folder}\nfix: run `{FETCH_COMMAND}` to download the models"
        )
    return BiEncoder(folder)
