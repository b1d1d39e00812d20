"""Specification of outcome aggregation (RunSummary), episode logs and run files.

Reference interval values are hard-coded from scipy 1.17 (not imported here):
`binomtest(k, n).proportion_ci(method="wilson")` for whole successes, and for
fractional successes the roots of the Wilson score equation found with
scipy.optimize.brentq. McNemar p-values are scipy `binomtest(g, g + l, 0.5).pvalue`.
"""

from __future__ import annotations

import json
import multiprocessing
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_sleepy.results import (
    RUN_FORMAT,
    EpisodeLog,
    Outcome,
    RunFile,
    RunFileError,
    RunSummary,
    read_episodes,
    read_run_file,
    write_run_file,
)


def outcome(koan: str, strategy: str = "A", status: str = "passed", sample: int = 0, **fields) -> Outcome:
    base = dict(koan=koan, strategy=strategy, sample=sample, seed=sample, status=status,
                reason="" if status == "passed" else f"{status}: because", family="borrow")
    return Outcome(**(base | fields))


def solved_pattern(strategy: str, pattern: str, **fields) -> list[Outcome]:
    """One sample per koan k0, k1, ...: '1' passed, '0' failed."""
    return [outcome(f"k{i}", strategy, "passed" if mark == "1" else "failed", **fields) for i, mark in enumerate(pattern)]


def only(summary: RunSummary, name: str):
    (found,) = [s for s in summary.strategies if s.strategy == name]
    return found


# --- RunSummary: one strategy, one sample ----------------------------------------------


def test_pass_rate_is_solved_koans_over_koans():
    summary = RunSummary.from_outcomes(solved_pattern("A", "1101"))
    a = only(summary, "A")
    assert (a.koans, a.solved, a.rate) == (4, 3, 0.75)


def test_pass_rate_carries_the_wilson_95_percent_bounds():
    a = only(RunSummary.from_outcomes(solved_pattern("A", "1101")), "A")
    # scipy binomtest(3, 4).proportion_ci(method="wilson")
    assert (a.low, a.high) == pytest.approx((0.30064184258240184, 0.9544127391902995), abs=1e-12)


def test_samples_is_one_for_a_single_sample_run():
    assert only(RunSummary.from_outcomes(solved_pattern("A", "10")), "A").samples == 1


def test_median_steps_counts_solved_items_only():
    outcomes = [
        outcome("k0", steps=1), outcome("k1", steps=3), outcome("k2", steps=5),
        outcome("k3", status="failed", steps=9), outcome("k4", status="failed", steps=9),
    ]
    assert only(RunSummary.from_outcomes(outcomes), "A").median_steps == 3


def test_median_steps_is_none_when_nothing_is_solved():
    assert only(RunSummary.from_outcomes(solved_pattern("A", "000")), "A").median_steps is None


def test_mean_times_average_every_counted_item():
    outcomes = [
        outcome("k0", model_seconds=1.0, verify_seconds=0.5),
        outcome("k1", status="failed", model_seconds=3.0, verify_seconds=1.5),
    ]
    a = only(RunSummary.from_outcomes(outcomes), "A")
    assert (a.mean_model_seconds, a.mean_verify_seconds) == pytest.approx((2.0, 1.0))


def test_families_table_holds_solved_and_koans_per_strategy():
    outcomes = [
        outcome("k0", "A", family="borrow"), outcome("k1", "A", "failed", family="borrow"),
        outcome("k2", "A", family="traits"),
        outcome("k0", "B", "failed", family="borrow"), outcome("k1", "B", family="borrow"),
        outcome("k2", "B", "failed", family="traits"),
    ]
    summary = RunSummary.from_outcomes(outcomes, order=["A", "B"])
    assert summary.families == {
        "borrow": {"A": (1.0, 2), "B": (1.0, 2)},
        "traits": {"A": (1.0, 1), "B": (0.0, 1)},
    }


