"""The repair loop: verify the buggy code, then ask, extract, verify, up to max steps.

Plain Python, no pytest. Every attempt is verified, the last one included, and every
attempt becomes an `Attempt` record (an episode line). A `ModelError` (the backend has
already retried) ends the loop and becomes the koan's failure reason; `ModelUnavailable`
and `CacheMiss` are not the koan's fault and propagate to the caller.

Every step counts. An answer whose program repeats one the model already saw (the
buggy code, or an earlier answer; compared ignoring trailing white space) is marked
`unchanged` in its episode and in the failure reason, and the next prompt says so:
asked the same question again, a greedy model (or the completion cache) gives the same
answer, and the remaining steps would be wasted. How much of the repair so far the
next prompt carries as chat turns is `history` (prompts.HISTORY_MODES).

Model time counts the live calls only: a replayed answer costs no model time now, and
its recorded time is kept apart (`Attempt.recorded_seconds`).
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .extraction import extract_code
from .koans import Koan
from .models.base import CompletionRequest, GenerationSettings, Model, ModelError
from .models.cache import CompletionCache, cached_complete
from .prompts import DEFAULT_HISTORY, HISTORY_MODES, PastAttempt
from .strategies import StepView, Strategy
from .verify.verifier import Verdict, Verifier

__all__ = ["Attempt", "RepairResult", "repair", "unified_diff", "NO_CODE_AFTER_A_CHANGE"]

# How a failure reason goes on when the last answer held no code but an earlier one
# changed the program; rescoring finds it to re-judge the part before it.
NO_CODE_AFTER_A_CHANGE = "; the answer at step "


@dataclass
class Attempt:
    """One model call and the verification of its answer."""

    step: int
    request: CompletionRequest
    response: str = ""
    code: str | None = None  # None: the answer held no code, or the model failed
    diff: str = ""  # unified diff from the koan's buggy code to `code`
    verdict: Verdict | None = None
    model_error: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    model_seconds: float = 0.0  # live model time (a replayed answer: the cache lookup)
    recorded_seconds: float = 0.0  # a replayed answer: the model time recorded with it
    verify_seconds: float = 0.0
    cached: bool = False
    unchanged: str | None = None  # the program repeats this one: "the original program" or "your answer at step N"
    model_identity: str = ""
    route: str | None = None  # routed strategies: the pattern chosen ("" = none, the base model)
    variant: str = ""


@dataclass
class RepairResult:
    solved: bool
    reason: str  # "" when solved
    initial: Verdict  # the buggy code's verdict
    attempts: list[Attempt] = field(default_factory=list)
    verify_seconds: float = 0.0  # all verification, the buggy code's included

    @property
    def steps(self) -> int:
        return len(self.attempts)

    @property
    def model_seconds(self) -> float:
        return sum(a.model_seconds for a in self.attempts)

    @property
    def recorded_seconds(self) -> float:
        return sum(a.recorded_seconds for a in self.attempts)

    @property
    def tokens(self) -> tuple[int, int]:
        return sum(a.tokens_in for a in self.attempts), sum(a.tokens_out for a in self.attempts)


def repair(
    koan: Koan,
    strategy: Strategy,
    model: Model,
    verifier: Verifier,
    *,
    max_steps: int,
    settings: GenerationSettings = GenerationSettings(),
    cache: CompletionCache | None = None,
    on_attempt: Callable[[Attempt], None] | None = None,
    variant: str = "",
    history: str = DEFAULT_HISTORY,
) -> RepairResult:
    if history not in HISTORY_MODES:
        raise ValueError(f"history={history!r}; use one of {', '.join(HISTORY_MODES)}")
    started = time.perf_counter()
    initial = verifier.verify_candidate(koan, koan.buggy)
    result = RepairResult(solved=False, reason="", initial=initial, verify_seconds=time.perf_counter() - started)
    if initial.passed:
        result.reason = "invalid koan: the buggy code already passes the hidden tests"
        return result
    code, verdict, answers = koan.buggy, initial, []
    past: list[PastAttempt] = []
    seen = {_normalised(koan.buggy): "the original program"}
    repeats: list[int] = []
    note = ""
    steps = strategy.max_steps or max_steps
    for step in range(1, steps + 1):
        shown = tuple(past) if history == "full" else tuple(past[-1:]) if history == "last" else ()
        view = StepView(step=step, code=code, verdict=verdict, previous_answers=tuple(answers), variant=variant,
                        original=koan.buggy, history=shown, note=note)
        request = CompletionRequest(messages=strategy.messages(view), settings=settings,
                                    adapter=strategy.adapter(view), code=code,
                                    diagnostics=tuple(verdict.diagnostics))
        attempt = Attempt(step=step, request=request, route=strategy.route(view), variant=variant)
        result.attempts.append(attempt)
        called = time.perf_counter()
        try:
            completion = cached_complete(model, request, cache)
        except ModelError as error:
            attempt.model_seconds = time.perf_counter() - called
            attempt.model_error = str(error)
            result.reason = f"model error at step {step}: {error}"
            _notify(on_attempt, attempt)
            return result
        attempt.response, attempt.cached = completion.text, completion.cached
        if completion.cached:
            # The lookup (and the model identity it checks) is the benchmark's time,
            # not the model's: a replay costs no model time now.
            attempt.recorded_seconds = completion.seconds
        else:
            attempt.model_seconds = completion.seconds
        attempt.tokens_in, attempt.tokens_out = completion.tokens_in, completion.tokens_out
        attempt.model_identity = completion.model_identity
        answers.append(completion.text)
        past.append(PastAttempt(code, verdict, completion.text))
        attempt.code = extract_code(completion.text)
        if attempt.code is None:
            said = " ".join(completion.text.split())
            said = said if len(said) <= 80 else said[:77] + "..."
            if code is koan.buggy:
                result.reason = f"no code in the answer after {_steps(step)} (it said: {said!r})"
            else:
                # An earlier answer changed the program: say where that left it, not only
                # that the last answer held no code.
                result.reason = (f"{_still(verdict)} after {_steps(step)}{NO_CODE_AFTER_A_CHANGE}{step} "
                                 f"held no code (it said: {said!r})")
            # The step number keeps two code-less answers in a row from building the
            # same prompt, which a greedy model (or the cache) would answer alike.
            note = (f"Your answer at step {step} held no Rust code block, "
                    "so the program is still the one above.")
            _notify(on_attempt, attempt)
            continue
        attempt.unchanged = seen.get(_normalised(attempt.code))
        seen.setdefault(_normalised(attempt.code), f"your answer at step {step}")
        attempt.diff = unified_diff(koan.buggy, attempt.code)
        verifying = time.perf_counter()
        attempt.verdict = verifier.verify_candidate(koan, attempt.code)
        attempt.verify_seconds = time.perf_counter() - verifying
        result.verify_seconds += attempt.verify_seconds
        _notify(on_attempt, attempt)
        if attempt.verdict.passed:
            return replace(result, solved=True, reason="")
        code, verdict = attempt.code, attempt.verdict
        note = ""
        if attempt.unchanged:
            # The step number keeps each note, and so each prompt, distinct: with the
            # same answer twice, `last` history would otherwise ask the same question.
            earlier = f" (so did step{'s' if len(repeats) > 1 else ''} {', '.join(map(str, repeats))})" if repeats else ""
            repeats.append(step)
            note = (f"Your answer at step {step} gave back {attempt.unchanged} unchanged{earlier}, and it still fails "
                    "as described. Change the code to fix it.")
        result.reason = f"{_still(verdict)} after {_steps(step)}"
        if repeats:
            result.reason += f" ({'step' if len(repeats) == 1 else 'steps'} {', '.join(map(str, repeats))} unchanged)"
    return result


def _normalised(code: str) -> str:
    return "\n".join(line.rstrip() for line in code.strip().splitlines())


def unified_diff(before: str, after: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        fromfile="buggy.rs", tofile="candidate.rs"))


def _still(verdict: Verdict) -> str:
    # "does not compile: E0502" reads better as "still E0502"; other reasons (tests,
    # timeouts, tampering, errors inside the hidden tests) are kept as they are.
    if verdict.reason.startswith("does not compile: E"):
        return f"still {', '.join(verdict.error_codes)}"
    return verdict.reason


def _steps(n: int) -> str:
    return f"{n} step" + ("" if n == 1 else "s")


def _notify(callback: Callable[[Attempt], None] | None, attempt: Attempt) -> None:
    if callback is not None:
        callback(attempt)
