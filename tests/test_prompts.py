"""The prompt builder: what the model is shown, and what it must never see."""

from __future__ import annotations

from pytest_sleepy.prompts import FewShotExample, describe_verdict, repair_messages

from conftest import BUGGY_SHOP, FIXED_SHOP, SHOP_TESTS


def test_compile_errors_are_shown_as_rustc_renders_them(shop_koan, verifier):
    feedback = describe_verdict(verifier.verify_candidate(shop_koan, BUGGY_SHOP))
    assert feedback.startswith("The program does not compile:")
    assert "error[E0382]: borrow of moved value: `items`" in feedback
    assert "--> candidate.rs:" in feedback


def test_no_temporary_paths_or_warnings_reach_the_prompt(shop_koan, verifier):
    code = BUGGY_SHOP + "\nfn unused_helper() {}\n"  # a dead-code warning
    feedback = describe_verdict(verifier.verify_candidate(shop_koan, code))
    assert "/tmp" not in feedback and "sleepy-verify" not in feedback
    assert "warning" not in feedback


def test_errors_inside_the_hidden_tests_show_the_message_but_not_the_test_source(shop_koan, verifier):
    renamed = FIXED_SHOP.replace("pub fn total", "pub fn grand_total")
    feedback = describe_verdict(verifier.verify_candidate(shop_koan, renamed))
    assert "in the hidden tests" in feedback and "cannot find function `total`" in feedback
    assert "assert_eq!" not in feedback and "vec![3, 4, 5]" not in feedback
    assert feedback.count("cannot find function `total`") == 1  # repeated errors are shown once


def test_failing_tests_are_named_with_their_panic_message_but_not_their_location(shop_koan, verifier):
    always_zero = "pub fn total(items: Vec<u32>) -> u32 { 0 }"
    feedback = describe_verdict(verifier.verify_candidate(shop_koan, always_zero))
    assert feedback.startswith("The program compiles, but 1 of 2 hidden tests fail:")
    assert "- sums_prices:" in feedback and "right: 12" in feedback
    assert "sleepy_hidden_tests.rs" not in feedback and "empty_basket_costs_nothing" not in feedback


def test_tampering_is_reported_without_the_internal_prefix(shop_koan, verifier):
    feedback = describe_verdict(verifier.verify_candidate(shop_koan, FIXED_SHOP + "\nmod sleepy_hidden_tests {}\n"))
    assert feedback.startswith("The program was rejected: ")
    assert "tampering:" not in feedback


def test_messages_are_system_then_the_repair_request(shop_koan, verifier):
    verdict = verifier.verify_candidate(shop_koan, BUGGY_SHOP)
    messages = repair_messages(BUGGY_SHOP, verdict, hints=["Borrow instead of moving."])
    assert [m.role for m in messages] == ["system", "user"]
    request = messages[1].content
    assert f"```rust\n{BUGGY_SHOP.strip()}\n```" in request
    assert "Hints:\n- Borrow instead of moving." in request
    assert SHOP_TESTS.strip() not in request


def test_worked_examples_are_earlier_turns_with_the_fix_as_the_answer(shop_koan, verifier):
    verdict = verifier.verify_candidate(shop_koan, BUGGY_SHOP)
    example = FewShotExample(code="fn a() {}", feedback="The program does not compile: ...", fixed="fn b() {}")
    messages = repair_messages(BUGGY_SHOP, verdict, examples=[example])
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2].content == "```rust\nfn b() {}\n```"
    assert "fn a() {}" in messages[1].content


def test_the_prompt_states_the_contract_the_hidden_tests_rely_on(shop_koan, verifier):
    system = repair_messages(shop_koan.buggy, verifier.verify_candidate(shop_koan, shop_koan.buggy))[0]
    assert "Hidden tests will call the program's functions" in system.content
    assert "owned or a borrowed result" in system.content


def test_with_history_the_hints_sit_beside_the_latest_feedback_they_were_chosen_for(shop_koan, verifier):
    from pytest_sleepy.prompts import PastAttempt

    first = verifier.verify_candidate(shop_koan, BUGGY_SHOP)
    latest = verifier.verify_candidate(shop_koan, "pub fn total(items: Vec<u32>) -> u32 { 0 }")
    past = PastAttempt(BUGGY_SHOP, first, "```rust\npub fn total(items: Vec<u32>) -> u32 { 0 }\n```")
    messages = repair_messages("pub fn total(items: Vec<u32>) -> u32 { 0 }", latest,
                               hints=["Check the arithmetic."], history=[past])
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert "Hints:\n- Check the arithmetic." in messages[-1].content
    assert "Hints:" not in messages[1].content
