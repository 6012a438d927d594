"""Every docstring example of streamrank runs and stays true, each as its own test.

The modules are imported by their package names (``streamrank.models...``), the names the
code itself uses, instead of pytest's ``--doctest-modules``, which would import the files by
path under a second name and collect them again on every run of a sub-folder. Examples that
need fetched models say ``# doctest: +SKIP``; the few whose point is the real Redis run in the
integration tier (``NEEDS_REDIS``). A module that does not import fails its own test here
rather than hiding its examples.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil
from types import ModuleType

import pytest

PACKAGES = ("streamrank.models", "streamrank.shadow", "streamrank.streams")
OPTIONS = doctest.ELLIPSIS
NEEDS_REDIS = frozenset(
    {"streamrank.streams.state.redis_cache", "streamrank.streams.state.service_metrics"}
)
"""Modules whose examples show their Redis keys at work: tests/integration runs them."""


def module_names() -> list[str]:
    """The three packages and every module below them, by dotted name."""
    names = list(PACKAGES)
    for package in PACKAGES:
        path = importlib.import_module(package).__path__
        # onerror: a sub-package that fails to import still gets its name listed, and fails in
        # test_every_module_imports instead of stopping the walk.
        walk = pkgutil.walk_packages(path, package + ".", onerror=lambda name: None)
        names += [info.name for info in walk]
    return sorted(set(names))


def import_or_none(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except Exception:
        return None


def doctests() -> list[doctest.DocTest]:
    """The examples of every importable module, each object's examples one DocTest."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = []
    for name in MODULES:
        module = import_or_none(name)
        if module is not None:
            found += [test for test in finder.find(module, name) if test.examples]
    return sorted(found, key=lambda test: test.name)


def run_example(test: doctest.DocTest) -> None:
    """Run one DocTest; fail with doctest's own report of what differed."""
    output = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    try:
        result = runner.run(test, out=output.write, clear_globs=False)
    finally:
        test.globs.clear()
    if result.failed:
        pytest.fail(output.getvalue(), pytrace=False)


def module_of(test: doctest.DocTest) -> str:
    return next(
        name
        for name in sorted(MODULES, key=len, reverse=True)
        if test.name == name or test.name.startswith(name + ".")
    )


MODULES = module_names()
DOCTESTS = doctests()
REDIS_DOCTESTS = [test for test in DOCTESTS if module_of(test) in NEEDS_REDIS]
PURE_DOCTESTS = [test for test in DOCTESTS if module_of(test) not in NEEDS_REDIS]


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports(name: str) -> None:
    importlib.import_module(name)


@pytest.mark.parametrize("test", PURE_DOCTESTS, ids=[test.name for test in PURE_DOCTESTS])
def test_docstring_example(test: doctest.DocTest) -> None:
    run_example(test)


def test_the_walk_finds_examples() -> None:
    assert len(MODULES) > 50
    assert "streamrank.models.retrieval.bm25" in {test.name.rpartition(".")[0] for test in DOCTESTS}
    assert {module_of(test) for test in REDIS_DOCTESTS} == NEEDS_REDIS
