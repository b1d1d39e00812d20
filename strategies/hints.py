"""hints: the baseline prompt plus error-specific hints and worked examples.

Hints are chosen from rustc's structured diagnostics only (error code, message,
notes), never from the koan's id, family or pattern: at inference time on a new
program those labels do not exist. Each rule below pairs a predicate on one diagnostic
with advice a senior Rust programmer would give for that error in general.

Worked examples come from the `train` split only (the plugin passes nothing else to
`prepare`): up to MAX_EXAMPLES train koans whose own buggy code fails with the same
error codes, most similar first (word overlap of the first error messages), each shown
as program, real rustc feedback and reference fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from pytest_sleepy.verify.diagnostics import Diagnostic
from pytest_sleepy.prompts import FewShotExample, describe_verdict, repair_messages
from pytest_sleepy.strategies import StepView, Strategy

MAX_EXAMPLES = 2
MAX_HINTS = 4


@dataclass(frozen=True)
class HintRule:
    code: str  # rustc error code, or "test" for failing hidden tests
    advice: str
    when: Callable[[Diagnostic], bool] | None = None  # None: any diagnostic with this code


def _says(pattern: str) -> Callable[[Diagnostic], bool]:
    compiled = re.compile(pattern, re.IGNORECASE)
    return lambda d: bool(compiled.search(d.message) or any(compiled.search(note) for note in d.notes))


RULES = (
    HintRule("E0382", "A value is used after it was moved. Borrow it (`&value`) where ownership is not needed, "
             "clone it before the move, or reorder the code so the last use comes before the move."),
    HintRule("E0382", "The move happens inside a loop: each iteration needs its own value. Borrow in the loop, "
             "or clone per iteration.", _says(r"previous iteration of loop")),
    HintRule("E0499", "Two mutable borrows overlap. Finish using the first `&mut` before taking the second; "
             "split the work into separate statements or scopes, or index instead of holding references."),
    HintRule("E0502", "A shared borrow is still alive while the value is mutated. Copy or clone what you need "
             "out of the borrow first, or collect the changes and apply them after the loop."),
    HintRule("E0505", "The value is moved while a borrow of it is still in use. Let the borrow end first, or clone."),
    HintRule("E0506", "You assign to a value that is still borrowed. End the borrow before assigning."),
    HintRule("E0507", "You cannot move out of a borrow. Clone the value, borrow it (`&`/`as_ref()`), or take it "
             "with `std::mem::take`/`Option::take` if the owner may be left empty."),
    HintRule("E0515", "A function returns a reference to a local value that dies at the end of the function. "
             "Return the owned value (e.g. `String` instead of `&str`) instead of a reference."),
    HintRule("E0596", "Mutation needs mutable access: declare the binding `mut`, or take `&mut self`/`&mut T` "
             "in the signature."),
    HintRule("E0597", "A borrowed value is dropped while still borrowed. Move the value's declaration to an outer "
             "scope so it lives as long as the reference, or store an owned value instead."),
    HintRule("E0373", "A closure or thread may outlive the variables it borrows. Use a `move` closure so it owns "
             "its captures (clone or `Arc` what must be shared)."),
    HintRule("E0106", "A returned or stored reference needs a lifetime: add a lifetime parameter that ties it to "
             "the input it borrows from, or return an owned value."),
    HintRule("E0277", "A trait bound is not satisfied. Derive or implement the trait named in the message for "
             "your type, or add the bound to the generic parameter (`T: Trait`)."),
    HintRule("E0277", "`?` converts errors with `From`. Implement `From<SourceError>` for the function's error "
             "type when the source error is all the new error needs; when it must carry context (the input "
             "that failed, as the error type's docs say), convert explicitly with `.map_err(|e| ...)`.",
             _says(r"`\?` couldn't convert the error to")),
    HintRule("E0277", "`Box<dyn Error>` takes any error type that implements `std::error::Error`: implement "
             "`std::fmt::Display` (the message the type's docs describe) and `std::error::Error` for it.",
             _says(r"`\?` couldn't convert the error: .*std::error::Error` is not satisfied")),
    HintRule("E0277", "A trait object (`dyn Trait`) has no size known at compile time: hold it behind a pointer, "
             "`Box<dyn Trait>` to own it or `&dyn Trait` to borrow it, in fields, collections and returns.",
             _says(r"cannot be known at compilation time")),
    HintRule("E0277", "`?` only works in a function that returns `Result` or `Option` of the matching kind. "
             "Change the return type, convert an `Option` with `.ok_or(...)`, or handle the case with `match`.",
             _says(r"the `\?` operator can only be used")),
    HintRule("E0277", "Printing with `{}` needs `std::fmt::Display`: implement `Display` for the type (or print "
             "with `{:?}` and derive `Debug` if debug output is what is wanted).", _says(r"doesn't implement `std::fmt::Display`|cannot be formatted with the default formatter")),
    HintRule("E0277", "Printing with `{:?}` needs `Debug`: add `#[derive(Debug)]` to the type.",
             _says(r"doesn't implement `Debug`|cannot be formatted using `\{:\?\}`")),
    HintRule("E0277", "Values shared between threads must be `Send` (and `Sync` when borrowed): add the bound "
             "to the generic parameter, or use `Arc`/`Mutex` instead of `Rc`/`RefCell`.",
             _says(r"cannot be (sent|shared) between threads")),
    HintRule("E0277", "Collecting an iterator of `Result`s into one `Result` works with "
             "`.collect::<Result<Vec<_>, _>>()`; match the collected type to the function's return type.",
             _says(r"cannot be built from an iterator")),
    HintRule("E0599", "The method exists but the type misses trait bounds listed in the notes. Derive the missing "
             "traits on your type (e.g. `#[derive(PartialEq, Eq, Hash)]` for `HashMap` keys, `Clone`, "
             "`Ord` + `PartialOrd` for sorting) or implement them.", _says(r"trait bounds were not satisfied")),
    HintRule("E0599", "No such method on this type: check the type you actually have (maybe an `Option`/`Result` "
             "to unwrap first) and the method's name, or bring a trait into scope with `use`."),
    HintRule("E0369", "An operator is used on a type that does not implement it: derive `PartialEq`/`PartialOrd` "
             "for comparisons, or implement `std::ops::Add` etc. for arithmetic."),
    HintRule("E0308", "The types do not match. Read the expected and found types: wrap with `Ok(...)`/`Some(...)`, "
             "use `?` to unwrap a `Result`, borrow (`&`) or convert (`.to_string()`, `as`) as needed."),
    HintRule("E0271", "An associated type does not match what is required (often an iterator's `Item`). Map the "
             "items to the expected type, or change the declared type."),
    HintRule("E0621", "A reference's lifetime must be named in the signature: add the same lifetime parameter "
             "to the input and to the output that borrows from it."),
    HintRule("E0261", "A lifetime is used without being declared: declare it in angle brackets (`fn f<'a>`, "
             "`impl<'a>`)."),
    HintRule("test", "The program compiles but behaves wrongly. Reread what each public function promises and "
             "check boundary cases: empty inputs, the first and last element, off-by-one ranges, and overflow."),
)


def hints_for(diagnostics: tuple[Diagnostic, ...] | list[Diagnostic], tests_failed: bool) -> list[str]:
    """The advice of every rule matching a diagnostic, most specific (predicate) first."""
    matched: list[tuple[bool, str]] = []
    errors = [d for d in diagnostics if d.is_error and d.code]
    for rule in RULES:
        if rule.code == "test":
            hit = tests_failed
        else:
            hit = any(d.code == rule.code and (rule.when is None or rule.when(d)) for d in errors)
        if hit:
            matched.append((rule.when is None, rule.advice))
    matched.sort(key=lambda pair: pair[0])  # specific rules first; the sort is stable
    return [advice for _, advice in matched[:MAX_HINTS]]


class Hints(Strategy):
    name = "hints"
    description = "baseline plus hints chosen from rustc's structured diagnostics and worked examples from train koans"
    _train: list = []

    def prepare(self, train_koans, verify):
        leaked = [k.id for k in train_koans if k.split != "train"]
        if leaked:
            raise ValueError(f"hints: refusing examples from non-train koans: {', '.join(leaked)}")
        self._train = list(train_koans)
        self._verify = verify
        self._feedback: dict[str, tuple[str, str]] = {}  # koan id -> (first error message, feedback)

    def messages(self, view: StepView):
        verdict = view.verdict
        tests_failed = verdict.compiled and not verdict.passed
        return repair_messages(view.code, verdict, hints=hints_for(verdict.diagnostics, tests_failed),
                               examples=self._examples(verdict, view.original), history=view.history,
                               note=view.note)

    def _examples(self, verdict, original: str = "") -> list[FewShotExample]:
        codes = set(verdict.error_codes) or ({"test"} if verdict.compiled else set())
        first = next((d.message for d in verdict.diagnostics if d.is_error), verdict.reason)
        scored = []
        for koan in self._train:
            shared = codes & set(koan.expect)
            # A train koan under evaluation (--sleepy-split=train) must not be shown its own fix.
            if not shared or koan.buggy == original:
                continue
            message, feedback = self._example_feedback(koan)
            scored.append((-len(shared), -_overlap(first, message), len(koan.buggy), koan.id, koan, feedback))
        scored.sort(key=lambda row: row[:4])
        return [FewShotExample(koan.buggy, feedback, koan.fixed) for *_, koan, feedback in scored[:MAX_EXAMPLES]]

    def _example_feedback(self, koan):
        if koan.id not in self._feedback:
            verdict = self._verify(koan, koan.buggy)
            first = next((d.message for d in verdict.diagnostics if d.is_error), verdict.reason)
            self._feedback[koan.id] = (first, describe_verdict(verdict))
        return self._feedback[koan.id]


def _overlap(a: str, b: str) -> float:
    words_a, words_b = set(re.findall(r"\w+", a.lower())), set(re.findall(r"\w+", b.lower()))
    return len(words_a & words_b) / max(1, len(words_a | words_b))


STRATEGY = Hints()
