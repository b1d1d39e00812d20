"""Anti-tamper rules: what a candidate may not write, checked on its tokens before rustc runs.

These rules are the second line of defence. The first is structural (harness.py): a
test passes only on a proof token the candidate cannot read, the tests call standard
macros by absolute path and import the prelude by name, and the sandbox hides the
harness. The rules below refuse what would still let a candidate change how the
hidden tests compile or behave, or escape the sandbox's intent. Every rule sees the
tokens as rustc does: raw identifiers are normalised (`r#assert_eq` is `assert_eq`),
strings and comments are not code, and a macro cannot assemble a forbidden name from
pieces, because splicing a metavariable into a name position is itself refused.

A candidate is rejected, with the reason "tampering: ...", when it

1. names the hidden test module (`sleepy_hidden_tests`);
2. reads files or the environment at compile time (`include!`, `include_str!`,
   `include_bytes!`, `env!`, `option_env!`, `#[path = ...]`);
3. uses crate-level (inner) attributes other than lint levels (`#![allow(...)]` etc.);
4. reaches `std::process` (exit, abort, Command) by any path or `use` tree, imports
   all of `std` with a glob, renames `std`, or uses `extern crate`;
5. uses `unsafe`, `extern`, inline assembly or linker attributes;
6. defines a type, trait or module, or a macro, under a standard name (prelude items
   such as `String` and `Some`, primitive types such as `u64`, the crate names `std`
   and `core`, standard macros such as `assert_eq`), or imports a non-standard item
   under such a name. Its own functions would then return a look-alike whose
   `PartialEq` can lie. A `type` alias of a standard item (`type Result<T> =
   std::result::Result<T, MyError>;`), a standard item imported under its own name
   and an associated type (`type Err = ParseError;` in `impl FromStr`) are accepted:
   they cannot lie, and an associated type names nothing in the module;
7. uses `cfg(test)` anywhere but on a module, in `cfg_attr`, or in the `cfg!` macro:
   code that behaves differently under test is hard-coding the answers;
8. splices a macro metavariable (or a repetition) into a path, a macro name, an
   attribute name or an item name, or right next to another splice (`std::$m::exit`,
   `$m!(...)`, `struct $name`, `$a $sep $b`), or names `process`, `include*`,
   `option_env` or `asm` inside a macro definition or a call of a non-standard macro:
   either would let a macro assemble any of the above from innocent token trees;
9. implements a trait of its own (one the koan's programs do not declare) for a type
   it did not define (`impl Sneaky for Vec<usize>`, `impl<T> Sneaky for T`), when that
   trait has a method the hidden tests call by name with method syntax (`.is_empty()`)
   and the koan's programs do not declare: with `use super::*`, a by-value
   `fn is_empty(self)` of that trait would be chosen over `Vec::is_empty(&self)` in the
   hidden tests. An extension trait whose methods the tests never call that way, or
   call as the koan's own API (the blanket `impl<S: Sink + ?Sized> SinkExt for S` that
   moves a generic method out of a dyn-compatible trait), is ordinary Rust and is
   accepted. Where the trait's methods cannot be read (a renamed import, a macro
   splice), or the hidden tests are not known, any such impl is refused. Residual: a
   koan that declares a method named like a standard one and whose tests call that name
   on a standard value; koan authors avoid that (koans/README.md).

Each rule is a single pass over the tokens (brackets are matched once, up front), so
the check is linear in the candidate's size.
"""

from __future__ import annotations

import functools
from dataclasses import replace

from .harness import CRATE_NAMES, HIDDEN_TEST_MODULE, PRELUDE_NAMES, PRIMITIVE_TYPES, STD_MACROS
from .rustlex import LexError, Token, UsePath, bracket_pairs, tokenize, use_tree_paths

__all__ = ["HIDDEN_TEST_MODULE", "find_tampering", "normalised_tokens"]

_COMPILE_TIME_READS = {"include", "include_str", "include_bytes", "env", "option_env"}
_ASSEMBLY = {"asm", "global_asm", "naked_asm"}
_LINKER_ATTRIBUTES = {"no_mangle", "export_name", "link_section", "link", "link_name", "used"}
_LINT_LEVELS = {"allow", "warn", "deny", "forbid", "expect"}
_PROTECTED_TYPES = PRELUDE_NAMES | PRIMITIVE_TYPES | CRATE_NAMES
_TYPE_KEYWORDS = {"struct", "enum", "union", "trait", "type", "mod"}
_ITEM_KEYWORDS = _TYPE_KEYWORDS | {"fn", "const", "static"}


