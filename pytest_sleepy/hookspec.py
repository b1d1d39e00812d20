"""Hooks that extend pytest-sleepy, the pytest way.

Implement them in a `conftest.py`, in a pytest plugin, or in an installed package that
names a module of hook implementations under the entry-point group `pytest_sleepy`
(which the `sleepy` command reads too, for the strategies: it loads no model)::

    [project.entry-points.pytest_sleepy]
    mybackends = "mypackage.sleepy_hooks"

Like `pytest_benchmark_update_json` in pytest-benchmark, each hook receives what it
may change and changes it in place, or returns what it adds.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("pytest")


@hookspec
def pytest_sleepy_add_backends(backends: dict) -> None:
    """Add model backends: `backends["name"] = factory`, where `factory(spec)` takes a
    `pytest_sleepy.models.ModelSpec` and returns a `pytest_sleepy.models.Model`. Then
    `--model=name:MODEL?key=value` builds one. A built-in backend's name, or a name
    another implementation added, is an error."""


@hookspec
def pytest_sleepy_add_strategies(strategies: dict) -> None:
    """Add strategies: `strategies[strategy.name] = strategy`, each an instance of
    `pytest_sleepy.strategies.Strategy`, beside those of the strategies folder. A name
    may be taken once: a name the folder or another implementation has is an error."""


@hookspec
def pytest_sleepy_update_run_file(config, run: dict) -> None:
    """Amend the run file in place just before it is written (`--sleepy-json`,
    `--sleepy-save-baseline`): `run` is its JSON object (`format`, `run_id`,
    `provenance`, `outcomes`, `aggregates`). Add keys rather than change the counted
    ones: `sleepy report` and baselines read the file back."""


@hookspec
def pytest_sleepy_summary_columns(config, summary) -> list[tuple[str, dict[str, str]]]:
    """Columns to add to the pass-rate table of the summary, from the `RunSummary`:
    a list of `(header, {strategy: cell text})`; a strategy missing from the dict shows
    "-"."""
