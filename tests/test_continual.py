"""Specification of the continual-learning metrics (pytest_sleepy/results/continual.py).

Metric values are worked out by hand in the comments, from the definitions of
Lopez-Paz & Ranzato 2017 (GEM: ACC, BWT, FWT) and Chaudhry et al. 2018 (RWalk:
average forgetting F). Indices in the comments are 0-based, as in the code:
R[i][j] = accuracy on task j after stage i+1, b[j] = the untrained model on task j.
"""

from __future__ import annotations

import json

import pytest

from pytest_sleepy.results.continual import (
    LEGEND, AccuracyMatrix, Curriculum, accuracy_matrix, continual_metrics, render_continual,
)
from pytest_sleepy.results import Outcome

# --- the metrics on hand-written matrices -----------------------------------------

HAND_R = [[0.8, 0.1, 0.0],
          [0.6, 0.9, 0.2],
          [0.4, 0.7, 1.0]]
HAND_B = [0.1, 0.1, 0.1]


def test_acc_is_the_mean_of_the_last_row():
    # ACC = (R[2][0] + R[2][1] + R[2][2]) / 3 = (0.4 + 0.7 + 1.0) / 3 = 2.1 / 3 = 0.7
    assert continual_metrics(HAND_R, HAND_B).acc == pytest.approx(0.7)


def test_bwt_compares_the_last_row_with_the_diagonal():
    # BWT = ((R[2][0] - R[0][0]) + (R[2][1] - R[1][1])) / 2
    #     = ((0.4 - 0.8) + (0.7 - 0.9)) / 2 = (-0.4 - 0.2) / 2 = -0.3
    assert continual_metrics(HAND_R, HAND_B).bwt == pytest.approx(-0.3)


def test_fwt_compares_the_superdiagonal_with_the_untrained_model():
    # FWT = ((R[0][1] - b[1]) + (R[1][2] - b[2])) / 2
    #     = ((0.1 - 0.1) + (0.2 - 0.1)) / 2 = (0.0 + 0.1) / 2 = 0.05
    assert continual_metrics(HAND_R, HAND_B).fwt == pytest.approx(0.05)


def test_forgetting_is_the_mean_drop_from_the_best_earlier_accuracy():
    # f_0 = max(R[0][0], R[1][0]) - R[2][0] = max(0.8, 0.6) - 0.4 = 0.4
    # f_1 = max(R[0][1], R[1][1]) - R[2][1] = max(0.1, 0.9) - 0.7 = 0.2
    # F = (0.4 + 0.2) / 2 = 0.3
    assert continual_metrics(HAND_R, HAND_B).forgetting == pytest.approx(0.3)


def test_forgetting_max_includes_stages_before_the_task_was_trained():
    # Chaudhry et al.: f_j = max over l in 0..T-2 of R[l][j], whether or not task j
    # had been trained at stage l. Task 1 peaks at stage 1 (R[0][1] = 0.8), before it
    # is trained (R[1][1] = 0.6):
    # f_0 = max(0.5, 0.5) - 0.5 = 0.0;  f_1 = max(0.8, 0.6) - 0.6 = 0.2;  F = 0.2 / 2 = 0.1
    # whereas BWT = ((0.5 - 0.5) + (0.6 - 0.6)) / 2 = 0.0 sees no loss.
    R = [[0.5, 0.8, 0.0],
         [0.5, 0.6, 0.0],
         [0.5, 0.6, 0.9]]
    metrics = continual_metrics(R, [0.0, 0.0, 0.0])
    assert metrics.forgetting == pytest.approx(0.1)
    assert metrics.bwt == pytest.approx(0.0)


def test_forgetting_max_leaves_out_the_untrained_model():
    # b[0] = 0.9 is above every trained accuracy of task 0, but the max runs over
    # stages 1..T-1 only: f_0 = max(R[0][0]) - R[1][0] = 0.5 - 0.5 = 0.0
    assert continual_metrics([[0.5, 0.0], [0.5, 0.5]], [0.9, 0.0]).forgetting == pytest.approx(0.0)