def find_tampering(code: str | list[Token], koan_programs: tuple[str, ...] = (),
                   hidden_tests: str | None = None) -> str | None:
    """Return "tampering: <reason>" for the first rule the candidate breaks, else None.

    `koan_programs` (the koan's buggy and fixed code) say which traits and methods are
    the koan's own, and `hidden_tests` which methods the tests call (rule 9; without
    them rule 9 assumes the tests call every method). Code the lexer cannot read is not
    judged here (it returns None); the verifier refuses such code before compiling it.
    """
    if isinstance(code, str):
        try:
            code = tokenize(code)
        except LexError:
            return None
    tokens = normalised_tokens(code)
    pairs = bracket_pairs(tokens)
    koan_traits = _declared(tuple(koan_programs), "trait")
    capturable = None if hidden_tests is None else _capturable_methods(hidden_tests, tuple(koan_programs))
    for check in (
        _names_hidden_module,
        _reads_at_compile_time,
        _inner_attributes,
        _reaches_std_process,
        _unsafe_or_foreign_code,
        _shadows_std_names,
        _cfg_test_outside_module,
        _splices_metavariables,
        _forbidden_names_in_macros,
        lambda tokens, pairs: _new_traits_on_foreign_types(tokens, pairs, koan_traits, capturable),
    ):
        reason = check(tokens, pairs)
        if reason is not None:
            return f"tampering: {reason}"
    return None


def normalised_tokens(tokens: list[Token]) -> list[Token]:
    """The tokens with raw identifiers written as rustc reads them (`r#exit` is `exit`)."""
    return [replace(t, text=t.text[2:]) if t.kind == "ident" and t.text.startswith("r#") else t for t in tokens]


def _at(tokens: list[Token], i: int, *texts: str) -> bool:
    return all(0 <= i + k < len(tokens) and tokens[i + k].text == t for k, t in enumerate(texts))


def _names_hidden_module(tokens, pairs):
    for t in tokens:
        if t.kind == "ident" and t.text == HIDDEN_TEST_MODULE:
            return f"line {t.line}: the candidate names the hidden test module `{HIDDEN_TEST_MODULE}`"
    return None


def _reads_at_compile_time(tokens, pairs):
    attribute_end = -1  # `path` anywhere in an attribute, `cfg_attr(all(), path = ...)` too
    for i, t in enumerate(tokens):
        if t.kind == "ident" and t.text in _COMPILE_TIME_READS and _at(tokens, i + 1, "!"):
            return f"line {t.line}: `{t.text}!` reads files or the environment at compile time"
        if t.text == "#" and i > attribute_end:
            opening = i + 1 + _at(tokens, i + 1, "!")
            if _at(tokens, opening, "[") and pairs[opening] > opening:
                attribute_end = pairs[opening]
        if i <= attribute_end and t.kind == "ident" and t.text == "path":
            return f"line {t.line}: `#[path = ...]` loads a module from an arbitrary file"
    return None


def _inner_attributes(tokens, pairs):
    for i, t in enumerate(tokens):
        if _at(tokens, i, "#", "!", "["):
            name = tokens[i + 3].text if i + 3 < len(tokens) else ""
            if name not in _LINT_LEVELS:
                return (
                    f"line {t.line}: crate-level attribute `#![{name}...]` changes how the "
                    "hidden tests are compiled (only lint levels such as #![allow(...)] are accepted)"
                )
    return None


def _reaches_std_process(tokens, pairs):
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t.text in CRATE_NAMES and _at(tokens, i + 1, "::", "process"):
            return f"line {t.line}: `std::process` can exit early or spawn programs"
        if t.text == "extern" and _at(tokens, i + 1, "crate"):
            return f"line {t.line}: `extern crate` is not allowed"
        if t.text == "use":
            end = _statement_end(tokens, i, pairs)
            for path, alias in use_tree_paths(tokens, i + 1, end, pairs, watch=_PROCESS):
                reason = _judge_use(path, alias)
                if reason:
                    return f"line {t.line}: {reason}"
            i = end
        i += 1
    return None


_PROCESS = frozenset({"process"})


def _judge_use(path: UsePath, alias: str | None) -> str | None:
    from_std = path.first in CRATE_NAMES
    if from_std and path.watched:
        return "`use` imports from `std::process`"
    if from_std and path.last == "*" and path.length == 2:
        return "a glob import of `std` would bring in `std::process`"
    if from_std and path.length == 1 and alias is not None:
        return "renaming `std` hides which paths the candidate uses"
    name = alias if alias is not None else path.last
    if name in STD_MACROS or name in _PROTECTED_TYPES:
        if not from_std:
            return f"imports an item as `{name}`, shadowing the standard one"
    return None


