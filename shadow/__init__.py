"""Experiments: comparing a shadow ranker with the primary, deciding, promoting.

Pure logic over values and a Redis client: agreement measures, team-draft interleaving,
sequential statistics, a version's running evidence, the promotion decision and report, and
a simulator of both experiment designs. The runtime (:mod:`streamrank.streams`) feeds it.
"""
