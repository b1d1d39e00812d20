"""The corpus self-test: every claim a koan file makes is proven with the real verifier.

For each koan:

1. the buggy code fails exactly as declared: with exactly the `expect` error codes,
   all pointing into the code the model sees (never only into the hidden tests), or,
   for `expect = ["test"]`, it compiles and at least one hidden test fails;
2. the reference fix passes every hidden test (which includes the anti-tamper rules);
3. the hidden tests catch a stubbed fix: replacing the body of each function the fix
   changed with `todo!()` must fail them (when the fix changes no function body, as
   with a missing derive, every function but `main` is stubbed at once). This is the
   earlier system's worst failure: there, deleting the broken code "passed";
4. every alternative fix passes, and every decoy compiles and fails the hidden tests;
   an eval koan has at least two of each (koans/README.md, the authoring contract).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .koans import Koan
from .verify.rustlex import LexError, matching_bracket, tokenize
from .verify.verifier import Verdict, Verifier

__all__ = ["KoanCheck", "check_koan", "check_corpus", "stub_mutants"]


# What the contract asks of every eval koan.
MIN_ALTERNATIVES = MIN_DECOYS = 2


@dataclass
class KoanCheck:
    koan: Koan
    buggy: Verdict | None = None
    fixed: Verdict | None = None
    problems: list[str] = field(default_factory=list)
    alternatives_passed: int = 0
    decoys_failed: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def check_koan(koan: Koan, verifier: Verifier) -> KoanCheck:
    check = KoanCheck(koan)
    if koan.flagged:
        check.problems.append(f"flagged: {koan.flagged}")
        return check

    check.buggy = buggy = verifier.verify_candidate(koan, koan.buggy)
    if koan.is_logic_bug:
        if not buggy.compiled:
            check.problems.append(f"buggy should compile (expect = [\"test\"]) but fails with {', '.join(buggy.error_codes) or buggy.reason}")
        elif buggy.passed:
            check.problems.append("buggy passes every hidden test; the tests do not detect the bug")
        elif buggy.tests_failed == 0:
            check.problems.append(f"buggy should fail a hidden test, but: {buggy.reason}")
    else:
        if buggy.compiled:
            check.problems.append(f"buggy compiles, but expect = {list(koan.expect)}")
        elif buggy.tampering:
            check.problems.append(f"buggy is rejected by the anti-tamper rules: {buggy.tampering}")
        elif tuple(buggy.error_codes) != koan.expect:
            check.problems.append(f"buggy fails with {buggy.error_codes}, but expect = {list(koan.expect)}")
        elif any(d.in_hidden_tests for d in buggy.diagnostics if d.is_error):
            check.problems.append("buggy's errors point into the hidden tests, which the model cannot see")

    check.fixed = fixed = verifier.verify_candidate(koan, koan.fixed)
    if not fixed.passed:
        check.problems.append(f"fixed does not pass: {fixed.reason}")
        return check

    for description, mutant in stub_mutants(koan):
        verdict = verifier.verify_candidate(koan, mutant)
        if verdict.passed:
            check.problems.append(f"the hidden tests still pass when {description}: they do not check behaviour")
    _check_alternatives_and_decoys(check, verifier)
    return check


def _check_alternatives_and_decoys(check: KoanCheck, verifier: Verifier) -> None:
    koan = check.koan
    for alternative in koan.alternatives:
        verdict = verifier.verify_candidate(koan, alternative.code)
        if verdict.passed:
            check.alternatives_passed += 1
        else:
            check.problems.append(f"alternative ({alternative.why}) does not pass: {verdict.reason}")
    for decoy in koan.decoys:
        verdict = verifier.verify_candidate(koan, decoy.code)
        if verdict.passed:
            check.problems.append(f"decoy ({decoy.why}) passes: the hidden tests miss this wrong fix")
        elif not verdict.compiled:
            check.problems.append(f"decoy ({decoy.why}) does not compile ({verdict.reason}): a decoy must be "
                                  "a plausible fix that compiles and fails the tests")
        else:
            check.decoys_failed += 1
    if koan.split == "eval":
        if len(koan.alternatives) < MIN_ALTERNATIVES:
            check.problems.append(f"an eval koan needs at least {MIN_ALTERNATIVES} alternatives "
                                  f"(valid fixes in other styles), it has {len(koan.alternatives)}")
        if len(koan.decoys) < MIN_DECOYS:
            check.problems.append(f"an eval koan needs at least {MIN_DECOYS} decoys "
                                  f"(plausible wrong fixes), it has {len(koan.decoys)}")


def check_corpus(koans: list[Koan], verifier: Verifier, jobs: int = 2, progress=None) -> list[KoanCheck]:
    """Check koans in parallel (each check is mostly waiting on rustc subprocesses)."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        checks = []
        for check in pool.map(lambda k: check_koan(k, verifier), koans):
            if progress:
                progress(check)
            checks.append(check)
    return checks


def stub_mutants(koan: Koan) -> list[tuple[str, str]]:
    """(description, code) pairs: the fix with function bodies replaced by `todo!()`."""
    try:
        fixed_bodies = _function_bodies(koan.fixed)
        buggy_bodies = {(name, n): koan.buggy[s:e] for name, n, s, e in _function_bodies(koan.buggy)}
    except LexError:
        return []
    stubbable = [b for b in fixed_bodies if b[0] != "main"]
    changed = [b for b in stubbable if buggy_bodies.get(b[:2]) != koan.fixed[b[2] : b[3]]]
    if changed:
        return [(f"`{name}` is stubbed with todo!()", _stub(koan.fixed, [(s, e)])) for name, _, s, e in changed]
    if stubbable:
        return [("every function but main is stubbed with todo!()", _stub(koan.fixed, [(s, e) for _, _, s, e in stubbable]))]
    return []


def _stub(code: str, bodies: list[tuple[int, int]]) -> str:
    for start, end in sorted(bodies, reverse=True):
        code = code[:start] + "{ todo!() }" + code[end:]
    return code


def _function_bodies(code: str) -> list[tuple[str, int, int, int]]:
    """(name, occurrence, start, end) of each `fn` body with code (trait defaults included).

    A body is the first `{` after `fn NAME` at the signature's own bracket depth; a `;`
    first means a body-less trait method.
    """
    tokens = tokenize(code)
    bodies, seen = [], {}
    for i, token in enumerate(tokens):
        if token.text != "fn" or i + 1 >= len(tokens) or tokens[i + 1].kind != "ident":
            continue
        name = tokens[i + 1].text
        depth, j = 0, i + 2
        while j < len(tokens):
            text = tokens[j].text
            if text in ("(", "[", "<") :
                depth += 1
            elif text in (")", "]", ">") and depth > 0:
                depth -= 1
            elif text == ";" and depth == 0:
                j = -1
                break
            elif text == "{" and depth == 0:
                break
            j += 1
        if j < 0 or j >= len(tokens):
            continue
        end = matching_bracket(tokens, j)
        if end is None:
            end = len(tokens) - 1
        occurrence = seen.get(name, 0)
        seen[name] = occurrence + 1
        bodies.append((name, occurrence, tokens[j].start, tokens[end].end))
    # Nested functions sit inside an outer body; keep only the outermost ones.
    return [b for b in bodies if not any(o[2] < b[2] and b[3] <= o[3] for o in bodies if o is not b)]

