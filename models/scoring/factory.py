"""Build a cascade's tiers from the model directory: only the models the pipeline names load.

Examples
--------
>>> sorted(tiers_needed("dense:100>ce:20"))
['ce', 'dense']
>>> cascade = build_cascade("ce", "~/.cache/streamrank/models")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from tokenizers import Encoding

from streamrank.models.assets.model_files import MODELS, verify_models
from streamrank.models.assets.student_files import student_folder, trained_length
from streamrank.models.scoring.cascade import Cascade, Tier, parse_pipeline
from streamrank.models.scoring.confidence import ConfidenceRule

FOLDERS = {"ce": "reranker_en", "dense": "bge_small_en", "colbert": "colbert"}


def tiers_needed(spec: str) -> set[str]:
    """Names of the tiers a pipeline spec uses."""
    return {stage.tier for stage in parse_pipeline(spec)}


def build_tiers(
    spec: str,
    model_dir: str | Path,
    max_length: int = 256,
    score_cache: object | None = None,
    vector_cache: object | None = None,
    predict_wrapper: Callable[[Callable[[list[Encoding]], np.ndarray]], Callable] | None = None,
    student: str | None = None,
) -> dict[str, Tier]:
    """Load the models a pipeline needs, verified, as tiers.

    Parameters
    ----------
    spec
        Pipeline spec (:func:`streamrank.models.scoring.cascade.parse_pipeline`).
    model_dir
        The model directory (``Settings.model_dir``).
    max_length
        The cross-encoder's max tokens per pair (the student's: at most what it was trained
        on, from its ``PROVENANCE.json``).
    score_cache, vector_cache
        Caches for cross-encoder scores and document vectors (``None``: the cross-encoder
        has none; the vector tiers keep an in-memory one).
    predict_wrapper
        Wraps the cross-encoder's ``predict_encoded``, e.g.
        ``lambda p: CrossRequestBatcher(p).predict``.
    student
        The ``student`` tier's model hash (a prefix will do) when the spec names none
        (``student@<hash>``); ``None``: the shipped student
        (:func:`streamrank.models.assets.student_files.student_folder`).

    Raises
    ------
    streamrank.models.assets.model_files.ModelFilesError
        When a needed model is missing or corrupt (names the path and the fetch command).
    """
    from streamrank.models.scoring.tiers import ColBERTTier, CrossEncoderTier, DenseTier

    needed = tiers_needed(spec)
    named = [stage.model for stage in parse_pipeline(spec) if stage.model]
    student_model = named[0] if named else student
    root = Path(model_dir).expanduser()
    folders = {FOLDERS[t] for t in needed if t in FOLDERS}  # the student is not fetched
    verify_models(root, tuple(m for m in MODELS if m.folder in folders))
    tiers: dict[str, Tier] = {}
    for name in ("student", "ce"):
        if name not in needed:
            continue
        from streamrank.models.scoring.cross_encoder import CrossEncoder

        folder = root / FOLDERS["ce"] if name == "ce" else student_folder(root, student_model)
        length = max_length if name == "ce" else min(max_length, trained_length(folder))
        encoder = CrossEncoder(folder, max_length=length)
        predict = predict_wrapper(encoder.predict_encoded) if predict_wrapper else None
        tiers[name] = CrossEncoderTier(encoder, score_cache, predict, name=name)  # type: ignore[arg-type]
    if "dense" in needed:
        from streamrank.models.scoring.bi_encoder import QUERY_INSTRUCTION, BiEncoder

        # bge's retrieval instruction on queries: the cascade keeps more relevant passages in
        # its top K2 with it (docs/notes/2026-11-25-cheap-tiers-and-skips.md).
        encoder = BiEncoder(root / FOLDERS["dense"], query_instruction=QUERY_INSTRUCTION)
        tiers["dense"] = DenseTier(encoder, vector_cache)  # type: ignore[arg-type]
    if "colbert" in needed:
        from streamrank.models.scoring.colbert import ColBERT

        tiers["colbert"] = ColBERTTier(ColBERT(root / FOLDERS["colbert"]), vector_cache)  # type: ignore[arg-type]
    return tiers


def build_cascade(
    spec: str,
    model_dir: str | Path,
    max_length: int = 256,
    confidence: ConfidenceRule | None = None,
    **caches: object,
) -> Cascade:
    """A :class:`~streamrank.models.scoring.cascade.Cascade` for ``spec`` over verified models in
    ``model_dir``.

    Keyword arguments go to :func:`build_tiers` (``score_cache``, ``vector_cache``,
    ``predict_wrapper``).
    """
    tiers = build_tiers(spec, model_dir, max_length, **caches)  # type: ignore[arg-type]
    return Cascade(spec, tiers, confidence)
