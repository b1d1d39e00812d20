"""verify_candidate with the real rustc, cargo and bubblewrap."""

import dataclasses
import json
import textwrap
import threading

import pytest

from conftest import make_koan
from pytest_sleepy.verify.sandbox import Toolchain
from pytest_sleepy.verify.verifier import Verdict, VerificationCache, Verifier


def test_reference_fix_passes_every_hidden_test(verifier, shop_koan):
    verdict = verifier.verify_candidate(shop_koan, shop_koan.fixed)
    assert verdict.passed and verdict.compiled and verdict.reason == ""
    assert (verdict.tests_passed, verdict.tests_failed, verdict.tests_total) == (2, 0, 2)


def test_buggy_code_reports_its_error_codes_and_diagnostics(verifier, shop_koan):
    verdict = verifier.verify_candidate(shop_koan, shop_koan.buggy)
    assert not verdict.passed and not verdict.compiled
    assert verdict.error_codes == ["E0382"]
    assert verdict.reason == "does not compile: E0382"
    error = next(d for d in verdict.diagnostics if d.is_error)
    assert error.message == "borrow of moved value: `items`"
    assert error.primary_span.file == "candidate.rs" and error.primary_span.line_start == 4
    assert "candidate.rs:4" in error.rendered and not error.in_hidden_tests


def test_compiling_alone_is_not_a_pass(verifier, shop_koan):
    stub = "pub fn total(items: Vec<u32>) -> u32 { let _ = items; 0 }"
    verdict = verifier.verify_candidate(shop_koan, stub)
    assert verdict.compiled and not verdict.passed
    assert verdict.failed_tests == ["sums_prices"]
    assert verdict.reason == "hidden tests failed: 1 of 2 (sums_prices)"


def test_deleting_the_function_under_test_fails_in_the_hidden_tests(verifier, shop_koan):
    verdict = verifier.verify_candidate(shop_koan, "pub fn unrelated() {}")
    assert not verdict.passed and verdict.error_codes == ["E0425"]
    assert verdict.reason.startswith("hidden tests do not compile against the candidate (E0425)")
    assert all(d.in_hidden_tests for d in verdict.diagnostics if d.is_error)


def test_logic_bug_compiles_and_fails_its_tests(verifier):
    koan = make_koan(expect=("test",), buggy="pub fn total(items: Vec<u32>) -> u32 { items.len() as u32 }")
    verdict = verifier.verify_candidate(koan, koan.buggy)
    assert verdict.compiled and not verdict.passed and verdict.tests_failed == 1


def test_should_panic_tests_are_counted(verifier):
    tests = "#[test]\n#[should_panic(expected = \"empty\")]\nfn refuses_empty() { total(vec![]); }"
    code = "pub fn total(items: Vec<u32>) -> u32 { assert!(!items.is_empty(), \"empty\"); items.iter().sum() }"
    verdict = verifier.verify_candidate(make_koan(tests=tests), code)
    assert verdict.passed and verdict.tests_passed == 1


def test_machine_applicable_suggestions_are_kept_with_their_byte_range(verifier):
    code = "pub fn total(items: Vec<u32>) -> u32 {\n    let sum: u32 = items.iter().sum();\n    let x = 5;\n    x = 6;\n    sum\n}"
    verdict = verifier.verify_candidate(make_koan(), code)
    assert verdict.error_codes == ["E0384"]
    (suggestion,) = [s for d in verdict.diagnostics if d.is_error for s in d.suggestions]
    (edit,) = suggestion.edits
    assert (edit.replacement, suggestion.applicability) == ("mut ", "MachineApplicable")
    assert code[edit.byte_start:].startswith("x = 5")


def test_verdict_survives_a_json_round_trip(verifier, shop_koan):
    verdict = verifier.verify_candidate(shop_koan, shop_koan.buggy)
    assert Verdict.from_dict(json.loads(json.dumps(verdict.to_dict()))) == verdict


def test_cached_verdict_is_returned_without_running_rustc(sandbox, shop_koan, tmp_path):
    cache = VerificationCache(tmp_path / "cache")
    first = Verifier(sandbox, cache).verify_candidate(shop_koan, shop_koan.fixed)
    assert first.passed and not first.cached
    # Same toolchain identity, but a compiler that cannot run: only the cache can answer.
    broken = dataclasses.replace(sandbox.toolchain, rustc="/nonexistent/rustc")
    broken_sandbox = type(sandbox).__new__(type(sandbox))
    broken_sandbox.__dict__.update(sandbox.__dict__, toolchain=broken)
    second = Verifier(broken_sandbox, cache).verify_candidate(shop_koan, shop_koan.fixed)
    assert second.cached and second.passed
    assert dataclasses.replace(second, cached=False) == first


