"""``streamrank simulate``: simulated users teach the online ranker; prints the learning curve.

With ``--offline`` the online ranker and explorer run in-process
(:func:`streamrank.models.evaluation.simulator.offline_system`); without it every session
goes through the real broker, a running worker (its exploration bound, its learner) and Redis
(:mod:`streamrank.streams.streaming_simulator`).

Starting scores (the cross-encoder's, for every candidate) come from ``--scores FILE``, or are
computed once with the cross-encoder and cached
(:mod:`streamrank.models.evaluation.start_scores`); ``--start first-stage`` starts from the
candidate file's own scores instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from streamrank.streams.cli.helpers import (
    EXISTING_FILE,
    click_model_option,
    console,
    errors,
    fail,
    judged_candidates,
    model_dir_option,
    progress_bar,
)
from streamrank.streams.config import get_settings
from streamrank.streams.terminal import learning_curve_table

if TYPE_CHECKING:
    from streamrank.models.evaluation.simulator import RankingSystem

# The simulator and the online ranker (river, scipy: about two seconds) are imported when the
# command runs, not when `streamrank` mounts it.


def streaming_system(candidates: Path) -> RankingSystem:
    """The real broker, workers and Redis as the system
    (:class:`streamrank.streams.streaming_simulator.StreamingSystem`)."""
    from streamrank.models.evaluation.simulator import passages
    from streamrank.streams.kafka.topics import UNREACHABLE
    from streamrank.streams.streaming_simulator import StreamingSystem

    settings = get_settings()
    try:
        return StreamingSystem(settings, passages(candidates))
    except UNREACHABLE:
        fail(
            f"no Kafka broker at {settings.kafka_bootstrap}",
            "start the services (`streamrank services up`) and a worker "
            "(`streamrank worker`), or add --offline",
        )


@click.command("simulate")
@judged_candidates
@click_model_option(default="navigational")
@click.option("--eta", type=float, default=None, help="Position-bias exponent for 'pbm'.")
@click.option("--sessions-per-query", type=click.IntRange(1), default=200, show_default=True)
@click.option("--checkpoints", default="5,10,25,50,100,200", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--offline", is_flag=True, help="Run learner and ranker in-process (no Kafka).")
@click.option(
    "--scores",
    type=EXISTING_FILE,
    help="Precomputed starting scores instead of running the cross-encoder.",
)
@click.option(
    "--start",
    type=click.Choice(["cross-encoder", "first-stage"]),
    default="cross-encoder",
    show_default=True,
    help="The starting ranker.",
)
@model_dir_option
@click.option(
    "--max-loss",
    type=click.FloatRange(0, 1),
    default=0.3,
    show_default=True,
    help="Exploration bound: largest estimated DCG@10 loss against exploit (--offline; a "
    "streaming run uses the worker's STREAMRANK_EXPLORATION_MAX_LOSS).",
)
@click.option(
    "--online-top-k",
    type=click.IntRange(1),
    default=lambda: get_settings().online_top_k,
    show_default="the worker's STREAMRANK_ONLINE_TOP_K, 50",
    help="How many of the starting ranker's best candidates the online ranker orders, as a "
    "worker does (--offline; a streaming run uses the worker's own setting).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the learning curve as a PNG.",
)
def simulate_command(
    candidates: Path,
    qrels: Path,
    user: str,
    eta: float | None,
    sessions_per_query: int,
    checkpoints: str,
    seed: int,
    offline: bool,
    scores: Path | None,
    start: str,
    model_dir: Path,
    max_loss: float,
    online_top_k: int,
    as_json: bool,
    plot: Path | None,
) -> None:
    """Simulated users click on served rankings; the online ranker learns from them.

    Example: streamrank simulate --candidates ../shared/data/trec-dl-2019/bm25-top100.json
    --qrels ../shared/data/trec-dl-2019/qrels.txt --click-model navigational --offline --json
    """
    from streamrank.models.evaluation.simulator import (
        load_queries,
        offline_system,
        plot_curve,
        simulate,
    )

    try:
        marks = sorted({int(x) for x in checkpoints.split(",") if x.strip()})
    except ValueError:
        raise click.BadParameter(
            "a comma-separated list of integers", param_hint="--checkpoints"
        ) from None
    start_scores = _start_scores(candidates, scores, start, model_dir)
    queries = load_queries(candidates, qrels, start_scores)
    if not queries:
        raise click.UsageError(f"no query of {candidates} has judgments in {qrels}")
    if offline:
        system: RankingSystem = offline_system(seed, max_loss, online_top_k)
    else:
        system = streaming_system(candidates)
    with progress_bar(errors, disable=not errors.is_terminal) as bar:
        task = bar.add_task(f"[bold]simulate[/] {user}", total=sessions_per_query * len(queries))
        result = simulate(
            queries,
            system,
            user,
            sessions_per_query,
            marks,
            seed,
            progress=lambda done, _total: bar.update(task, completed=done),
            eta=eta,
        )
    result["start"] = start
    if offline:
        result["online_top_k"] = online_top_k
    if plot:
        plot_curve([result], plot)
        result["plot"] = str(plot)
    if as_json:
        click.echo(json.dumps(result))
    else:
        console.print(learning_curve_table(result))


def _start_scores(
    candidates: Path, scores: Path | None, start: str, model_dir: Path
) -> dict[str, list[float]] | None:
    """The starting ranker's scores: read, cached or computed; ``None`` for the first stage's."""
    from streamrank.models.evaluation.start_scores import (
        ScorerUnavailable,
        cached_scores,
        cross_encoder_scorer,
        read_scores,
    )

    if scores is not None:
        return read_scores(scores, candidates)
    if start == "first-stage":
        return None
    try:
        return cached_scores(candidates, lambda: cross_encoder_scorer(model_dir))
    except ScorerUnavailable as error:
        fail(
            str(error),
            "run `streamrank models fetch`, or pass --scores FILE, or --start first-stage",
        )
