"""Learning from clicks: the online ranker, position bias, safe exploration, click models."""
