"""Queuing a Lua script on a pipeline, on a single Redis and on a Redis Cluster alike.

redis-py's :class:`~redis.commands.core.Script` loads itself into a single Redis's pipeline
before it runs (``EVALSHA``), but cannot on a cluster pipeline: a node that never saw the
script answers ``NOSCRIPT``, after the pipeline's commands for the other nodes have run, so
retrying the whole pipeline would run those twice. On a cluster pipeline the script is sent
whole (``EVAL``): every node compiles it once and caches it by its hash, so only the bytes of
the text are repeated. Single commands keep using the script object, which reloads it on
``NOSCRIPT`` and retries that one command.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.cluster import ClusterPipeline
from redis.commands.core import Script


def queue_script(pipe: Any, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """Queue ``script`` with ``keys`` and ``args`` on ``pipe`` (its reply comes from
    ``pipe.execute()`` like any command's)."""
    if isinstance(pipe, ClusterPipeline):
        return pipe.execute_command("EVAL", script.script, len(keys), *keys, *args)
    return script(keys=keys, args=args, client=pipe)
