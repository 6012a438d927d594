"""Fetching and verifying model files and corpora; the one place that knows their folders."""
