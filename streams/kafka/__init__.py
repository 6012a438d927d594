"""Kafka plumbing: topic creation and description, the dead-letter topic."""
