"""Offline evaluation: ranking metrics, re-rank and pipeline runs, the click simulator."""