def test_families_are_sorted_by_name():
    outcomes = [outcome("k0", family="zeta"), outcome("k1", family="alpha"), outcome("k2", family="mu")]
    assert list(RunSummary.from_outcomes(outcomes).families) == ["alpha", "mu", "zeta"]


# --- RunSummary: errors -----------------------------------------------------------------


def test_error_outcomes_are_not_counted_in_the_rate():
    outcomes = solved_pattern("A", "10") + [outcome("k2", status="error", reason="replay cache miss")]
    a = only(RunSummary.from_outcomes(outcomes), "A")
    assert (a.koans, a.solved, a.rate) == (2, 1, 0.5)


def test_error_outcomes_are_listed_in_the_summary():
    error = outcome("k2", status="error", reason="replay cache miss")
    summary = RunSummary.from_outcomes(solved_pattern("A", "10") + [error])
    assert summary.errors == [error]


def test_error_outcomes_are_counted_per_strategy():
    outcomes = solved_pattern("A", "1") + solved_pattern("B", "1") + [
        outcome("k1", "A", "error"), outcome("k2", "A", "error"), outcome("k1", "B", "error")]
    summary = RunSummary.from_outcomes(outcomes)
    assert (only(summary, "A").errors, only(summary, "B").errors) == (2, 1)


def test_error_outcomes_do_not_enter_the_mean_times():
    outcomes = [outcome("k0", model_seconds=2.0), outcome("k1", status="error", model_seconds=100.0)]
    assert only(RunSummary.from_outcomes(outcomes), "A").mean_model_seconds == 2.0


def test_error_outcomes_do_not_enter_the_families_table():
    outcomes = [outcome("k0", family="borrow"), outcome("k1", status="error", family="traits")]
    assert RunSummary.from_outcomes(outcomes).families == {"borrow": {"A": (1.0, 1)}}


# --- RunSummary: strategy order and comparisons --------------------------------------------


def test_strategies_follow_the_given_order_then_the_rest_sorted():
    outcomes = [outcome("k0", name) for name in ("delta", "alpha", "charlie", "bravo")]
    summary = RunSummary.from_outcomes(outcomes, order=["charlie", "alpha"])
    assert [s.strategy for s in summary.strategies] == ["charlie", "alpha", "bravo", "delta"]


def test_each_later_strategy_is_compared_with_the_first_in_the_given_order():
    outcomes = solved_pattern("A", "10") + solved_pattern("B", "01") + solved_pattern("C", "11")
    summary = RunSummary.from_outcomes(outcomes, order=["B", "A", "C"])
    assert [(c.strategy, c.reference) for c in summary.comparisons] == [("A", "B"), ("C", "B")]


def test_comparison_lists_gained_and_lost_koans():
    reference = solved_pattern("A", "110010")
    other = solved_pattern("B", "011011")
    (comparison,) = RunSummary.from_outcomes(reference + other, order=["A", "B"]).comparisons
    assert (comparison.gains, comparison.losses) == (["k2", "k5"], ["k0"])


def test_comparison_p_value_is_the_exact_mcnemar_test_on_gains_and_losses():
    reference = solved_pattern("A", "1" + "0" * 9)
    other = solved_pattern("B", "0" + "1" * 9)  # 9 gains, 1 loss
    (comparison,) = RunSummary.from_outcomes(reference + other, order=["A", "B"]).comparisons
    assert comparison.p_value == pytest.approx(0.021484375, rel=1e-12)  # scipy binomtest(9, 10, 0.5)


def test_comparison_p_value_does_not_depend_on_which_strategy_gains():
    ab = RunSummary.from_outcomes(solved_pattern("A", "1" * 6) + solved_pattern("B", "0" * 6), order=["A", "B"])
    ba = RunSummary.from_outcomes(solved_pattern("A", "1" * 6) + solved_pattern("B", "0" * 6), order=["B", "A"])
    assert ab.comparisons[0].p_value == ba.comparisons[0].p_value == pytest.approx(0.03125)  # scipy binomtest(6, 6)


