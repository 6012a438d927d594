"""`streamrank shadow simulate`: interleaving against A/B on simulated users (issue 6, item 7)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from streamrank.models.assets.model_files import ModelFilesError
from streamrank.shadow.experiment_simulator import (
    Moments,
    ShadowQuery,
    TeamDrafts,
    TwoSampleSequentialTest,
    _Coins,
    peek_schedule,
    pipeline_rankings,
    right_winner,
    simulate_seed,
    simulate_shadow,
    welch_p_value,
)
from streamrank.shadow.interleaving import PRIMARY, SHADOW, team_draft
from streamrank.shadow.statistics import two_sample_p_value
from streamrank.streams.cli.shadow import shadow_group

SUMMARY_KEYS = {
    "interleaving_sessions",
    "ab_sessions",
    "ratio",
    "correct_winner_rate",
    "false_decision_rate",
    "undecided",
    "ndcg@10",
    "right_winner",
    "tests",
    "settings",
    "per_seed",
}


def toy_queries(n: int = 6, size: int = 30, seed: int = 0, same: bool = False) -> list[ShadowQuery]:
    """The shadow ranks each query's four relevant documents first; the primary from rank 7."""
    rng = np.random.default_rng(seed)
    queries = []
    for q in range(n):
        docs = [f"q{q}d{i}" for i in range(size)]
        judged = dict(zip(docs[:4], (3, 3, 2, 1), strict=True))
        rest = [docs[i] for i in rng.permutation(np.arange(4, size))]
        shadow = tuple(docs[:4] + rest)
        primary = tuple(rest[:6] + docs[:4] + rest[6:])
        queries.append(ShadowQuery(f"q{q}", judged, primary, shadow if not same else primary))
    return queries


def test_a_clearly_better_shadow_wins_interleaving_in_fewer_sessions_than_ab() -> None:
    queries = toy_queries()
    assert right_winner(queries) == SHADOW
    result = simulate_shadow(queries, "informational", seeds=range(6), max_sessions=20_000)
    assert result["right_winner"] == SHADOW and not result["aa"]
    assert result["ndcg@10"][SHADOW] == pytest.approx(1.0)
    assert result["ndcg@10"][PRIMARY] < 0.6
    assert result["correct_winner_rate"]["interleaving"] == 1.0
    assert result["undecided"]["interleaving"] == 0
    assert result["tests"]["interleaving"]["sessions"] == [
        seed["interleaving"]["sessions"] for seed in result["per_seed"]
    ]
    assert all(seed["interleaving"]["winner"] == SHADOW for seed in result["per_seed"])
    assert result["interleaving_sessions"] * 5 <= result["ab_sessions"]
    assert result["ratio"] == result["ab_sessions"] / result["interleaving_sessions"]
    assert result["interleaving_preference"] > 0.1  # users prefer the shadow's results


def test_identical_rankers_tie_and_rarely_decide() -> None:
    queries = toy_queries(same=True)
    assert right_winner(queries) is None
    result = simulate_shadow(queries, "informational", seeds=range(20), max_sessions=2000)
    assert result["aa"] and result["ratio"] is None
    assert result["correct_winner_rate"] == {"interleaving": None, "ab": None, "ab_peeking": None}
    # about 4% of A/A runs decide within 2,000 sessions (alpha 5%): 5 of 20 would be 1 in 3,000
    assert result["undecided"]["interleaving"] >= 16
    assert result["false_decision_rate"]["interleaving"] <= 0.2
    assert abs(result["interleaving_preference"]) < 0.02  # no preference either way
    outcomes = [seed["interleaving_outcomes"] for seed in result["per_seed"]]
    assert all(o["ties"] > 0 for o in outcomes)
    assert result["interleaving_sessions"] == 2000  # the median run never decides
    # CTR, clicks and MRR come from the same list on both arms: their means agree closely
    means = result["ab_means"]
    assert means[PRIMARY]["clicks@10"] == pytest.approx(means[SHADOW]["clicks@10"], rel=0.05)


