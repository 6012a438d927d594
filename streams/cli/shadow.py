"""``streamrank shadow``: shadow rankers, simulated and live.

::

    streamrank shadow simulate --candidates FILE.json --qrels QRELS.txt --primary P --shadow S
                               [--click-model M] [--seed S] [--seeds N] [--max-sessions N]
                               [--json]
    streamrank shadow add VERSION
    streamrank shadow remove VERSION
    streamrank shadow worker VERSION [-l LEVEL]
    streamrank shadow report [--json]

Progress goes to stderr and results to stdout. The simulation's code (numpy, scipy, the
models), Redis and the runtime are imported when a command runs: mounting the group costs
``streamrank`` nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from streamrank.streams.cli.evaluate import fusion_option
from streamrank.streams.cli.helpers import (
    RichProgress,
    click_model_option,
    console,
    errors,
    fail,
    judged_candidates,
    model_dir_option,
    open_registry,
    progress_bar,
)
from streamrank.streams.cli.operator import (
    WRONG_TOKEN,
    reading_registry,
    signing_registry,
    token_option,
)


@click.group("shadow")
def shadow_group() -> None:
    """Shadow rankers: compare a candidate pipeline against the one serving."""


# -- simulated ------------------------------------------------------------------------------


@shadow_group.command("simulate")
@judged_candidates
@click.option("--primary", required=True, help="the serving pipeline, e.g. dense")
@click.option(
    "--shadow", required=True, help="the candidate pipeline, e.g. dense>ce:30 (same: A/A test)"
)
@click_model_option(default="informational")
@click.option("--seed", type=int, default=0, show_default=True, help="the first seed")
@click.option(
    "--seeds", type=click.IntRange(1), default=10, show_default=True, help="experiments to run"
)
@click.option(
    "--max-sessions",
    type=click.IntRange(10),
    default=200_000,
    show_default=True,
    help="cap per experiment and method; undecided runs count as the cap",
)
@click.option(
    "--alpha", type=click.FloatRange(0, 1, min_open=True), default=0.05, show_default=True
)
@click.option(
    "--tau",
    type=click.FloatRange(0, min_open=True),
    default=0.2,
    show_default=True,
    help="interleaving mSPRT mixture scale (streamrank.shadow.statistics.SequentialTest)",
)
@click.option(
    "--ab-tau",
    type=click.FloatRange(0, min_open=True),
    default=0.1,
    show_default=True,
    help="A/B mSPRT mixture scale, in standard deviations of the metric",
)
@click.option("--max-length", default=256, show_default=True, help="cross-encoder tokens/pair")
@model_dir_option
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where rankings are cached [default: ~/.cache/streamrank/shadow]",
)
@fusion_option
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def simulate_command(
    candidates: Path,
    qrels: Path,
    primary: str,
    shadow: str,
    user: str,
    seed: int,
    seeds: int,
    max_sessions: int,
    alpha: float,
    tau: float,
    ab_tau: float,
    max_length: int,
    model_dir: Path,
    cache_dir: Path | None,
    fusion: Any,
    as_json: bool,
) -> None:
    """Simulated users: sessions interleaving and an A/B split need to find the better ranker.

    Rankings come from the cascades of `streamrank eval rerank` (computed once, cached); the
    right winner is the pipeline with the higher nDCG@10 on QRELS.

    Example: streamrank shadow simulate --candidates bm25-top100.json --qrels qrels.txt
    --primary dense --shadow "dense>ce:30" --click-model informational --seeds 10 --json
    """
    from streamrank.models.evaluation.rerank import load_qrels
    from streamrank.shadow import experiment_simulator as sim

    found = _rankings(candidates, [primary, shadow], model_dir, max_length, cache_dir, fusion)
    queries = sim.build_queries(found[primary].rankings, found[shadow].rankings, load_qrels(qrels))
    if not queries:
        fail(f"no query of {candidates} has judgments in {qrels}", "check the qrels file")
    seed_list = list(range(seed, seed + seeds))
    with progress_bar(errors, disable=not errors.is_terminal) as bar:
        task = bar.add_task(
            f"[bold]shadow simulate[/] {primary} vs {shadow}", total=len(seed_list) * max_sessions
        )
        result = sim.simulate_shadow(
            queries, user, seed_list, max_sessions, alpha, tau=tau,
            ab_tau=ab_tau,
            progress=lambda n: bar.advance(task, n),
        )  # fmt: skip
    result["primary"] = _side(primary, found[primary])
    result["shadow"] = _side(shadow, found[shadow])
    result["settings"].update(candidates=str(candidates), qrels=str(qrels))
    if as_json:
        click.echo(json.dumps(result))
    else:
        console.print(simulation_table(result))


def _rankings(
    candidates: Path,
    specs: list[str],
    model_dir: Path,
    max_length: int,
    cache_dir: Path | None,
    fusion: Any = None,
) -> dict[str, Any]:
    """Each pipeline's rankings of the candidate file (cached), or a clear error."""
    from streamrank.models.assets.model_files import ModelFilesError
    from streamrank.models.scoring.cascade import PipelineError
    from streamrank.models.scoring.score_cache import InMemoryCache
    from streamrank.shadow import experiment_simulator as sim

    folder = cache_dir or sim.CACHE_DIR / "shadow"
    vectors = InMemoryCache(max_items=None)  # pipelines with the same tier encode once
    found: dict[str, sim.PipelineRankings] = {}
    with progress_bar(errors, disable=not errors.is_terminal) as bars:
        for spec in dict.fromkeys(specs):
            try:
                found[spec] = sim.pipeline_rankings(
                    candidates, spec, model_dir, max_length, folder,
                    progress=RichProgress(bars), vector_cache=vectors, fusion=fusion,
                )  # fmt: skip
            except PipelineError as error:
                fail(
                    str(error),
                    "use tiers first-stage, dense, colbert, ce joined by '>', e.g. dense>ce:30",
                )
            except ModelFilesError as error:
                fail(
                    str(error).splitlines()[0],
                    "run `streamrank models fetch` (or pass --model-dir)",
                )
    return found


