"""The examples in the first-stage modules' docstrings run and stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "models.corpus",
    "models.hits",
    "models.bm25_index",
    "models.dense_index",
    "models.retrieval",
    "models.first_stage_eval",
    "models.analysis",
    "models.wiki",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
