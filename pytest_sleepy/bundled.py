"""The koans and strategies that ship in the wheel.

pyproject.toml installs the repository's `koans/` and `strategies/` folders as the
packages `pytest_sleepy_koans` and `pytest_sleepy_strategies`, so `pip install
pytest-sleepy` brings the eval suites, the train split and the strategies:
`pytest --pyargs pytest_sleepy_koans` runs the newest eval suite from any directory.
A project's own folders win: they are used whenever they exist, and a folder named
explicitly (ini option or command-line flag) is never replaced.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["KOANS_PACKAGE", "STRATEGIES_PACKAGE", "bundled_dir", "folder_or_bundled"]

KOANS_PACKAGE = "pytest_sleepy_koans"
STRATEGIES_PACKAGE = "pytest_sleepy_strategies"


def bundled_dir(package: str) -> Path | None:
    """Where an installed package of the wheel lives, or None when it is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def folder_or_bundled(folder: Path, package: str, *, named: bool) -> Path:
    """`folder` when it exists or was named explicitly (so that errors name it), else the
    bundled copy when installed, else `folder`."""
    if named or folder.is_dir():
        return folder
    return bundled_dir(package) or folder
