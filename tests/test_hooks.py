"""Extension hooks (pytest_sleepy/hookspec.py), end to end with pytester: a conftest
or an installed package adds backends and strategies, amends the run file and adds
summary columns."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from pytest_sleepy.results import read_run_file

from conftest import REPO_ROOT

# A backend that answers with the program it was shown, unchanged: every koan fails,
# and each episode says so.
ECHO_BACKEND = '''
from pytest_sleepy.models import Completion


class EchoModel:
    def __init__(self, spec):
        self.spec = spec

    @property
    def identity(self):
        return "echo:" + self.spec.name

    def preflight(self):
        pass

    def complete(self, request):
        return Completion(text="```rust\\n" + request.code + "\\n```")


def pytest_sleepy_add_backends(backends):
    backends["echo"] = EchoModel
'''

TERSE_STRATEGY = '''
from pytest_sleepy.strategies import Strategy


class Terse(Strategy):
    name = "terse"
    description = "the baseline prompt, added by a conftest hook"


def pytest_sleepy_add_strategies(strategies):
    strategies["terse"] = Terse()
'''


def test_a_conftest_adds_a_model_backend(bench):
    bench.makeconftest(ECHO_BACKEND)
    result = bench.runpytest("--model=echo:v1", "--max-steps=1", "--sleepy-json=run.json")
    result.assert_outcomes(failed=4)
    outcomes = read_run_file(bench.path / "run.json").outcomes
    assert {o.model_identity for o in outcomes} == {"echo:v1"}
    assert all("unchanged" in o.reason for o in outcomes)


def test_an_unknown_backend_lists_the_added_ones(bench):
    bench.makeconftest(ECHO_BACKEND)
    result = bench.runpytest("--model=nosuch:v1")
    result.stderr.fnmatch_lines(["*unknown backend 'nosuch'*, echo:NAME*"])


def test_a_conftest_adds_a_strategy(bench):
    bench.makeconftest(TERSE_STRATEGY)
    result = bench.runpytest("--strategy=baseline,terse", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*bc_001.toml::bc_001[[]terse[]]"])
    bench.runpytest("--strategy=terse").assert_outcomes(passed=2, failed=2)


def test_a_strategy_added_under_a_folder_strategys_name_is_refused(bench):
    bench.makeconftest(TERSE_STRATEGY.replace('"terse"', '"baseline"'))
    result = bench.runpytest("--strategy=baseline")
    result.stderr.fnmatch_lines(["*strategy 'baseline' is defined twice: in *baseline.py and by a "
                                 "pytest_sleepy_add_strategies hook*"])


def test_a_hook_amends_the_run_file_before_it_is_written(bench):
    bench.makeconftest('''
        def pytest_sleepy_update_run_file(config, run):
            run["provenance"]["ci"] = {"job": "nightly", "koans": len(run["outcomes"])}
    ''')
    bench.runpytest("--sleepy-json=run.json")
    assert json.loads((bench.path / "run.json").read_text())["provenance"]["ci"] == {"job": "nightly", "koans": 4}


def test_a_hook_adds_a_column_to_the_summary(bench):
    bench.makeconftest('''
        def pytest_sleepy_summary_columns(config, summary):
            return [("koans x 10", {s.strategy: str(s.koans * 10) for s in summary.strategies})]
    ''')
    result = bench.runpytest()
    result.stdout.fnmatch_lines(["strategy *koans x 10", "baseline *40"])


def test_hooks_also_run_under_xdist(bench):
    bench.makeconftest(TERSE_STRATEGY)
    bench.runpytest("--strategy=terse", "-n", "2").assert_outcomes(passed=2, failed=2)


def installed_hooks(tmp_path):
    """A distribution on a path folder whose entry points name a hook module under
    `pytest_sleepy`, as `pip install` would leave it."""
    site = tmp_path / "site"
    (site / "terse_hooks").mkdir(parents=True)
    (site / "terse_hooks" / "__init__.py").write_text(TERSE_STRATEGY)
    info = site / "terse_hooks-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: terse-hooks\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[pytest_sleepy]\nterse = terse_hooks\n")
    return site


def test_an_installed_package_adds_a_strategy_to_pytest_through_the_entry_point_group(bench, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(installed_hooks(bench.path)))
    result = bench.runpytest_subprocess("--strategy=terse", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*bc_001.toml::bc_001[[]terse[]]", "4 tests collected*"])


def test_an_installed_package_adds_a_strategy_to_the_sleepy_command(tmp_path):
    site = installed_hooks(tmp_path)
    listed = subprocess.run([sys.executable, "-m", "pytest_sleepy.cli", "strategies",
                             "--strategies", str(REPO_ROOT / "strategies")],
                            capture_output=True, text=True, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert listed.returncode == 0, listed.stderr
    assert "terse" in listed.stdout and "added by a conftest hook" in listed.stdout
    assert "baseline" in listed.stdout


def test_two_implementations_adding_one_strategy_name_is_an_error(bench):
    bench.makeconftest(TERSE_STRATEGY)
    bench.makepyfile(terse_again=TERSE_STRATEGY)
    bench.syspathinsert()
    result = bench.runpytest("-p", "terse_again", "--strategy=terse")
    result.stderr.fnmatch_lines(["*'terse' is added twice, by * and by *(pytest_sleepy_add_strategies)*"])
