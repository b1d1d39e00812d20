"""What hook implementations add (hookspec.py): model backends and strategies.

The pytest plugin asks its own plugin manager (conftest files, pytest plugins and the
`pytest_sleepy` entry-point group); the `sleepy` command builds a plugin manager of the
entry-point group alone, and uses its strategies (no command loads a model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pluggy

from . import hookspec

__all__ = ["Extensions", "ENTRY_POINT_GROUP", "collect_extensions", "command_line_extensions"]

ENTRY_POINT_GROUP = "pytest_sleepy"


@dataclass
class Extensions:
    backends: dict[str, Callable] = field(default_factory=dict)  # backend name -> factory(ModelSpec) -> Model
    strategies: dict = field(default_factory=dict)  # name -> Strategy


def collect_extensions(hook) -> Extensions:
    """Ask every implementation of the add hooks of `hook` (a plugin manager's `.hook`),
    each with a dict of its own, so that two adding one name is an error, not a silent
    replacement."""
    return Extensions(backends=_gather(hook.pytest_sleepy_add_backends, "backends"),
                      strategies=_gather(hook.pytest_sleepy_add_strategies, "strategies"))


def _gather(caller, argument: str) -> dict:
    found: dict = {}
    by: dict[str, str] = {}
    for implementation in caller.get_hookimpls():
        added: dict = {}
        implementation.function(**{argument: added})
        for name in added:
            if name in found:
                raise ValueError(f"{name!r} is added twice, by {by[name]} and by {implementation.plugin_name} "
                                 f"(pytest_sleepy_add_{argument}): give one another name")
            by[name] = implementation.plugin_name
        found.update(added)
    return found


class _CommandLineHooks(pluggy.PluginManager):
    """Takes `pytest_sleepy_*` functions as hook implementations without a marker, as
    pytest's own plugin manager does."""

    def parse_hookimpl_opts(self, plugin, name: str):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("pytest_sleepy_") and callable(getattr(plugin, name, None)):
            return {}
        return opts


def command_line_extensions() -> Extensions:
    """The extensions of installed packages, for the `sleepy` command."""
    manager = _CommandLineHooks("pytest")
    manager.add_hookspecs(hookspec)
    manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    return collect_extensions(manager.hook)
