"""Applying rustc's suggestions: what the `rustfix` backend does to a candidate."""

from conftest import make_koan
from pytest_sleepy.verify.diagnostics import Diagnostic, Edit, Suggestion, apply_suggestions

MUT_BUG = "pub fn total(items: Vec<u32>) -> u32 {\n    let sum = 0;\n    for i in items { sum += i; }\n    sum\n}\n"


def error(*suggestions):
    return Diagnostic(level="error", code="E0000", message="m", rendered="m", suggestions=tuple(suggestions))


def suggestion(*edits, applicability="MachineApplicable"):
    return Suggestion("help", applicability, tuple(Edit("candidate.rs", *e) for e in edits))


def test_machine_applicable_fix_from_real_rustc_output_repairs_the_koan(verifier):
    koan = make_koan()
    broken = verifier.verify_candidate(koan, MUT_BUG)
    assert broken.error_codes == ["E0384"]
    repaired = apply_suggestions(MUT_BUG, broken.diagnostics, file="candidate.rs")
    assert "let mut sum = 0;" in repaired
    assert verifier.verify_candidate(koan, repaired).passed


def test_no_applicable_suggestion_gives_none():
    assert apply_suggestions("fn f() {}", [error(suggestion((0, 0, "x"), applicability="MaybeIncorrect"))], "candidate.rs") is None


def test_maybe_incorrect_suggestions_apply_only_when_asked():
    diagnostics = [error(suggestion((3, 4, "g"), applicability="MaybeIncorrect"))]
    assert apply_suggestions("fn f() {}", diagnostics, "candidate.rs", ("MachineApplicable", "MaybeIncorrect")) == "fn g() {}"


def test_only_the_first_alternative_of_a_diagnostic_is_applied():
    diagnostics = [error(suggestion((3, 4, "g")), suggestion((3, 4, "h")))]
    assert apply_suggestions("fn f() {}", diagnostics, "candidate.rs") == "fn g() {}"


def test_all_edits_of_one_suggestion_are_applied_together():
    diagnostics = [error(suggestion((0, 0, "pub "), (3, 4, "g")))]
    assert apply_suggestions("fn f() {}", diagnostics, "candidate.rs") == "pub fn g() {}"


def test_overlapping_suggestions_of_different_errors_keep_the_first():
    diagnostics = [error(suggestion((3, 4, "g"))), error(suggestion((3, 5, "h(")))]
    assert apply_suggestions("fn f() {}", diagnostics, "candidate.rs") == "fn g() {}"


def test_edits_in_other_files_are_never_applied():
    hidden = Suggestion("help", "MachineApplicable", (Edit("sleepy_hidden_tests.rs", 0, 0, "x"),))
    assert apply_suggestions("fn f() {}", [error(hidden)], "candidate.rs") is None


def test_byte_offsets_are_honoured_after_multibyte_characters():
    code = 'fn f() -> &str { "café" }\nfn g() {}'
    start = len('fn f() -> &str { "café" }\nfn '.encode())
    assert apply_suggestions(code, [error(suggestion((start, start + 1, "h")))], "candidate.rs").endswith("fn h() {}")


def test_warnings_suggestions_are_left_alone():
    warning = Diagnostic(level="warning", code="unused_mut", message="m", rendered="m",
                         suggestions=(suggestion((0, 3, "")),))
    assert apply_suggestions("fn f() {}", [warning], "candidate.rs") is None
