"""The starting ranker's scores for the click simulator: every candidate's cross-encoder score.

Scoring a candidate file with the cross-encoder takes minutes on a CPU and gives the same
numbers every time, so :func:`cached_scores` computes them once and keeps them under the user
cache directory, keyed by the candidate file's content hash and the model's version: a new
file or a new model gets new scores, nothing else does. :func:`read_scores` reads scores
computed elsewhere instead (``streamrank simulate --scores FILE``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamrank.models.evaluation.simulator import passages
from streamrank.models.retrieval.corpus import CACHE_DIR

Scorer = Callable[[str, Sequence[str]], Sequence[float]]
"""(query, passages) -> one relevance score per passage."""


class ScorerUnavailable(RuntimeError):
    """The cross-encoder cannot be loaded here (module missing or models not fetched)."""


@dataclass(frozen=True)
class NamedScorer:
    """A scorer and the version string that keys its cached scores."""

    version: str
    score: Scorer


def cross_encoder_scorer(model_dir: Path) -> NamedScorer:
    """The project's cross-encoder (:class:`streamrank.models.scoring.cross_encoder.CrossEncoder`)
    over ``model_dir`` as a scorer.

    Raises
    ------
    ScorerUnavailable
        When its module or its model files are missing.
    """
    try:
        from streamrank.models.assets.model_files import ModelFilesError
        from streamrank.models.scoring.cross_encoder import CrossEncoder
    except ImportError as error:
        raise ScorerUnavailable(f"the cross-encoder module is not available ({error})") from None
    try:
        encoder = CrossEncoder(model_dir)
    except (ModelFilesError, OSError) as error:
        raise ScorerUnavailable(str(error)) from None
    return NamedScorer(
        encoder.version, lambda query, texts: encoder.predict([(query, t) for t in texts])
    )


def cached_scores(
    candidates: Path, scorer: Callable[[], NamedScorer], cache_dir: Path = CACHE_DIR
) -> dict[str, list[float]]:
    """Starting scores for every candidate, computed once per (file content, model version).

    ``scorer`` is called even on a cache hit: the model's version is part of the key, and
    loading the model is what tells it.
    """
    named = scorer()
    digest = hashlib.sha256(candidates.read_bytes()).hexdigest()[:16]
    version = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in named.version)
    path = cache_dir / "simulate" / f"scores-{digest}-{version}.json"
    if path.exists():
        return json.loads(path.read_text())
    items = passages(candidates).items()
    out = {qid: [float(x) for x in named.score(q, texts)] for qid, (q, texts) in items}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out))
    tmp.replace(path)  # atomic: a killed run never leaves a half-written cache
    return out


def read_scores(path: Path, candidates: Path) -> dict[str, list[float]]:
    """``{qid: [score per hit]}`` or ``{qid: {"docs": [...], "ce": [...]}}`` (aligned by doc)."""
    raw = json.loads(path.read_text())
    order = {
        str(e["hits"][0]["qid"]): [str(h["docid"]) for h in e["hits"]]
        for e in json.loads(candidates.read_text())
        if e["hits"]
    }
    out = {}
    for qid, value in raw.items():
        if isinstance(value, Mapping):
            by_doc = dict(zip(map(str, value["docs"]), value["ce"], strict=True))
            value = [by_doc[d] for d in order.get(qid, [])]
        out[str(qid)] = [float(v) for v in value]
    return out
