"""Rescoring a run (rescore.py): recorded candidates re-verified by the real sandboxed
verifier, without a model. Runs, outcomes and episodes are fabricated as a run with a
buggy verifier might have recorded them."""

from __future__ import annotations

import textwrap
from datetime import datetime

import pytest

from pytest_sleepy import verifier as verifier_module
from pytest_sleepy.rescore import EpisodeFileError, read_episodes, rescore_run
from pytest_sleepy.results import Outcome, RunFile, RunSummary, read_run_file, write_run_file

from conftest import BUGGY_SHOP, FIXED_SHOP, make_koan

RUN_ID = "20240101T000000Z-abcdef01"
OLD_RUSTC = "rustc 1.70.0 (90c541806 2023-05-31)\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\n"
# Compiles, but counts the items instead of summing their prices.
WRONG_SHOP = textwrap.dedent(
    """
    pub fn total(items: Vec<u32>) -> u32 {
        items.len() as u32
    }
    """
)
KOAN = make_koan()


def outcome(status: str, reason: str = "", *, steps: int = 1, koan=KOAN, strategy: str = "baseline",
            sample: int = 0, **fields) -> Outcome:
    return Outcome(koan=koan.id, strategy=strategy, sample=sample, seed=sample, status=status, reason=reason,
                   family=koan.family, pattern=koan.pattern, split=koan.split, koan_digest=koan.digest,
                   steps=steps, **fields)


def episode(step: int, code: str | None, *, passed: bool = False, run_id: str = RUN_ID, koan=KOAN,
            strategy: str = "baseline", sample: int = 0) -> dict:
    """An episode line as Benchmark.episode writes it (the fields rescoring reads)."""
    return {"run_id": run_id, "koan": koan.id, "koan_digest": koan.digest, "strategy": strategy,
            "sample": sample, "seed": sample, "step": step, "code": code,
            "verdict": None if code is None else {"passed": passed, "reason": "" if passed else "recorded"}}


def run_file(*outcomes: Outcome, strategies=("baseline",)) -> RunFile:
    provenance = {"rustc": OLD_RUSTC, "sandbox": "bubblewrap", "strategies": [{"name": s} for s in strategies],
                  "koans": {o.koan: o.koan_digest for o in outcomes}}
    return RunFile(RUN_ID, provenance, list(outcomes), RunSummary.from_outcomes(list(outcomes), list(strategies)).to_dict())


def koans(*items) -> dict:
    return {k.id: k for k in (items or (KOAN,))}


def test_an_attempt_recorded_as_failing_that_now_passes_is_solved_at_that_step(verifier):
    run = run_file(outcome("failed", "still E0382 after 2 steps", steps=2))
    episodes = [episode(1, BUGGY_SHOP), episode(2, FIXED_SHOP)]

    result = rescore_run(run, episodes, koans(), verifier)

    rescored = result.run.outcomes[0]
    assert (rescored.status, rescored.reason, rescored.steps) == ("passed", "", 2)
    [change] = result.changed
    assert (change.koan, change.strategy, change.sample) == (KOAN.id, "baseline", 0)
    assert (change.before_status, change.before_reason) == ("failed", "still E0382 after 2 steps")
    assert (change.after_status, change.after_reason) == ("passed", "")


def test_an_attempt_recorded_as_passing_that_now_fails_is_failed_with_the_agents_wording(verifier):
    run = run_file(outcome("passed", steps=1))

    result = rescore_run(run, [episode(1, BUGGY_SHOP, passed=True)], koans(), verifier)

    rescored = result.run.outcomes[0]
    assert (rescored.status, rescored.reason, rescored.steps) == ("failed", "still E0382 after 1 step", 1)
    assert [(c.before_status, c.after_status) for c in result.changed] == [("passed", "failed")]


def test_a_failure_that_is_not_a_compile_error_keeps_the_verdict_reason(verifier):
    run = run_file(outcome("passed", steps=1))

    result = rescore_run(run, [episode(1, WRONG_SHOP, passed=True)], koans(), verifier)

    assert result.run.outcomes[0].reason == "hidden tests failed: 1 of 2 (sums_prices) after 1 step"


def test_the_first_passing_step_wins(verifier):
    run = run_file(outcome("passed", steps=3))
    episodes = [episode(1, BUGGY_SHOP), episode(2, FIXED_SHOP), episode(3, FIXED_SHOP + "\n", passed=True)]

    result = rescore_run(run, episodes, koans(), verifier)

    rescored = result.run.outcomes[0]
    assert (rescored.status, rescored.steps) == ("passed", 2)
    assert [(c.before_steps, c.after_steps) for c in result.changed] == [(3, 2)]


def test_attempts_after_the_first_passing_one_are_not_verified(verifier):
    verified = []

    class Recording:
        toolchain, sandbox = verifier.toolchain, verifier.sandbox

        def verify_candidate(self, koan, code):
            verified.append(code)
            return verifier.verify_candidate(koan, code)

    run = run_file(outcome("passed", steps=3))
    episodes = [episode(1, FIXED_SHOP), episode(2, BUGGY_SHOP), episode(3, WRONG_SHOP)]

    rescore_run(run, episodes, koans(), Recording())

    assert verified == [FIXED_SHOP]


