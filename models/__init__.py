"""streamrank's models: scorers, the cascade, the online learner and the model registry."""
