"""The runtime: the Faust app and its agents, shared state in Redis, Kafka topics, the CLI.

:func:`streamrank.streams.worker.build` makes a worker's app from settings; nothing here does
work at import.
"""
