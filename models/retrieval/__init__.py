"""First stages: BM25, dense and hybrid retrieval over a corpus that changes."""
