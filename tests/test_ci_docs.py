"""docs/ci.md: its GitHub Actions workflow parses and has what the page promises."""

from __future__ import annotations

import re

import yaml

from conftest import REPO_ROOT
from pytest_sleepy.settings import OPTIONS

PAGE = (REPO_ROOT / "docs" / "ci.md").read_text()


def workflow() -> dict:
    [block] = re.findall(r"```yaml\n(.*?)```", PAGE, re.DOTALL)
    return yaml.safe_load(block)


def steps() -> list[dict]:
    [job] = workflow()["jobs"].values()
    return job["steps"]


def test_the_workflow_is_yaml_with_triggers_a_runner_and_steps():
    parsed = workflow()
    # YAML 1.1 reads the bare key `on` as True.
    assert "pull_request" in parsed[True]
    [job] = parsed["jobs"].values()
    assert job["runs-on"] and all("uses" in step or "run" in step for step in job["steps"])


def test_the_workflow_installs_bubblewrap_and_caches_the_completion_cache():
    runs = "\n".join(step.get("run", "") for step in steps())
    assert "apt-get install -y bubblewrap" in runs
    cache = next(step for step in steps() if step.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == ".sleepy/cache/completions"


def test_the_workflow_runs_against_a_baseline_and_uploads_the_report_the_run_and_junit():
    benchmark = next(step["run"] for step in steps() if step.get("run", "").startswith("pytest"))
    assert "--sleepy-baseline=" in benchmark and "--junitxml=junit.xml" in benchmark
    assert "--sleepy-html=report.html" in benchmark
    upload = next(step for step in steps() if step.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()"
    assert set(upload["with"]["path"].split()) == {"report.html", "run.json", "junit.xml"}


def test_every_option_the_page_names_exists():
    known = {option.flag for option in OPTIONS}
    named = set(re.findall(r"--sleepy-[a-z-]+", PAGE))
    assert named and named <= known, named - known
