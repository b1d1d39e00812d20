"""The mutator (corpus/mutants.py) and the mutation score of `sleepy koans validate --mutants`."""

import textwrap

import pytest

from conftest import make_koan
from pytest_sleepy.corpus.mutants import mutants
from pytest_sleepy.corpus.validation import check_koan

PROGRAM = textwrap.dedent("""
    pub fn clamp_sum(items: &[u32], limit: u32) -> u32 {
        let mut sum = 0;
        for x in items {
            if *x <= limit && *x != 7 {
                sum += x * 2;
            }
        }
        sum
    }

    pub fn label(ok: bool) -> String {
        note(ok, 3);
        if ok { String::from("yes") } else { String::from("no") }
    }

    fn note(ok: bool, level: u8) { let _ = (ok, level); }

    fn main() {
        let v: Vec<u32> = vec![1, 2];
        println!("{}", clamp_sum(&v, 3) < 10);
    }
""")


def by_operator(operator: str) -> dict[str, str]:
    return {m.id: m.code for m in mutants(PROGRAM) if m.operator == operator}


def test_relational_operators_are_swapped_for_their_neighbours():
    found = by_operator("relational")
    assert set(found) == {"relational:5:15:<= -> <", "relational:5:30:!= -> =="}
    assert "if *x < limit && *x != 7" in found["relational:5:15:<= -> <"]


def test_arithmetic_and_compound_assignments_are_swapped():
    assert set(by_operator("arithmetic")) == {"arithmetic:6:17:+= -> -=", "arithmetic:6:22:* -> /"}


def test_logical_operators_are_swapped():
    assert set(by_operator("logical")) == {"logical:5:24:&& -> ||"}


def test_constants_move_by_one_and_booleans_flip():
    assert set(by_operator("constant")) == {"constant:3:19:0 -> 1", "constant:5:33:7 -> 8", "constant:6:24:2 -> 3",
                                            "constant:13:14:3 -> 4"}


def test_statements_are_removed_but_not_let_bindings():
    found = by_operator("statement")
    assert set(found) == {"statement:6:13:remove", "statement:13:5:remove"}
    assert "note(ok, 3);" not in found["statement:13:5:remove"]


def test_functions_that_return_something_get_an_early_default_return():
    found = by_operator("early_return")
    assert set(found) == {"early_return:2:52:return default", "early_return:12:34:return default"}
    assert "-> u32 { return Default::default();" in found["early_return:2:52:return default"]


def test_two_argument_calls_get_their_arguments_swapped():
    found = by_operator("swap_args")
    assert set(found) == {"swap_args:13:5:note(a, b) -> note(b, a)"}
    assert "note(3, ok);" in found["swap_args:13:5:note(a, b) -> note(b, a)"]


def test_every_body_but_mains_is_replaced_by_todo():
    found = by_operator("todo_body")
    assert len(found) == 3 and all("fn main() {\n    let v" in code for code in found.values())


def test_main_generics_and_unary_operators_are_never_mutated():
    ids = [m.id for m in mutants(PROGRAM)]
    assert not [i for i in ids if i.split(":")[1] in ("19", "20", "21")]  # fn main
    assert not any("Vec" in m.description for m in mutants(PROGRAM))  # `Vec<u32>`: no comparison


def test_mutant_ids_are_stable_across_calls():
    assert [m.id for m in mutants(PROGRAM)] == [m.id for m in mutants(PROGRAM)]


# -- the score ------------------------------------------------------------------------

