"""``streamrank worker``: one worker of the Faust app (:func:`streamrank.streams.worker.build`)."""

from __future__ import annotations

import click

from streamrank.streams.cli.helpers import fail
from streamrank.streams.config import get_settings


@click.command()
@click.option("--loglevel", "-l", default="info", show_default=True)
def worker(loglevel: str) -> None:
    """Run a streamrank worker: the Faust app with all its agents.

    Start as many as there are partitions; they share the load through one consumer group.

    Example: STREAMRANK_KAFKA_BOOTSTRAP=127.0.0.1:9092 streamrank worker -l info
    """
    import faust

    from streamrank.models.assets.model_files import ModelFilesError
    from streamrank.streams.worker import build

    try:
        app = build(get_settings())  # registers the agents; loads the models
    except ModelFilesError as error:
        fail(str(error).splitlines()[0], "run `streamrank models fetch` (STREAMRANK_MODEL_DIR)")
    faust.Worker(app, loglevel=loglevel).execute_from_commandline()
