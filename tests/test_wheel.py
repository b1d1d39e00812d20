"""The wheel: built with `python -m build`, installed into a fresh venv, it brings the
koans and strategies, and runs the bundled eval suite from an empty directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from pytest_sleepy.koans import load_corpus


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the files git knows (tracked, or new and not ignored), so that
    no leftover of an earlier build in the working tree can slip into it."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO_ROOT).stdout
    for name in filter(None, listed.split("\0")):
        if (REPO_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(source)])
    [built] = out.glob("pytest_sleepy-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with torch (the CPU build CI pins) and the wheel: its python."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0"])
    run([str(python), "-m", "pip", "install", "-q", str(wheel)])
    return python


def test_the_wheel_holds_every_subpackage_every_koan_and_every_strategy(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for init in (REPO_ROOT / "pytest_sleepy").rglob("__init__.py"):
        assert f"pytest_sleepy/{init.relative_to(REPO_ROOT / 'pytest_sleepy')}" in names
    for koan in load_corpus(REPO_ROOT / "koans"):
        assert f"pytest_sleepy_koans/{koan.path.relative_to(REPO_ROOT / 'koans')}" in names
    for extra in ("suites.toml", "proofs.json", "README.md"):
        assert f"pytest_sleepy_koans/{extra}" in names
    for strategy in (REPO_ROOT / "strategies").glob("[a-z]*.py"):
        assert f"pytest_sleepy_strategies/{strategy.name}" in names
    for template in (REPO_ROOT / "pytest_sleepy" / "results" / "templates").iterdir():
        assert f"pytest_sleepy/results/templates/{template.name}" in names


def test_the_installed_wheel_collects_the_newest_eval_suite_from_an_empty_directory(installed, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    listed = run([str(installed), "-m", "pytest", "--pyargs", "pytest_sleepy_koans", "--collect-only", "-q",
                  "-p", "no:cacheprovider"], cwd=empty)
    eval_v2 = sum(1 for k in load_corpus(REPO_ROOT / "koans") if k.split == "eval")
    assert f"{eval_v2} tests collected" in listed.stdout
    assert "[baseline]" in listed.stdout


def test_the_installed_wheel_repairs_bundled_koans_with_its_bundled_strategies(installed, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([str(installed), "-m", "pytest", "--pyargs", "pytest_sleepy_koans", "-k", "bc_001 or bc_003",
                           "-p", "no:cacheprovider", "--strategy=baseline,hints", "--sleepy-html=report.html"],
                          cwd=empty,
                          capture_output=True, text=True)
    # rustfix repairs bc_001 and not bc_003, whichever strategy asks.
    assert "2 failed, 2 passed" in done.stdout, done.stdout[-3000:]
    assert "pass rates by strategy (suite eval-v2" in done.stdout
    assert not (empty / "koans").exists()
    assert 'class="page"' in (empty / "report.html").read_text()