def test_the_summary_has_every_key_and_one_entry_per_seed() -> None:
    result = simulate_shadow(toy_queries(n=3), "navigational", seeds=[4, 5], max_sessions=500)
    assert set(result) >= SUMMARY_KEYS
    assert [seed["seed"] for seed in result["per_seed"]] == [4, 5]
    assert set(result["tests"]) == {
        "interleaving",
        "interleaving_sign_test",
        "ab",
        "ab_always_valid",
        "ab_clicks@10",
        "ab_mrr",
    }
    assert result["settings"]["max_sessions"] == 500
    assert result["settings"]["click_model"] == "navigational"
    json.dumps(result)  # plain JSON types only


def test_a_seed_is_the_same_experiment_whatever_the_cap() -> None:
    queries = toy_queries(n=4)
    short = simulate_seed(queries, "pbm", seed=3, max_sessions=4000)
    long = simulate_seed(queries, "pbm", seed=3, max_sessions=12_000)
    for name, decision in short.tests.items():
        if decision.decided:
            assert long.tests[name].sessions == decision.sessions, name
    assert short.tests["interleaving"].decided


def test_undecided_and_wrong_decisions_count_as_the_cap() -> None:
    queries = toy_queries(n=3)
    result = simulate_shadow(queries, "informational", seeds=[0, 1, 2], max_sessions=200)
    ab = result["tests"]["ab"]
    assert ab["undecided"] + ab["wrong_winner"] >= 1  # 200 sessions are too few for CTR
    assert max(ab["sessions"]) == 200
    # clicks@10 favours the worse ranker: users who find nothing keep clicking
    means = result["ab_means"]
    assert means[PRIMARY]["clicks@10"] > means[SHADOW]["clicks@10"]


def test_memoized_drafts_are_team_drafts_with_uniform_coins() -> None:
    for primary, shadow in (
        ([f"d{i}" for i in range(12)], [f"d{i}" for i in reversed(range(12))]),
        (["a"], ["b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"]),  # one runs out
        (["a", "b", "c"], ["a", "b", "c"]),  # fewer documents than k
    ):
        query = ShadowQuery("q", {}, tuple(primary), tuple(shadow))
        drafts = TeamDrafts(query, k=10)
        made = {tuple(drafts.draft(bits)[0].docs) for bits in range(32)}
        assert len(made) <= 32
        rng = np.random.default_rng(0)
        for _ in range(300):  # real coins never give an interleaving five bits cannot
            assert tuple(team_draft(primary[:10], shadow[:10], 10, rng).docs) in made
        for bits in (0, 7, 31):
            direct = team_draft(primary[:10], shadow[:10], 10, _Coins(bits))  # type: ignore[arg-type]
            assert drafts.draft(bits)[0] == direct
    query = ShadowQuery("q", {"d0": 3}, ("d0", "d1"), ("d1", "d0"))
    first = {TeamDrafts(query, k=2).draft(bits)[0].teams[0] for bits in range(2)}
    assert first == {PRIMARY, SHADOW}  # each team picks first for half the coin values


def test_welch_from_running_sums_is_two_sample_p_value() -> None:
    rng = np.random.default_rng(5)
    for a, b in (
        (rng.random(50), rng.random(80) + 0.1),
        (rng.integers(0, 2, 300).astype(float), rng.integers(0, 2, 200).astype(float)),
        (np.ones(10), np.ones(12)),
        (np.ones(10), np.zeros(12)),
        (np.ones(1), np.zeros(12)),
    ):
        first, second = Moments(), Moments()
        for value in a:
            first.add(float(value))
        for value in b:
            second.add(float(value))
        assert welch_p_value(first, second) == pytest.approx(two_sample_p_value(a, b), abs=1e-9)


def test_the_ab_sequential_test_holds_alpha_where_peeking_at_welch_does_not() -> None:
    rng = np.random.default_rng(11)
    peeks = set(peek_schedule(2000))
    valid_false = welch_false = 0
    runs = 150
    for _ in range(runs):
        arms, test, welch_hit = (Moments(), Moments()), TwoSampleSequentialTest(), False
        for n, value in enumerate(rng.random(2000) < 0.3, start=1):
            arms[n % 2].add(float(value))
            if n in peeks:
                test.check(*arms)
                welch_hit = welch_hit or welch_p_value(*arms) < 0.05
        valid_false += test.p_value < 0.05
        welch_false += welch_hit
    assert valid_false / runs <= 0.05
    assert welch_false / runs > 2 * max(valid_false / runs, 0.05)  # peeking inflates alpha
    arms, test = (Moments(), Moments()), TwoSampleSequentialTest()
    for n, value in enumerate(rng.random(4000), start=1):
        arms[n % 2].add(float(value < (0.3 if n % 2 == 0 else 0.45)))
        if n in peeks or n % 100 == 0:
            test.check(*arms)
    assert test.p_value < 0.05  # and it finds a real 15-point difference


