"""streamrank's shadow side: mirroring, comparisons, statistics and promotion."""