TOTAL = "pub fn total(items: Vec<u32>) -> u32 {\n    let n = items.len() as u32;\n    if n > 0 { items.iter().sum() } else { 0 }\n}\n"
WITH_EMPTY = textwrap.dedent("""
    #[test]
    fn sums() { assert_eq!(total(vec![3, 4]), 7); }
    #[test]
    fn one_item() { assert_eq!(total(vec![5]), 5); }
    #[test]
    fn empty() { assert_eq!(total(vec![]), 0); }
""")
# `n > 0` -> `n >= 0` is equivalent: an empty list sums to 0 on either branch.
EQUIVALENT = "relational:3:10:> -> >="
BONUS = textwrap.dedent("""
    /// The sum of the items, plus 1 for an order of more than 2 items.
    pub fn total(items: Vec<u32>) -> u32 {
        let sum: u32 = items.iter().sum();
        if items.len() > 2 { sum + 1 } else { sum }
    }
""")
BONUS_TESTS = textwrap.dedent("""
    #[test]
    fn three_items_get_the_bonus() { assert_eq!(total(vec![1, 2, 3]), 7); }
    #[test]
    fn two_items_do_not() { assert_eq!(total(vec![4, 5]), 9); }
""")


def test_a_strong_suite_kills_every_compiling_mutant(verifier):
    score = check_koan(make_koan(fixed=BONUS, tests=BONUS_TESTS, split="train"), verifier, mutants=True).mutation
    assert score.survived == [] and score.killed >= 5 and score.score == 1.0


def test_a_weak_eval_suite_is_a_problem_naming_the_survivors(verifier):
    weak = "#[test]\nfn three_items_get_the_bonus() { assert_eq!(total(vec![1, 2, 3]), 7); }"
    check = check_koan(make_koan(fixed=BONUS, tests=weak, split="eval"), verifier, mutants=True)
    survivors = {m.id for m in check.mutation.survived}
    assert "relational:5:20:> -> >=" in survivors  # no test at the boundary of 2 items
    problem = next(p for p in check.problems if p.startswith("mutation score"))
    assert "relational:5:20:> -> >=" in problem and "below 90%" in problem


def test_an_equivalent_mutant_listed_in_the_koan_does_not_count(verifier):
    unlisted = check_koan(make_koan(fixed=TOTAL, tests=WITH_EMPTY, split="train"), verifier, mutants=True)
    assert [m.id for m in unlisted.mutation.survived] == [EQUIVALENT]
    koan = make_koan(fixed=TOTAL, tests=WITH_EMPTY, split="train", equivalent_mutants={EQUIVALENT: "0 either way"})
    check = check_koan(koan, verifier, mutants=True)
    assert check.mutation.equivalent == 1 and check.mutation.survived == [] and check.ok


def test_listing_a_killed_or_unknown_mutant_as_equivalent_is_a_problem(verifier):
    killed = [m.id for m in mutants(TOTAL) if m.operator == "constant"][-1]  # the else branch's 0
    listed = {killed: "wrong: the empty test kills it", "relational:99:1:< -> <=": "no such mutant"}
    check = check_koan(make_koan(fixed=TOTAL, tests=WITH_EMPTY, split="train", equivalent_mutants=listed),
                       verifier, mutants=True)
    assert any(f"lists {killed}, but the hidden tests kill it" in p for p in check.problems)
    assert any("'relational:99:1:< -> <=', which is no mutant of the fix" in p for p in check.problems)


@pytest.mark.parametrize("kind", ["alternatives", "decoys"])
def test_an_eval_koan_needs_two_alternatives_and_two_decoys(verifier, kind):
    check = check_koan(make_koan(split="eval"), verifier)
    assert any(f"needs at least 2 {kind}" in p for p in check.problems)


def test_a_destructuring_let_is_no_call_to_swap():
    code = "pub fn f(p: (u8, u8)) -> u8 {\n    let (a, b) = p;\n    if (a > b) { a } else { b }\n}\n"
    assert not [m for m in mutants(code) if m.operator == "swap_args"]


def test_a_function_whose_signature_closes_two_generics_at_once_is_mutated():
    code = "fn names(rows: Vec<Vec<u8>>) -> Option<Vec<String>> {\n    if rows.len() > 2 { None } else { Some(Vec::new()) }\n}\n"
    found = [m.id for m in mutants(code)]
    assert any(i.startswith("relational:") for i in found) and any(i.startswith("todo_body:") for i in found), found
