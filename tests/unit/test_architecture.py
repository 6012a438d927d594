"""The import direction of the three rooms: models <- shadow <- streams, the CLI on top.

``models`` is the pure library (no stream processor, no Kafka client, no terminal UI), so that
benches, notebooks and the shadow experiments can use it without a broker; ``shadow`` holds the
experiment logic and may use ``models`` but never the runtime; only the CLI imports the CLI, so
that a worker never drags in click and rich. The checker reads the source with :mod:`ast`
instead of importing it, so it sees imports inside functions and under ``TYPE_CHECKING`` too:
a deferred import still ties one room to another.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import streamrank.models
import streamrank.shadow
import streamrank.streams

PACKAGES = (streamrank.models, streamrank.shadow, streamrank.streams)
# The folder holding models/, shadow/ and streams/: messages name files relative to it.
REPO = Path(streamrank.models.__path__[0]).parent


@dataclass(frozen=True)
class Rule:
    """Modules under ``importer`` (but not under ``exempt``) must not import ``forbidden``."""

    importer: str
    forbidden: tuple[str, ...]
    why: str
    exempt: str | None = None

    def applies_to(self, module: str) -> bool:
        return within(module, self.importer) and not (self.exempt and within(module, self.exempt))

    def forbids(self, imported: str) -> bool:
        return any(within(imported, name) for name in self.forbidden)


RULES = (
    Rule(
        "streamrank.models",
        ("streamrank.streams", "streamrank.shadow"),
        "models is the pure library: it imports nothing of shadow or streams",
    ),
    Rule("streamrank.shadow", ("streamrank.streams",), "shadow may import models, never streams"),
    Rule(
        "streamrank",
        ("streamrank.streams.cli",),
        "only the CLI imports the CLI",
        exempt="streamrank.streams.cli",
    ),
    Rule(
        "streamrank.models",
        ("faust", "kafka", "aiokafka", "click", "rich"),
        "models runs without a stream processor, a Kafka client or a terminal UI",
    ),
)


def within(name: str, package: str) -> bool:
    """Whether dotted ``name`` is ``package`` or lies inside it (``kafka`` holds not ``kafkax``)."""
    return name == package or name.startswith(package + ".")


@dataclass(frozen=True)
class ImportStatement:
    """One import statement: its line, how it reads, and the absolute names it binds."""

    line: int
    text: str
    names: tuple[str, ...]


def import_statements(source: str, module: str, is_package: bool) -> Iterator[ImportStatement]:
    """Every import statement of ``source``, at any depth, relative ones resolved.

    ``from x import y`` binds ``x.y``: ``y`` may be a sub-module, and a name defined in ``x``
    still lies within ``x``, so the rules' prefix test holds either way.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = tuple(alias.name for alias in node.names)
            yield ImportStatement(node.lineno, f"import {', '.join(names)}", names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = importlib.util.resolve_name("." * node.level + base, package)
            aliases = [alias.name for alias in node.names]
            names = tuple(base if name == "*" else f"{base}.{name}" for name in aliases)
            yield ImportStatement(node.lineno, f"from {base} import {', '.join(aliases)}", names)


def violations(source: str, module: str, is_package: bool, where: str) -> list[str]:
    """One ``where:line`` message for each import statement that breaks one of :data:`RULES`."""
    found = []
    for statement in import_statements(source, module, is_package):
        for rule in RULES:
            if rule.applies_to(module) and any(map(rule.forbids, statement.names)):
                found.append(f"{where}:{statement.line}: {statement.text}  ({rule.why})")
    return found


def source_files() -> Iterator[tuple[Path, str, bool]]:
    """(path, module name, is package) for every .py file of the three packages."""
    for package in PACKAGES:
        root = Path(package.__path__[0])
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            yield path, ".".join([package.__name__, *parts]), is_package


def test_the_rooms_import_only_downwards() -> None:
    found = []
    files = 0
    for path, module, is_package in source_files():
        where = path.relative_to(REPO).as_posix()
        found += violations(path.read_text(encoding="utf-8"), module, is_package, where)
        files += 1
    assert files > 50, "the walk found too few files: are the packages where they used to be?"
    if found:
        pytest.fail(
            "imports against models <- shadow <- streams:\n" + "\n".join(found), pytrace=False
        )


def test_the_checker_catches_every_rule_on_a_bad_source() -> None:
    bad_models = (
        "import faust\n"
        "from kafka.admin import KafkaAdminClient\n"
        "def later():\n"
        "    from ...streams import app\n"  # relative, deferred: resolves to streams.app
        "    from streamrank.shadow.report import verdict\n"
    )
    found = violations(bad_models, "streamrank.models.scoring.fake", False, "fake.py")
    assert [line.split(":")[1] for line in found] == ["1", "2", "4", "5"]
    assert "from streamrank.streams import app" in found[2]

    from_shadow = "from streamrank import streams\n"
    assert len(violations(from_shadow, "streamrank.shadow", True, "shadow/__init__.py")) == 1

    runtime_to_cli = "from .cli import main\nfrom streamrank.streams.cli.data import fetch\n"
    assert len(violations(runtime_to_cli, "streamrank.streams.serving", False, "serving.py")) == 2


def test_the_checker_lets_allowed_imports_through() -> None:
    clean_models = "import numpy\nfrom . import tiers\nfrom ..types import Candidate\n"
    assert violations(clean_models, "streamrank.models.scoring.cascade", False, "cascade.py") == []
    cli_to_cli = "from .data import fetch\nimport click\nimport rich\n"
    assert violations(cli_to_cli, "streamrank.streams.cli.main", False, "main.py") == []
    runtime = "import faust\nfrom streamrank.shadow import report\nfrom ..models import types\n"
    assert violations(runtime, "streamrank.streams.app", False, "app.py") == []
