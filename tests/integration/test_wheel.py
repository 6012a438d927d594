"""The wheel installs one top-level name, ``streamrank``, and carries the dashboard page.

The repository's folders are called models/, shadow/ and streams/; a packaging slip would
install them as top-level ``models`` and ``streams`` into every user's site-packages. The wheel
is built from a copy of what pyproject.toml names, so the build writes nothing into the
checkout (setuptools builds in place otherwise) while other tests read it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.helpers import REPO

pytestmark = pytest.mark.slow


def pyproject() -> dict:
    with (REPO / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def build_backend_installed(requires: list[str]) -> bool:
    """Whether this environment already satisfies ``[build-system] requires``."""
    for requirement in map(Requirement, requires):
        try:
            if not requirement.specifier.contains(version(requirement.name), prereleases=True):
                return False
        except PackageNotFoundError:
            return False
    return True


def licences() -> list[str]:
    return [path.name for path in REPO.glob("LICEN[CS]E*")]


def copy_sources(config: dict, into: Path) -> Path:
    """pyproject.toml, the readme, the licence files and the mapped package folders."""
    into.mkdir()
    for name in ["pyproject.toml", config["project"]["readme"], *licences()]:
        shutil.copy2(REPO / name, into)
    for folder in config["tool"]["setuptools"]["package-dir"].values():
        shutil.copytree(REPO / folder, into / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return into


def build_wheel(tmp_path: Path) -> Path:
    """Build offline with the installed backend when it is recent enough; otherwise let pip
    fetch the backend pyproject.toml asks for into an isolated build environment."""
    config = pyproject()
    source = copy_sources(config, tmp_path / "source")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path)]
    if build_backend_installed(config["build-system"]["requires"]):
        command.append("--no-build-isolation")
    result = subprocess.run(
        [*command, str(source)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (wheel,) = tmp_path.glob("streamrank-*.whl")
    return wheel


def test_the_wheel_holds_only_streamrank_and_its_dist_info(tmp_path: Path) -> None:
    with zipfile.ZipFile(build_wheel(tmp_path)) as archive:
        names = archive.namelist()
    top_level = {name.split("/")[0] for name in names}
    dist_info = {name for name in top_level if name.endswith(".dist-info")}
    assert len(dist_info) == 1
    assert top_level - dist_info == {"streamrank"}
    for package in ("models", "shadow", "streams", "streams/cli"):
        assert f"streamrank/{package}/__init__.py" in names
    assert "streamrank/streams/dashboard.html" in names
