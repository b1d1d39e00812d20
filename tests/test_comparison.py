"""Per-koan comparison with a baseline, the gate and the forgetting matrix (pytest_sleepy/results/comparison.py)."""

from __future__ import annotations

import pytest

from pytest_sleepy.results.comparison import (GAIN, GAIN_NOT_SIGNIFICANT, KEPT_FAIL, KEPT_PASS, LOSS, LOSS_NOT_SIGNIFICANT,
                                      NOT_COMPARED, BaselineComparison, KoanState, change_between, evaluate_gate,
                                      forgetting_matrix, reference_for, smallest_koan_p)
from pytest_sleepy.results import Outcome, RunFile


def outcome(koan, solved, strategy="baseline", sample=0, digest="d", status=None, variant=""):
    return Outcome(koan=koan, strategy=strategy, sample=sample, seed=sample,
                   status=status or ("passed" if solved else "failed"), reason="" if solved else "still E0382",
                   koan_digest=digest, variant=variant)


def run(*outcomes, run_id="base"):
    return RunFile(run_id, {"options": {"samples": 1}}, list(outcomes), {})


def test_one_sample_each_way_is_a_gain_or_a_loss():
    solved, failed = KoanState(1, 1, "d"), KoanState(0, 1, "d")
    assert change_between(failed, solved, 0.05) == (GAIN, None)
    assert change_between(solved, failed, 0.05) == (LOSS, None)
    assert change_between(solved, solved, 0.05) == (KEPT_PASS, None)
    assert change_between(failed, failed, 0.05) == (KEPT_FAIL, None)


def test_with_samples_a_loss_needs_a_significant_drop():
    symbol, p = change_between(KoanState(5, 5, "d"), KoanState(0, 5, "d"), 0.05)
    assert symbol == LOSS and p < 0.05
    symbol, _ = change_between(KoanState(3, 3, "d"), KoanState(1, 3, "d"), 0.05)  # p = 0.2: noise
    assert symbol == LOSS_NOT_SIGNIFICANT  # it passed before and fails now: never "kept failing"


def test_with_samples_a_gain_needs_a_significant_rise():
    assert change_between(KoanState(0, 5, "d"), KoanState(5, 5, "d"), 0.05)[0] == GAIN
    assert change_between(KoanState(1, 3, "d"), KoanState(3, 3, "d"), 0.05)[0] == GAIN_NOT_SIGNIFICANT


def test_a_state_kept_with_a_different_rate_is_kept():
    assert change_between(KoanState(4, 4, "d"), KoanState(3, 4, "d"), 0.05)[0] == KEPT_PASS
    assert change_between(KoanState(0, 4, "d"), KoanState(1, 4, "d"), 0.05)[0] == KEPT_FAIL


@pytest.mark.parametrize("samples, symbol, p", [
    (2, LOSS_NOT_SIGNIFICANT, 1 / 6),  # all to none: 1 / C(4, 2)
    (3, LOSS_NOT_SIGNIFICANT, 1 / 20),  # exactly 0.05: not below alpha
    (4, LOSS, 1 / 70),
])
def test_a_koan_that_passed_every_sample_and_now_none(samples, symbol, p):
    got, p_value = change_between(KoanState(samples, samples, "d"), KoanState(0, samples, "d"), 0.05)
    assert got == symbol and p_value == pytest.approx(p)
    assert smallest_koan_p(samples, samples) == pytest.approx(p)


@pytest.mark.parametrize("samples, symbol", [(2, GAIN_NOT_SIGNIFICANT), (3, GAIN_NOT_SIGNIFICANT), (4, GAIN)])
def test_a_koan_that_passed_no_sample_and_now_every_one(samples, symbol):
    assert change_between(KoanState(0, samples, "d"), KoanState(samples, samples, "d"), 0.05)[0] == symbol


def test_a_changed_or_new_koan_is_not_compared():
    assert change_between(KoanState(1, 1, "old"), KoanState(0, 1, "new"), 0.05)[0] == NOT_COMPARED
    assert change_between(None, KoanState(0, 1, "d"), 0.05)[0] == NOT_COMPARED


def test_a_strategy_absent_from_the_baseline_falls_back_to_its_baseline_strategy():
    assert reference_for("hints", ["baseline", "share"]).baseline_strategy == "baseline"
    assert reference_for("hints", ["hints", "baseline"]).note == ""
    assert reference_for("hints", ["share"]).baseline_strategy == "share"


def comparison(before, after, strategies=("baseline",)):
    return BaselineComparison.build(run(*before), list(after), {"options": {"samples": 1}}, list(strategies))


def test_the_any_gate_fails_on_one_regression():
    c = comparison([outcome("a", True), outcome("b", True)], [outcome("a", False), outcome("b", True)])
    gate = evaluate_gate(c.baseline.outcomes, c, gate="any")
    assert not gate.passed and "1 regression(s), 0 gain(s)" in gate.lines[0]


def test_the_significant_gate_fails_only_on_a_significant_excess_of_losses():
    before = [outcome(f"k{i}", True) for i in range(8)]
    after = [outcome(f"k{i}", False) for i in range(8)]
    gate = evaluate_gate(after, comparison(before, after), gate="significant")
    assert not gate.passed and "p = 0.0078" in gate.lines[0] and ", significant" in gate.lines[0]
    few = comparison(before[:2], after[:2])
    assert evaluate_gate(after[:2], few, gate="significant").passed


def sampled(koans_passed: dict[str, int], samples: int, strategy="baseline"):
    return [outcome(koan, sample < passed, strategy=strategy, sample=sample)
            for koan, passed in koans_passed.items() for sample in range(samples)]