def test_steps_are_taken_in_step_order_whatever_the_file_order(verifier):
    run = run_file(outcome("failed", "still E0382 after 2 steps", steps=2))
    episodes = [episode(2, FIXED_SHOP), episode(1, FIXED_SHOP + "\n")]

    result = rescore_run(run, episodes, koans(), verifier)

    assert result.run.outcomes[0].steps == 1


def test_attempts_without_code_are_skipped(verifier):
    run = run_file(outcome("failed", "still E0382 after 2 steps", steps=2))
    episodes = [episode(1, None), episode(2, FIXED_SHOP)]

    result = rescore_run(run, episodes, koans(), verifier)

    assert (result.run.outcomes[0].status, result.run.outcomes[0].steps) == ("passed", 2)


def test_when_no_attempt_had_code_the_outcome_keeps_its_reason_and_steps(verifier):
    reason = "no code in the answer after 2 steps (it said: 'sorry')"
    run = run_file(outcome("failed", reason, steps=2))

    result = rescore_run(run, [episode(1, None), episode(2, None)], koans(), verifier)

    rescored = result.run.outcomes[0]
    assert (rescored.status, rescored.reason, rescored.steps) == ("failed", reason, 2)
    assert result.changed == []
    assert result.rescored == 1


def test_a_last_attempt_without_code_keeps_the_recorded_reason(verifier):
    reason = "no code in the answer after 2 steps (it said: 'I give up')"
    run = run_file(outcome("failed", reason, steps=2))

    result = rescore_run(run, [episode(1, BUGGY_SHOP), episode(2, None)], koans(), verifier)

    assert (result.run.outcomes[0].status, result.run.outcomes[0].reason) == ("failed", reason)


def test_a_last_attempt_without_code_after_a_changed_program_gets_that_programs_new_verdict(verifier):
    recorded = "still E0999 after 2 steps; the answer at step 2 held no code (it said: 'done')"
    run = run_file(outcome("failed", recorded, steps=2))

    result = rescore_run(run, [episode(1, WRONG_SHOP), episode(2, None)], koans(), verifier)

    reason = result.run.outcomes[0].reason
    assert reason.startswith("hidden tests failed: ") and reason.endswith(
        " after 2 steps; the answer at step 2 held no code (it said: 'done')")


def test_failed_outcomes_keep_the_number_of_model_calls_made(verifier):
    run = run_file(outcome("failed", "model error at step 3: boom", steps=3))
    episodes = [episode(1, BUGGY_SHOP), episode(2, WRONG_SHOP), episode(3, None)]

    result = rescore_run(run, episodes, koans(), verifier)

    assert result.run.outcomes[0].steps == 3


def test_verify_seconds_are_recomputed_and_model_fields_kept(verifier):
    run = run_file(outcome("failed", "still E0382 after 1 step", steps=1, verify_seconds=999.0, model_seconds=1.5,
                           tokens_in=100, tokens_out=20, model_identity="m/1", replayed=1))

    rescored = rescore_run(run, [episode(1, FIXED_SHOP)], koans(), verifier).run.outcomes[0]

    assert 0 < rescored.verify_seconds < 999.0
    assert (rescored.model_seconds, rescored.tokens_in, rescored.tokens_out, rescored.model_identity,
            rescored.replayed) == (1.5, 100, 20, "m/1", 1)


def test_a_koan_whose_digest_changed_is_not_rescored_and_is_reported(verifier):
    run = run_file(outcome("failed", "still E0382 after 1 step"))
    stricter = make_koan(tests=KOAN.tests + "\n#[test]\nfn one_item() { assert_eq!(total(vec![7]), 7); }\n")

    result = rescore_run(run, [episode(1, FIXED_SHOP)], koans(stricter), verifier)

    assert result.run.outcomes == run.outcomes
    assert result.changed == []
    [(label, why)] = result.skipped
    assert label == "shop_001[baseline-0]"
    assert "koan changed since the run" in why


def test_a_koan_missing_from_the_corpus_is_not_rescored_and_is_reported(verifier):
    run = run_file(outcome("failed", "still E0382 after 1 step"))

    result = rescore_run(run, [episode(1, FIXED_SHOP)], {}, verifier)

    assert result.run.outcomes == run.outcomes
    assert "koan missing" in result.skipped[0][1]


def test_episodes_of_another_run_are_ignored(verifier):
    run = run_file(outcome("failed", "still E0382 after 1 step"))
    episodes = [episode(1, FIXED_SHOP, run_id="20240202T000000Z-other000"), episode(1, BUGGY_SHOP)]

    result = rescore_run(run, episodes, koans(), verifier)

    assert result.run.outcomes[0].status == "failed"
    assert result.changed == [] and result.skipped == []


