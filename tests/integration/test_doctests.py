"""The docstring examples that show Redis at work, run against the real Redis."""

from __future__ import annotations

import doctest

import pytest

from streamrank.streams.config import get_settings
from tests.integration.conftest import Endpoints
from tests.unit.test_doctests import REDIS_DOCTESTS, run_example

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("test", REDIS_DOCTESTS, ids=[test.name for test in REDIS_DOCTESTS])
def test_docstring_example_against_redis(
    test: doctest.DocTest, endpoints: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMRANK_REDIS_URL", endpoints.redis_url)
    get_settings.cache_clear()  # the examples read the settings, which are cached
    try:
        run_example(test)
    finally:
        get_settings.cache_clear()
