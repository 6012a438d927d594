"""pyproject.toml ships every package folder and every data file of the three rooms.

setuptools is given an explicit ``packages`` list (the folders are mapped under one import
name with ``package-dir``, which automatic discovery does not follow), so a new sub-package
folder works in the editable checkout but is silently left out of a wheel until it is listed.
These checks read pyproject.toml instead of building, so they run in the unit tier; the build
itself is tests/integration/test_wheel.py.
"""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from tests.helpers import REPO


def setuptools_config() -> dict:
    with (REPO / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)["tool"]["setuptools"]


def package_folders(package_dir: dict[str, str]) -> dict[str, Path]:
    """Every folder holding an ``__init__.py`` under the mapped folders, by package name."""
    found = {}
    for name, folder in package_dir.items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            found[".".join([name, *init.parent.relative_to(root).parts])] = init.parent
    return found


def data_files(folders: dict[str, Path]) -> dict[Path, str]:
    """Each non-Python file of the package folders, with the package that holds it."""
    owners = sorted(folders.items(), key=lambda item: len(item[1].parts))
    found = {}
    for name, folder in owners:  # deeper packages come later and win
        for path in folder.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".py":
                found[path] = name
    return found


def covered(path: Path, package: str, folders: dict[str, Path], package_data: dict) -> bool:
    relative = path.relative_to(folders[package]).as_posix()
    patterns = [*package_data.get(package, []), *package_data.get("*", [])]
    return any(fnmatch.fnmatch(relative, pattern) for pattern in patterns)


def test_every_package_folder_is_listed_and_every_listed_package_exists() -> None:
    config = setuptools_config()
    folders = package_folders(config["package-dir"])
    listed = set(config["packages"])
    assert not set(folders) - listed, "folders with __init__.py missing from [tool.setuptools]"
    assert not listed - set(folders), "listed packages with no folder"


def test_package_data_covers_every_data_file() -> None:
    config = setuptools_config()
    folders = package_folders(config["package-dir"])
    files = data_files(folders)
    assert REPO / "streams" / "dashboard.html" in files
    missing = [
        path.relative_to(REPO).as_posix()
        for path, package in files.items()
        if not covered(path, package, folders, config.get("package-data", {}))
    ]
    assert not missing, "data files not in [tool.setuptools.package-data]"


def test_the_coverage_check_can_fail() -> None:
    folders = {"streamrank.streams": REPO / "streams"}
    page = REPO / "streams" / "dashboard.html"
    assert covered(page, "streamrank.streams", folders, {"streamrank.streams": ["*.html"]})
    assert not covered(page, "streamrank.streams", folders, {"streamrank.streams": ["*.css"]})
    assert not covered(page, "streamrank.streams", folders, {})