def _unsafe_or_foreign_code(tokens, pairs):
    for i, t in enumerate(tokens):
        if t.kind != "ident":
            continue
        if t.text == "unsafe":
            return f"line {t.line}: `unsafe` code is not allowed"
        if t.text == "extern":
            return f"line {t.line}: `extern` items are not allowed"
        if t.text in _ASSEMBLY and _at(tokens, i + 1, "!"):
            return f"line {t.line}: inline assembly is not allowed"
        if t.text in _LINKER_ATTRIBUTES and _at(tokens, i - 2, "#", "["):
            return f"line {t.line}: linker attribute `#[{t.text}]` is not allowed"
    return None


_ITEM_HEADS = {"fn", "impl", "trait", "struct", "enum", "union", "mod", "type", "const", "static", "macro_rules"}


def _in_impl_or_trait_body(tokens: list[Token]) -> list[bool]:
    """For each token: is the innermost block around it the body of an `impl` or a
    `trait`? There `type Err = ...;` is an associated type (`Self::Err`), which names
    nothing in the module's scope."""
    inside, stack, head_start = [], [], 0
    for i, t in enumerate(tokens):
        inside.append(bool(stack) and stack[-1])
        if t.text == "{":
            # The block's owner: the first item keyword of the header before it (`fn f()
            # -> impl Iterator {` is a function, `impl<T> FromStr for W<T> {` an impl).
            first = next((tokens[k].text for k in range(head_start, i) if tokens[k].text in _ITEM_HEADS), None)
            stack.append(first in ("impl", "trait"))
        elif t.text == "}" and stack:
            stack.pop()
        if t.text in ("{", "}", ";"):
            head_start = i + 1
    return inside


def _shadows_std_names(tokens, pairs):
    associated = _in_impl_or_trait_body(tokens)
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t.text == "macro_rules" and _at(tokens, i + 1, "!") and i + 2 < len(tokens):
            name = tokens[i + 2].text
            if name in STD_MACROS:
                return f"line {t.line}: defines a macro named `{name}`, shadowing the standard one"
        if t.text in _TYPE_KEYWORDS and i + 1 < len(tokens) and tokens[i + 1].kind == "ident" and not (
                t.text == "type" and associated[i]):
            name = tokens[i + 1].text
            if name in _PROTECTED_TYPES:
                aliases_std, after = _aliases_a_std_item(tokens, i + 2) if t.text == "type" else (False, i)
                if not aliases_std:
                    kind = "the primitive type" if name in PRIMITIVE_TYPES else "the standard item"
                    return f"line {t.line}: defines `{name}`, shadowing {kind}"
                i = after
                continue
        i += 1
    return None


# How each closing token changes the depth of angle brackets, and whether it ends in `=`.
_ANGLE_CLOSERS = {">": (-1, False), ">>": (-2, False), ">=": (-1, True), ">>=": (-2, True)}


def _aliases_a_std_item(tokens: list[Token], i: int) -> tuple[bool, int]:
    """After `type NAME`: is it `<generics> = std::...` (or `::std`, `core`, `alloc`)?
    Also returns where the scan stopped, so the caller never scans the same tokens twice."""
    equals = False
    if _at(tokens, i, "<"):
        depth = 0
        while i < len(tokens):
            text = tokens[i].text
            change, equals = _ANGLE_CLOSERS.get(text, (1 if text == "<" else 0, False))
            depth += change
            i += 1
            if depth <= 0:
                break
    if not equals:
        if not _at(tokens, i, "="):
            return False, i
        i += 1
    i += _at(tokens, i, "::")
    return i < len(tokens) and tokens[i].text in CRATE_NAMES and _at(tokens, i + 1, "::"), i


