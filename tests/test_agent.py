"""The repair loop (agent.repair): steps, verification of every attempt, failure reasons."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pytest_sleepy.agent import repair
from pytest_sleepy.models import (Completion, CompletionCache, CompletionRequest, ModelError, ModelSpec,
                                  ModelUnavailable, load_model)
from pytest_sleepy.strategies import Strategy

from conftest import BUGGY_SHOP, FIXED_SHOP


@dataclass
class ScriptedModel:
    """A model whose answers are written by the test, one per call; an exception in
    the script is raised instead of answering."""

    answers: list
    spec: ModelSpec = ModelSpec(text="scripted", backend="scripted", name="scripted")
    requests: list = field(default_factory=list)

    @property
    def identity(self) -> str:
        return "scripted/1"

    def preflight(self) -> None:
        return None

    def complete(self, request: CompletionRequest) -> Completion:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return Completion(text=answer, tokens_in=10, tokens_out=5, seconds=0.01)


class Plain(Strategy):
    name = "plain"
    description = "the shared repair prompt"


def fenced(code: str) -> str:
    return f"Here is the fix:\n\n```rust\n{code}\n```\n"


def test_a_correct_first_answer_solves_the_koan_in_one_step(shop_koan, verifier):
    result = repair(shop_koan, Plain(), ScriptedModel([fenced(FIXED_SHOP)]), verifier, max_steps=3)
    assert result.solved and result.steps == 1 and result.reason == ""


def test_the_buggy_code_is_verified_first_and_its_diagnostics_reach_the_prompt(shop_koan, verifier):
    model = ScriptedModel([fenced(FIXED_SHOP)])
    result = repair(shop_koan, Plain(), model, verifier, max_steps=3)
    assert result.initial.error_codes == ["E0382"]
    prompt = model.requests[0].messages[-1].content
    assert "error[E0382]" in prompt and BUGGY_SHOP.strip() in prompt
    assert [d.code for d in model.requests[0].diagnostics] == ["E0382"]


def test_every_attempt_is_verified_including_the_last(shop_koan, verifier):
    answers = [fenced("pub fn total(items: Vec<u32>) -> u32 { 0 }")] * 3
    seen = []
    result = repair(shop_koan, Plain(), ScriptedModel(answers), verifier, max_steps=3, on_attempt=seen.append)
    assert not result.solved
    assert [a.step for a in seen] == [1, 2, 3]
    assert all(a.verdict is not None and a.verdict.compiled for a in seen)
    assert result.reason.startswith("hidden tests failed: 1 of 2 (sums_prices) after 3 steps")


def test_the_next_prompt_carries_the_new_code_and_its_feedback(shop_koan, verifier):
    wrong = "pub fn total(items: Vec<u32>) -> u32 { 0 }"
    model = ScriptedModel([fenced(wrong), fenced(FIXED_SHOP)])
    result = repair(shop_koan, Plain(), model, verifier, max_steps=3)
    assert result.solved and result.steps == 2
    second = model.requests[1]
    assert second.code.strip() == wrong
    assert "sums_prices" in second.messages[-1].content


STILL_BROKEN = BUGGY_SHOP.replace("let sum: u32", "let total_sum: u32").replace("{ sum }", "{ total_sum }")


def test_a_failed_koan_says_which_errors_remain(shop_koan, verifier):
    model = ScriptedModel([fenced(STILL_BROKEN), fenced(STILL_BROKEN.replace("total_sum", "s"))])
    result = repair(shop_koan, Plain(), model, verifier, max_steps=2)
    assert result.reason == "still E0382 after 2 steps"


# -- every step counts ---------------------------------------------------------------


def test_an_answer_that_returns_the_program_unchanged_is_marked_and_named_in_the_reason(shop_koan, verifier):
    seen = []
    model = ScriptedModel([fenced(BUGGY_SHOP + "\n   "), fenced(STILL_BROKEN), fenced(STILL_BROKEN)])
    result = repair(shop_koan, Plain(), model, verifier, max_steps=3, on_attempt=seen.append)
    assert [a.unchanged for a in seen] == ["the original program", None, "your answer at step 2"]
    assert result.reason == "still E0382 after 3 steps (steps 1, 3 unchanged)"


def test_the_next_prompt_tells_the_model_its_answer_was_unchanged(shop_koan, verifier):
    model = ScriptedModel([fenced(BUGGY_SHOP), fenced(FIXED_SHOP)])
    repair(shop_koan, Plain(), model, verifier, max_steps=2, history="none")
    first, second = (r.messages[-1].content for r in model.requests)
    assert "unchanged" not in first
    assert "Your answer at step 1 gave back the original program unchanged, and it still fails as described." in second


def test_repeating_the_same_answer_never_repeats_the_same_prompt(shop_koan, verifier, tmp_path):
    model = ScriptedModel([fenced(BUGGY_SHOP)] * 3)
    cache = CompletionCache(tmp_path / "completions", "rw")
    result = repair(shop_koan, Plain(), model, verifier, max_steps=3, cache=cache, history="last")
    assert len(model.requests) == 3 and not any(a.cached for a in result.attempts)
    assert "(so did step 1)" in model.requests[2].messages[-1].content


def test_an_answer_without_code_is_named_in_the_next_prompt(shop_koan, verifier):
    model = ScriptedModel(["I would rather not.", fenced(FIXED_SHOP)])
    repair(shop_koan, Plain(), model, verifier, max_steps=2, history="none")
    assert "Your answer at step 1 held no Rust code block" in model.requests[1].messages[-1].content


def test_two_answers_without_code_in_a_row_never_repeat_the_same_prompt(shop_koan, verifier, tmp_path):
    model = ScriptedModel(["I would rather not."] * 3)
    cache = CompletionCache(tmp_path / "completions", "rw")
    result = repair(shop_koan, Plain(), model, verifier, max_steps=3, cache=cache, history="none")
    assert len(model.requests) == 3 and not any(a.cached for a in result.attempts)


@pytest.mark.parametrize("history, roles", [
    ("none", ["system", "user"]),
    ("last", ["system", "user", "assistant", "user"]),
    ("full", ["system", "user", "assistant", "user", "assistant", "user"]),
])
def test_the_history_option_carries_earlier_attempts_as_chat_turns(shop_koan, verifier, history, roles):
    answers = [fenced(STILL_BROKEN), fenced(STILL_BROKEN.replace("total_sum", "s")), fenced(FIXED_SHOP)]
    model = ScriptedModel(list(answers))
    repair(shop_koan, Plain(), model, verifier, max_steps=3, history=history)
    third = model.requests[2].messages
    assert [m.role for m in third] == roles
    if history != "none":
        assert third[-2].content == answers[1]  # the model's own last answer, verbatim
        assert "Repair this Rust program" not in third[-1].content  # the program is in that answer


def test_a_replayed_answer_counts_no_model_time_and_keeps_its_recorded_time(shop_koan, verifier, tmp_path):
    cache = CompletionCache(tmp_path / "completions", "rw")
    repair(shop_koan, Plain(), ScriptedModel([fenced(FIXED_SHOP)]), verifier, max_steps=1, cache=cache)
    replay = repair(shop_koan, Plain(), ScriptedModel([]), verifier, max_steps=1, cache=cache)
    attempt = replay.attempts[0]
    assert attempt.cached and attempt.recorded_seconds == 0.01 and attempt.model_seconds == 0
    assert replay.recorded_seconds == 0.01


def test_an_answer_without_code_is_a_step_without_verification(shop_koan, verifier):
    seen = []
    model = ScriptedModel(["I would rather not.", fenced(FIXED_SHOP)])
    result = repair(shop_koan, Plain(), model, verifier, max_steps=3, on_attempt=seen.append)
    assert result.solved and result.steps == 2
    assert seen[0].code is None and seen[0].verdict is None


def test_only_answers_without_code_fail_with_that_reason_and_a_quote(shop_koan, verifier):
    result = repair(shop_koan, Plain(), ScriptedModel(["No idea."] * 2), verifier, max_steps=2)
    assert result.reason == "no code in the answer after 2 steps (it said: 'No idea.')"


def test_an_answer_without_code_after_a_changed_program_names_where_the_program_stands(shop_koan, verifier):
    wrong = FIXED_SHOP.replace("if empty { 0 } else { sum }", "if empty { 1 } else { sum }")
    result = repair(shop_koan, Plain(), ScriptedModel([fenced(wrong), "Nothing more to suggest."]), verifier,
                    max_steps=2)
    assert result.reason == ("hidden tests failed: 1 of 2 (empty_basket_costs_nothing) after 2 steps; the answer at "
                             "step 2 held no code (it said: 'Nothing more to suggest.')")


def test_a_model_error_becomes_the_koans_failure_reason(shop_koan, verifier):
    seen = []
    model = ScriptedModel([ModelError("ollama: 500 after 4 attempts")])
    result = repair(shop_koan, Plain(), model, verifier, max_steps=3, on_attempt=seen.append)
    assert not result.solved
    assert result.reason == "model error at step 1: ollama: 500 after 4 attempts"
    assert seen[0].model_error == "ollama: 500 after 4 attempts"


def test_an_unavailable_model_is_not_a_koan_failure_but_propagates(shop_koan, verifier):
    with pytest.raises(ModelUnavailable):
        repair(shop_koan, Plain(), ScriptedModel([ModelUnavailable("run `ollama serve`")]), verifier, max_steps=3)


def test_a_strategy_may_set_its_own_step_count(shop_koan, verifier):
    class OneShot(Plain):
        max_steps = 1

    result = repair(shop_koan, OneShot(), ScriptedModel([fenced(BUGGY_SHOP)] * 3), verifier, max_steps=3)
    assert result.steps == 1


def test_tampering_answers_are_rejected_without_compiling(shop_koan, verifier):
    cheat = FIXED_SHOP + "\nmod sleepy_hidden_tests {}\n"
    result = repair(shop_koan, Plain(), ScriptedModel([fenced(cheat)]), verifier, max_steps=1)
    assert not result.solved and result.reason.startswith("tampering")


def test_attempts_carry_a_diff_against_the_buggy_code(shop_koan, verifier):
    seen = []
    repair(shop_koan, Plain(), ScriptedModel([fenced(FIXED_SHOP)]), verifier, max_steps=1, on_attempt=seen.append)
    assert seen[0].diff.startswith("--- buggy.rs\n+++ candidate.rs\n")
    assert "+    let empty = items.is_empty();" in seen[0].diff


def test_token_counts_and_times_are_summed_over_steps(shop_koan, verifier):
    answers = ["nothing", fenced(FIXED_SHOP)]
    result = repair(shop_koan, Plain(), ScriptedModel(answers), verifier, max_steps=3)
    assert result.tokens == (20, 10)
    assert result.model_seconds == pytest.approx(0.02)
    assert result.verify_seconds > 0


def test_answers_come_from_the_cache_on_a_second_run(shop_koan, verifier, tmp_path):
    cache = CompletionCache(tmp_path / "completions", "rw")
    repair(shop_koan, Plain(), ScriptedModel([fenced(FIXED_SHOP)]), verifier, max_steps=1, cache=cache)
    replay = ScriptedModel([])  # would fail if asked
    result = repair(shop_koan, Plain(), replay, verifier, max_steps=1, cache=cache)
    assert result.solved and result.attempts[0].cached and replay.requests == []


def test_rustfix_repairs_a_koan_with_a_machine_applicable_suggestion(verifier):
    from conftest import make_koan

    # For E0384 (assigning twice to an immutable binding) rustc's `mut` suggestion is
    # machine-applicable.
    koan = make_koan(
        expect=("E0384",),
        buggy="pub fn total(items: Vec<u32>) -> u32 {\n    let sum = 0;\n    for x in items { sum += x; }\n    sum\n}\n",
        fixed="pub fn total(items: Vec<u32>) -> u32 {\n    let mut sum = 0;\n    for x in items { sum += x; }\n    sum\n}\n",
    )
    result = repair(koan, Plain(), load_model("rustfix"), verifier, max_steps=3)
    assert result.initial.error_codes == ["E0384"]
    assert result.solved and result.steps == 1
