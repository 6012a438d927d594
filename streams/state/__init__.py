"""State shared by every worker, in Redis: features, learner statistics, sessions, caches."""
