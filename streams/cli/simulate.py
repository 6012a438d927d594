"""``streamrank simulate``: simulated users teach the online ranker; prints the learning curve.

With ``--offline`` the online ranker and explorer run in-process; without it every session
goes through the real broker, a running worker (its exploration bound, its learner) and Redis
(:mod:`streamrank.streams.streaming_simulator`).

Starting scores (the cross-encoder's, for every candidate) come from ``--scores FILE``, or are
computed once with the cross-encoder and cached under the user cache directory, keyed by the
candidate file's hash and the model version; ``--start first-stage`` starts from the candidate
file's own scores instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from streamrank.models.evaluation.simulator import (
    K,
    OfflineSystem,
    RankingSystem,
    load_queries,
    passages,
    simulate,
)
from streamrank.models.learning.click_models import CLICK_MODELS
from streamrank.models.learning.exploration import SafeExplorer
from streamrank.models.learning.online_ranker import OnlineRanker, RankerConfig
from streamrank.models.retrieval.corpus import CACHE_DIR
from streamrank.streams.cli.models import judged_candidates
from streamrank.streams.config import get_settings

Scorer = Callable[[str, Sequence[str]], Sequence[float]]
"""(query, passages) -> one relevance score per passage."""


def streaming_system(candidates: Path, errors: Console) -> RankingSystem:
    """The real broker, workers and Redis as the system (:mod:`streamrank.streams.streaming_simulator`)."""
    from streamrank.streams.kafka.topics import UNREACHABLE
    from streamrank.streams.streaming_simulator import StreamingSystem

    settings = get_settings()
    try:
        return StreamingSystem(settings, passages(candidates))
    except UNREACHABLE:
        errors.print(
            f"[bold red]error:[/] no Kafka broker at {settings.kafka_bootstrap}\n"
            "[bold]fix:[/] start the services (`streamrank services up`) and a worker "
            "(`streamrank worker`), or add --offline"
        )
        sys.exit(2)


def offline_system(seed: int, max_loss: float, top_k: int | None) -> OfflineSystem:
    """The system ``--offline`` runs: a fresh online ranker and explorer, seeded."""
    return OfflineSystem(
        OnlineRanker(config=RankerConfig(seed=seed)), SafeExplorer(K, max_loss, seed=seed), top_k
    )


class ScorerUnavailable(RuntimeError):
    """The cross-encoder cannot be loaded here (module missing or models not fetched)."""


@dataclass(frozen=True)
class NamedScorer:
    """A scorer and the version string that keys its cached scores."""

    version: str
    score: Scorer


def cross_encoder_scorer(model_dir: Path) -> NamedScorer:
    """The project's cross-encoder (:class:`streamrank.models.scoring.cross_encoder.CrossEncoder`) as a scorer."""
    try:
        from streamrank.models.assets.model_files import ModelFilesError
        from streamrank.models.scoring.cross_encoder import CrossEncoder
    except ImportError as error:
        raise ScorerUnavailable(f"the cross-encoder module is not available ({error})") from None
    try:
        encoder = CrossEncoder(model_dir)
    except (ModelFilesError, OSError) as error:
        raise ScorerUnavailable(str(error)) from None
    return NamedScorer(
        encoder.version, lambda query, texts: encoder.predict([(query, t) for t in texts])
    )


def cached_scores(
    candidates: Path, scorer: Callable[[], NamedScorer], cache_dir: Path = CACHE_DIR
) -> dict[str, list[float]]:
    """Starting scores for every candidate, computed once per (file content, model version)."""
    named = scorer()
    digest = hashlib.sha256(candidates.read_bytes()).hexdigest()[:16]
    version = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in named.version)
    path = cache_dir / "simulate" / f"scores-{digest}-{version}.json"
    if path.exists():
        return json.loads(path.read_text())
    items = passages(candidates).items()
    out = {qid: [float(x) for x in named.score(q, texts)] for qid, (q, texts) in items}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out))
    tmp.replace(path)  # atomic: a killed run never leaves a half-written cache
    return out


def read_scores(path: Path, candidates: Path) -> dict[str, list[float]]:
    """``{qid: [score per hit]}`` or ``{qid: {"docs": [...], "ce": [...]}}`` (aligned by doc)."""
    raw = json.loads(path.read_text())
    order = {
        str(e["hits"][0]["qid"]): [str(h["docid"]) for h in e["hits"]]
        for e in json.loads(candidates.read_text())
        if e["hits"]
    }
    out = {}
    for qid, value in raw.items():
        if isinstance(value, Mapping):
            by_doc = dict(zip(map(str, value["docs"]), value["ce"], strict=True))
            value = [by_doc[d] for d in order.get(qid, [])]
        out[str(qid)] = [float(v) for v in value]
    return out


