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
   an eval koan has at least two of each (koans/README.md, the authoring contract);
5. with `mutants=True`: the hidden tests kill at least MIN_MUTATION_SCORE of the
   compiling mutants of the fix (corpus/mutants.py) for an eval koan (train koans are
   reported, not judged). The score is killed / (killed + survived); mutants that do
   not compile or are refused are unviable, and those the koan file lists under
   `equivalent_mutants` do not count. Listing a mutant that the tests kill, or an id
   that is no mutant of the fix, is a problem: the list must stay true.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..koans import Koan
from ..verify.rustlex import LexError
from ..verify.verifier import Verdict, Verifier
from .mutants import Mutant, function_bodies
from .mutants import mutants as all_mutants

__all__ = ["KoanCheck", "MutationScore", "check_koan", "check_corpus", "stub_mutants", "MIN_MUTATION_SCORE"]


# What the contract asks of every eval koan.
MIN_ALTERNATIVES = MIN_DECOYS = 2
MIN_MUTATION_SCORE = 0.9


@dataclass
class MutationScore:
    killed: int = 0
    survived: list[Mutant] = field(default_factory=list)
    unviable: int = 0
    equivalent: int = 0

    @property
    def viable(self) -> int:
        return self.killed + len(self.survived)

    @property
    def score(self) -> float | None:
        return self.killed / self.viable if self.viable else None


@dataclass
class KoanCheck:
    koan: Koan
    buggy: Verdict | None = None
    fixed: Verdict | None = None
    problems: list[str] = field(default_factory=list)
    alternatives_passed: int = 0
    decoys_failed: int = 0
    mutation: MutationScore | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def check_koan(koan: Koan, verifier: Verifier, *, mutants: bool = False, jobs: int = 1) -> KoanCheck:
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
    if mutants:
        _score_mutants(check, verifier, jobs)
    return check


def _score_mutants(check: KoanCheck, verifier: Verifier, jobs: int) -> None:
    koan = check.koan
    candidates = all_mutants(koan.fixed)
    known = {m.id for m in candidates}
    for unknown in sorted(set(koan.equivalent_mutants) - known):
        check.problems.append(f"equivalent_mutants lists {unknown!r}, which is no mutant of the fix "
                              "(ids as `sleepy koans validate --mutants` prints them)")
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        verdicts = list(pool.map(lambda m: verifier.verify_candidate(koan, m.code), candidates))
    score = check.mutation = MutationScore()
    for mutant, verdict in zip(candidates, verdicts):
        if not verdict.compiled:
            score.unviable += 1
        elif mutant.id in koan.equivalent_mutants:
            if verdict.passed:
                score.equivalent += 1
            else:
                check.problems.append(f"equivalent_mutants lists {mutant.id}, but the hidden tests kill it: "
                                      "it is no equivalent mutant")
                score.killed += 1
        elif verdict.passed:
            score.survived.append(mutant)
        else:
            score.killed += 1
    if koan.split == "eval" and score.score is not None and score.score < MIN_MUTATION_SCORE:
        check.problems.append(
            f"mutation score {score.score:.0%} ({score.killed} of {score.viable} compiling mutants killed), "
            f"below {MIN_MUTATION_SCORE:.0%}: the hidden tests miss " + "; ".join(
                f"{m.id} ({m.description})" for m in score.survived))


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


def check_corpus(koans: list[Koan], verifier: Verifier, jobs: int = 2, progress=None,
                 mutants: bool = False) -> list[KoanCheck]:
    """Check koans in parallel (each check is mostly waiting on rustc subprocesses)."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        checks = []
        for check in pool.map(lambda k: check_koan(k, verifier, mutants=mutants, jobs=jobs), koans):
            if progress:
                progress(check)
            checks.append(check)
    return checks


def stub_mutants(koan: Koan) -> list[tuple[str, str]]:
    """(description, code) pairs: the fix with function bodies replaced by `todo!()`."""
    try:
        fixed_bodies = function_bodies(koan.fixed)
        buggy_bodies = {(name, n): koan.buggy[s:e] for name, n, s, e in function_bodies(koan.buggy)}
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
