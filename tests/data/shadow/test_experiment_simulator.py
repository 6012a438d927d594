"""`streamrank shadow simulate` on TREC DL 2019: interleaving finds the cross-encoder's win
over the first stage in far fewer sessions than A/B."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamrank.models.assets.model_files import ModelFilesError, verify_models
from streamrank.shadow.interleaving import PRIMARY, SHADOW
from streamrank.streams.cli.shadow import shadow_group
from streamrank.streams.config import Settings
from tests.helpers import SHARED_DATA

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_data")]

DL19 = SHARED_DATA / "trec-dl-2019"
CANDIDATES, QRELS = DL19 / "bm25-top100.json", DL19 / "qrels.txt"


def test_dl19_first_stage_against_the_cross_encoder(tmp_path: Path) -> None:
    """Three seeds, a 3,000-session cap; rankings cached in a tmp dir. The cross-encoder's
    scores come from ``streamrank simulate``'s cache when it is there (seconds); else the
    first run scores the 4,300 pairs (about 2 minutes on 2 cores) and writes that cache."""
    if not CANDIDATES.exists():
        pytest.skip(f"shared evaluation data not found at {DL19}")
    try:
        verify_models(Settings().model_dir)
    except ModelFilesError:
        pytest.skip(f"models not fetched into {Settings().model_dir}: `streamrank models fetch`")
    args = ["simulate", "--candidates", str(CANDIDATES), "--qrels", str(QRELS),
            "--primary", "first-stage", "--shadow", "ce", "--seeds", "3",
            "--max-sessions", "3000", "--cache-dir", str(tmp_path), "--json"]  # fmt: skip
    result = CliRunner().invoke(shadow_group, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["settings"]["queries"] == 43
    assert round(out["ndcg@10"][PRIMARY], 4) == 0.5058  # as `eval rerank --pipeline first-stage`
    assert out["ndcg@10"][SHADOW] > 0.7 and out["right_winner"] == SHADOW
    assert out["correct_winner_rate"]["interleaving"] == 1.0
    assert out["interleaving_sessions"] < 1000 < out["ab_sessions"]
    assert out["shadow"]["model_version"].startswith("ce;ce=reranker_en-")
    assert len(list(tmp_path.glob("rankings-*.json"))) == 2
    again = json.loads(CliRunner().invoke(shadow_group, args).stdout)
    assert again["shadow"]["rankings_cached"] and again["per_seed"] == out["per_seed"]
