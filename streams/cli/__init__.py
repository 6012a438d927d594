"""The ``streamrank`` command line: one module per command group, mounted by :mod:`.root`.

The console script is :func:`main`; ``python -m streamrank.streams.cli`` runs the same.
Nothing outside this package imports it: the runtime runs without click.
"""

from streamrank.streams.cli.root import cli, main

__all__ = ["cli", "main"]
