"""Koan variants: hypothesis strategies whose every emitted variant keeps the koan's contract."""

from __future__ import annotations

import random
import textwrap

import hypothesis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO_ROOT, make_koan
from pytest_sleepy.koans import load_koan
from pytest_sleepy.verify.rustlex import tokenize
from pytest_sleepy.corpus.variants import (
    Variant,
    check_variant,
    draw_variants,
    insert_item,
    koan_variants,
    move_item,
    renamable_names,
    rename_identifier,
    renamings,
    reindent,
    replace_literal,
    space_items,
    substitute_width,
    top_level_items,
)
from pytest_sleepy.verify.verifier import Verifier

BORROW = load_koan(REPO_ROOT / "koans" / "borrow_checker" / "bc_101.toml")
TRAITS = load_koan(REPO_ROOT / "koans" / "trait_bounds" / "tb_101.toml")
LOGIC = load_koan(REPO_ROOT / "koans" / "logic" / "lg_101.toml")
SHOP = make_koan()

QUICK = settings(max_examples=300, database=None, deadline=None)  # generation only: cheap
WITH_VERIFIER = settings(max_examples=10, database=None, deadline=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def identifiers(text: str) -> set[str]:
    return {t.text for t in tokenize(text) if t.kind == "ident"}


def first(strategy, predicate=lambda v: True):
    """The simplest example hypothesis finds (deterministic: no database, fixed seed)."""
    return hypothesis.find(strategy, predicate, settings=QUICK, random=random.Random(0))


def contract_holds(koan, verifier) -> str | None:
    """The koan contract, checked directly with the verifier (independent of check_variant)."""
    buggy = verifier.verify_candidate(koan, koan.buggy)
    if koan.is_logic_bug:
        if not (buggy.compiled and buggy.tests_failed > 0):
            return f"buggy should compile and fail a test: {buggy.reason}"
    elif buggy.compiled or tuple(buggy.error_codes) != koan.expect:
        return f"buggy fails with {buggy.error_codes}, expected {koan.expect}"
    elif any(d.in_hidden_tests for d in buggy.diagnostics if d.is_error):
        return "buggy's errors point into the hidden tests"
    fixed = verifier.verify_candidate(koan, koan.fixed)
    return None if fixed.passed else f"fixed does not pass: {fixed.reason}"


# -- the contract under the real verifier ---------------------------------------------


@pytest.mark.parametrize("koan", [BORROW, TRAITS, LOGIC], ids=lambda k: k.id)
def test_every_emitted_variant_keeps_the_koan_contract(koan, verifier, sandbox):
    draw = draw_variants(koan, 3, seed=7, verifier=verifier, max_draws=10)
    assert draw.kept, draw
    independent = Verifier(sandbox)  # no cache: nothing carried over from the draw
    for variant in draw.kept:
        assert contract_holds(variant.koan, independent) is None, variant.transformations


@pytest.mark.parametrize("koan", [SHOP, TRAITS, LOGIC], ids=lambda k: k.id)
def test_renaming_never_produces_invalid_rust(koan, verifier):
    @WITH_VERIFIER
    @given(renamings(koan))
    def renamed_koan_keeps_its_contract(variant):
        assert contract_holds(variant.koan, verifier) is None, variant.transformations

    renamed_koan_keeps_its_contract()


def test_check_variant_accepts_a_valid_variant_and_names_the_problem_of_an_invalid_one(verifier):
    valid = first(renamings(SHOP))
    assert check_variant(valid, verifier).ok
    broken = Variant(make_koan(id="shop_001~x", fixed=SHOP.buggy), "shop_001", ("broken on purpose",))
    check = check_variant(broken, verifier)
    assert not check.ok and check.problem == "fixed does not compile: E0382"


# -- shrinking ------------------------------------------------------------------------


def test_a_failing_property_is_reported_with_a_minimal_variant():
    seen: list[Variant] = []

    @settings(max_examples=200, database=None, deadline=None)
    @given(koan_variants(BORROW))
    def no_variant_renames_anything(variant):
        seen.append(variant)
        assert not any(t.startswith("rename") for t in variant.transformations)

    with pytest.raises(AssertionError):
        no_variant_renames_anything()
    minimal = seen[-1]  # hypothesis replays the shrunk example last
    assert len(minimal.transformations) == 1
    new_name = minimal.transformations[0].split(" -> ")[1]
    assert len(new_name) <= 2, minimal.transformations


def test_find_shrinks_a_literal_change_to_one_step_of_one():
    variant = first(koan_variants(SHOP), lambda v: any(t.startswith("literal") for t in v.transformations))
    assert variant.transformations == ("literal 3 -> 4",)


# -- renaming -------------------------------------------------------------------------


def test_renaming_leaves_strings_and_comments_alone():
    source = 'let total = 1; // total\nlet s = "total"; /* total */ total + 1'
    assert rename_identifier(source, "total", "sum") == 'let sum = 1; // total\nlet s = "total"; /* total */ sum + 1'


def test_renames_are_consistent_across_buggy_fixed_and_tests():
    variant = first(renamings(SHOP), lambda v: v.transformations[0].startswith("rename function total"))
    (description,) = variant.transformations
    new = description.split(" -> ")[1]
    for text in (variant.koan.buggy, variant.koan.fixed, variant.koan.tests):
        assert "total" not in identifiers(text) and new in identifiers(text)


def test_keywords_std_names_trait_methods_and_format_captures_are_never_renamable():
    code = textwrap.dedent("""
        use std::fmt;
        trait Shape { fn area(&self) -> f64; }
        struct Circle { radius: f64 }
        impl Shape for Circle { fn area(&self) -> f64 { 3.0 * self.radius * self.radius } }
        impl fmt::Display for Circle {
            fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result { write!(f, "circle {}", self.radius) }
        }
        struct Countdown { left: u32 }
        impl Iterator for Countdown {
            type Item = u32;
            fn next(&mut self) -> Option<u32> { self.left.checked_sub(1).map(|n| { self.left = n; n }) }
        }
        fn describe(level: u32, meter: &Meter) -> String {
            let reading = meter.reading();
            let biggest = std::cmp::max(level, reading);
            format!("{level}") + &biggest.to_string()
        }
        fn main() { let c = Circle::new(); }
    """)
    names = renamable_names(make_koan(buggy=code, fixed=code, tests="#[test]\nfn t() {}\n"))
    assert {"Shape", "area", "Circle", "radius", "Countdown", "left", "describe", "biggest"} <= set(names)
    never = {"fmt", "next", "Item", "new", "main", "self", "Self", "Option", "Some", "max", "f64", "u32",
             "level",  # captured by the format string
             "reading",  # also a method of a type the koan does not declare
             "Meter", "cmp", "std", "write"}
    assert not never & set(names)
    assert names["area"] == "function" and names["radius"] == "field" and names["biggest"] == "local"


def test_new_names_keep_the_case_style_and_avoid_every_existing_identifier():
    taken = identifiers(BORROW.buggy) | identifiers(BORROW.fixed) | identifiers(BORROW.tests)

    @settings(max_examples=40, database=None, deadline=None)
    @given(renamings(BORROW, max_transformations=1))
    def fresh(variant):
        (description,) = variant.transformations
        old, new = description.split(" ")[-3], description.split(" ")[-1]
        assert new not in taken
        assert new[0].isupper() == old[0].isupper()

    fresh()


# -- the other transformations, on their own ------------------------------------------


def test_a_literal_changes_wherever_that_exact_token_appears():
    source = 'let a = 12; let b = 120; let c = "12"; f(12u8, 12)'
    assert replace_literal(source, "12", "13") == 'let a = 13; let b = 120; let c = "12"; f(12u8, 13)'
    variant = first(koan_variants(SHOP, kinds=("literal",)))
    assert variant.koan.tests != SHOP.tests and variant.koan.buggy == SHOP.buggy  # 3, 4, 5, 12 live in the tests


def test_integer_width_replaces_type_names_and_suffixes_but_not_strings():
    source = 'fn f(x: u32) -> u32 { let s = "u32"; x + 5u32 + u32::MAX }'
    assert substitute_width(source, "u32", "u64") == 'fn f(x: u64) -> u64 { let s = "u32"; x + 5u64 + u64::MAX }'
    variant = first(koan_variants(SHOP, kinds=("width",)))
    assert variant.transformations == ("integer width u32 -> u64",)
    assert all("u32" not in identifiers(t) for t in (variant.koan.buggy, variant.koan.fixed, variant.koan.tests))


def test_integer_width_is_not_offered_when_the_wider_type_is_already_there():
    # bc_101 mixes u32 and u64 (and has no other width to widen): merging them would
    # change what type-checks.
    assert koan_variants(BORROW, kinds=("width",)).is_empty
    mixed = make_koan(tests=SHOP.tests + "\nfn wide() -> u64 { 1 }\n")
    assert koan_variants(mixed, kinds=("width",)).is_empty


def test_an_added_item_goes_into_buggy_and_fixed_alike_but_never_into_the_tests():
    variant = first(koan_variants(BORROW, kinds=("add_item",)), lambda v: "after" in v.transformations[0])
    inserted = variant.koan.buggy[len(BORROW.buggy.rstrip("\n")):]
    assert inserted.startswith("\n\n#[allow(dead_code)]\n")
    assert variant.koan.fixed == BORROW.fixed.rstrip("\n") + inserted
    assert variant.koan.tests == BORROW.tests


def test_reordering_moves_attributes_and_doc_comments_with_their_item():
    source = textwrap.dedent("""\
        /// The answer.
        #[derive(Debug)]
        struct Answer { value: u32 } // trailing

        fn main() {}
    """)
    assert move_item(source, 1, 0) == textwrap.dedent("""\
        fn main() {}

        /// The answer.
        #[derive(Debug)]
        struct Answer { value: u32 } // trailing
    """)


def test_reordering_applies_the_same_move_to_buggy_and_fixed():
    @settings(max_examples=30, database=None, deadline=None)
    @given(koan_variants(BORROW, kinds=("reorder",), max_transformations=1))
    def same_order(variant):
        order = [i.key for i in top_level_items(variant.koan.buggy)]
        assert order == [i.key for i in top_level_items(variant.koan.fixed)]
        assert order != [i.key for i in top_level_items(BORROW.buggy)]
        assert variant.koan.tests == BORROW.tests

    same_order()


def test_nothing_moves_across_a_macro_definition():
    code = textwrap.dedent("""\
        fn a() {}
        macro_rules! twice { ($x:expr) => { $x * 2 }; }
        fn b() -> u32 { twice!(2) }
        fn c() {}
    """)
    koan = make_koan(buggy=code, fixed=code)

    @settings(max_examples=30, database=None, deadline=None)
    @given(koan_variants(koan, kinds=("reorder",)))
    def macro_stays_in_front(variant):
        labels = [i.label for i in top_level_items(variant.koan.buggy)]
        assert labels[:2] == ["fn a", "macro_rules! twice"]

    macro_stays_in_front()


def test_reindenting_leaves_multiline_string_contents_alone():
    source = 'fn f() -> &\'static str {\n    let s = "one\n    two";\n    s\n}\n'
    assert reindent(source, 2) == 'fn f() -> &\'static str {\n  let s = "one\n    two";\n  s\n}\n'
    assert reindent(source, "tab") == 'fn f() -> &\'static str {\n\tlet s = "one\n    two";\n\ts\n}\n'


def test_blank_lines_between_items_are_set_where_only_whitespace_separates_them():
    source = "fn a() {}\nfn b() {}\n\n// about c\n\nfn c() {}\n"
    assert space_items(source, 2) == "fn a() {}\n\n\nfn b() {}\n\n// about c\n\nfn c() {}\n"


def test_an_item_is_inserted_after_inner_doc_comments():
    assert insert_item("//! docs\nfn a() {}\n", "fn b() {}", "before") == "//! docs\nfn b() {}\n\nfn a() {}\n"


def test_a_variant_is_a_koan_of_the_same_kind_with_a_content_hash_id():
    @settings(max_examples=20, database=None, deadline=None)
    @given(koan_variants(BORROW))
    def same_kind(variant):
        koan = variant.koan
        assert variant.source == "bc_101" and koan.id.startswith("bc_101~") and len(koan.id) > len("bc_101~")
        assert (koan.family, koan.pattern, koan.split, koan.expect, koan.edition, koan.title) == (
            BORROW.family, BORROW.pattern, BORROW.split, BORROW.expect, BORROW.edition, BORROW.title)
        assert koan.path is None and len(variant.transformations) <= 4

    same_kind()


# -- draw_variants --------------------------------------------------------------------


def test_draw_variants_is_deterministic_for_a_seed(verifier):
    one = draw_variants(SHOP, 2, seed=3, verifier=verifier, max_draws=8)
    two = draw_variants(SHOP, 2, seed=3, verifier=verifier, max_draws=8)
    other = draw_variants(SHOP, 2, seed=4, verifier=verifier, max_draws=8)
    assert [v.koan.id for v in one.kept] == [v.koan.id for v in two.kept]
    assert [v.koan.id for v in one.kept] != [v.koan.id for v in other.kept]


def test_draw_counts_add_up(verifier):
    draw = draw_variants(SHOP, 3, seed=1, verifier=verifier, max_draws=12)
    assert len(draw.kept) == 3
    assert draw.drawn == len(draw.kept) + draw.duplicates + draw.discarded + draw.unused
    assert draw.discarded == sum(draw.problems.values())


def test_a_koan_whose_fix_fails_gets_every_variant_discarded_with_its_problem_counted(verifier):
    broken = make_koan(fixed=SHOP.fixed.replace("if empty { 0 } else { sum }", "if empty { 0 } else { sum + 1 }"))
    draw = draw_variants(broken, 2, seed=0, verifier=verifier, max_draws=4,
                         strategy=koan_variants(broken, kinds=("rename", "reindent")))
    assert draw.kept == [] and draw.discarded == draw.drawn - draw.duplicates > 0
    assert draw.problems == {"fixed fails hidden tests": draw.discarded}


def test_duplicates_and_variants_identical_to_the_source_are_never_checked():
    same = Variant(SHOP, SHOP.id, ("nothing",))

    class NoVerifier:
        def verify_candidate(self, koan, code):
            raise AssertionError("a duplicate was verified")

    draw = draw_variants(SHOP, 1, seed=0, verifier=NoVerifier(), strategy=st.just(same))
    assert draw.kept == [] and draw.drawn >= 1 and draw.duplicates == draw.drawn


def test_jobs_check_in_parallel_with_the_same_result(verifier):
    serial = draw_variants(SHOP, 3, seed=5, verifier=verifier, max_draws=10)
    parallel = draw_variants(SHOP, 3, seed=5, verifier=verifier, max_draws=10, jobs=2)
    assert [v.koan.id for v in serial.kept] == [v.koan.id for v in parallel.kept]
    assert (serial.duplicates, serial.discarded, serial.unused) == (parallel.duplicates, parallel.discarded,
                                                                     parallel.unused)
