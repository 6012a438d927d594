"""`streamrank simulate` without ``--offline`` and without a broker says how to start one.

No service is needed, but the Kafka client gives up on the unreachable address only after
its own timeout (about half a minute), hence this tier.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamrank.streams.cli.simulate import simulate_command
from streamrank.streams.config import get_settings

pytestmark = pytest.mark.slow


def one_query_files(tmp_path: Path) -> tuple[Path, Path]:
    """A candidates file with one query of two passages, and its qrels."""
    hits = [
        {"qid": "q0", "docid": f"d{i}", "rank": i + 1, "score": 1.0 - i, "content": "x"}
        for i in range(2)
    ]
    candidates, qrels = tmp_path / "cands.json", tmp_path / "qrels.txt"
    candidates.write_text(json.dumps([{"query": "query 0", "hits": hits}]))
    qrels.write_text("q0 0 d0 3\nq0 0 d1 0\n")
    return candidates, qrels


def test_the_streaming_mode_says_how_to_start_the_broker(tmp_path: Path, monkeypatch) -> None:
    candidates, qrels = one_query_files(tmp_path)
    monkeypatch.setenv("STREAMRANK_KAFKA_BOOTSTRAP", "127.0.0.1:1")  # nothing listens there
    get_settings.cache_clear()
    args = ["--candidates", str(candidates), "--qrels", str(qrels), "--start", "first-stage"]
    try:
        result = CliRunner().invoke(simulate_command, args)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "no Kafka broker at 127.0.0.1:1" in result.output and "--offline" in result.output
