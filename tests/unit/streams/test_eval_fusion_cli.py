"""``--fusion`` on the eval commands and ``eval fit-fusion``, on a tiny candidate file with the
``first-stage`` pipeline (no models needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamrank.streams.cli.evaluate import eval_group


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    entries = [
        {
            "query": f"query {q}",
            "hits": [
                {"qid": q, "docid": f"d{i}", "rank": i + 1, "score": 10.0 - i, "content": "x"}
                for i in range(5)
            ],
        }
        for q in range(6)
    ]
    candidates = tmp_path / "candidates.json"
    candidates.write_text(json.dumps(entries))
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("".join(f"{q} 0 d{q % 5} 1\n" for q in range(6)))
    return candidates, qrels


def test_rerank_reports_the_fusion_it_ran_with(files: tuple[Path, Path]):
    candidates, qrels = files
    args = ["rerank", "--candidates", str(candidates), "--qrels", str(qrels)]
    result = CliRunner().invoke(
        eval_group, [*args, "--pipeline", "first-stage", "--fusion", "rrf:0.5", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["fusion"] == "rrf:0.5"


def test_a_bad_fusion_is_a_usage_error_that_names_the_methods(
    files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
):
    candidates, qrels = files
    args = ["rerank", "--candidates", str(candidates), "--qrels", str(qrels)]
    result = CliRunner().invoke(eval_group, [*args, "--fusion", "minmax:1.5"])
    assert result.exit_code == 2 and "[0, 1]" in result.output
    result = CliRunner().invoke(eval_group, [*args, "--fusion", "linear"])
    assert result.exit_code == 2 and "none, minmax, zscore, rrf" in result.output


def test_the_configured_fusion_is_the_default(
    files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
):
    from streamrank.streams.config import get_settings

    monkeypatch.setenv("STREAMRANK_FUSION", "zscore")
    monkeypatch.setenv("STREAMRANK_FUSION_WEIGHT", "0.25")
    get_settings.cache_clear()
    try:
        candidates, qrels = files
        args = ["rerank", "--candidates", str(candidates), "--qrels", str(qrels)]
        result = CliRunner().invoke(eval_group, [*args, "--pipeline", "first-stage", "--json"])
    finally:
        get_settings.cache_clear()
    assert json.loads(result.stdout)["fusion"] == "zscore:0.25"


def test_fit_fusion_needs_one_input_and_reports_held_out_figures(files: tuple[Path, Path]):
    candidates, qrels = files
    missing = CliRunner().invoke(
        eval_group, ["fit-fusion", "--qrels", str(qrels), "--pipeline", "ce"]
    )
    assert missing.exit_code == 2 and "--candidates" in missing.output
    args = ["fit-fusion", "--candidates", str(candidates), "--qrels", str(qrels)]
    result = CliRunner().invoke(
        eval_group, [*args, "--pipeline", "first-stage", "--fit", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["fit_queries"] == 2 and report["held_out_queries"] == 4
    assert report["fusion"] == "none"  # nothing to fuse: every setting ties, none is kept
    assert set(report["held_out_ndcg@10"]) == {"fitted", "none", "default"}
    table = CliRunner().invoke(eval_group, [*args, "--pipeline", "first-stage", "--fit", "2"])
    assert "STREAMRANK_FUSION=none" in table.output
