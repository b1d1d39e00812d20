"""The one prompt builder, shared by inference and (later) training data.

Prompts are built from what a developer at a terminal would see, cleaned: rustc's
rendered errors for the candidate (warnings dropped, at most MAX_DIAGNOSTICS, each
rendered block capped), or the names and panic messages of failing hidden tests. The
hidden tests' source is never shown: an error located in the tests is reduced to its
one-line message, and a panic's location in the test file is cut.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .models.base import Message
from .verify.harness import HIDDEN_TEST_MODULE, HIDDEN_TESTS_FILE
from .verify.verifier import Verdict

__all__ = ["SYSTEM_PROMPT", "CONTRACT", "describe_verdict", "repair_messages", "FewShotExample", "PastAttempt",
           "HISTORY_MODES", "DEFAULT_HISTORY"]

# How much of the repair so far a prompt carries as chat turns (--sleepy-history):
# none: only the program as it stands and its feedback; last: the previous request and
# the model's answer to it, then the feedback on that answer; full: every earlier turn.
HISTORY_MODES = ("none", "last", "full")
# The default is the mode that repaired the most koans per model-second on the real
# model (README, "Every step counts"; benchmarks/history_modes.py): at 3 and 5 steps
# `none` solved 16/30 against 15 for `last` and 14 for `full`, with the fewest tokens
# and model seconds. The differences are a koan or two of 30, not significant.
DEFAULT_HISTORY = "none"

# The koan contract (koans/README.md), as the model needs it: nothing the hidden tests
# rely on is a hidden rule.
CONTRACT = (
    "Hidden tests will call the program's functions, methods and types by the names, "
    "parameters and doc comments it shows, and check the behaviour those describe: keep "
    "them. Where the error is about ownership, an owned or a borrowed result (`String` or "
    "`&str`, `Vec<T>` or `&[T]`) is accepted alike."
)
SYSTEM_PROMPT = (
    "You are an expert Rust programmer. You repair Rust programs so that they compile "
    f"and behave as intended. {CONTRACT} Answer with the complete corrected program in one "
    "```rust code block."
)
MAX_DIAGNOSTICS = 6
MAX_RENDERED = 2500  # characters per rendered diagnostic
MAX_PANIC_LINES = 6

_SECTION = re.compile(rf"^---- {HIDDEN_TEST_MODULE}::(\w+) stdout ----\n(.*?)(?=^---- |^failures:|\Z)", re.DOTALL | re.MULTILINE)
_PANIC = re.compile(r"panicked at [^\n]*?:\d+:\d+:\n(.*?)(?:\nnote: |\n\n|\Z)", re.DOTALL)


def describe_verdict(verdict: Verdict) -> str:
    """What went wrong with a candidate, in the words the model will read."""
    if verdict.passed:
        return "The program compiles and passes all tests."
    if verdict.tampering:
        return f"The program was rejected: {verdict.tampering.removeprefix('tampering: ')}."
    if not verdict.compiled:
        errors = [d for d in verdict.diagnostics if d.is_error]
        if not errors:
            return f"The program does not compile: {verdict.reason}."
        parts: list[str] = []
        for diagnostic in errors:
            if diagnostic.in_hidden_tests:
                code = f"[{diagnostic.code}]" if diagnostic.code else ""
                part = f"error{code} in the hidden tests, which use your program's public items: {diagnostic.message}"
            elif HIDDEN_TESTS_FILE in diagnostic.rendered:
                # The candidate's error, but rustc quotes a hidden test beside it (a
                # secondary span): only the message and the notes go to the model.
                code = f"[{diagnostic.code}]" if diagnostic.code else ""
                part = "\n".join([f"error{code}: {diagnostic.message}", *diagnostic.notes])
            else:
                part = _cap(diagnostic.rendered.strip(), MAX_RENDERED)
            if part not in parts:
                parts.append(part)
        if len(parts) > MAX_DIAGNOSTICS:
            parts[MAX_DIAGNOSTICS:] = [f"... and {len(parts) - MAX_DIAGNOSTICS} more errors"]
        return "The program does not compile:\n\n" + "\n\n".join(parts)
    if verdict.timed_out:
        return "The program compiles, but the tests did not finish in time (an endless loop or a very slow algorithm?)."
    if verdict.failed_tests:
        lines = [f"The program compiles, but {verdict.tests_failed} of {verdict.tests_total} hidden tests fail:"]
        sections = dict(_SECTION.findall(verdict.test_output))
        for name in verdict.failed_tests:
            panic = _PANIC.search(sections.get(name, ""))
            message = "\n".join(panic.group(1).strip().splitlines()[:MAX_PANIC_LINES]) if panic else ""
            lines.append(f"- {name}" + (f":\n{_indent(message)}" if message else ""))
        return "\n".join(lines)
    return f"The program compiles, but the tests do not pass: {verdict.reason}."


@dataclass(frozen=True)
class PastAttempt:
    """An earlier step of the repair: the program the model was shown, its feedback
    then, and the model's answer."""

    code: str
    verdict: Verdict
    answer: str


@dataclass(frozen=True)
class FewShotExample:
    """A solved example: a broken program, the feedback on it, and the repair."""

    code: str
    feedback: str
    fixed: str


def repair_messages(
    code: str,
    verdict: Verdict,
    *,
    hints: Sequence[str] = (),
    examples: Sequence[FewShotExample] = (),
    system: str = SYSTEM_PROMPT,
    history: Sequence[PastAttempt] = (),
    note: str = "",
) -> tuple[Message, ...]:
    """The chat for one repair step: system prompt, optional worked examples as earlier
    turns, then the program, the cleaned feedback and any hints.

    With `history`, the earlier steps come first as user and assistant turns (their
    program and feedback, the model's answer), and the last turn is the feedback on the
    latest answer, whose program the model already wrote, with the hints for it.
    `note` says what happened to the previous answer when the model must hear it (it
    repeated a program, or held no code): without it, a greedy model asked the same
    question gives the same answer."""
    messages = [Message("system", system)]
    for example in examples:
        messages.append(Message("user", _request(example.code, example.feedback, ())))
        messages.append(Message("assistant", f"```rust\n{example.fixed.strip()}\n```"))
    feedback = describe_verdict(verdict) + (f"\n\n{note}" if note else "")
    if not history:
        messages.append(Message("user", _request(code, feedback, hints)))
        return tuple(messages)
    for past in history:
        messages.append(Message("user", _request(past.code, describe_verdict(past.verdict), ())))
        messages.append(Message("assistant", past.answer))
    # The hints are chosen from the latest feedback, so they sit beside it.
    messages.append(Message("user", f"{feedback}{_hints(hints)}\n\n{ANSWER}"))
    return tuple(messages)


def _request(code: str, feedback: str, hints: Sequence[str]) -> str:
    return f"Repair this Rust program.\n\n```rust\n{code.strip()}\n```\n\n{feedback}{_hints(hints)}\n\n{ANSWER}"


def _hints(hints: Sequence[str]) -> str:
    return "\n\nHints:\n" + "\n".join(f"- {hint}" for hint in hints) if hints else ""


ANSWER = "Answer with the complete corrected program in one ```rust code block."


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit].rstrip() + "\n... (truncated)"


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())