def test_comparison_is_significant_below_five_percent():
    six_gains = RunSummary.from_outcomes(solved_pattern("A", "0" * 6) + solved_pattern("B", "1" * 6), order=["A", "B"])
    five_gains = RunSummary.from_outcomes(solved_pattern("A", "0" * 5) + solved_pattern("B", "1" * 5), order=["A", "B"])
    assert six_gains.comparisons[0].significant  # p = 0.03125
    assert not five_gains.comparisons[0].significant  # p = 0.0625


def test_comparison_covers_only_koans_both_strategies_ran():
    reference = solved_pattern("A", "00")
    other = solved_pattern("B", "1111")  # k2, k3 only in B
    (comparison,) = RunSummary.from_outcomes(reference + other, order=["A", "B"]).comparisons
    assert (comparison.gains, comparison.losses, comparison.p_value) == (["k0", "k1"], [], 0.5)


def test_a_single_strategy_has_no_comparisons():
    assert RunSummary.from_outcomes(solved_pattern("A", "10")).comparisons == []


# --- RunSummary: several samples per koan ------------------------------------------------


def sampled(strategy: str, per_koan: dict[str, str]) -> list[Outcome]:
    """per_koan: koan -> '101' (sample i passed when mark i is '1')."""
    return [outcome(koan, strategy, "passed" if mark == "1" else "failed", sample=i)
            for koan, marks in per_koan.items() for i, mark in enumerate(marks)]


def test_several_samples_average_per_koan_rates():
    a = only(RunSummary.from_outcomes(sampled("A", {"k0": "110", "k1": "000", "k2": "111"})), "A")
    assert (a.koans, a.samples) == (3, 3)
    assert (a.solved, a.rate) == pytest.approx((5 / 3, 5 / 9))


def test_several_samples_interval_counts_koans_not_samples():
    a = only(RunSummary.from_outcomes(sampled("A", {"k0": "110", "k1": "000", "k2": "111"})), "A")
    # Wilson at 5/3 successes in 3 trials (brentq on the score equation); counting the 9
    # samples instead would give the narrower (0.2667, 0.8112) of binomtest(5, 9).
    assert (a.low, a.high) == pytest.approx((0.15071127201950407, 0.8980112800077131), abs=1e-12)


def test_several_samples_comparison_is_a_sign_test_on_per_koan_rates():
    reference = sampled("A", {"k0": "100", "k1": "110", "k2": "000"})
    other = sampled("B", {"k0": "110", "k1": "100", "k2": "000"})
    (comparison,) = RunSummary.from_outcomes(reference + other, order=["A", "B"]).comparisons
    assert (comparison.gains, comparison.losses, comparison.p_value) == (["k0"], ["k1"], 1.0)


def test_pass_at_k_is_absent_with_one_sample():
    assert only(RunSummary.from_outcomes(solved_pattern("A", "101")), "A").pass_at == {}


def test_pass_at_k_is_absent_when_any_koan_has_a_single_sample():
    a = only(RunSummary.from_outcomes(sampled("A", {"k0": "110", "k1": "1"})), "A")
    assert a.pass_at == {}


def test_pass_at_k_is_averaged_over_koans_for_one_and_the_sample_count():
    a = only(RunSummary.from_outcomes(sampled("A", {"k0": "100", "k1": "000", "k2": "111"})), "A")
    # pass@1 = mean(1/3, 0, 1); pass@3 with 3 samples = mean(1, 0, 1)
    assert a.pass_at == pytest.approx({1: 4 / 9, 3: 2 / 3})


@pytest.mark.parametrize("samples, ks", [(2, [1, 2]), (5, [1, 5]), (7, [1, 5, 7]), (10, [1, 5, 10]), (12, [1, 5, 10, 12])])
def test_pass_at_k_reports_k_of_one_five_ten_and_the_fewest_samples(samples, ks):
    a = only(RunSummary.from_outcomes(sampled("A", {"k0": "1" + "0" * (samples - 1)})), "A")
    assert sorted(a.pass_at) == ks