def test_perfect_learning_has_no_forgetting_and_full_accuracy():
    # Each task is learned at its stage and kept: ACC = 3/3 = 1.0,
    # BWT = ((1 - 1) + (1 - 1)) / 2 = 0, F = ((1 - 1) + (1 - 1)) / 2 = 0,
    # FWT = ((R[0][1] - b[1]) + (R[1][2] - b[2])) / 2 = ((0 - 0) + (0 - 0)) / 2 = 0
    R = [[1.0, 0.0, 0.0],
         [1.0, 1.0, 0.0],
         [1.0, 1.0, 1.0]]
    metrics = continual_metrics(R, [0.0, 0.0, 0.0])
    assert (metrics.acc, metrics.bwt, metrics.forgetting, metrics.fwt) == pytest.approx((1.0, 0.0, 0.0, 0.0))
    assert metrics.reasons == {}


def test_positive_backward_transfer_gives_negative_forgetting():
    # Training task 1 also improved task 0 (0.5 -> 0.8):
    # BWT = (R[1][0] - R[0][0]) / 1 = 0.8 - 0.5 = +0.3
    # F = (max(R[0][0]) - R[1][0]) / 1 = 0.5 - 0.8 = -0.3 (the paper does not clip at 0)
    # ACC = (0.8 + 0.9) / 2 = 0.85;  FWT = (R[0][1] - b[1]) / 1 = 0.2 - 0.2 = 0.0
    metrics = continual_metrics([[0.5, 0.2], [0.8, 0.9]], [0.2, 0.2])
    assert metrics.bwt == pytest.approx(0.3)
    assert metrics.forgetting == pytest.approx(-0.3)
    assert metrics.acc == pytest.approx(0.85)
    assert metrics.fwt == pytest.approx(0.0)


def test_one_stage_has_accuracy_but_no_transfer_or_forgetting():
    metrics = continual_metrics([[0.75]], [0.25])
    assert metrics.acc == pytest.approx(0.75)
    assert (metrics.bwt, metrics.fwt, metrics.forgetting) == (None, None, None)
    assert set(metrics.reasons) == {"BWT", "FWT", "F"}
    assert "1 stage" in metrics.reasons["BWT"]


def test_a_missing_cell_makes_only_the_metrics_that_need_it_none_with_the_reason():
    # R[0][1] (task 1 after stage 1) is missing: FWT needs it, F takes the max over it.
    R = [[0.8, None], [0.6, 0.9]]
    metrics = continual_metrics(R, [0.1, 0.1], groups=["borrowing", "traits"])
    assert metrics.fwt is None
    assert metrics.reasons["FWT"] == "FWT needs group 'traits' after stage 1, which has no outcomes"
    assert metrics.acc == pytest.approx(0.75)  # (0.6 + 0.9) / 2
    assert metrics.bwt == pytest.approx(-0.2)  # 0.6 - 0.8
    assert metrics.forgetting == pytest.approx(0.2)  # max(0.8) - 0.6; F needs only column 0
    assert set(metrics.reasons) == {"FWT"}


def test_a_missing_baseline_cell_makes_fwt_none():
    metrics = continual_metrics([[0.8, 0.1], [0.6, 0.9]], [0.1, None])
    assert metrics.fwt is None
    assert "untrained model (stage 0)" in metrics.reasons["FWT"]


def test_metrics_refuse_a_matrix_that_is_not_square():
    with pytest.raises(ValueError, match="2 x 2"):
        continual_metrics([[0.1, 0.2], [0.3]], [0.0, 0.0])


def test_metrics_to_dict_is_json_with_the_reasons():
    data = json.loads(json.dumps(continual_metrics([[0.5]], [0.0]).to_dict()))
    assert data["ACC"] == 0.5 and data["BWT"] is None and data["stages"] == 1
    assert set(data["reasons"]) == {"BWT", "FWT", "F"}


# --- the curriculum ---------------------------------------------------------------

GROUPS = {"borrowing": ["use_after_move", "double_borrow"], "lifetimes": ["dangling_ref"], "traits": ["missing_impl"]}
ORDER = ["borrowing", "lifetimes", "traits"]
PROVENANCE = {"curriculum": {"order": ORDER, "groups": GROUPS}}


