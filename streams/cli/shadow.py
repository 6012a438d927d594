"""The ``streamrank shadow`` command group and its ``simulate`` command.

``streams/cli/main.py`` mounts the group and adds the operator commands of
:mod:`streamrank.streams.cli.operator` (``add``, ``remove``, ``worker``, ``report``) to it::

    streamrank shadow simulate --candidates FILE.json --qrels QRELS.txt --primary P --shadow S
                               [--click-model M] [--seed S] [--seeds N] [--max-sessions N]
                               [--json]

Progress goes to stderr and results to stdout. The simulation's code (numpy, scipy, the
models) is imported when the command runs: mounting the group costs ``streamrank`` nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from streamrank.streams.cli.models import (
    default_model_dir,
    fail,
    judged_candidates,
    model_dir_option,
)

CLICK_MODELS = ("informational", "navigational", "pbm", "perfect")


@click.group("shadow")
def shadow_group() -> None:
    """Shadow rankers: compare a candidate pipeline against the one serving."""


@shadow_group.command("simulate")
@judged_candidates
@click.option("--primary", required=True, help="the serving pipeline, e.g. dense")
@click.option(
    "--shadow", required=True, help="the candidate pipeline, e.g. dense>ce:30 (same: A/A test)"
)
@click.option(
    "--click-model",
    "user",
    type=click.Choice(CLICK_MODELS),
    default="informational",
    show_default=True,
)
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
    model_dir: Path | None,
    cache_dir: Path | None,
    as_json: bool,
) -> None:
    """Simulated users: sessions interleaving and an A/B split need to find the better ranker.

    Rankings come from the cascades of `streamrank eval rerank` (computed once, cached); the
    right winner is the pipeline with the higher nDCG@10 on QRELS.

    Example: streamrank shadow simulate --candidates bm25-top100.json --qrels qrels.txt
    --primary dense --shadow "dense>ce:30" --click-model informational --seeds 10 --json
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from streamrank.models.assets.model_files import ModelFilesError
    from streamrank.models.evaluation.rerank import load_qrels
    from streamrank.models.scoring.cascade import PipelineError
    from streamrank.models.scoring.score_cache import InMemoryCache
    from streamrank.shadow import experiment_simulator as sim

    errors = Console(stderr=True)
    folder = cache_dir or sim.CACHE_DIR / "shadow"
    vectors = InMemoryCache(max_items=None)  # pipelines with the same tier encode once
    found: dict[str, sim.PipelineRankings] = {}
    for spec in dict.fromkeys([primary, shadow]):
        try:
            found[spec] = sim.pipeline_rankings(
                candidates, spec, model_dir or default_model_dir(), max_length, folder,
                progress=errors.is_terminal, vector_cache=vectors,
            )  # fmt: skip
        except PipelineError as error:
            fail(
                str(error),
                "use tiers first-stage, dense, colbert, ce joined by '>', e.g. dense>ce:30",
            )
        except ModelFilesError as error:
            fail(str(error).splitlines()[0], "run `streamrank models fetch` (or pass --model-dir)")
    queries = sim.build_queries(found[primary].rankings, found[shadow].rankings, load_qrels(qrels))
    if not queries:
        fail(f"no query of {candidates} has judgments in {qrels}", "check the qrels file")
    seed_list = list(range(seed, seed + seeds))
    with Progress(
        TextColumn("[bold]shadow simulate[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
        disable=not errors.is_terminal,
    ) as bar:
        task = bar.add_task(f"{primary} vs {shadow}", total=len(seed_list) * max_sessions)
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
        Console().print(summary_table(result))


def _side(spec: str, rankings: Any) -> dict[str, Any]:
    return {
        "pipeline": spec,
        "model_version": rankings.model_version,
        "rankings_cache": rankings.cache_file,
        "rankings_cached": rankings.cached,
    }


def summary_table(result: dict[str, Any]) -> Table:
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


if __name__ == "__main__":  # python -m streamrank.streams.cli.shadow simulate ...
    shadow_group()
