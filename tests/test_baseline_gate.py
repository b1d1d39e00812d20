"""Baselines and the regression gate, end to end with pytester.

The baseline is a real rustfix run of the `bench` corpus (bc_001 and tb_008 solved,
bc_003 and rh_001 not), one step per koan. The next run replays the recorded answers,
two of them altered: bc_001's answer now keeps the bug (a regression) and bc_003's is
the reference fix (a gain).
"""

from __future__ import annotations

import json
import tomllib

import pytest

from pytest_sleepy.results import read_run_file

from conftest import KOANS, REPO_ROOT

ONE_STEP = ["--max-steps=1", "-p", "no:randomly"]


def koan_source(koan: str) -> dict:
    return tomllib.loads((REPO_ROOT / "koans" / KOANS[koan] / f"{koan}.toml").read_text())


def alter_recorded_answer(project, koan: str, code: str) -> None:
    """Rewrite the recorded first-step answer for `koan` in the completion cache."""
    buggy = koan_source(koan)["buggy"]
    entries = [p for p in (project.path / ".sleepy" / "cache" / "completions").rglob("*.json")
               if json.loads(p.read_text())["request"]["code"] == buggy]
    assert entries, f"no recorded answer for {koan}"
    for entry in entries:
        record = json.loads(entry.read_text())
        record["completion"]["text"] = f"```rust\n{code}\n```"
        entry.write_text(json.dumps(record))


@pytest.fixture
def changed_run(bench):
    """A saved baseline, then one regression (bc_001) and one gain (bc_003) in the cache."""
    saved = bench.runpytest(*ONE_STEP, "--sleepy-save-baseline=base.json")
    saved.assert_outcomes(passed=2, failed=2)
    alter_recorded_answer(bench, "bc_001", koan_source("bc_001")["buggy"])
    alter_recorded_answer(bench, "bc_003", koan_source("bc_003")["fixed"])
    return bench


def test_a_saved_baseline_is_a_run_file(bench):
    bench.runpytest(*ONE_STEP, "--sleepy-save-baseline=base.json")
    baseline = read_run_file(bench.path / "base.json")
    assert {o.koan for o in baseline.outcomes if o.solved} == {"bc_001", "tb_008"}


def test_a_regression_fails_the_session_and_names_the_koan(changed_run):
    result = changed_run.runpytest(*ONE_STEP, "--sleepy-baseline=base.json", "-rX")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    run_id = read_run_file(changed_run.path / "base.json").run_id
    result.stdout.fnmatch_lines([f"*REGRESSION: bc_001 solved by baseline (run {run_id}), now: still E0382 after 1 step*"])
    result.assert_outcomes(passed=1, failed=1, xfailed=1, xpassed=1)


def test_gains_are_xpass_and_koans_the_baseline_failed_are_xfail(changed_run):
    result = changed_run.runpytest(*ONE_STEP, "--sleepy-baseline=base.json", "-rxX")
    result.stdout.fnmatch_lines([
        "XFAIL koans/result_handling/rh_001.toml::rh_001[[]baseline[]] - the baseline failed it too: *",
        "XPASS koans/borrow_checker/bc_003.toml::bc_003[[]baseline[]]*",
    ])
    result.stdout.fnmatch_lines(["*gain (XPASS) bc_003[[]baseline[]]: baseline failed, now solved*"])


def test_the_summary_compares_with_the_baseline_and_draws_the_changed_rows(changed_run):
    result = changed_run.runpytest(*ONE_STEP, "--sleepy-baseline=base.json")
    result.stdout.fnmatch_lines([
        "against the baseline run *",
        "strategy*baseline's*kept passing*kept failing*gains*losses*not compared*",
        "baseline*baseline*1*1*1*1*0*1*not significant*",
        "forgetting matrix: 2 koan(s) that changed*",
        "koan*baseline run: baseline*baseline",
        "bc_001*P*-",
        "bc_003*.*+",
        "regression gate: FAILED",
        "*FAIL: baseline: 1 regression(s), 1 gain(s) against the baseline's baseline (exact McNemar p = 1, not significant*gate: any)",
    ])


def test_the_significant_gate_forgives_noise_and_says_so(changed_run):
    result = changed_run.runpytest(*ONE_STEP, "--sleepy-baseline=base.json", "--sleepy-gate=significant")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([
        "regression gate: passed",
        "*ok: baseline: 1 regression(s), 1 gain(s) against the baseline's baseline (exact McNemar p = 1, not significant*",
    ])


def test_an_unchanged_run_passes_the_gate(bench):
    bench.runpytest(*ONE_STEP, "--sleepy-save-baseline=base.json")
    result = bench.runpytest(*ONE_STEP, "--sleepy-baseline=base.json")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=2, xfailed=2)


def test_a_strategy_missing_from_the_baseline_is_compared_with_its_baseline_strategy(bench):
    bench.runpytest(*ONE_STEP, "--sleepy-save-baseline=base.json")
    result = bench.runpytest(*ONE_STEP, "--strategy=hints", "--sleepy-baseline=base.json")
    result.stdout.fnmatch_lines(["*note: hints is not in the baseline run: compared with its 'baseline' strategy*"])
    assert result.ret == pytest.ExitCode.OK