def test_curriculum_is_read_from_provenance():
    curriculum = Curriculum.from_provenance(PROVENANCE)
    assert curriculum.order == ("borrowing", "lifetimes", "traits")
    assert curriculum.stages == 3
    assert curriculum.group_of("double_borrow") == "borrowing"
    assert curriculum.group_of("unlisted") is None


def test_a_run_without_curriculum_has_none():
    assert Curriculum.from_provenance({"seeds": [0]}) is None


@pytest.mark.parametrize("curriculum, message", [
    ({"order": ["borrowing", "generics"], "groups": {"borrowing": ["a"]}},
     "provenance.curriculum.order: names unknown group 'generics'"),
    ({"order": ["x", "y"], "groups": {"x": ["a", "b"], "y": ["b"]}},
     "provenance.curriculum.groups: pattern 'b' is in two groups ('x' and 'y')"),
    ({"order": ["x"], "groups": {"x": []}}, "provenance.curriculum.groups.x: is empty"),
    ({"order": [], "groups": {}}, "provenance.curriculum.order: is empty"),
    ({"order": "x", "groups": {"x": ["a"]}}, "provenance.curriculum.order: expected a list"),
    ({"order": ["x"], "groups": [["a"]]}, "provenance.curriculum.groups: expected an object"),
    ({"order": ["x"], "groups": {"x": "a"}}, "provenance.curriculum.groups.x: expected a list"),
    ({"order": ["x"], "groups": {"x": [3]}}, "provenance.curriculum.groups.x: 3 is not a koan pattern"),
    ({"order": ["x", "x"], "groups": {"x": ["a"]}}, "provenance.curriculum.order: group 'x' appears twice"),
    ({"order": ["x"], "groups": {"x": ["a"], "y": ["b"]}},
     "provenance.curriculum.groups: group 'y' is not in provenance.curriculum.order"),
    (["x"], "provenance.curriculum: expected an object"),
], ids=["unknown-group", "pattern-in-two-groups", "empty-group", "empty-order", "order-not-list",
        "groups-not-object", "patterns-not-list", "pattern-not-string", "duplicate-stage", "untrained-group",
        "curriculum-not-object"])
def test_curriculum_errors_name_the_field(curriculum, message):
    with pytest.raises(ValueError) as error:
        Curriculum.from_provenance({"curriculum": curriculum})
    assert str(error.value).startswith(message)


# --- the accuracy matrix from outcomes --------------------------------------------

PATTERN = {"a1": "use_after_move", "a2": "double_borrow", "b1": "dangling_ref", "c1": "missing_impl",
           "c2": "missing_impl", "z1": "not_in_curriculum"}
STATUS = {"P": "passed", "F": "failed", "E": "error"}

# (stage, koan) -> one letter per sample: P passed, F failed, E error (not counted).
SEQUENTIAL = {
    (0, "a1"): "F", (0, "a2"): "F", (0, "b1"): "F", (0, "c1"): "P", (0, "c2"): "F",
    (1, "a1"): "PPP", (1, "a2"): "PFE", (1, "b1"): "P", (1, "c1"): "F", (1, "c2"): "F",
    (2, "a1"): "PF", (2, "a2"): "F", (2, "b1"): "P", (2, "c1"): "P", (2, "c2"): "F",
    (3, "a1"): "F", (3, "a2"): "E", (3, "b1"): "F", (3, "c1"): "P", (3, "c2"): "P",
    (1, "z1"): "P", (3, "z1"): "F",
}
# Each cell is the mean over koans of the koan's rate over its counted samples:
#   b    = [borrowing (0 + 0)/2 = 0, lifetimes 0, traits (1 + 0)/2 = 0.5]
#   R[0] = [(3/3 + 1/2)/2 = 0.75 (pooled would be 4/5), 1, (0 + 0)/2 = 0]
#   R[1] = [(1/2 + 0)/2 = 0.25, 1, (1 + 0)/2 = 0.5]
#   R[2] = [a1 only (a2 errored): 0, 0, (1 + 1)/2 = 1]
SEQUENTIAL_R = [[0.75, 1.0, 0.0], [0.25, 1.0, 0.5], [0.0, 0.0, 1.0]]
SEQUENTIAL_B = [0.0, 0.0, 0.5]
REPLAY = {(stage, koan): ("F" if stage == 0 else "P") for stage in range(4) for koan in ("a1", "a2", "b1", "c1", "c2")}