def plot_curve(results: Sequence[dict[str, Any]], path: Path) -> None:
    """Learning curve(s), nDCG@10 against sessions per query, with the starting level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for result in results:
        xs = [0] + [c["sessions_per_query"] for c in result["checkpoints"]]
        ys = [result["start_ndcg@10"]] + [c["ndcg@10"] for c in result["checkpoints"]]
        ax.plot(xs, ys, marker="o", label=f"{result['click_model']} (seed {result['seed']})")
    ax.axhline(results[0]["start_ndcg@10"], color="grey", ls="--", lw=1, label="starting ranker")
    ax.set_xscale("symlog", linthresh=5)
    marks = sorted({0} | {c["sessions_per_query"] for r in results for c in r["checkpoints"]})
    ax.set_xlim(0, marks[-1] * 1.1)
    ax.set_xticks(marks, [str(m) for m in marks])
    ax.minorticks_off()
    ax.set_xlabel("sessions per query")
    ax.set_ylabel("nDCG@10 (no exploration)")
    ax.set_title("streamrank: learning from simulated clicks")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"simulate: {result['click_model']}, {result['queries']} queries")
    table.add_column("sessions / query", justify="right")
    table.add_column("nDCG@10", justify="right")
    table.add_column("vs start", justify="right")
    start = result["start_ndcg@10"]
    table.add_row("0 (start)", f"{start:.4f}", "")
    for point in result["checkpoints"]:
        value = point["ndcg@10"]
        table.add_row(str(point["sessions_per_query"]), f"{value:.4f}", f"{value - start:+.4f}")
    table.caption = (
        f"min {result['min_ndcg@10']:.4f}, served (with exploration) "
        f"{result['served_ndcg@10']:.4f}; propensities "
        + " ".join(f"{p:.2f}" for p in result.get("propensities", []))
    )
    return table


@click.command("simulate")
@judged_candidates
@click.option(
    "--click-model",
    "user",
    type=click.Choice(sorted(CLICK_MODELS)),
    default="navigational",
    show_default=True,
)
@click.option("--eta", type=float, default=None, help="Position-bias exponent for 'pbm'.")
@click.option("--sessions-per-query", type=click.IntRange(1), default=200, show_default=True)
@click.option("--checkpoints", default="5,10,25,50,100,200", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--offline", is_flag=True, help="Run learner and ranker in-process (no Kafka).")
@click.option(
    "--scores",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Precomputed starting scores instead of running the cross-encoder.",
)
@click.option(
    "--start",
    type=click.Choice(["cross-encoder", "first-stage"]),
    default="cross-encoder",
    show_default=True,
    help="The starting ranker.",
)
@click.option(
    "--model-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: os.environ.get("STREAMRANK_MODEL_DIR", str(CACHE_DIR / "models")),
    show_default="$STREAMRANK_MODEL_DIR or ~/.cache/streamrank/models",
    help="Where `streamrank models fetch` put the cross-encoder (when scores are computed).",
)
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
    errors = Console(stderr=True)
    try:
        marks = sorted({int(x) for x in checkpoints.split(",") if x.strip()})
    except ValueError:
        raise click.BadParameter(
            "a comma-separated list of integers", param_hint="--checkpoints"
        ) from None
    start_scores = _start_scores(candidates, scores, start, model_dir, errors)
    queries = load_queries(candidates, qrels, start_scores)
    if not queries:
        raise click.UsageError(f"no query of {candidates} has judgments in {qrels}")
    if offline:
        system: RankingSystem = offline_system(seed, max_loss, online_top_k)
    else:
        system = streaming_system(candidates, errors)
    with Progress(
        TextColumn("[bold]simulate[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=errors,
        disable=not errors.is_terminal,
    ) as bar:
        task = bar.add_task(user, total=sessions_per_query * len(queries))
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
        Console().print(summary_table(result))


def _start_scores(
    candidates: Path, scores: Path | None, start: str, model_dir: Path, errors: Console
) -> dict[str, list[float]] | None:
    if scores is not None:
        return read_scores(scores, candidates)
    if start == "first-stage":
        return None
    try:
        return cached_scores(candidates, lambda: cross_encoder_scorer(model_dir))
    except ScorerUnavailable as error:
        errors.print(
            f"[bold red]error:[/] {error}\n[bold]fix:[/] run `streamrank models fetch`, "
            "or pass --scores FILE, or --start first-stage"
        )
        sys.exit(2)


if (
    __name__ == "__main__"
):  # until it is mounted in the main CLI: python -m streamrank.streams.cli.simulate
    simulate_command()
