"""The examples in the first-stage modules' docstrings run and stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "streamrank.models.retrieval.corpus",
    "streamrank.models.retrieval.hits",
    "streamrank.models.retrieval.bm25",
    "streamrank.models.retrieval.dense",
    "streamrank.models.retrieval.first_stage",
    "streamrank.models.evaluation.first_stage",
    "streamrank.models.evaluation.recall_analysis",
    "streamrank.models.assets.wiki",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
