"""The repair loop: verify the buggy code, then ask, extract, verify, up to max steps.

Plain Python, no pytest. Every attempt is verified, the last one included, and every
attempt becomes an `Attempt` record (an episode line). A `ModelError` (the backend has
already retried) ends the loop and becomes the koan's failure reason; `ModelUnavailable`
and `CacheMiss` are not the koan's fault and propagate to the caller.
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
from .strategies import StepView, Strategy
from .verify.verifier import Verdict, Verifier

__all__ = ["Attempt", "RepairResult", "repair", "unified_diff"]


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
    model_seconds: float = 0.0
    verify_seconds: float = 0.0
    cached: bool = False
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
) -> RepairResult:
    started = time.perf_counter()
    initial = verifier.verify_candidate(koan, koan.buggy)
    result = RepairResult(solved=False, reason="", initial=initial, verify_seconds=time.perf_counter() - started)
    if initial.passed:
        result.reason = "invalid koan: the buggy code already passes the hidden tests"
        return result
    code, verdict, answers = koan.buggy, initial, []
    steps = strategy.max_steps or max_steps
    for step in range(1, steps + 1):
        view = StepView(step=step, code=code, verdict=verdict, previous_answers=tuple(answers), variant=variant,
                        original=koan.buggy)
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
        attempt.model_seconds = completion.seconds
        attempt.tokens_in, attempt.tokens_out = completion.tokens_in, completion.tokens_out
        attempt.model_identity = completion.model_identity
        answers.append(completion.text)
        attempt.code = extract_code(completion.text)
        if attempt.code is None:
            said = " ".join(completion.text.split())
            said = said if len(said) <= 80 else said[:77] + "..."
            result.reason = f"no code in the answer after {_steps(step)} (it said: {said!r})"
            _notify(on_attempt, attempt)
            continue
        attempt.diff = unified_diff(koan.buggy, attempt.code)
        verifying = time.perf_counter()
        attempt.verdict = verifier.verify_candidate(koan, attempt.code)
        attempt.verify_seconds = time.perf_counter() - verifying
        result.verify_seconds += attempt.verify_seconds
        _notify(on_attempt, attempt)
        if attempt.verdict.passed:
            return replace(result, solved=True, reason="")
        code, verdict = attempt.code, attempt.verdict
        result.reason = f"{_still(verdict)} after {_steps(step)}"
    return result


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
