"""``streamrank worker``: one worker of the Faust app (:func:`streamrank.streams.worker.build`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NoReturn

import click

from streamrank.streams.cli.helpers import fail
from streamrank.streams.config import Settings, get_settings

if TYPE_CHECKING:
    import faust


@click.command()
@click.option("--loglevel", "-l", default="info", show_default=True)
def worker(loglevel: str) -> None:
    """Run a streamrank worker: the Faust app with all its agents.

    Start as many as there are partitions; they share the load through one consumer group.

    Example: STREAMRANK_KAFKA_BOOTSTRAP=127.0.0.1:9092 streamrank worker -l info
    """
    from streamrank.models.assets.model_files import ModelFilesError
    from streamrank.streams.worker import build

    settings = get_settings()
    try:
        app = build(settings)  # registers the agents; loads the models
    except ModelFilesError as error:
        fail(str(error).splitlines()[0], "run `streamrank models fetch` (STREAMRANK_MODEL_DIR)")
    run_worker(app, loglevel, settings)


def run_worker(app: faust.App, loglevel: str, settings: Settings) -> NoReturn:
    """Run ``app`` in a Faust worker whose log handlers are rate-limited
    (:mod:`streamrank.streams.logs`), until it is stopped.

    The filters go on in the hook Faust calls once it has set up the root logger's handlers:
    earlier there are no handlers to filter, and later the first records of a start against
    an unreachable broker would already be written unlimited.
    """
    import faust

    from streamrank.streams import logs

    class RateLimitedWorker(faust.Worker):
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            logs.install(settings.log_rate_burst, settings.log_rate_interval_s, logger)

    RateLimitedWorker(app, loglevel=loglevel).execute_from_commandline()