def sampled_comparison(before, after):
    return BaselineComparison.build(run(*before), list(after), {"options": {"samples": 2}}, ["baseline"])


@pytest.mark.parametrize("samples", [2, 3])
def test_with_too_few_samples_the_gate_says_so_and_uses_the_sign_test(samples):
    before = sampled({"a": samples, "b": samples}, samples)
    after = sampled({"a": 0, "b": samples}, samples)
    gate = evaluate_gate(after, sampled_comparison(before, after), gate="any")
    assert gate.passed  # one koan down, none up: p = 1 at the strategy level
    assert f"with {samples} samples per koan no single koan's change can be significant" in gate.lines[0]
    assert "the paired sign test over koans decides: 1 koan(s) fell, 0 rose" in gate.lines[0]


def test_with_too_few_samples_a_broad_fall_fails_the_gate():
    koans = {f"k{i}": 2 for i in range(8)}
    before, after = sampled(koans, 2), sampled({k: 0 for k in koans}, 2)
    gate = evaluate_gate(after, sampled_comparison(before, after), gate="significant")
    assert not gate.passed and "8 koan(s) fell, 0 rose" in gate.lines[0] and "p = 0.0078" in gate.lines[0]


def test_with_four_samples_one_lost_koan_fails_the_any_gate():
    before, after = sampled({"a": 4, "b": 4}, 4), sampled({"a": 0, "b": 4}, 4)
    gate = evaluate_gate(after, sampled_comparison(before, after), gate="any")
    assert not gate.passed and "1 regression(s), 0 gain(s)" in gate.lines[0]
    assert "sign test" not in gate.lines[0]


def test_the_matrix_shows_a_non_significant_loss_as_lost():
    before, after = sampled({"a": 2, "b": 0}, 2), sampled({"a": 0, "b": 2}, 2)
    matrix = forgetting_matrix(after, ["baseline"], sampled_comparison(before, after))
    assert matrix.cell("a", "baseline") == LOSS_NOT_SIGNIFICANT
    assert matrix.cell("b", "baseline") == GAIN_NOT_SIGNIFICANT
    assert matrix.changed_rows() == ["a", "b"]


def test_errored_items_fail_the_gate():
    items = [outcome("a", True), outcome("b", False, status="error")]
    gate = evaluate_gate(items, None, fail_under=0.0, rates={"baseline": 1.0})
    assert not gate.passed and "1 item(s) errored" in gate.lines[0]


def test_the_floor_is_checked_per_strategy():
    gate = evaluate_gate([], None, fail_under=0.6, rates={"baseline": 0.7, "hints": 0.5})
    assert not gate.passed
    assert gate.lines == ["ok: baseline: pass rate 70.0% >= floor 60.0%", "FAIL: hints: pass rate 50.0% < floor 60.0%"]


def test_without_a_baseline_the_matrix_compares_with_the_first_strategy():
    items = [outcome("a", True), outcome("b", False), outcome("a", False, "hints"), outcome("b", True, "hints")]
    matrix = forgetting_matrix(items, ["baseline", "hints"])
    assert matrix.columns == ["baseline", "hints"]
    assert [matrix.cell("a", c) for c in matrix.columns] == [KEPT_PASS, LOSS]
    assert [matrix.cell("b", c) for c in matrix.columns] == [KEPT_FAIL, GAIN]


def test_variants_get_a_column_each_after_their_strategy():
    items = [outcome("a", True), outcome("a", False, "share", variant="borrow"),
             outcome("a", True, "share", variant="traits")]
    matrix = forgetting_matrix(items, ["baseline", "share"])
    assert matrix.columns == ["baseline", "share:borrow", "share:traits"]
    assert matrix.cell("a", "share:borrow") == LOSS


def test_only_changed_rows_are_changed():
    items = [outcome("a", True), outcome("b", True), outcome("a", True, "hints"), outcome("b", False, "hints")]
    matrix = forgetting_matrix(items, ["baseline", "hints"])
    assert matrix.changed_rows() == ["b"]
    assert matrix.totals()["hints"] == {KEPT_PASS: 1, LOSS: 1}


def test_the_matrix_survives_json():
    items = [outcome("a", True), outcome("a", False, "hints")]
    matrix = forgetting_matrix(items, ["baseline", "hints"])
    assert type(matrix).from_dict(matrix.to_dict()) == matrix


def test_a_variant_column_is_compared_with_the_same_column_of_the_baseline():
    before = [outcome("a", True, "seq", variant="stage1"), outcome("a", False, "seq", variant="stage0")]
    after = [outcome("a", True, "seq", variant="stage1"), outcome("a", False, "seq", variant="stage0")]
    c = BaselineComparison.build(run(*before), after, {}, ["seq:stage0", "seq:stage1"])
    matrix = forgetting_matrix(after, ["seq"], c)
    assert matrix.cell("a", "seq:stage1") == KEPT_PASS and matrix.cell("a", "seq:stage0") == KEPT_FAIL


def test_the_fallback_reference_is_the_baselines_first_strategy_in_its_own_order():
    baseline = RunFile("b", {"strategies": [{"name": "lora"}, {"name": "hints"}]},
                       [outcome("a", True, "hints"), outcome("a", False, "lora")], {})
    c = BaselineComparison.build(baseline, [outcome("a", True, "share")], {}, ["share"])
    assert c.references[0].baseline_strategy == "lora"


def test_koans_missing_from_this_run_are_reported():
    c = comparison([outcome("a", True), outcome("b", True)], [outcome("a", True)])
    assert any(m.what == "koans not in this run" and m.baseline == "b" for m in c.mismatches)