def outcomes(table: dict, strategy: str) -> list[Outcome]:
    return [Outcome(koan=koan, strategy=strategy, sample=n, seed=n, status=STATUS[letter],
                    reason="" if letter == "P" else "tests failed", family="f", pattern=PATTERN[koan], stage=stage)
            for (stage, koan), letters in table.items() for n, letter in enumerate(letters)]


@pytest.fixture
def curriculum() -> Curriculum:
    return Curriculum.from_provenance(PROVENANCE)


def test_matrix_cells_are_the_mean_over_koans_of_per_koan_pass_rates(curriculum):
    matrix = accuracy_matrix(outcomes(SEQUENTIAL, "seq"), curriculum)
    assert matrix.groups == ORDER
    assert matrix.R == [pytest.approx(row) for row in SEQUENTIAL_R]
    assert matrix.baseline == pytest.approx(SEQUENTIAL_B)
    assert matrix.strategy == "seq"


def test_matrix_excludes_error_outcomes(curriculum):
    matrix = accuracy_matrix(outcomes(SEQUENTIAL, "seq"), curriculum)
    assert matrix.errors == 2
    # Stage 3 borrowing: a2's only sample errored, so only a1 counts.
    assert matrix.koans[3][0] == 1


def test_matrix_filters_one_strategy_out_of_several(curriculum):
    mixed = outcomes(SEQUENTIAL, "seq") + outcomes(REPLAY, "replay")
    replay = accuracy_matrix(mixed, curriculum, strategy="replay")
    sequential = accuracy_matrix(mixed, curriculum, strategy="seq")
    assert replay.R == [[1.0, 1.0, 1.0]] * 3 and replay.baseline == [0.0, 0.0, 0.0]
    assert sequential.R == [pytest.approx(row) for row in SEQUENTIAL_R]


def test_matrix_refuses_to_pool_several_strategies(curriculum):
    with pytest.raises(ValueError, match="replay, seq"):
        accuracy_matrix(outcomes(SEQUENTIAL, "seq") + outcomes(REPLAY, "replay"), curriculum)


def test_matrix_skips_unstaged_outcomes_and_patterns_outside_the_curriculum(curriculum):
    unstaged = Outcome(koan="a1", strategy="seq", sample=9, seed=9, status="failed", reason="x",
                       pattern="use_after_move", stage=None)
    matrix = accuracy_matrix(outcomes(SEQUENTIAL, "seq") + [unstaged], curriculum)
    assert matrix.R[0][0] == pytest.approx(0.75)  # z1 (not in any group) and the unstaged a1 change nothing
    assert sum(map(sum, matrix.koans)) == 19  # 5 koans x 4 stages, less a2 at stage 3


def test_matrix_rejects_a_stage_beyond_the_curriculum(curriculum):
    with pytest.raises(ValueError, match="stage 4; the curriculum has stages 0..3"):
        accuracy_matrix(outcomes({(4, "a1"): "P"}, "seq"), curriculum)


def test_a_cell_without_outcomes_is_none_and_named(curriculum):
    table = {key: value for key, value in SEQUENTIAL.items() if key != (2, "b1")}
    matrix = accuracy_matrix(outcomes(table, "seq"), curriculum)
    assert matrix.R[1][1] is None
    assert matrix.missing() == ["no outcomes for group 'lifetimes' after stage 2"]
    # R[1][1] is on the diagonal (BWT) and in task 1's max (F); ACC and FWT do not use it.
    metrics = matrix.metrics()
    assert (metrics.bwt, metrics.forgetting) == (None, None)
    assert metrics.reasons["BWT"] == "BWT needs group 'lifetimes' after stage 2, which has no outcomes"
    assert metrics.reasons["F"] == "F needs group 'lifetimes' after stage 2, which has no outcomes"
    assert (metrics.acc, metrics.fwt) == pytest.approx((1 / 3, 0.5))


