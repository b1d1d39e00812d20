"""pytest hooks: options, collection of koans, outcomes and the summary.

Only glue lives here; every decision is made by the plain modules it calls:
settings (options), benchmark (one process's run), results (aggregation, run file)
and report (tables).

Items: every koan file under the `sleepy_koans` folder (ini option, default `koans`,
else the koans installed with the package: `pytest --pyargs pytest_sleepy_koans`)
of the selected split yields one item per strategy (and per sample), named
`bc_001[baseline]` (`bc_001[baseline-2]` with `--sleepy-samples`), and marked
`family_<family>`, `pattern_<pattern>`, `split_<split>` and `strategy_<name>` for
`-m`. An item passes when the koan is repaired. Its `Outcome` rides in
`report.user_properties`, so the controller aggregates the same records with or
without xdist; `koan`, `strategy`, `steps`, `reason` and `regression` ride there too,
which `--junitxml` writes as the test case's properties. With `GITHUB_STEP_SUMMARY`
set (GitHub Actions), the Markdown report is appended to that file.
"""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from .benchmark import Benchmark, new_run_id
from .bundled import KOANS_PACKAGE, STRATEGIES_PACKAGE, bundled_dir, folder_or_bundled
from .extensions import ENTRY_POINT_GROUP, collect_extensions
from .results.comparison import KoanState, baseline_columns, koan_states, reference_for, suite_mismatch
from .corpus.suites import SuiteError
from .koans import Koan, KoanFileError, is_koan_file
from .models import ModelUnavailable
from .results.report import RunReport, build_report, render, report_dict
from .results.view import render_view, write_view
from .results import (ERROR, EpisodeFileError, Outcome, RunFile, RunFileError, column_name, read_episodes,
                      read_run_file, write_run_file)
from .verify.sandbox import SandboxUnavailable, ToolchainMissing
from .settings import OPTIONS, SettingsError, resolve_settings
from .strategies import StrategyError

OUTCOME_KEY = "sleepy_outcome"
OUTAGE_KEY = "sleepy_outage"  # an infrastructure problem hit this item; the session stops
INFRASTRUCTURE = (ModelUnavailable, SandboxUnavailable, ToolchainMissing)


def pytest_addoption(parser):
    group = parser.getgroup("sleepy", "pytest-sleepy koan benchmark")
    for option in OPTIONS:
        default = option.default if not isinstance(option.default, tuple) else ",".join(option.default)
        shown = "" if option.default is None or option.is_switch else f" (default: {default})"
        # argparse formats help texts with %: escape it.
        text = f"{option.help}{shown}".replace("%", "%%")
        if option.is_switch:
            group.addoption(option.flag, dest=option.dest, action="store_const", const=True, default=None, help=text)
        else:
            group.addoption(option.flag, dest=option.dest, default=None, help=text)
    group.addoption(
        "--sleepy-unsafe-no-sandbox",
        action="store_true",
        default=False,
        help="verify candidates without bubblewrap: model-written code then runs with your rights",
    )
    # Unset (""): ./koans and ./strategies, else those installed with the package (bundled.py).
    parser.addini("sleepy_koans", "folder of koan files, relative to the rootdir (default: koans, or the "
                  "koans installed with pytest-sleepy when there is none)", default="")
    parser.addini("sleepy_strategies", "folder of strategy files, relative to the rootdir (default: strategies, "
                  "or those installed with pytest-sleepy when there is none)", default="")


def pytest_addhooks(pluginmanager):
    from . import hookspec

    pluginmanager.add_hookspecs(hookspec)


def pytest_configure(config):
    config.addinivalue_line("markers", "family_NAME: koans of one family, e.g. -m family_borrow_checker")
    config.addinivalue_line("markers", "pattern_NAME, split_NAME, strategy_NAME: select koans by pattern, split, strategy")
    # Installed packages' hook implementations (hookspec.py), for pytest as for `sleepy`.
    config.pluginmanager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    config.pluginmanager.register(SleepyPlugin(config), "sleepy-benchmark")