def _side(spec: str, rankings: Any) -> dict[str, Any]:
    return {
        "pipeline": spec,
        "model_version": rankings.model_version,
        "rankings_cache": rankings.cache_file,
        "rankings_cached": rankings.cached,
    }


def simulation_table(result: dict[str, Any]) -> Table:
    """The simulation's result as a rich table, one row per test."""
    settings = result["settings"]
    ndcg = result["ndcg@10"]
    table = Table(
        title=(
            f"shadow simulate: {result['primary']['pipeline']} (nDCG@10 {ndcg['primary']:.4f}) "
            f"vs {result['shadow']['pipeline']} ({ndcg['shadow']:.4f}), "
            f"{settings['click_model']}, {len(settings['seeds'])} seeds"
        )
    )
    for name in ("test", "median sessions", "correct winner", "false decisions", "undecided"):
        table.add_column(name, justify="left" if name == "test" else "right")
    for name, test in result["tests"].items():
        correct = test["correct_winner_rate"]
        table.add_row(
            name,
            (">= " if test["median_is_lower_bound"] else "") + f"{test['median_sessions']:,.0f}",
            "-" if correct is None else f"{correct:.0%}",
            f"{test['false_decision_rate']:.0%}",
            str(test["undecided"]),
        )
    ratio = result["ratio"]
    bound = " (at least: A/B hit the cap)" if result["ratio_is_lower_bound"] else ""
    table.caption = (
        f"right winner: {result['right_winner'] or 'none (A/A)'}; A/B / interleaving sessions "
        "(both always-valid): "
        + ("-" if ratio is None else f"{ratio:.1f}x{bound}")
        + f"; cap {settings['max_sessions']:,}, alpha {settings['alpha']}"
    )
    return table


# -- live -----------------------------------------------------------------------------------


@shadow_group.command("add")
@click.argument("version")
@click.option("--reason", default="", help="why, for the audit log")
@token_option
def add(version: str, reason: str, token: str | None) -> None:
    """Mirror live traffic to VERSION (start its worker with `streamrank shadow worker`)."""
    from streamrank.models.registry import PointerError, RegistryError

    _, _, registry = open_registry()
    try:
        signing_registry(registry, token).add_shadow(version, reason=reason)
    except PointerError:
        fail(WRONG_TOKEN, "present the deployment's operator token (--token or STREAMRANK_TOKEN)")
    except RegistryError as error:
        fail(str(error), "register it first: `streamrank models register --pipeline ...`")
    console.print(f"{version} is a shadow; start `streamrank shadow worker {version}`")