def test_a_koan_changed_since_the_baseline_is_listed_apart_and_never_a_regression(bench):
    bench.runpytest(*ONE_STEP, "--sleepy-save-baseline=base.json")
    path = bench.path / "koans" / "borrow_checker" / "bc_001.toml"
    # The hidden tests gain a comment: the koan's content, and so its digest, changes.
    path.write_text(path.read_text().replace("tests = '''\n", "tests = '''\n// revised\n", 1))
    assert tomllib.loads(path.read_text())["tests"].startswith("// revised")
    result = bench.runpytest(*ONE_STEP, "--sleepy-baseline=base.json")
    result.stdout.fnmatch_lines([
        "WARNING: this run and the baseline differ beyond the strategies",
        "koan contents*1 koan(s) differ*bc_001",
        "*changed since the baseline: bc_001",
    ])
    assert "REGRESSION" not in result.stdout.str()


def test_provenance_mismatches_are_a_warning_table(bench):
    bench.runpytest(*ONE_STEP, "--sleepy-save-baseline=base.json")
    result = bench.runpytest("--max-steps=2", "--sleepy-baseline=base.json")
    result.stdout.fnmatch_lines(["WARNING: this run and the baseline differ beyond the strategies",
                                 "max-steps*1*2"])


def test_a_pass_rate_below_the_floor_fails_the_session(bench):
    result = bench.runpytest(*ONE_STEP, "--sleepy-fail-under=60%")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*FAIL: baseline: pass rate 50.0% < floor 60.0%"])


def test_a_pass_rate_above_the_floor_passes_even_with_failed_koans(bench):
    result = bench.runpytest(*ONE_STEP, "--sleepy-fail-under=0.5")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*ok: baseline: pass rate 50.0% >= floor 50.0%"])


def test_a_missing_baseline_file_is_a_usage_error_naming_it(bench):
    result = bench.runpytest("--sleepy-baseline=nowhere.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--sleepy-baseline: *nowhere.json: cannot read the run file*"])


def test_the_run_file_holds_the_matrix_the_comparison_and_the_gate(changed_run):
    changed_run.runpytest(*ONE_STEP, "--sleepy-baseline=base.json", "--sleepy-json=run.json")
    aggregates = read_run_file(changed_run.path / "run.json").aggregates
    assert aggregates["matrix"]["rows"]["bc_001"] == ["P", "-"]
    assert aggregates["matrix"]["rows"]["bc_003"] == [".", "+"]
    assert {(c["koan"], c["symbol"]) for c in aggregates["baseline"]["changes"]} >= {("bc_001", "-"), ("bc_003", "+")}
    assert aggregates["gate"]["passed"] is False


def test_with_samples_a_drop_that_is_not_significant_is_no_regression(bench):
    two = [*ONE_STEP, "--sleepy-samples=2", "-k", "bc_001 or bc_003"]
    bench.runpytest(*two, "--sleepy-save-baseline=base.json")
    alter_recorded_answer(bench, "bc_001", koan_source("bc_001")["buggy"])
    result = bench.runpytest(*two, "--sleepy-baseline=base.json")
    # bc_001 fell from 2/2 to 0/2 samples: one-sided Fisher p = 1/6, so no koan's change
    # can be significant; the matrix shows the loss, and the sign test over koans decides.
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([
        "*not repaired in this sample (the baseline solved bc_001 in 2/2 samples; the gate judges the koan's rate)*",
        "*note: baseline: with 2 samples per koan no single koan's change can be significant*",
        "*bc_001*P*-?*",
        "*ok: baseline: with 2 samples per koan*the paired sign test over koans decides: 1 koan(s) fell, 0 rose*",
    ])


def test_a_session_stopped_early_neither_passes_the_gate_nor_saves_a_baseline(bench):
    result = bench.runpytest(*ONE_STEP, "-x", "--sleepy-fail-under=0.01", "--sleepy-save-baseline=base.json",
                             "--sleepy-json=run.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*the session stopped early: the gate did not judge it*"])
    assert not (bench.path / "base.json").exists()
    assert read_run_file(bench.path / "run.json").provenance["complete"] is False


def test_an_incomplete_run_file_is_refused_as_a_baseline(bench):
    bench.runpytest(*ONE_STEP, "-x", "--sleepy-json=partial.json")
    result = bench.runpytest(*ONE_STEP, "--sleepy-baseline=partial.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*is from a session that stopped early*"])


# -- CI conventions ---------------------------------------------------------------------


def junit_properties(path) -> dict[str, dict[str, str]]:
    """test case name -> its properties, from a --junitxml file."""
    import xml.etree.ElementTree as ElementTree

    cases = ElementTree.parse(path).getroot().iter("testcase")
    return {case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")} for case in cases}


def test_junitxml_carries_each_koans_strategy_steps_reason_and_regression_flag(changed_run):
    changed_run.runpytest(*ONE_STEP, "--sleepy-baseline=base.json", "--junitxml=junit.xml")
    properties = junit_properties(changed_run.path / "junit.xml")
    lost, kept = properties["bc_001[baseline]"], properties["tb_008[baseline]"]
    assert (lost["koan"], lost["strategy"], lost["steps"], lost["regression"]) == ("bc_001", "baseline", "1", "true")
    assert lost["reason"] == "still E0382 after 1 step (step 1 unchanged)"
    assert (kept["regression"], kept["reason"]) == ("false", "repaired")


def test_junitxml_also_carries_the_properties_from_xdist_workers(changed_run):
    changed_run.runpytest(*ONE_STEP, "--sleepy-baseline=base.json", "--junitxml=junit.xml", "-n", "2")
    assert junit_properties(changed_run.path / "junit.xml")["bc_001[baseline]"]["regression"] == "true"


def test_github_step_summary_gets_the_markdown_report(changed_run, monkeypatch):
    summary = changed_run.path / "step-summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    changed_run.runpytest(*ONE_STEP, "--sleepy-baseline=base.json")
    text = summary.read_text()
    assert text.startswith("earlier step\n")
    assert "| strategy " in text and "| baseline " in text and "bc_001" in text
