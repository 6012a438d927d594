"""Scorers and the cascade that runs them within a latency budget."""
