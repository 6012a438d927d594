"""The command line against the real broker: publish validates, reports, and publishes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamrank.streams.config import Settings
from tests.helpers import REPO, consume, settings_env

pytestmark = pytest.mark.integration


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamrank.streams.cli", *args],
        env=settings_env(settings) | {"COLUMNS": "200"},
        capture_output=True,
        cwd=REPO,
        timeout=120,
    )


def interaction(event_id: str, request_id: str) -> dict:
    return {"event_id": event_id, "request_id": request_id, "doc_id": "d1", "type": "click"}


def test_publish_sends_good_lines_and_reports_each_bad_one(
    settings: Settings, tmp_path: Path
) -> None:
    lines = [
        json.dumps(interaction("e1", "r1")).encode(),  # 1: good
        b"{oops",  # 2: not JSON
        b"",  # 3: blank, skipped
        json.dumps(interaction("e2", "r2") | {"type": "hover"}).encode(),  # 4: contract
        b"\xff\xfe",  # 5: not UTF-8
        json.dumps(interaction("e3", "r3")).encode(),  # 6: good
    ]
    file = tmp_path / "interactions.jsonl"
    file.write_bytes(b"\n".join(lines) + b"\n")

    result = run_cli(settings, "publish", "interactions", str(file))

    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert f"{file}:2: rejected: not-json" in stderr
    assert f"{file}:4: rejected: contract" in stderr and "type" in stderr
    assert f"{file}:5: rejected: not-utf8" in stderr
    assert ":3:" not in stderr and ":1:" not in stderr and ":6:" not in stderr
    assert "published 2 message(s)" in result.stdout.decode()
    records = consume(settings, "interactions", 2)
    assert sorted(json.loads(r.value)["event_id"] for r in records) == ["e1", "e3"]
    assert sorted(r.key for r in records) == [b"r1", b"r3"]


def test_publish_of_a_clean_file_exits_zero(settings: Settings, tmp_path: Path) -> None:
    file = tmp_path / "clean.jsonl"
    file.write_text(json.dumps(interaction("e1", "r1")) + "\n")
    result = run_cli(settings, "publish", "interactions", str(file))
    assert result.returncode == 0, result.stderr.decode()


def test_publish_to_a_missing_topic_says_how_to_fix_it(settings: Settings, tmp_path: Path) -> None:
    file = tmp_path / "one.jsonl"
    file.write_text(json.dumps(interaction("e1", "r1")) + "\n")
    missing = settings.model_copy(update={"topic_prefix": "never-created."})
    result = run_cli(missing, "publish", "interactions", str(file))
    assert result.returncode == 2
    assert "streamrank topics create" in result.stderr.decode()


def test_tail_prints_messages(settings: Settings, tmp_path: Path) -> None:
    file = tmp_path / "two.jsonl"
    file.write_text(
        json.dumps(interaction("e1", "r1")) + "\n" + json.dumps(interaction("e2", "r2"))
    )
    assert run_cli(settings, "publish", "interactions", str(file)).returncode == 0
    result = run_cli(settings, "tail", "interactions", "--from-beginning", "-n", "2")
    assert result.returncode == 0
    assert result.stdout.decode().count('"event_id"') == 2
