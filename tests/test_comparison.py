"""Per-koan comparison with a baseline, the gate and the forgetting matrix (comparison.py)."""

from __future__ import annotations

from pytest_sleepy.comparison import (GAIN, KEPT_FAIL, KEPT_PASS, LOSS, NOT_COMPARED, BaselineComparison, KoanState,
                                      change_between, evaluate_gate, forgetting_matrix, reference_for)
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
    assert symbol == KEPT_FAIL  # 1 of 3 is below half: kept failing, not lost


def test_with_samples_a_gain_needs_a_significant_rise():
    assert change_between(KoanState(0, 5, "d"), KoanState(5, 5, "d"), 0.05)[0] == GAIN
    assert change_between(KoanState(1, 3, "d"), KoanState(3, 3, "d"), 0.05)[0] == KEPT_PASS


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