class SleepyPlugin:
    """Per-process state; the benchmark itself is built when a koan is first met."""

    def __init__(self, config):
        self.config = config
        rootdir = Path(config.rootpath)
        # Without a koans (strategies) folder of its own, a project runs those that
        # ship with the package (bundled.py).
        koans, strategies = config.getini("sleepy_koans"), config.getini("sleepy_strategies")
        self.koans_dir = folder_or_bundled((rootdir / (koans or "koans")).resolve(), KOANS_PACKAGE, named=bool(koans))
        self.strategies_dir = folder_or_bundled((rootdir / (strategies or "strategies")).resolve(), STRATEGIES_PACKAGE,
                                                named=bool(strategies))
        pyproject = rootdir / "pyproject.toml"
        cli = {option.dest: config.getoption(option.dest) for option in OPTIONS}
        try:
            self.settings = resolve_settings(cli, pyproject, rootdir, Path(config.invocation_params.dir))
        except SettingsError as error:
            raise pytest.UsageError(str(error)) from None
        self.worker = hasattr(config, "workerinput")
        if self.worker:
            # The controller trained (or retrained) before the workers started; a
            # worker only loads, so --sleepy-retrain must not make each train again.
            self.settings = dataclasses.replace(self.settings, retrain=False)
        self.run_id = config.workerinput["sleepy_run_id"] if self.worker else new_run_id()
        if self.settings.html and not self.settings.episodes:
            # The view shows every attempt: keep them, one file per run, which every
            # worker derives from the shared run id.
            self.settings = dataclasses.replace(
                self.settings, episodes=self.settings.cache_dir / "episodes" / f"{self.run_id}.jsonl")
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        # One outcome per item (a rerun plugin reports an item twice: the last stands).
        self._outcomes: dict[tuple, Outcome] = {}
        self.other_failures = 0  # failed reports that are not koan items (the gate cannot forgive them)
        self._benchmark: Benchmark | None = None
        self._report: RunReport | None = None
        self.baseline: RunFile | None = None
        self.baseline_states: dict[str, dict[str, KoanState]] = {}
        self.baseline_order: list[str] = []
        if self.settings.baseline is not None:
            try:
                self.baseline = read_run_file(self.settings.baseline)
            except RunFileError as error:
                raise pytest.UsageError(f"--sleepy-baseline: {error}") from None
            if self.baseline.provenance.get("complete") is False:
                raise pytest.UsageError(f"--sleepy-baseline: {self.settings.baseline} is from a session that stopped "
                                        "early; it judged only some koans and cannot serve as a baseline")
            self.baseline_states = koan_states(self.baseline.outcomes)
            self.baseline_order = baseline_columns(self.baseline)
        # A wrong --strategy or --model is a usage error now, not one error per item;
        # without a strategies folder nothing is checked until a koan is collected.
        if self.strategies_dir.is_dir() or config.getoption("sleepy_strategy") is not None:
            self.benchmark
        if config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(_XdistHooks(self.run_id), "sleepy-xdist")

    @property
    def benchmark(self) -> Benchmark:
        if self._benchmark is None:
            try:
                self._benchmark = Benchmark(
                    self.settings, koans_dir=self.koans_dir, strategies_dir=self.strategies_dir, run_id=self.run_id,
                    unsafe_no_sandbox=self.config.getoption("sleepy_unsafe_no_sandbox"), rootdir=Path(self.config.rootpath),
                    extensions=collect_extensions(self.config.hook))
            except (StrategyError, ValueError) as error:
                raise pytest.UsageError(str(error)) from None
        return self._benchmark

    def selects_koans(self) -> bool:
        """Whether this session's arguments reach into the koans folder."""
        for arg in self.config.args:
            target = arg.split("::")[0]
            # --pyargs names packages (pytest_sleepy_koans): where they are installed.
            package = bundled_dir(target) if self.config.option.pyargs and target.isidentifier() else None
            path = package or Path(self.config.invocation_params.dir, target).resolve()
            if path == self.koans_dir or self.koans_dir in path.parents or path in self.koans_dir.parents:
                return True
        return False

    # -- collection -----------------------------------------------------------------

    def pytest_collect_file(self, file_path: Path, parent):
        if self.koans_dir in file_path.parents and is_koan_file(file_path, self.koans_dir):
            return KoanFile.from_parent(parent, path=file_path)
        return None

    # -- session start: stop once, up front, if the model or sandbox cannot work ----

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session):
        if self.worker or not self.selects_koans():
            return
        self.check_suite()
        if self.config.option.collectonly:
            return
        try:
            self.benchmark.preflight()
        except INFRASTRUCTURE as error:
            # A UsageError here is printed once, before xdist starts any worker.
            raise pytest.UsageError(f"pytest-sleepy: {error}") from None
        if any(s.needs_training for s in self.benchmark.strategies):
            # Train before any item (and any xdist worker) starts, where the terminal
            # shows the progress; workers then load the artifacts from the store.
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            say = reporter.write_line if reporter else print
            try:
                self.benchmark.train_strategies(say)
            except (ValueError, *INFRASTRUCTURE) as error:
                raise pytest.UsageError(f"pytest-sleepy: {error}") from None

    def check_suite(self) -> None:
        """The suite exists with every frozen koan intact, and is the baseline's."""
        if self.settings.split == "train":
            return
        try:
            suite = self.benchmark.suite
        except SuiteError as error:
            raise pytest.UsageError(f"pytest-sleepy: {error}") from None
        if self.baseline is not None and (mismatch := suite_mismatch(self.baseline.provenance, suite.record())):
            raise pytest.UsageError(f"--sleepy-baseline: {self.settings.baseline} {mismatch}")

    # -- outcomes and the summary (controller only) ---------------------------------

    def pytest_runtest_logreport(self, report):
        if self.worker:
            return
        outage = next((value for key, value in report.user_properties if key == OUTAGE_KEY), None)
        if outage is not None and (dsession := self.config.pluginmanager.get_plugin("dsession")) is not None:
            dsession.shouldstop = dsession.shouldstop or outage
        outcome = next((value for key, value in report.user_properties if key == OUTCOME_KEY), None)
        # user_properties ride on every phase's report; the call phase is the one.
        if outcome is not None and report.when == "call":
            record = Outcome.from_dict(outcome)
            self._outcomes[_item_key(record)] = record
        elif report.failed and outcome is None:
            self.other_failures += 1

    # -- baseline: what each item is measured against -------------------------------

    def reference(self, koan: Koan, strategy: str) -> tuple[KoanState | None, str]:
        """The baseline's state for this koan and strategy, and why it is not comparable
        ("" when it is)."""
        if self.baseline is None:
            return None, ""
        ref = reference_for(strategy, self.baseline_order)
        state = self.baseline_states.get(ref.baseline_strategy, {}).get(koan.id)
        if state is None:
            return None, "new since the baseline: not compared"
        if state.digest != koan.digest:
            return state, "changed since the baseline: not compared"
        return state, ""

    def baseline_xfail(self, koan: Koan, strategy: str):
        """Koans the baseline failed (or cannot judge) are expected to fail, not strictly:
        a failure is no regression, a repair shows as XPASS."""
        state, not_comparable = self.reference(koan, strategy)
        if self.baseline is None:
            return None
        if not_comparable:
            return pytest.mark.xfail(reason=not_comparable, strict=False)
        if state.passed == 0:
            return pytest.mark.xfail(reason=f"the baseline failed it too: {state.reason}", strict=False)
        return None

    def regressed(self, item: "KoanItem", outcome: Outcome) -> bool:
        """The baseline solved this koan (in some sample) and this item did not."""
        if outcome.solved or outcome.status == ERROR:
            return False
        state, not_comparable = self.reference(item.koan, item.column)
        return state is not None and not not_comparable and state.passed > 0

    def failure_text(self, item: "KoanItem", outcome: Outcome) -> str:
        if outcome.status == ERROR:
            return f"{item.name}: ERROR (not counted): {outcome.reason}"
        if self.regressed(item, outcome):
            state, _ = self.reference(item.koan, item.column)
            if state.total == 1 and self.settings.samples == 1:
                return (f"REGRESSION: {item.koan.id} solved by baseline (run {self.baseline.run_id}), "
                        f"now: {outcome.reason}")
            return (f"{item.name}: not repaired in this sample (the baseline solved {item.koan.id} in "
                    f"{state.passed}/{state.total} samples; the gate judges the koan's rate): {outcome.reason}")
        return f"{item.name}: not repaired: {outcome.reason}"

    # -- the report, the gate and the run file (controller only) --------------------

    def report(self) -> RunReport:
        if self._report is None:
            gated = self.baseline is not None or self.settings.fail_under is not None
            self._report = build_report(
                self.outcomes, self.provenance(), strategies=list(self.settings.strategy), model=self.settings.model,
                baseline=self.baseline, alpha=self.settings.alpha, gate=self.settings.gate if gated else None,
                fail_under=self.settings.fail_under)
            for added in self.config.hook.pytest_sleepy_summary_columns(config=self.config, summary=self._report.summary):
                self._report.columns.extend(added or [])
        return self._report

    def provenance(self) -> dict:
        if not hasattr(self, "_provenance"):
            self._provenance = self.benchmark.provenance(self.sorted_outcomes(), Path(self.config.rootpath), self.started)
        return self._provenance

    @property
    def outcomes(self) -> list[Outcome]:
        return list(self._outcomes.values())

    def sorted_outcomes(self) -> list[Outcome]:
        return sorted(self.outcomes, key=_item_key)

    def pytest_terminal_summary(self, terminalreporter):
        if self.worker or not self.outcomes:
            return
        terminalreporter.write_sep("=", "pytest-sleepy summary")
        terminalreporter.write_line(render(self.report(), "text", self.settings.matrix))
        replayed = sum(o.replayed for o in self.outcomes)
        if replayed:
            calls = sum(o.steps for o in self.outcomes)
            recorded = sum(o.replayed_seconds for o in self.outcomes)
            terminalreporter.write_line(
                f"{replayed} of {calls} model answers were replayed from {self.benchmark.completions.directory}: "
                f"model s/item counts live calls only; the replayed answers took {recorded:.1f} s when recorded")
        if self.settings.split != "eval":
            terminalreporter.write_line("note: train koans are training material (few-shot examples, adapters): pass "
                                        "rates on them measure recall of seen programs, not repair of new ones")
        if self.settings.temperature == 0 and self.settings.samples > 1:
            terminalreporter.write_line("note: greedy decoding (temperature 0) makes samples of one koan identical "
                                        "for a deterministic model; set --sleepy-temperature to vary them")
        if getattr(self, "stopped_early", False):
            terminalreporter.write_line("the session stopped early: the gate did not judge it, the run file is "
                                        "marked incomplete and no baseline was saved")
        for path in (self.settings.json, self.settings.save_baseline):
            if path and not (getattr(self, "stopped_early", False) and path == self.settings.save_baseline):
                terminalreporter.write_line(f"run file: {path}")
        if self.settings.html:
            terminalreporter.write_line(f"html view: {self.settings.html} (episodes: {self.settings.episodes})")
            if warning := getattr(self, "view_warning", ""):
                terminalreporter.write_line(f"warning: {warning}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session):
        if self.worker or not self.outcomes:
            return
        report = self.report()
        # A session cut short (-x, --maxfail, an outage, Ctrl-C) judged only some koans:
        # the gate must not pass it, and it must not become anyone's baseline.
        stopped = bool(session.shouldfail or session.shouldstop) or session.exitstatus == pytest.ExitCode.INTERRUPTED
        if report.gate is not None and not stopped:
            # With a gate, the gate decides: failures it forgives (regressions judged
            # not significant, koans below no floor) do not fail the session, and a
            # floor missed fails it even when every item passed.
            if not report.gate.passed:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
            elif session.exitstatus == pytest.ExitCode.TESTS_FAILED and self.other_failures == 0:
                session.exitstatus = pytest.ExitCode.OK
        elif report.gate is not None and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        self.stopped_early = stopped
        paths = [p for p in (self.settings.json, self.settings.save_baseline) if p]
        if stopped and self.settings.save_baseline:
            paths.remove(self.settings.save_baseline)
        if paths:
            data = report_dict(report)
            aggregates = {**data.pop("summary"), **data}
            provenance = {**self.provenance(), "complete": not stopped}
            run = RunFile(run_id=self.run_id, provenance=provenance, outcomes=self.sorted_outcomes(),
                          aggregates=aggregates)
            for path in paths:
                write_run_file(path, run, lambda data: self.config.hook.pytest_sleepy_update_run_file(
                    config=self.config, run=data))
        if self.settings.html:
            try:
                episodes = read_episodes(self.settings.episodes) if self.settings.episodes.is_file() else []
            except EpisodeFileError as error:
                # The run is done and judged: show it without the attempts rather than not at all.
                self.view_warning = f"the view shows no attempts: {error}"
                episodes = []
            write_view(self.settings.html, render_view(report, self.sorted_outcomes(), run_id=self.run_id,
                                                       episodes=episodes,
                                                       baseline_id=self.baseline.run_id if self.baseline else ""))
        # On GitHub Actions, the job's summary page gets the report as Markdown.
        if summary := os.environ.get("GITHUB_STEP_SUMMARY"):
            with open(summary, "a", encoding="utf-8") as handle:
                handle.write(render(report, "markdown", self.settings.matrix) + "\n")


@pytest.fixture(scope="session")
def sleepy_benchmark(request):
    """This session's Benchmark with every selected strategy's artifacts trained (or
    loaded from the artifact store): for a project's own tests of its strategies, e.g.
    `sleepy_benchmark.strategy("lora")` or `sleepy_benchmark.run(koan, "lora", 0)`."""
    plugin: SleepyPlugin = request.config.pluginmanager.get_plugin("sleepy-benchmark")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    plugin.benchmark.train_strategies(reporter.write_line if reporter else print)
    return plugin.benchmark


def _item_key(outcome: Outcome) -> tuple:
    return outcome.strategy, outcome.variant, outcome.koan, outcome.sample


class _XdistHooks:
    """Hands the controller's run id to every worker, so episodes share one run id."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def pytest_configure_node(self, node):
        node.workerinput["sleepy_run_id"] = self.run_id


class KoanFile(pytest.File):
    def collect(self):
        plugin: SleepyPlugin = self.config.pluginmanager.get_plugin("sleepy-benchmark")
        benchmark = plugin.benchmark
        koan = benchmark.load_koan(self.path)
        if not benchmark.collects(koan):
            return
        samples = benchmark.settings.samples
        for strategy in benchmark.strategies:
            for variant, sample in ((v, n) for v in strategy.variants() for n in range(samples)):
                label = f"{strategy.name}@{variant}" if variant else strategy.name
                name = f"{koan.id}[{label}]" if samples == 1 else f"{koan.id}[{label}-{sample}]"
                item = KoanItem.from_parent(self, name=name, koan=koan, strategy=strategy.name, sample=sample,
                                            variant=variant)
                for marker in (f"family_{koan.family}", f"pattern_{koan.pattern}", f"split_{koan.split}",
                               f"strategy_{strategy.name}"):
                    item.add_marker(_registered(self.config, marker))
                if koan.flagged:
                    item.add_marker(pytest.mark.skip(reason=f"flagged koan: {koan.flagged}"))
                elif (expected := plugin.baseline_xfail(koan, item.column)) is not None:
                    item.add_marker(expected)
                yield item

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, KoanFileError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


def _registered(config, name: str) -> str:
    # Markers made from koan metadata are registered as they appear, so that
    # --strict-markers accepts them.
    if not any(line.split(":")[0] == name for line in config.getini("markers")):
        config.addinivalue_line("markers", f"{name}: koan metadata")
    return name


class KoanNotRepaired(Exception):
    """The item's failure: the koan was not repaired (or the item errored)."""


class KoanItem(pytest.Item):
    def __init__(self, *, koan: Koan, strategy: str, sample: int, variant: str = "", **kwargs):
        super().__init__(**kwargs)
        self.koan, self.strategy, self.sample, self.variant = koan, strategy, sample, variant

    @property
    def column(self) -> str:
        """The strategy, or strategy:variant, as in outcomes and the forgetting matrix."""
        return column_name(self.strategy, self.variant)

    def runtest(self):
        plugin: SleepyPlugin = self.config.pluginmanager.get_plugin("sleepy-benchmark")
        try:
            outcome = plugin.benchmark.run(self.koan, self.strategy, self.sample, self.variant)
        except INFRASTRUCTURE as error:
            # Tells the xdist controller at once, so the other workers stop too.
            self.user_properties.append((OUTAGE_KEY, f"pytest-sleepy: {error}"))
            raise
        self.user_properties.append((OUTCOME_KEY, outcome.to_dict()))
        # What --junitxml shows of the koan, one property each.
        self.user_properties += [("koan", self.koan.id), ("strategy", self.column), ("steps", outcome.steps),
                                 ("reason", outcome.reason or "repaired"),
                                 ("regression", str(plugin.regressed(self, outcome)).lower())]
        if not outcome.solved:
            raise KoanNotRepaired(plugin.failure_text(self, outcome))

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, KoanNotRepaired):
            return str(excinfo.value)
        if isinstance(excinfo.value, INFRASTRUCTURE):
            # Not the koan's fault: stop here rather than fail every remaining item.
            self.session.shouldstop = f"pytest-sleepy: {excinfo.value}"
            return f"{self.name}: infrastructure problem, session stopped: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"koan {self.koan.id} with strategy {self.strategy}" + (
            f", sample {self.sample}" if self.plugin_samples > 1 else "")

    @property
    def plugin_samples(self) -> int:
        return self.config.pluginmanager.get_plugin("sleepy-benchmark").settings.samples
