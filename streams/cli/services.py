"""``streamrank services``: the local Kafka broker and Redis of a checkout (deploy/*.sh).

``--cluster`` runs the clustered variants instead: a three-node Kafka cluster and a six-node
Redis Cluster (three masters, three replicas), on ports of their own so they can run beside
the single-node services. Clients find them only through the environment, so ``up`` and
``status`` print the variables to export.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import click

from streamrank.streams.cli.helpers import console, fail

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"
SERVICES = ("kafka", "redis")
SCRIPT_ACTIONS = {"up": "start", "down": "stop", "status": "status"}
# The scripts' exit status for "not running": a fine answer to status and down, not to up.
NOT_RUNNING = 3
# The cluster scripts' first ports (the same variables and defaults as deploy/kafka.sh and
# deploy/redis.sh): the printed environment must name the ports they listen on.
KAFKA_CLUSTER_PORT = ("STREAMRANK_KAFKA_CLUSTER_PORT", 9192)
KAFKA_CLUSTER_NODES = 3
REDIS_CLUSTER_NODES = 6  # three masters, three replicas (deploy/redis.sh --cluster)
REDIS_CLUSTER_PORT = ("STREAMRANK_REDIS_CLUSTER_PORT", 7000)


@click.command()
@click.argument("action", type=click.Choice(list(SCRIPT_ACTIONS)))
@click.option(
    "--cluster",
    is_flag=True,
    help="the three-node Kafka cluster (127.0.0.1:9192-9194) and the Redis Cluster "
    "(127.0.0.1:7000-7005) instead of the single nodes",
)
def services(action: str, cluster: bool) -> None:
    """Start, stop or show the local Kafka broker and Redis (deploy/kafka.sh, deploy/redis.sh).

    Example: streamrank services up --cluster
    """
    order = SERVICES if action != "down" else tuple(reversed(SERVICES))
    failed = False
    for service in order:
        result = subprocess.run(script_command(service, action, cluster), check=False)
        failed |= not succeeded(action, result.returncode)
    if cluster and action != "down":
        console.print(cluster_exports(), soft_wrap=True, highlight=False)
    if failed:
        sys.exit(1)


def script_command(service: str, action: str, cluster: bool) -> list[str]:
    """The deploy script's command line for ``service`` and the CLI's ``action``."""
    script = DEPLOY_DIR / f"{service}.sh"
    if not script.exists():
        fail(f"{script} not found", "run streamrank from a checkout of the repository")
    command = ["bash", str(script), SCRIPT_ACTIONS[action]]
    return [*command, "--cluster"] if cluster else command


def succeeded(action: str, returncode: int) -> bool:
    """Whether a script's exit status is a success for ``action``: ``up`` needs the service
    running; ``down`` and ``status`` may find it stopped."""
    if action == "up":
        return returncode == 0
    return returncode in (0, NOT_RUNNING)


def cluster_exports(environ: Mapping[str, str] | None = None) -> str:
    """The ``export`` line that points streamrank at the clusters, for a shell to ``eval``."""
    environ = os.environ if environ is None else environ
    kafka_port = int(environ.get(KAFKA_CLUSTER_PORT[0], KAFKA_CLUSTER_PORT[1]))
    redis_port = int(environ.get(REDIS_CLUSTER_PORT[0], REDIS_CLUSTER_PORT[1]))
    bootstrap = ",".join(f"127.0.0.1:{kafka_port + n}" for n in range(KAFKA_CLUSTER_NODES))
    others = ",".join(f"127.0.0.1:{redis_port + n}" for n in range(1, REDIS_CLUSTER_NODES))
    return (
        f"export STREAMRANK_KAFKA_BOOTSTRAP={bootstrap} "
        f"STREAMRANK_REDIS_URL=redis://127.0.0.1:{redis_port}/0 STREAMRANK_REDIS_CLUSTER=true "
        f"STREAMRANK_REDIS_CLUSTER_NODES={others}"
    )