def _cfg_test_outside_module(tokens, pairs):
    # suspects[k]: how many `test` or `$` tokens come before k, so that asking whether a
    # bracketed range holds one is O(1) however the brackets nest.
    suspects = [0]
    for t in tokens:
        suspects.append(suspects[-1] + (t.text in ("test", "$")))
    run_end, on_module = 0, False
    for i, t in enumerate(tokens):
        if t.text == "cfg" and _at(tokens, i + 1, "!") and i + 2 < len(tokens) and tokens[i + 2].text in "([{":
            if suspects[max(pairs[i + 2], i + 3)] > suspects[i + 3]:
                return f"line {t.line}: `cfg!(test)` makes code behave differently under test"
        if not (_at(tokens, i, "#", "[") and i + 2 < len(tokens)):
            continue
        if tokens[i + 2].text not in ("cfg", "cfg_attr"):
            continue
        close = pairs[i + 1] if pairs[i + 1] > i + 1 else len(tokens)
        if suspects[close] == suspects[i + 2]:
            continue
        if tokens[i + 2].text == "cfg_attr":
            return f"line {t.line}: `cfg_attr` on `test` makes code behave differently under test"
        if i >= run_end:
            # Find what this run of outer attributes stands on, once per run.
            run_end = close + 1
            while _at(tokens, run_end, "#", "[") and pairs[run_end + 1] > run_end + 1:
                run_end = pairs[run_end + 1] + 1
            after = run_end
            if _at(tokens, after, "pub", "(") and pairs[after + 1] > after + 1:
                after = pairs[after + 1] + 1
            elif _at(tokens, after, "pub"):
                after += 1
            on_module = _at(tokens, after, "mod")
        if not on_module:
            return f"line {t.line}: `cfg(test)` on something other than a module hard-codes test behaviour"
    return None


def _splices_metavariables(tokens, pairs):
    for i, t in enumerate(tokens):
        if t.text != "$" or i + 1 >= len(tokens):
            continue
        following = tokens[i + 1]
        if following.text == "crate" or not (following.kind == "ident" or following.text == "("):
            continue
        # The splice is `$name`, or a repetition `$( ... ) sep? *|+|?`.
        end = i + 1
        if following.text == "(":
            end = pairs[i + 1] if pairs[i + 1] > i + 1 else len(tokens) - 1
            if end + 1 < len(tokens) and tokens[end + 1].text not in ("*", "+", "?"):
                end += 1  # a separator
            end += 1
        name = following.text if following.kind == "ident" else "$(...)"
        shown = f"${name}" if following.kind == "ident" else name
        before = tokens[i - 1].text if i > 0 else ""
        after = tokens[end + 1].text if end + 1 < len(tokens) else ""
        spliced_into = (
            "a macro name" if after == "!" or _at(tokens, i - 2, "macro_rules", "!")
            else "a path" if after == "::" or before == "::"
            else "an attribute" if _at(tokens, i - 2, "#", "[") or _at(tokens, i - 3, "#", "!", "[")
            else "an item name" if before in _ITEM_KEYWORDS or before == "as"
            else "another splice" if after == "$"
            else None
        )
        if spliced_into:
            return (f"line {t.line}: a macro splices `{shown}` into {spliced_into}, which could "
                    "assemble a forbidden name; write the name out")
    return None


# Names a macro could carry to where a rule would refuse them, assembled from token
# trees (`std $sep process $sep exit`); refused anywhere inside a macro definition or a
# call of a non-standard macro.
_NOT_IN_MACROS = {"process", "include", "include_str", "include_bytes", "option_env", "asm", "global_asm"}


def _forbidden_names_in_macros(tokens, pairs):
    # inside[k] > 0 for tokens in a macro_rules body or in a non-standard macro's call,
    # marked with a difference array so that nested macros stay linear.
    marks = [0] * (len(tokens) + 1)
    for i, t in enumerate(tokens):
        if t.kind != "ident" or not _at(tokens, i + 1, "!") or i + 2 >= len(tokens):
            continue
        opening = i + 3 if t.text == "macro_rules" else i + 2
        if opening < len(tokens) and pairs[opening] > opening and (t.text == "macro_rules" or t.text not in STD_MACROS):
            marks[opening] += 1
            marks[pairs[opening]] -= 1
    depth = 0
    for i, t in enumerate(tokens):
        depth += marks[i]
        if depth > 0 and t.kind == "ident" and t.text in _NOT_IN_MACROS:
            return (f"line {t.line}: `{t.text}` inside a macro, where token trees could assemble it into a "
                    "forbidden path or call")
    return None


@functools.lru_cache(maxsize=512)
def _declared(programs: tuple[str, ...], keyword: str) -> frozenset[str]:
    """The names the koan's programs declare after `keyword` (`trait`, `fn`)."""
    names = set()
    for program in programs:
        try:
            tokens = tokenize(program)
        except LexError:
            continue
        names.update(tokens[i + 1].text for i, t in enumerate(tokens[:-1]) if t.text == keyword)
    return frozenset(names)


