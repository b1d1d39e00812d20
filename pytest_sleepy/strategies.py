"""Repair strategies: what the model is asked at each step, and with which adapter.

A strategy is one Python file in the strategies folder (ini option `sleepy_strategies`,
default `strategies/` next to the pytest rootdir). The file defines `STRATEGY`, an
instance of a `Strategy` subclass whose `name` is the file's stem. Adding a strategy is
adding a file: the plugin discovers it, `--strategy=NAME` selects it and
`sleepy strategies` lists it.

A strategy sees only what a user of the repaired program would: the current code and
its verdict (cleaned by `prompts.describe_verdict`), the earlier attempts, and, through
`prepare`, the `train` split of the corpus for examples. It never receives eval koans'
reference fixes or hidden tests.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .koans import Koan
from .models.base import Message
from .prompts import repair_messages
from .verify.verifier import Verdict

__all__ = ["Strategy", "StepView", "StrategyError", "load_strategies", "add_strategies", "known_strategies",
           "select_strategies", "Verify"]

Verify = Callable[[Koan, str], Verdict]


@dataclass(frozen=True)
class StepView:
    """Everything a strategy may look at when writing the prompt for one step."""

    step: int  # 1-based
    code: str  # the program as it stands (the buggy code at step 1)
    verdict: Verdict  # the verifier's verdict on `code`
    previous_answers: tuple[str, ...] = ()  # raw model answers of earlier steps
    variant: str = ""  # which configuration of the strategy this item evaluates (see Strategy.variants)
    original: str = ""  # the koan's buggy code as step 1 showed it (lets a strategy skip the koan itself)
    history: tuple = ()  # earlier steps shown as chat turns (prompts.PastAttempt), per --sleepy-history
    note: str = ""  # what happened to the previous answer, when the model must hear it (prompts.repair_messages)


class Strategy:
    """Base class; subclasses set `name` and `description` and may override the rest."""

    name: str = ""
    description: str = ""  # one line, shown by `sleepy strategies`
    max_steps: int | None = None  # None: use --max-steps

    def prepare(self, train_koans: Sequence[Koan], verify: Verify) -> None:
        """Called once per session, before any step, with the `train` split only."""

    def messages(self, view: StepView) -> tuple[Message, ...]:
        return repair_messages(view.code, view.verdict, history=view.history, note=view.note)

    def adapter(self, view: StepView) -> str | None:
        """The adapter to apply for this step (None: the base model)."""
        return None

    def route(self, view: StepView) -> str | None:
        """For routed strategies: the pattern the router chose for this step ("" when
        it chose none, so the base model answers); None for strategies that do not
        route. Recorded in episodes and in the router's confusion table."""
        return None

    def plan(self, train_koans) -> None:
        """Called once per process, before collection, with the train split: lets a
        strategy decide its variants (e.g. one per training stage)."""

    def variants(self) -> list[str]:
        """The configurations this strategy evaluates, one pytest item each per koan
        (e.g. the stages of a sequential learner); [""] for a single one."""
        return [""]

    def stage_of(self, variant: str) -> int | None:
        """The training stage a variant evaluates (0 = untrained), for continual-learning
        metrics; None when the strategy has no stages."""
        return None

    def curriculum(self) -> dict | None:
        """The stages' pattern groups, `{"order": [...], "groups": {...}}`
        (pytest_sleepy/results/continual.py), or None."""
        return None

    # Strategies that need trained artifacts (adapters, Share bases) set this and
    # implement train(); the benchmark calls it once per process, after prepare(),
    # and the artifact store makes every call after the first a cache hit.
    needs_training: bool = False

    def train(self, context) -> None:
        """Build or load this strategy's artifacts through `context`
        (pytest_sleepy.training.context.TrainingContext)."""

    def definition(self) -> dict:
        """What the run file records about this strategy, so a run can be traced to
        the exact code that produced its prompts."""
        source = inspect.getsourcefile(type(self))
        digest = hashlib.sha256(Path(source).read_bytes()).hexdigest() if source else ""
        return {"name": self.name, "description": self.description, "max_steps": self.max_steps,
                "source": source and Path(source).name, "sha256": digest}


class StrategyError(Exception):
    """A strategy file or name is wrong; the message names the file or lists the known names."""


def load_strategies(directory: Path) -> dict[str, Strategy]:
    """Import every `*.py` in `directory` (files starting with `_` are helpers)."""
    if not directory.is_dir():
        raise StrategyError(f"strategies folder {directory} does not exist; create it, or point the "
                            "`sleepy_strategies` ini option (pytest) or --strategies (sleepy command) at the "
                            "folder holding strategy files")
    strategies: dict[str, Strategy] = {}
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        module_name = f"sleepy_strategy_{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        # Registered before running it: dataclasses and pickling look modules up by name.
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            raise StrategyError(f"{path}: cannot import the strategy: {type(error).__name__}: {error}") from error
        strategy = getattr(module, "STRATEGY", None)
        if not isinstance(strategy, Strategy):
            raise StrategyError(f"{path}: define STRATEGY = <an instance of pytest_sleepy.strategies.Strategy>")
        if strategy.name != path.stem:
            raise StrategyError(f"{path}: STRATEGY.name is {strategy.name!r}; it must be the file's name, {path.stem!r}")
        if not strategy.description:
            raise StrategyError(f"{path}: STRATEGY.description is empty; give it a one-line description")
        strategies[strategy.name] = strategy
    return strategies


def add_strategies(folder: dict[str, Strategy], added: dict, directory: Path) -> dict[str, Strategy]:
    """The strategies of the folder and those hooks added (hookspec.py); a name taken
    twice, or an added object that is not a described Strategy, is a StrategyError."""
    found = dict(folder)
    for name, strategy in added.items():
        if not isinstance(strategy, Strategy) or strategy.name != name or not strategy.description:
            raise StrategyError(f"a pytest_sleepy_add_strategies hook added {name!r} as {strategy!r}: add "
                                "strategies[s.name] = s for an instance of pytest_sleepy.strategies.Strategy "
                                "with a description")
        if name in found:
            raise StrategyError(f"strategy {name!r} is defined twice: in {directory / (name + '.py')} and by a "
                                "pytest_sleepy_add_strategies hook; rename one")
        found[name] = strategy
    return found


def known_strategies(directory: Path, added: dict) -> dict[str, Strategy]:
    """The strategies folder's and those hooks added; with added strategies the folder
    may be missing."""
    folder = load_strategies(directory) if directory.is_dir() or not added else {}
    return add_strategies(folder, added, directory)


def select_strategies(known: dict[str, Strategy], names: Sequence[str]) -> list[Strategy]:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise StrategyError(f"--strategy: unknown strategy {', '.join(map(repr, unknown))}; "
                            f"known: {', '.join(sorted(known)) or 'none'}")
    return [known[n] for n in names]
