"""The ``streamrank`` command: the root group, with every command group mounted on it.

One module per command group (:mod:`~streamrank.streams.cli.services`,
:mod:`~streamrank.streams.cli.topics`, :mod:`~streamrank.streams.cli.models`, ...), each
importing its heavy code (models, Kafka, Redis, Faust) inside its commands, so that
``streamrank --help`` and every command start without paying for the others.
"""

from __future__ import annotations

import click

from streamrank.streams.cli.analyze import analyze
from streamrank.streams.cli.data import data_group
from streamrank.streams.cli.demo import demo
from streamrank.streams.cli.evaluate import eval_group
from streamrank.streams.cli.events import publish, tail
from streamrank.streams.cli.index import index_group
from streamrank.streams.cli.models import models_group
from streamrank.streams.cli.operator import promote, rollback
from streamrank.streams.cli.rules import rules_group
from streamrank.streams.cli.services import services
from streamrank.streams.cli.shadow import shadow_group
from streamrank.streams.cli.simulate import simulate_command
from streamrank.streams.cli.state import state_group
from streamrank.streams.cli.topics import topics
from streamrank.streams.cli.train import train_group
from streamrank.streams.cli.worker import worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """streamrank: streaming re-ranking over Kafka, with Redis for shared state.

    Settings come from STREAMRANK_* environment variables (see docs/configuration.md).
    """


for command in (
    services,
    topics,
    publish,
    tail,
    worker,
    demo,
    models_group,
    eval_group,
    index_group,
    data_group,
    analyze,
    simulate_command,
    shadow_group,
    promote,
    rollback,
    rules_group,
    state_group,
    train_group,
):
    cli.add_command(command)


def main() -> None:
    """The console script: ``streamrank ...``."""
    cli()
