"""The cascade with the real models: relevant passages on top, the score and vector caches,
a real deadline, the cache lookup inside the cross-encoder's budget, one tokenization per
request. Loading the bi-encoder and the cross-encoder takes seconds, hence this tier."""

from __future__ import annotations

import time

import numpy as np
import pytest

from streamrank.models.assets.model_files import ModelFilesError, verify_models
from streamrank.models.scoring.cascade import Cascade
from streamrank.models.scoring.score_cache import InMemoryCache, score_key
from streamrank.models.types import TextCandidate
from streamrank.streams.config import Settings

pytestmark = pytest.mark.slow

MODEL_DIR = Settings().model_dir


def docs(*texts: str | None) -> list[TextCandidate]:
    """Candidates d0, d1, ... in first-stage order with decreasing first-stage scores."""
    return [TextCandidate(f"d{i}", t, float(100 - i)) for i, t in enumerate(texts)]


def models_fetched() -> bool:
    try:
        verify_models(MODEL_DIR)
    except ModelFilesError:
        return False
    return True


needs_models = pytest.mark.skipif(
    not models_fetched(),
    reason=f"models not fetched into {MODEL_DIR}: run `streamrank models fetch`",
)

QUERY = "how long do fleas live"
TEXTS = [
    "The Eiffel Tower is in Paris and was finished in 1889.",
    "A flea can live up to a year, but its lifespan depends on the availability of hosts.",
    "Fleas are small wingless insects that feed on the blood of mammals and birds.",
    "Bananas are rich in potassium.",
    "Adult fleas usually live two to three months; without a host they die within days.",
    None,
]


@pytest.fixture(scope="module")
def real_tiers() -> dict:
    if not models_fetched():
        pytest.skip(f"models not fetched into {MODEL_DIR}: run `streamrank models fetch`")
    from streamrank.models.scoring.factory import build_tiers

    return build_tiers(
        "dense>ce:3", MODEL_DIR, score_cache=InMemoryCache(), vector_cache=InMemoryCache()
    )


@needs_models
def test_real_cascade_puts_the_relevant_passages_on_top(real_tiers: dict):
    real_tiers["dense"].ensure_vectors([c for c in docs(*TEXTS) if c.text])  # as on ingestion
    result = Cascade("dense>ce:3", real_tiers).rank(QUERY, docs(*TEXTS))
    top = result.doc_ids[:3]
    assert set(top) >= {"d1", "d4"} and "d0" not in top and "d3" not in top
    assert result.items[5].doc_id == "d5" and result.items[5].flags == ("no_text",)
    assert result.pairs_scored == 3 and not result.degraded
    assert result.model_version.startswith("dense>ce:3;dense=bge_small_en-")


@needs_models
def test_score_cache_answers_repeated_queries(real_tiers: dict):
    ce = real_tiers["ce"]
    cascade = Cascade("ce", {"ce": ce})
    first = cascade.rank(QUERY, docs(*TEXTS))
    scored = ce.encoder.pairs_scored
    again = cascade.rank("  How long do FLEAS live ", docs(*TEXTS))  # normalizes alike
    assert ce.encoder.pairs_scored == scored and again.cache_hits == 5 and again.pairs_scored == 0
    assert again.doc_ids == first.doc_ids
    key = score_key(ce.version, QUERY, "d1", TEXTS[1] or "")
    d1 = next(item for item in first.items if item.doc_id == "d1")
    assert ce.cache.get_many([key])[0] == pytest.approx(d1.score)


@needs_models
def test_documents_are_encoded_once_ahead_of_requests(real_tiers: dict):
    dense = real_tiers["dense"]
    candidates = [
        TextCandidate(f"once{i}", f"unique text number {i} about fleas", 1.0) for i in range(4)
    ]
    assert dense.ensure_vectors(candidates) == 4
    assert dense.ensure_vectors(candidates) == 0
    result = dense.score("fleas", candidates, None)
    assert result.inferred == 0 and result.cached == 4 and not np.isnan(result.scores).any()
    changed = [TextCandidate("once0", "the text changed", 1.0)]
    late = dense.score("fleas", changed, None)  # new text: no stored vector, none made inline
    assert late.inferred == 0 and late.missing == 1 and np.isnan(late.scores[0])


@needs_models
def test_real_deadline_degrades_and_still_ranks_everything(real_tiers: dict):
    ce = real_tiers["ce"]
    many = [TextCandidate(f"x{i}", f"{TEXTS[i % 5]} variant {i}", 50.0 - i) for i in range(60)]
    result = Cascade("ce", {"ce": ce}).rank("flea lifespan " + str(time.time()), many, 0.05)
    assert result.degraded and 0 <= result.pairs_scored < 60
    assert sorted(result.doc_ids) == sorted(c.doc_id for c in many)
    assert result.timings_ms["total"] < 250  # 50 ms asked; generous for a loaded CI machine


class SlowCache(InMemoryCache):
    """A score cache whose lookups take ``delay_s`` (a remote cache on a bad day)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    def get_many(self, keys):
        time.sleep(self.delay_s)
        return super().get_many(keys)


@needs_models
def test_cache_lookup_time_comes_out_of_the_cross_encoders_budget(real_tiers: dict):
    from streamrank.models.scoring.budget import CostModel
    from streamrank.models.scoring.tiers import CrossEncoderTier

    encoder = real_tiers["ce"].encoder
    cheap = CostModel(seconds_per_unit=1e-9)  # the model itself looks free
    tier = CrossEncoderTier(encoder, SlowCache(delay_s=0.2), cost=cheap)
    late = tier.score("flea lifespan", docs(*TEXTS[:5]), budget_s=0.1)
    assert late.inferred == 0 and np.isnan(late.scores).all()  # the lookup spent it all
    on_time = CrossEncoderTier(encoder, SlowCache(delay_s=0.0), cost=cheap)
    assert on_time.score("flea lifespan", docs(*TEXTS[:5]), budget_s=0.1).inferred == 5


class CountingEncoder:
    """A real cross-encoder that counts how many pairs it tokenizes."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.version = encoder.version
        self.tokenized = 0

    def encode(self, pairs):
        self.tokenized += len(pairs)
        return self.encoder.encode(pairs)

    def __getattr__(self, name: str):  # everything else: the real encoder's
        return getattr(self.encoder, name)


@needs_models
def test_cross_encoder_tier_tokenizes_a_request_once_under_a_deadline(real_tiers: dict):
    from streamrank.models.scoring.batching import CrossRequestBatcher
    from streamrank.models.scoring.budget import CostModel
    from streamrank.models.scoring.tiers import CrossEncoderTier

    encoder = CountingEncoder(real_tiers["ce"].encoder)
    batcher = CrossRequestBatcher(encoder.predict_encoded)
    tier = CrossEncoderTier(encoder, None, batcher.predict, CostModel(seconds_per_unit=1e-9))
    result = tier.score("flea lifespan", docs(*TEXTS[:5]), budget_s=10.0)
    assert result.inferred == 5 and not np.isnan(result.scores).any()
    assert encoder.tokenized == 5  # the budget's token counts and the model share encodings
    direct = real_tiers["ce"].encoder.predict([("flea lifespan", t) for t in TEXTS[:5]])
    np.testing.assert_allclose(result.scores, direct, atol=1e-5)
