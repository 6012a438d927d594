"""What streamrank draws on a terminal, shared by the CLI and the runtime's demo.

:func:`progress_bar` is the one progress-bar layout of every command; :class:`RichProgress`
draws the stages that library code reports (:class:`streamrank.models.progress.ProgressReporter`)
as its bars, so the library itself never imports a terminal UI. The CLI reaches these through
:mod:`streamrank.streams.cli.helpers`; they live here, outside the CLI, because the demo
(:mod:`streamrank.streams.demo`) draws them too and the runtime never imports the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table


def progress_bar(
    console: Console | None = None,
    *,
    in_bytes: bool = False,
    transient: bool = False,
    disable: bool = False,
) -> Progress:
    """Progress bars in streamrank's one layout: description, bar, done/total, elapsed, left.

    Parameters
    ----------
    console
        Where to draw; default a new stderr console, so the bars never mix with results that
        a command prints to stdout (``--json`` output stays pipeable).
    in_bytes
        Count in bytes (downloads, files read) instead of items.
    transient
        Remove the bars when done.
    disable
        Draw nothing (``--json`` runs, or stderr not a terminal).
    """
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn() if in_bytes else MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=transient,
        disable=disable,
    )


class RichProgress:
    """A :class:`streamrank.models.progress.ProgressReporter` that draws each stage as one bar
    of ``bars`` (a running :func:`progress_bar`)."""

    def __init__(self, bars: Progress) -> None:
        self.bars = bars

    @contextmanager
    def stage(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        task = self.bars.add_task(description, total=total)
        done = 0

        def advance(amount: int) -> None:
            nonlocal done
            done += amount
            self.bars.advance(task, amount)

        yield advance
        final = total if total is not None else max(done, 1)  # an open-ended stage is done now
        self.bars.update(task, total=final, completed=final)


def learning_curve_table(result: dict[str, Any]) -> Table:
    """A click simulation's result (:func:`streamrank.models.evaluation.simulator.simulate`):
    nDCG@10 at each checkpoint against the start, as ``streamrank simulate`` and the demo
    print it."""
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