def test_summary_to_dict_is_json_serialisable():
    outcomes = solved_pattern("A", "10") + solved_pattern("B", "11") + [outcome("k9", "B", "error")]
    data = RunSummary.from_outcomes(outcomes, order=["A", "B"]).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["comparisons"][0]["significant"] is False
    assert data["families"]["borrow"]["B"] == {"solved": 2.0, "koans": 2}


# --- EpisodeLog ------------------------------------------------------------------------------


def test_episode_log_reads_back_appended_records_in_order(tmp_path):
    log = EpisodeLog(tmp_path / "episodes.jsonl")
    records = [{"koan": "k0", "step": 1}, {"koan": "k1", "text": "naïve ✓\nmultiline"}]
    for record in records:
        log.append(record)
    assert read_episodes(log.path) == records


def test_episode_log_writes_one_line_per_record(tmp_path):
    log = EpisodeLog(tmp_path / "episodes.jsonl")
    log.append({"text": "a\nb"})
    log.append({"text": "c"})
    assert len((tmp_path / "episodes.jsonl").read_text(encoding="utf-8").splitlines()) == 2


def test_episode_log_creates_missing_parent_folders(tmp_path):
    log = EpisodeLog(tmp_path / "deep" / "er" / "episodes.jsonl")
    log.append({"ok": True})
    assert read_episodes(log.path) == [{"ok": True}]


def test_episode_log_appends_to_an_existing_file(tmp_path):
    EpisodeLog(tmp_path / "e.jsonl").append({"run": 1})
    EpisodeLog(tmp_path / "e.jsonl").append({"run": 2})
    assert read_episodes(tmp_path / "e.jsonl") == [{"run": 1}, {"run": 2}]


WRITERS, RECORDS_PER_WRITER, RECORD_SIZE = 4, 50, 100_000


def _append_many(path: str, writer: int) -> None:
    log = EpisodeLog(path)
    for index in range(RECORDS_PER_WRITER):
        log.append({"writer": writer, "index": index, "payload": str(writer) * RECORD_SIZE})


