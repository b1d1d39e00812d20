"""The hidden test module and its proof channel (pytest_sleepy/verify/harness.py)."""

import textwrap

import pytest

from conftest import make_koan
from pytest_sleepy.verify.harness import (
    PROOF_MARK, HiddenTest, HiddenTestError, draw_tokens, hidden_module_source, hidden_test_names, hidden_tests, proven_tests,
)

TWO_TESTS = textwrap.dedent("""
    #[test]
    fn adds() { assert_eq!(total(vec![1, 2]), 3); }

    #[test]
    #[should_panic(expected = "empty")]
    fn refuses_empty() { total(vec![]); }
""")


def test_each_top_level_test_is_found_with_its_should_panic_expectation():
    assert hidden_tests(TWO_TESTS) == (HiddenTest("adds"), HiddenTest("refuses_empty", True, "empty"))


def test_tests_inside_nested_modules_are_not_hidden_tests():
    assert hidden_test_names("mod inner {\n#[test]\nfn nested() {}\n}\n#[test]\nfn top() {}") == ("top",)


def test_an_ignored_hidden_test_is_refused_because_it_could_never_pass():
    with pytest.raises(HiddenTestError, match="`#\\[ignore\\]`d"):
        hidden_tests("#[test]\n#[ignore]\nfn never() {}")


def test_each_test_body_is_renamed_and_called_by_a_wrapper_of_the_same_name():
    source = hidden_module_source(TWO_TESTS)
    assert "fn __sleepy_test_adds()" in source and "fn adds() { __sleepy_harness::run(" in source
    assert 'run_should_panic("refuses_empty", ::std::option::Option::Some("empty"), __sleepy_test_refuses_empty)' in source
    assert source.count("#[test]") == 2  # the koan's own attributes are gone; only the wrappers' remain


def test_standard_macros_in_the_tests_are_called_by_absolute_path():
    source = hidden_module_source(TWO_TESTS)
    assert "::std::assert_eq!(total(vec![1, 2]), 3)" in source.replace("::std::vec!", "vec!")
    assert "::std::vec![1, 2]" in source


def test_prelude_names_and_primitives_are_imported_by_name_except_those_the_tests_declare():
    source = hidden_module_source("use std::convert::TryFrom;\n#[test]\nfn t() {}")
    assert "use ::std::prelude::rust_2021::String as String;" in source
    assert "TryFrom" not in source.split("#[test]")[0].replace("use std::convert::TryFrom;", "")
    assert "use ::std::primitive::{bool, char, f32, f64, i128" in source


def test_tokens_are_fresh_for_every_verification():
    first, second = draw_tokens(["a", "b"]), draw_tokens(["a", "b"])
    assert first.keys() == {"a", "b"} and len(first["a"]) == 32
    assert first["a"] != second["a"] and first["a"] != first["b"]


def test_only_a_marked_token_proves_a_test():
    tokens = {"a": "1" * 32, "b": "2" * 32}
    output = f"test sleepy_hidden_tests::b ... ok\n{'1' * 32}\n{PROOF_MARK}{'1' * 32}\n"
    assert proven_tests(output, tokens) == {"a"}


# -- through the real verifier ----------------------------------------------------------

TOTAL = "pub fn total(items: Vec<u32>) -> u32 { assert!(!items.is_empty(), \"empty\"); items.iter().sum() }"


def test_a_should_panic_test_passes_only_when_the_candidate_panics_with_the_expected_message(verifier):
    koan = make_koan(tests=TWO_TESTS)
    assert verifier.verify_candidate(koan, TOTAL).passed
    quiet = verifier.verify_candidate(koan, "pub fn total(items: Vec<u32>) -> u32 { items.iter().sum() }")
    assert quiet.failed_tests == ["refuses_empty"]
    wrong = verifier.verify_candidate(koan, TOTAL.replace('"empty"', '"no items"'))
    assert wrong.failed_tests == ["refuses_empty"]


