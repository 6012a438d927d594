"""Recall-bottleneck analysis: categories, K sweep, tables, plot and the analyze command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from streamrank.models.evaluation.recall_analysis import k_sweep, plot_sweep, recall_bottlenecks
from streamrank.models.retrieval.corpus import Document, write_corpus
from streamrank.streams.cli.analyze import analyze, per_query_table, sweep_table, totals_table
from streamrank.streams.cli.index import index_group

QRELS = {
    "q1": {"a": 1, "b": 2, "c": 1, "d": 1, "x": 0},
    "q2": {"e": 1},
    "q3": {"f": 0},  # no relevant document: left out
}


def test_every_relevant_document_lands_in_exactly_one_category():
    first = {"q1": ["a", "x", "b", "c"], "q2": ["z", "e"], "q3": ["f"]}  # d never retrieved
    kept = {"q1": ["c", "a", "x"], "q2": ["z"]}  # K2 = 3: b dropped; q2 drops e
    final = {"q1": ["x", "a", "c"]}  # top 2: a in, c below
    report = recall_bottlenecks(QRELS, first, kept, final, k1=4, k2=3, top=2)
    q1, q2 = report.per_query
    assert (q1.qid, q1.relevant, q1.not_retrieved, q1.dropped_by_cheap_tier) == ("q1", 4, 1, 1)
    assert (q1.below_top, q1.in_top, q1.lost) == (1, 1, 3)
    assert (q2.not_retrieved, q2.dropped_by_cheap_tier, q2.below_top, q2.in_top) == (0, 1, 0, 0)
    assert report.totals() == {
        "queries": 2,
        "relevant": 5,
        "not_retrieved": 1,
        "dropped_by_cheap_tier": 2,
        "below_top": 1,
        "in_top": 1,
    }


def test_without_tiers_the_cut_is_the_first_stage_order():
    first = {"q1": ["a", "b", "x", "c", "d"]}
    report = recall_bottlenecks(QRELS, first, k1=4, k2=2, top=1)
    totals = report.totals()
    # d is beyond K1; c is retrieved but beyond K2; b reached the top K2 but ranks 2nd
    assert (totals["not_retrieved"], totals["dropped_by_cheap_tier"]) == (1, 1)
    assert (totals["below_top"], totals["in_top"]) == (1, 1)


def test_k_sweep_recall_and_cost():
    first = {"q1": ["a", "x", "b", "c"], "q2": ["e"]}
    rows = k_sweep(QRELS, first, ks=(1, 2, 10), pairs_per_second=100.0)
    assert [row.recall for row in rows] == [0.625, 0.625, 0.875]  # means of q1 and q2 recalls
    assert [row.relevant_found for row in rows] == [2, 2, 4]
    # q2 has a single candidate: it costs one pair whatever K is
    assert [row.ce_pairs_per_query for row in rows] == [1.0, 1.5, 2.5]
    assert rows[-1].ce_pairs_total == 5 and rows[-1].ce_ms_per_query == 25.0


def test_tables_render_and_the_plot_is_a_png(tmp_path: Path):
    pytest.importorskip("matplotlib", reason="matplotlib (optional) is not installed")
    first = {"q1": ["a", "x", "b", "c"], "q2": ["z", "e"]}
    report = recall_bottlenecks(QRELS, first, k1=4, k2=3, top=2)
    rows = k_sweep(QRELS, first)
    console = Console(record=True, width=120)
    for table in (totals_table(report), per_query_table(report), sweep_table(rows)):
        console.print(table)
    text = console.export_text()
    assert "(a) not in first-stage top 4" in text and "recall@K" in text
    png = plot_sweep(rows, tmp_path / "plots" / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def small_collection(tmp_path: Path) -> tuple[Path, Path, Path]:
    docs = [
        Document("volga", "Volga", "The Volga is the longest river in Europe."),
        Document("ob", "Ob", "The Ob is a river in Siberia."),
        Document("alps", "Alps", "The Alps are a mountain range."),
        Document("tomato", "Tomato", "The tomato is a berry."),
    ]
    write_corpus(tmp_path / "corpus.jsonl", docs)
    (tmp_path / "queries.jsonl").write_text(
        '{"_id": "1", "text": "longest river in europe"}\n'
        '{"_id": "2", "text": "red fruit"}\n'  # no term matches: nothing retrieved
    )
    (tmp_path / "qrels.txt").write_text("1 0 volga 1\n1 0 ob 1\n2 0 tomato 1\n")
    return tmp_path / "corpus.jsonl", tmp_path / "queries.jsonl", tmp_path / "qrels.txt"


def test_analyze_command_reports_bm25_bottlenecks_as_json(tmp_path: Path):
    corpus, queries, qrels = small_collection(tmp_path)
    args = ["--corpus", corpus, "--queries", queries, "--qrels", qrels, "--k1", "1", "--json"]
    result = CliRunner().invoke(analyze, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["totals"] == {
        "queries": 2,
        "relevant": 3,
        "not_retrieved": 2,  # ob (beyond K1 = 1) and tomato (no match)
        "dropped_by_cheap_tier": 0,
        "below_top": 0,
        "in_top": 1,
    }
    assert [row["k"] for row in payload["sweep"]][:2] == [10, 20]
    assert payload["first_stage_metrics"]["recall@100"] == pytest.approx(0.25)


def test_index_build_command_and_bad_corpus(tmp_path: Path):
    corpus, queries, qrels = small_collection(tmp_path)
    out = tmp_path / "index"
    runner = CliRunner()
    result = runner.invoke(
        index_group, ["build", str(corpus), "--out", str(out), "--no-dense", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["documents"] == 4 and not summary["dense"]
    analysed = runner.invoke(
        analyze, ["--index", str(out), "--queries", str(queries), "--qrels", str(qrels)]
    )
    assert analysed.exit_code == 0, analysed.output
    assert "not in first-stage top 1000" in analysed.stdout

    missing = runner.invoke(index_group, ["build", str(tmp_path / "none.jsonl"), "--no-dense"])
    assert missing.exit_code == 2 and "corpus file not found" in missing.output
    (tmp_path / "empty.jsonl").write_text("")
    empty = runner.invoke(index_group, ["build", str(tmp_path / "empty.jsonl"), "--no-dense"])
    assert empty.exit_code == 2 and "empty" in empty.output


def test_cli_method_choices_match_the_retriever():
    from streamrank.models.retrieval import first_stage
    from streamrank.streams.cli import analyze as analyze_cli

    assert analyze_cli.METHODS == first_stage.METHODS
