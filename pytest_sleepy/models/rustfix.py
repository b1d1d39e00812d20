"""The `rustfix` backend: rustc's own suggestions, no language model.

Each request applies, to the request's code, the first acceptable suggestion of every
error in the request's diagnostics (the way `cargo fix` would), and answers with the
result as one fenced block. By default only `MachineApplicable` suggestions count;
`rustfix?applicability=maybe-incorrect` also takes `MaybeIncorrect` ones (rustc's
guesses, such as "consider cloning"). When no suggestion applies it answers that in
prose without code, so the agent records "no code in the answer" for that step.

It is the default model: it needs nothing beyond rustc, and its pass rate is the
floor a language model has to beat.
"""

from __future__ import annotations

import time

from ..verify.diagnostics import apply_suggestions
from ..verify.verifier import CANDIDATE_FILES
from .base import Completion, CompletionRequest, ModelError, ModelSpec

__all__ = ["RustfixModel"]

APPLICABILITY = {
    "machine-applicable": ("MachineApplicable",),
    "maybe-incorrect": ("MachineApplicable", "MaybeIncorrect"),
}
NO_SUGGESTION = "rustc offers no applicable suggestion for these errors."


class RustfixModel:
    def __init__(self, spec: ModelSpec):
        spec.check_options({"applicability": "|".join(APPLICABILITY)})
        level = spec.option("applicability", "machine-applicable")
        if level not in APPLICABILITY:
            raise ValueError(f"--model={spec.text!r}: applicability={level!r}; use one of {', '.join(APPLICABILITY)}")
        self.spec = spec
        self.applicabilities = APPLICABILITY[level]

    @property
    def identity(self) -> str:
        # The suggestions come from the verifier's rustc, which the verdicts (and so the
        # diagnostics in every request) are already keyed on.
        return f"rustfix/{'+'.join(self.applicabilities)}"

    def preflight(self) -> None:
        return None

    def complete(self, request: CompletionRequest) -> Completion:
        if request.adapter is not None:
            raise ModelError(f"the rustfix backend cannot apply adapter {request.adapter!r}; use an hf: model")
        started = time.perf_counter()
        fixed = None
        files = {d.primary_span.file for d in request.diagnostics if d.is_error and d.primary_span} & set(CANDIDATE_FILES)
        for file in sorted(files):
            fixed = apply_suggestions(request.code, list(request.diagnostics), file, self.applicabilities)
            if fixed is not None:
                break
        text = NO_SUGGESTION if fixed is None else f"```rust\n{fixed.rstrip()}\n```\n"
        return Completion(text=text, seconds=time.perf_counter() - started)