def test_a_test_returning_err_fails_and_one_returning_ok_passes(verifier):
    tests = textwrap.dedent("""
        #[test]
        fn parses() -> Result<(), String> {
            if total(vec![2]) == 2 { Ok(()) } else { Err("wrong".to_string()) }
        }
    """)
    koan = make_koan(tests=tests)
    assert verifier.verify_candidate(koan, TOTAL).passed
    failed = verifier.verify_candidate(koan, "pub fn total(_: Vec<u32>) -> u32 { 7 }")
    assert failed.failed_tests == ["parses"] and "wrong" in failed.test_output


def test_a_candidate_alias_named_result_does_not_change_what_the_tests_mean_by_result(verifier):
    tests = "#[test]\nfn checks() { let r: Result<u32, String> = Ok(total(vec![1])); assert_eq!(r, Ok(1)); }"
    code = "pub struct Oops;\ntype Result<T> = std::result::Result<T, Oops>;\n" + TOTAL
    assert verifier.verify_candidate(make_koan(tests=tests), code).passed


def test_a_candidate_importing_io_result_still_passes_tests_that_use_std_result(verifier):
    tests = "#[test]\nfn checks() { let r: Result<u32, String> = Ok(total(vec![4])); assert_eq!(r.unwrap(), 4); }"
    code = "use std::io::Result;\npub fn read() -> Result<u32> { Ok(1) }\n" + TOTAL
    assert verifier.verify_candidate(make_koan(tests=tests), code).passed


def test_the_proof_lines_are_not_kept_in_the_test_output(verifier):
    verdict = verifier.verify_candidate(make_koan(tests=TWO_TESTS), TOTAL)
    assert verdict.passed and PROOF_MARK not in verdict.test_output


def test_standard_items_the_koan_imports_are_imported_by_name_for_the_tests():
    buggy = "use std::collections::{HashMap, BTreeMap as Tree};\nuse std::fmt::{self, Result};\nfn f() {}"
    source = hidden_module_source("#[test]\nfn t() {}", (buggy,))
    for line in ("use ::std::collections::HashMap as HashMap;", "use ::std::collections::BTreeMap as Tree;",
                 "use ::std::fmt as fmt;", "use ::std::fmt::Result as Result;"):
        assert line in source
    assert "rust_2021::Result" not in source  # the koan's meaning of `Result` wins


def test_traits_and_renames_the_koan_lacks_are_shadowed_in_the_tests():
    candidate = "pub trait Sneaky {}\nuse crate::m::Thing as Other;\npub trait Shape {}\nfn f(x: u8) -> u64 { x as u64 }"
    source = hidden_module_source("#[test]\nfn t() {}", ("pub trait Shape {}",), candidate)
    assert "enum Sneaky {}" in source and "enum Other {}" in source
    assert "enum Shape" not in source and "enum u64" not in source


def test_a_candidate_trait_cannot_capture_a_method_the_tests_call_on_a_std_type(verifier, tmp_path):
    # The screen refuses such a trait (tamper rule 9); past it, the shadow still holds.
    tests = "#[test]\nfn empty_is_empty() { let v: Vec<usize> = total_list(); assert!(!v.is_empty()); }"
    koan = make_koan(tests=tests, buggy="pub fn total_list() -> Vec<usize> { vec![] }",
                     fixed="pub fn total_list() -> Vec<usize> { vec![1] }")
    sneaky = ("pub trait Sneaky { fn is_empty(self) -> bool; }\n"
              "impl Sneaky for Vec<usize> { fn is_empty(self) -> bool { false } }\n" + koan.buggy)
    assert verifier.verify_candidate(koan, sneaky).tampering
    verdict = verifier._build_and_test(koan, sneaky, tmp_path)
    assert not verdict.passed and verdict.failed_tests == ["empty_is_empty"]
    assert verifier.verify_candidate(koan, koan.fixed).passed
