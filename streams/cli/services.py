"""``streamrank services``: the local Kafka broker and Redis of a checkout (deploy/*.sh)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from streamrank.streams.cli.helpers import fail

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"
SERVICES = ("kafka", "redis")


@click.command()
@click.argument("action", type=click.Choice(["up", "down", "status"]))
def services(action: str) -> None:
    """Start, stop or show the local Kafka broker and Redis (deploy/kafka.sh, deploy/redis.sh).

    Example: streamrank services up
    """
    script_action = {"up": "start", "down": "stop", "status": "status"}[action]
    order = SERVICES if action != "down" else tuple(reversed(SERVICES))
    failed = False
    for service in order:
        script = DEPLOY_DIR / f"{service}.sh"
        if not script.exists():
            fail(f"{script} not found", "run streamrank from a checkout of the repository")
        result = subprocess.run(["bash", str(script), script_action], check=False)
        failed |= result.returncode not in (0, 3) or (action == "up" and result.returncode != 0)
    if failed:
        sys.exit(1)