def test_cache_key_changes_with_tests_edition_and_toolchain(verifier, shop_koan):
    key = verifier.cache_key(shop_koan, shop_koan.fixed)
    assert verifier.cache_key(make_koan(tests=shop_koan.tests + "\n"), shop_koan.fixed) != key
    assert verifier.cache_key(make_koan(edition="2018"), shop_koan.fixed) != key
    other = Verifier(verifier.sandbox, verifier.cache)
    other.toolchain = dataclasses.replace(verifier.toolchain, version="rustc 0.0.0")
    assert other.cache_key(shop_koan, shop_koan.fixed) != key


def test_cache_is_safe_under_concurrent_writers_and_readers(tmp_path):
    cache = VerificationCache(tmp_path)
    verdicts = [Verdict(passed=i % 2 == 0, compiled=True, reason=f"r{i}" * 500) for i in range(8)]
    seen, errors = [], []

    def hammer(verdict):
        try:
            for _ in range(50):
                cache.put("ab" * 32, verdict)
                got = cache.get("ab" * 32)
                seen.append(dataclasses.replace(got, cached=False))
        except Exception as error:  # pragma: no cover - the assertion below reports it
            errors.append(error)

    threads = [threading.Thread(target=hammer, args=(v,)) for v in verdicts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(v in verdicts for v in seen)  # never a torn or mixed verdict


def test_timeouts_are_not_cached(sandbox, tmp_path):
    from pytest_sleepy.verify.sandbox import TEST_LIMITS

    cache = VerificationCache(tmp_path / "cache")
    fast = Verifier(sandbox, cache, test_limits=dataclasses.replace(TEST_LIMITS, wall_seconds=1))
    koan = make_koan()
    verdict = fast.verify_candidate(koan, "pub fn total(items: Vec<u32>) -> u32 { loop {} }")
    assert verdict.timed_out
    assert cache.get(fast.cache_key(koan, "pub fn total(items: Vec<u32>) -> u32 { loop {} }")) is None


def pricing_koan(tmp_path):
    crate = tmp_path / "deps" / "pricing"
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text('[package]\nname = "pricing"\nversion = "0.1.0"\nedition = "2021"\n')
    (crate / "src" / "lib.rs").write_text("pub fn with_tax(cents: u32) -> u32 { cents + cents / 10 }\n")
    return make_koan(
        dependencies={"pricing": crate},
        tests="#[test]\nfn taxed_total() { assert_eq!(total(vec![100, 200]), 330); }",
    )


PRICING_FIX = "pub fn total(items: Vec<u32>) -> u32 { pricing::with_tax(items.iter().sum()) }"


def test_koan_with_a_path_dependency_is_built_with_cargo(verifier, tmp_path):
    koan = pricing_koan(tmp_path)
    passed = verifier.verify_candidate(koan, PRICING_FIX)
    assert passed.passed, passed.reason
    broken = verifier.verify_candidate(koan, "pub fn total(items: Vec<u32>) -> u32 { pricing::with_vat(items.len() as u32) }")
    assert not broken.compiled and broken.error_codes == ["E0425"]
    assert broken.diagnostics[0].primary_span.file == "src/main.rs"


def test_path_dependency_also_builds_without_the_sandbox(toolchain, tmp_path):
    from pytest_sleepy.verify.sandbox import Sandbox

    unsandboxed = Verifier(Sandbox(toolchain, unsafe_no_sandbox=True))
    verdict = unsandboxed.verify_candidate(pricing_koan(tmp_path), PRICING_FIX)
    assert verdict.passed, verdict.reason


def test_a_candidate_over_the_size_cap_is_refused_before_any_work(sandbox, shop_koan):
    verifier = Verifier(sandbox, None, max_candidate_bytes=1024)
    verdict = verifier.verify_candidate(shop_koan, shop_koan.fixed + "// " + "x" * 1024)
    assert not verdict.passed and not verdict.compiled and verdict.compile_seconds == 0
    assert verdict.reason.startswith("too large: the candidate is 1,") and "limit of 1,024" in verdict.reason


def test_a_koan_without_hidden_tests_can_never_pass(verifier):
    koan = make_koan(tests="fn helper() -> u32 { 1 }")
    verdict = verifier.verify_candidate(koan, koan.fixed)
    assert not verdict.passed and verdict.tests_total == 0
    assert verdict.reason.startswith("the koan has no hidden tests")


def test_code_the_lexer_cannot_read_is_refused_before_rustc(verifier, shop_koan):
    verdict = verifier.verify_candidate(shop_koan, 'pub fn total(items: Vec<u32>) -> u32 { "open')
    assert not verdict.passed and verdict.compile_seconds == 0
    assert verdict.reason == "does not compile: line 1: unterminated string literal"