def test_metrics_of_the_outcome_matrix_follow_the_formulas(curriculum):
    # From SEQUENTIAL_R and SEQUENTIAL_B:
    # ACC = (0 + 0 + 1) / 3 = 1/3
    # BWT = ((R[2][0] - R[0][0]) + (R[2][1] - R[1][1])) / 2 = ((0 - 0.75) + (0 - 1)) / 2 = -0.875
    # FWT = ((R[0][1] - b[1]) + (R[1][2] - b[2])) / 2 = ((1 - 0) + (0.5 - 0.5)) / 2 = 0.5
    # F   = ((max(0.75, 0.25) - 0) + (max(1, 1) - 0)) / 2 = 0.875
    metrics = accuracy_matrix(outcomes(SEQUENTIAL, "seq"), curriculum).metrics()
    assert (metrics.acc, metrics.bwt, metrics.fwt, metrics.forgetting) == pytest.approx((1 / 3, -0.875, 0.5, 0.875))


def test_matrix_to_dict_is_json(curriculum):
    data = json.loads(json.dumps(accuracy_matrix(outcomes(SEQUENTIAL, "seq"), curriculum).to_dict()))
    assert data["groups"] == ORDER and data["stages"] == 3 and data["strategy"] == "seq"
    assert data["matrix"][0] == pytest.approx(SEQUENTIAL_R[0])
    assert data["baseline"] == pytest.approx(SEQUENTIAL_B)
    assert data["errors"] == 2 and data["missing"] == []


# --- rendering --------------------------------------------------------------------

def hand_matrix() -> AccuracyMatrix:
    return AccuracyMatrix(groups=ORDER, R=HAND_R, baseline=HAND_B, koans=[[4, 2, 2]] * 4, strategy="seq")


def test_text_report_has_the_matrix_rows_the_metrics_and_the_legend():
    matrix = hand_matrix()
    text = render_continual(matrix, matrix.metrics())
    lines = text.splitlines()
    assert any(line.split() == ["untrained", "(b̄)", "10.0%", "10.0%", "10.0%"] for line in lines)
    assert any(line.split() == ["after", "stage", "2", "(lifetimes)", "60.0%", "90.0%", "20.0%"] for line in lines)
    for metric in ("ACC 70.0%", "BWT -30.0 pp", "FWT +5.0 pp", "F +30.0 pp"):
        assert metric in lines
    assert text.endswith(LEGEND)
    assert "|" not in text.split(LEGEND)[0]


def test_markdown_report_uses_pipe_tables():
    matrix = hand_matrix()
    text = render_continual(matrix, matrix.metrics(), fmt="markdown")
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("|")]
    assert rows[0] == ["", "borrowing", "lifetimes", "traits"]
    assert set(rows[1][0]) <= {"-", ":"}  # the header rule
    assert ["after stage 3 (traits)", "40.0%", "70.0%", "100.0%"] in rows
    assert "- BWT -30.0 pp" in text
    assert LEGEND in text


def test_report_says_why_a_metric_is_missing():
    matrix = AccuracyMatrix(groups=["borrowing"], R=[[0.5]], baseline=[0.0], koans=[[2], [2]])
    text = render_continual(matrix, matrix.metrics())
    assert "BWT n/a (BWT compares stages; the curriculum has 1 stage)" in text


def test_a_zero_metric_prints_without_a_minus_sign():
    # BWT = (R[1][0] - R[0][0]) / 1 = 0.3 - (0.1 + 0.2) = -5.6e-17 in floating point, which
    # rounds to -0.0; it must read +0.0 pp.
    matrix = AccuracyMatrix(groups=["a", "b"], R=[[0.1 + 0.2, 0.0], [0.3, 1.0]], baseline=[0.0, 0.0],
                            koans=[[1, 1]] * 3)
    assert "BWT +0.0 pp" in render_continual(matrix, matrix.metrics()).splitlines()


def test_report_rejects_an_unknown_format():
    matrix = hand_matrix()
    with pytest.raises(ValueError, match="fmt"):
        render_continual(matrix, matrix.metrics(), fmt="html")