def test_peeks_are_every_ten_sessions_then_every_percent() -> None:
    peeks = peek_schedule(100_000)
    assert peeks[:100] == list(range(10, 1010, 10))
    assert peeks[-1] == 100_000 and peeks == sorted(set(peeks))
    gaps = [(a, b) for a, b in itertools.pairwise(peeks[100:-1])]
    assert all(b % 10 == 0 and a * 1.01 <= b < a * 1.01 + 10 for a, b in gaps)


# -- rankings and the CLI ---------------------------------------------------------------------


def write_toy_files(tmp_path: Path) -> tuple[Path, Path]:
    entries, qrels = [], []
    for query in toy_queries(n=3, size=12):
        hits = [
            {"qid": query.qid, "docid": d, "rank": i + 1, "score": 20.0 - i, "content": f"text {d}"}
            for i, d in enumerate(query.primary)
        ]
        entries.append({"query": f"query {query.qid}", "hits": hits})
        qrels += [f"{query.qid} 0 {d} {g}" for d, g in query.judged.items()]
    candidates, qrels_path = tmp_path / "cands.json", tmp_path / "qrels.txt"
    candidates.write_text(json.dumps(entries))
    qrels_path.write_text("\n".join(qrels) + "\n")
    return candidates, qrels_path


def test_rankings_are_computed_once_per_file_and_pipeline(tmp_path: Path) -> None:
    candidates, _ = write_toy_files(tmp_path)
    cache = tmp_path / "cache"
    first = pipeline_rankings(candidates, "first-stage", tmp_path, cache_dir=cache)
    again = pipeline_rankings(candidates, "first-stage", tmp_path, cache_dir=cache)
    assert not first.cached and again.cached and first.rankings == again.rankings
    assert first.rankings["q0"] == list(toy_queries(n=1, size=12)[0].primary)
    candidates.write_text(candidates.read_text().replace("text q0d0", "other text"))
    changed = pipeline_rankings(candidates, "first-stage", tmp_path, cache_dir=cache)
    assert not changed.cached and len(list(cache.glob("rankings-*.json"))) == 2


def test_a_pipeline_whose_models_are_missing_names_the_fetch_command(tmp_path: Path) -> None:
    candidates, qrels = write_toy_files(tmp_path)
    with pytest.raises(ModelFilesError):
        pipeline_rankings(candidates, "dense>ce:5", tmp_path / "no-models")
    result = CliRunner().invoke(shadow_group, [
        "simulate", "--candidates", str(candidates), "--qrels", str(qrels),
        "--primary", "first-stage", "--shadow", "ce", "--model-dir", str(tmp_path / "none"),
        "--cache-dir", str(tmp_path / "cache"),
    ])  # fmt: skip
    assert result.exit_code == 2 and "streamrank models fetch" in result.output
    bad = CliRunner().invoke(shadow_group, [
        "simulate", "--candidates", str(candidates), "--qrels", str(qrels),
        "--primary", "first-stage", "--shadow", "bm25>ce",
    ])  # fmt: skip
    assert bad.exit_code == 2 and "unknown tier" in bad.output


def test_the_cli_runs_an_aa_test_on_the_same_pipeline(tmp_path: Path) -> None:
    candidates, qrels = write_toy_files(tmp_path)
    args = ["simulate", "--candidates", str(candidates), "--qrels", str(qrels),
            "--primary", "first-stage", "--shadow", "first-stage", "--seeds", "3",
            "--max-sessions", "300", "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    result = CliRunner().invoke(shadow_group, [*args, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["aa"] and out["right_winner"] is None and out["ratio"] is None
    assert out["ndcg@10"][PRIMARY] == out["ndcg@10"][SHADOW]
    assert out["settings"]["seeds"] == [0, 1, 2] and len(out["per_seed"]) == 3
    assert out["primary"]["pipeline"] == out["shadow"]["pipeline"] == "first-stage"
    table = CliRunner().invoke(shadow_group, args)
    assert table.exit_code == 0 and "interleaving" in table.output and "A/A" in table.output