@shadow_group.command("remove")
@click.argument("version")
@click.option("--reason", default="", help="why, for the audit log")
@token_option
def remove(version: str, reason: str, token: str | None) -> None:
    """Stop treating VERSION as a shadow (its evidence is kept)."""
    from streamrank.models.registry import PointerError, RegistryError

    _, _, registry = open_registry()
    try:
        signing_registry(registry, token).remove_shadow(version, reason=reason)
    except PointerError:
        fail(WRONG_TOKEN, "present the deployment's operator token (--token or STREAMRANK_TOKEN)")
    except RegistryError as error:
        fail(str(error), "see `streamrank shadow report` for the shadows there are")
    console.print(f"{version} is no longer a shadow")


@shadow_group.command("worker")
@click.argument("version")
@click.option("--loglevel", "-l", default="info", show_default=True)
def shadow_worker(version: str, loglevel: str) -> None:
    """Run a shadow worker for VERSION: it ranks every request in its own consumer group.

    Example: streamrank shadow worker v2
    """
    from streamrank.models.assets.model_files import ModelFilesError
    from streamrank.models.registry import RegistryError

    settings, _, registry = open_registry()
    try:
        registry.get(version)
    except RegistryError as error:
        fail(str(error), "see `streamrank models list`")
    if settings.shadow_nice:
        lowest_cpu_priority()
    from streamrank.streams.agents.shadow import build_shadow  # after: its threads inherit it

    try:
        app = build_shadow(settings, version)  # its own app id and group; loads the models
    except ModelFilesError as error:
        fail(str(error).splitlines()[0], "run `streamrank models fetch` (STREAMRANK_MODEL_DIR)")
    from streamrank.streams.cli.worker import run_worker

    run_worker(app, loglevel, settings)


def lowest_cpu_priority() -> None:
    """Let this process (and every thread it starts later) run only on otherwise idle CPU.

    SCHED_IDLE on Linux; nice 19 (about 1.5 % of a contended CPU) where that is refused.
    Called before the models load, because Linux applies both per thread and new threads
    inherit them: the primary must not feel a shadow.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


@shadow_group.command("report")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def report(as_json: bool) -> None:
    """Every shadow's evidence and verdict: keep collecting, promote or reject."""
    from streamrank.models.registry import PointerError
    from streamrank.shadow.report import summarize
    from streamrank.streams.state.connections import shadow_stats_for

    settings, client, registry = open_registry()
    try:
        pointers = reading_registry(settings, registry).pointers()
    except PointerError as error:
        fail(str(error), "set STREAMRANK_OPERATOR_TOKEN to the token the workers hold")
    active, shadows = (pointers.active, sorted(pointers.shadows)) if pointers else (None, [])
    summaries = [
        summarize(
            shadow_stats_for(settings, client, version).snapshot(),
            min_sessions=settings.promotion_min_sessions,
            alpha=settings.promotion_alpha,
        )
        for version in shadows
    ]
    if as_json:
        click.echo(json.dumps({"active": active, "shadows": summaries}))
        return
    if not summaries:
        console.print("no shadows: add one with `streamrank shadow add VERSION`")
        return
    console.print(report_table(summaries, active))


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def report_table(summaries: list[dict[str, Any]], active: str | None) -> Table:
    """Every shadow's evidence and verdict, one row per shadow."""
    table = Table(title=f"shadows of the active version {active}")
    for column in (
        "shadow",
        "sessions",
        "W / L / T",
        "Delta [95% CI]",
        "p (seq.)",
        "p (sign)",
        "clicked higher",
        "tau",
        "RBO",
        "p50 / p95 ms",
        "verdict",
    ):
        table.add_column(column)
    for s in summaries:
        low, high = s["delta_interval"]
        table.add_row(
            s["version"],
            str(s["sessions"]),
            f"{s['wins']} / {s['losses']} / {s['ties']}",
            f"{s['delta']:+.3f} [{low:+.3f}, {high:+.3f}]",
            _fmt(s["sequential_p"], ".3g"),
            _fmt(s["sign_test_p"], ".3g"),
            _fmt(s["clicked_higher_share"], ".0%"),
            _fmt(s["kendall_tau"]),
            _fmt(s["rbo"]),
            f"{_fmt(s['shadow_p50_ms'], '.0f')} / {_fmt(s['shadow_p95_ms'], '.0f')}",
            s["verdict"],
        )
    return table