def test_an_outcome_without_episodes_is_kept_and_reported(verifier):
    run = run_file(outcome("failed", "still E0382 after 1 step"))

    result = rescore_run(run, [], koans(), verifier)

    assert result.run.outcomes == run.outcomes
    assert result.skipped == [("shop_001[baseline-0]", "not rescored: no episodes of this run recorded for it")]


def test_an_outcome_with_incomplete_episodes_is_kept_and_reported(verifier):
    run = run_file(outcome("passed", steps=2))

    result = rescore_run(run, [episode(1, BUGGY_SHOP)], koans(), verifier)

    assert result.run.outcomes == run.outcomes
    assert "episodes incomplete" in result.skipped[0][1]


def test_error_outcomes_stay_as_they_were(verifier):
    error = outcome("error", "shop_001: no recorded completion", steps=0)
    run = run_file(error)

    result = rescore_run(run, [episode(1, FIXED_SHOP)], koans(), verifier)

    assert result.run.outcomes == [error]
    assert "status error" in result.skipped[0][1]


def test_aggregates_are_recomputed(verifier):
    other = make_koan(id="shop_002")
    run = run_file(outcome("failed", "still E0382 after 1 step"), outcome("failed", "still E0382 after 1 step", koan=other))
    episodes = [episode(1, FIXED_SHOP), episode(1, BUGGY_SHOP, koan=other)]
    assert run.aggregates["strategies"][0]["rate"] == 0.0

    result = rescore_run(run, episodes, koans(KOAN, other), verifier)

    assert result.run.aggregates == RunSummary.from_outcomes(result.run.outcomes, ["baseline"]).to_dict()
    assert result.run.aggregates["strategies"][0]["rate"] == 0.5


def test_aggregates_follow_the_runs_strategy_order(verifier):
    run = run_file(outcome("failed", "r", strategy="zeta"), outcome("failed", "r", strategy="alpha"),
                   strategies=("zeta", "alpha"))
    episodes = [episode(1, FIXED_SHOP, strategy="zeta"), episode(1, BUGGY_SHOP, strategy="alpha")]

    result = rescore_run(run, episodes, koans(), verifier)

    assert [s["strategy"] for s in result.run.aggregates["strategies"]] == ["zeta", "alpha"]
    assert result.run.aggregates["comparisons"][0]["losses"] == [KOAN.id]


def test_provenance_records_the_rescoring_and_the_run_id_is_kept(verifier):
    run = run_file(outcome("failed", "still E0382 after 1 step"))

    rescored = rescore_run(run, [episode(1, FIXED_SHOP)], koans(), verifier).run

    assert rescored.run_id == RUN_ID
    record = rescored.provenance["rescored"]
    assert record["from_rustc"] == "rustc 1.70.0 (90c541806 2023-05-31)"
    assert record["rustc"] == verifier.toolchain.version.splitlines()[0]
    assert record["verifier"] == verifier_module.VERSION
    assert datetime.fromisoformat(record["at"]).tzinfo is not None
    assert rescored.provenance["rustc"] == verifier.toolchain.version


def test_the_given_run_is_not_modified(verifier):
    run = run_file(outcome("failed", "still E0382 after 1 step"))
    before = run.to_dict()

    rescore_run(run, [episode(1, FIXED_SHOP)], koans(), verifier)

    assert run.to_dict() == before


def test_the_rescored_run_round_trips_through_a_run_file(verifier, tmp_path):
    run = run_file(outcome("failed", "still E0382 after 1 step"))
    rescored = rescore_run(run, [episode(1, FIXED_SHOP)], koans(), verifier).run

    write_run_file(tmp_path / "run.json", rescored)

    assert read_run_file(tmp_path / "run.json").to_dict() == rescored.to_dict()


def test_episodes_are_read_from_json_lines(tmp_path):
    path = tmp_path / "episodes.jsonl"
    path.write_text('{"run_id": "a", "step": 1}\n\n{"run_id": "b", "step": 2}\n', encoding="utf-8")

    assert read_episodes(path) == [{"run_id": "a", "step": 1}, {"run_id": "b", "step": 2}]


def test_a_malformed_episode_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "episodes.jsonl"
    path.write_text('{"run_id": "a"}\n{"run_id": \n', encoding="utf-8")

    with pytest.raises(EpisodeFileError, match=r"episodes\.jsonl, line 2: not JSON"):
        read_episodes(path)


def test_an_episode_line_that_is_not_an_object_names_the_file_and_line(tmp_path):
    path = tmp_path / "episodes.jsonl"
    path.write_text('[1, 2]\n', encoding="utf-8")

    with pytest.raises(EpisodeFileError, match=r"episodes\.jsonl, line 1: expected a JSON object"):
        read_episodes(path)


def test_a_missing_episode_file_is_reported_by_name(tmp_path):
    with pytest.raises(EpisodeFileError, match=r"nowhere\.jsonl: cannot read"):
        read_episodes(tmp_path / "nowhere.jsonl")
