"""The agents a worker runs; each module's ``register(parts)`` puts its agents on the app."""