@functools.lru_cache(maxsize=512)
def _capturable_methods(hidden_tests: str, programs: tuple[str, ...]) -> frozenset[str]:
    """Names the hidden tests call with method syntax (`.name(`, `.name::<`) that the
    koan's programs do not declare: calls a trait method could capture on a std type."""
    try:
        tokens = tokenize(hidden_tests)
    except LexError:
        return frozenset({"*"})  # unreadable tests: every method counts
    called = {tokens[i + 1].text for i in range(len(tokens) - 2)
              if tokens[i].text == "." and tokens[i + 1].kind == "ident" and tokens[i + 2].text in ("(", "::")}
    return frozenset(called - _declared(programs, "fn"))


def _trait_methods(tokens: list[Token], pairs: list[int]) -> dict[str, set[str]]:
    """Each trait the candidate declares, with the methods its body declares."""
    methods: dict[str, set[str]] = {}
    for i in range(len(tokens) - 1):
        if tokens[i].text != "trait" or tokens[i + 1].kind != "ident":
            continue
        k = i + 2
        while k < len(tokens) and tokens[k].text not in ("{", ";"):
            k += 1
        names = methods.setdefault(tokens[i + 1].text, set())
        if k < len(tokens) and tokens[k].text == "{" and pairs[k] > k:
            j = k + 1
            while j < pairs[k]:
                if tokens[j].text == "fn" and j + 1 < len(tokens) and tokens[j + 1].kind == "ident":
                    names.add(tokens[j + 1].text)
                j = pairs[j] + 1 if pairs[j] > j else j + 1
    return methods


_SELF_TYPE_PREFIXES = {"&", "&&", "mut", "dyn", "const"}


def _new_traits_on_foreign_types(tokens: list[Token], pairs: list[int], koan_traits: frozenset[str],
                                 capturable: frozenset[str] | None) -> str | None:
    own_types = {tokens[i + 1].text for i, t in enumerate(tokens[:-1])
                 if t.text in ("struct", "enum", "union", "type") and tokens[i + 1].kind == "ident"}
    new_traits = {tokens[i + 1].text for i, t in enumerate(tokens[:-1])
                  if t.text in ("trait", "as") and tokens[i + 1].kind == "ident"} - koan_traits
    declared = _trait_methods(tokens, pairs)
    renamed = {tokens[i + 1].text for i, t in enumerate(tokens[:-1]) if t.text == "as" and tokens[i + 1].kind == "ident"}

    def harmless(trait: str) -> bool:
        # Only a trait whose every method is known, and none of which the tests call
        # on values that might be standard, cannot capture a call.
        if capturable is None or "*" in capturable or trait in renamed or trait not in declared:
            return False
        return not (declared[trait] & capturable)
    i = 0
    while i < len(tokens):
        if tokens[i].text != "impl":
            i += 1
            continue
        # The header runs to the item's body: the last name before `for` (outside angle
        # brackets) is the trait, the first name after it heads the type.
        depth, trait, spliced, k = 0, None, False, i + 1
        while k < len(tokens) and tokens[k].text not in ("{", ";", "where"):
            text = tokens[k].text
            depth += {"<": 1, ">": -1, ">>": -2}.get(text, 0)
            if depth <= 0 and text == "for" and trait is not None:
                break
            if depth <= 0 and tokens[k].kind == "ident":
                trait, spliced = text, k > 0 and tokens[k - 1].text == "$"
            k += 1
        if k >= len(tokens) or tokens[k].text != "for" or not (spliced or trait in new_traits):
            i = k
            continue
        head = k + 1
        while head < len(tokens) and (tokens[head].text in _SELF_TYPE_PREFIXES or tokens[head].kind == "lifetime"):
            head += 1
        target = tokens[head].text if head < len(tokens) else ""
        if (head >= len(tokens) or tokens[head].kind != "ident" or target not in own_types) and not (
                not spliced and harmless(trait)):
            return (f"line {tokens[i].line}: implements the candidate's own trait `{trait}` for `{target}`, a type it "
                    "did not define; such a trait's methods can capture the hidden tests' calls on standard types "
                    "(implement it for your own types only)")
        i = k
    return None


def _statement_end(tokens: list[Token], start: int, pairs: list[int]) -> int:
    """Index of the `;` that ends the statement starting at start (skipping brackets)."""
    k = start
    while k < len(tokens):
        if tokens[k].text == ";":
            return k
        if pairs[k] > k:
            k = pairs[k]
        k += 1
    return len(tokens)