def test_concurrent_appends_from_several_processes_keep_every_line_whole(tmp_path):
    path = tmp_path / "episodes.jsonl"
    context = multiprocessing.get_context("spawn")  # no fork of a possibly threaded pytest worker
    processes = [context.Process(target=_append_many, args=(str(path), writer)) for writer in range(WRITERS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [process.exitcode for process in processes] == [0] * WRITERS

    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == WRITERS * RECORDS_PER_WRITER
    records = [json.loads(line) for line in lines]  # a torn line would not parse
    assert all(r["payload"] == str(r["writer"]) * RECORD_SIZE for r in records)
    assert sorted((r["writer"], r["index"]) for r in records) == [
        (w, i) for w in range(WRITERS) for i in range(RECORDS_PER_WRITER)]


# --- run files --------------------------------------------------------------------------------


def sample_run() -> RunFile:
    outcomes = solved_pattern("A", "10", model_identity="rustfix@1") + [outcome("k2", status="error", reason="cache miss")]
    return RunFile(
        run_id="run-123",
        provenance={"package": "0.1.0", "git": {"commit": "abc", "dirty": False}, "seeds": [0]},
        outcomes=outcomes,
        aggregates=RunSummary.from_outcomes(outcomes).to_dict(),
    )


def test_run_file_round_trips(tmp_path):
    run = sample_run()
    write_run_file(tmp_path / "run.json", run)
    assert read_run_file(tmp_path / "run.json") == run


def test_run_file_records_format_and_version(tmp_path):
    write_run_file(tmp_path / "run.json", sample_run())
    data = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    assert (data["format"], data["version"]) == (RUN_FORMAT, 1)


def test_run_file_writing_creates_folders_and_leaves_no_temporary_file(tmp_path):
    write_run_file(tmp_path / "out" / "run.json", sample_run())
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["run.json"]


def test_run_file_writing_replaces_an_existing_file(tmp_path):
    write_run_file(tmp_path / "run.json", sample_run())
    write_run_file(tmp_path / "run.json", replace(sample_run(), run_id="run-456"))
    assert read_run_file(tmp_path / "run.json").run_id == "run-456"


def written_run_data(tmp_path: Path) -> tuple[Path, dict]:
    path = tmp_path / "run.json"
    write_run_file(path, sample_run())
    return path, json.loads(path.read_text(encoding="utf-8"))


def test_run_file_error_is_a_value_error():
    assert issubclass(RunFileError, ValueError)


def test_missing_run_file_is_named(tmp_path):
    path = tmp_path / "absent.json"
    with pytest.raises(RunFileError, match="cannot read") as error:
        read_run_file(path)
    assert str(path) in str(error.value)


def test_run_file_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "run.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(RunFileError, match="not JSON") as error:
        read_run_file(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("content", ['{"format": "something-else", "version": 1}', "[1, 2]", "{}"],
                         ids=["other format", "not an object", "no format"])
def test_run_file_with_a_wrong_format_field_names_it(tmp_path, content):
    path = tmp_path / "run.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(RunFileError, match="field 'format'") as error:
        read_run_file(path)
    assert str(path) in str(error.value)


def test_run_file_with_a_wrong_version_names_the_field_and_the_version(tmp_path):
    path, data = written_run_data(tmp_path)
    path.write_text(json.dumps(data | {"version": 2}), encoding="utf-8")
    with pytest.raises(RunFileError, match="field 'version' is 2") as error:
        read_run_file(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("missing", ["run_id", "provenance", "outcomes", "aggregates"])
def test_run_file_with_a_missing_field_names_it(tmp_path, missing):
    path, data = written_run_data(tmp_path)
    del data[missing]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(RunFileError, match=f"missing field '{missing}'") as error:
        read_run_file(path)
    assert str(path) in str(error.value)


def test_run_file_with_a_malformed_outcome_names_the_outcomes_field(tmp_path):
    path, data = written_run_data(tmp_path)
    del data["outcomes"][0]["status"]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(RunFileError, match="field 'outcomes'") as error:
        read_run_file(path)
    assert str(path) in str(error.value)


def test_a_strategy_without_outcomes_gets_no_row_and_is_no_reference():
    from pytest_sleepy.results import Outcome, RunSummary

    items = [Outcome(koan="a", strategy="hints", sample=0, seed=0, status="passed", reason="")]
    summary = RunSummary.from_outcomes(items, ["baseline", "hints"])
    assert [s.strategy for s in summary.strategies] == ["hints"]
    assert summary.comparisons == []


def test_the_modules_moved_into_results_keep_every_old_import():
    """pytest_sleepy.comparison and the others are the moved modules themselves, so
    names outside `__all__` import as before."""
    from pytest_sleepy.comparison import suite_mismatch
    from pytest_sleepy.report import POWER_NOTE
    from pytest_sleepy.results import comparison, report

    assert suite_mismatch is comparison.suite_mismatch and POWER_NOTE == report.POWER_NOTE


@pytest.mark.parametrize(("old", "new"), [
    ("diagnostics", "verify"), ("rustlex", "verify"), ("seccomp", "verify"), ("verifier", "verify"),
    ("tamper", "verify"), ("sandbox", "verify"), ("variants", "corpus"), ("importers", "corpus"),
    ("validation", "corpus"), ("comparison", "results"), ("continual", "results"), ("report", "results"),
    ("heatmap", "results"),
])
def test_every_moved_module_is_its_new_self_under_its_old_name(old, new):
    import importlib

    assert importlib.import_module(f"pytest_sleepy.{old}") is importlib.import_module(f"pytest_sleepy.{new}.{old}")
