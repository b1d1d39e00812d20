"""Anti-tamper rules: what a candidate may not do to get a pass it did not earn.

The harness compiles the candidate with the koan's hidden tests in a module that the
candidate cannot see (`mod sleepy_hidden_tests`, loaded from a separate file and
starting with `use super::*;`). A candidate is rejected before compilation, with the
reason "tampering: ...", when it

1. names the hidden test module (`sleepy_hidden_tests`), to define or shadow it;
2. reads files or the environment at compile time: `include!`, `include_str!`,
   `include_bytes!`, `env!`, `option_env!`, or `#[path = ...]` on a module;
3. uses crate-level (inner) attributes other than lint levels: `#![allow(...)]`,
   `#![warn(...)]`, `#![deny(...)]`, `#![forbid(...)]` and `#![expect(...)]` are fine,
   `#![no_implicit_prelude]`, `#![cfg(...)]`, `#![no_main]`, `#![feature(...)]` etc.
   change how the hidden tests compile and are refused;
4. leaves the process early or spawns programs: any path through `std::process`
   (`exit`, `abort`, `Command`), including `use` trees that import it, glob imports of
   `std` and aliases of `std` that would hide it;
5. uses `unsafe`, `extern` (blocks, functions, crates), inline assembly or linker
   attributes (`no_mangle`, `export_name`, `link_section`, `link`, `used`), which
   could run code before `main` or replace symbols the test harness relies on;
6. defines a macro, or renames an item with `as`, under the name of a standard macro
   the tests use (`assert_eq`, `panic`, ...), or defines an item named like a
   standard prelude item (`String`, `Result`, `PartialEq`, ...): the hidden tests'
   `use super::*` would pick the candidate's version instead of the real one;
7. uses `cfg(test)` anywhere but on a module: code that behaves differently under
   test is hard-coding the answers.

The compiler is also run with `-F unsafe_code` and the sandbox forbids process
creation while the tests run, so rules 4 and 5 are enforced twice. A candidate may
still write its own `#[cfg(test)] mod tests`; only the hidden tests are run.
"""

from __future__ import annotations

from .rustlex import LexError, Token, matching_bracket, tokenize

__all__ = ["HIDDEN_TEST_MODULE", "find_tampering"]

HIDDEN_TEST_MODULE = "sleepy_hidden_tests"

_COMPILE_TIME_READS = {"include", "include_str", "include_bytes", "env", "option_env"}
_ASSEMBLY = {"asm", "global_asm", "naked_asm"}
_LINKER_ATTRIBUTES = {"no_mangle", "export_name", "link_section", "link", "link_name", "used"}
_LINT_LEVELS = {"allow", "warn", "deny", "forbid", "expect"}
_STD_MACROS = {
    "assert", "assert_eq", "assert_ne", "debug_assert", "debug_assert_eq", "debug_assert_ne",
    "panic", "unreachable", "todo", "unimplemented", "matches", "vec", "format", "print",
    "println", "eprint", "eprintln", "write", "writeln", "dbg", "format_args", "concat",
    "stringify", "line", "file", "column", "cfg",
}
_PRELUDE_NAMES = {
    "Option", "Some", "None", "Result", "Ok", "Err", "String", "Vec", "Box", "ToString",
    "ToOwned", "Clone", "Copy", "Send", "Sync", "Sized", "Unpin", "Drop", "Fn", "FnMut",
    "FnOnce", "PartialEq", "Eq", "PartialOrd", "Ord", "AsRef", "AsMut", "Into", "From",
    "Default", "Iterator", "IntoIterator", "Extend", "DoubleEndedIterator",
    "ExactSizeIterator", "TryFrom", "TryInto", "FromIterator", "std", "core", "alloc",
}
_ITEM_KEYWORDS = {"struct", "enum", "union", "trait", "type", "fn", "mod", "const", "static"}


def find_tampering(code: str) -> str | None:
    """Return "tampering: <reason>" for the first rule the candidate breaks, else None."""
    try:
        tokens = tokenize(code)
    except LexError:
        # Unlexable code cannot compile either; rustc will say why.
        return None
    for check in (
        _names_hidden_module,
        _reads_at_compile_time,
        _inner_attributes,
        _reaches_std_process,
        _unsafe_or_foreign_code,
        _shadows_std_names,
        _cfg_test_outside_module,
    ):
        reason = check(tokens)
        if reason is not None:
            return f"tampering: {reason}"
    return None


def _at(tokens: list[Token], i: int, *texts: str) -> bool:
    return all(i + k < len(tokens) and tokens[i + k].text == t for k, t in enumerate(texts))


def _names_hidden_module(tokens: list[Token]) -> str | None:
    for t in tokens:
        if t.kind == "ident" and t.text.removeprefix("r#") == HIDDEN_TEST_MODULE:
            return f"line {t.line}: the candidate names the hidden test module `{HIDDEN_TEST_MODULE}`"
    return None


def _reads_at_compile_time(tokens: list[Token]) -> str | None:
    for i, t in enumerate(tokens):
        if t.kind == "ident" and t.text in _COMPILE_TIME_READS and _at(tokens, i + 1, "!"):
            return f"line {t.line}: `{t.text}!` reads files or the environment at compile time"
        if _at(tokens, i, "#", "[", "path"):
            return f"line {t.line}: `#[path = ...]` loads a module from an arbitrary file"
    return None


def _inner_attributes(tokens: list[Token]) -> str | None:
    for i, t in enumerate(tokens):
        if _at(tokens, i, "#", "!", "["):
            name = tokens[i + 3].text if i + 3 < len(tokens) else ""
            if name not in _LINT_LEVELS:
                return (
                    f"line {t.line}: crate-level attribute `#![{name}...]` changes how the "
                    "hidden tests are compiled (only lint levels such as #![allow(...)] are accepted)"
                )
    return None


def _reaches_std_process(tokens: list[Token]) -> str | None:
    for i, t in enumerate(tokens):
        if t.text in ("std", "core") and _at(tokens, i + 1, "::", "process"):
            return f"line {t.line}: `std::process` can exit early or spawn programs"
        if t.text == "extern" and _at(tokens, i + 1, "crate"):
            return f"line {t.line}: `extern crate` is not allowed"
        if t.text == "use":
            statement = _until_semicolon(tokens, i)
            texts = [s.text for s in statement]
            if "std" in texts and "process" in texts:
                return f"line {t.line}: `use` imports from `std::process`"
            for k, s in enumerate(statement):
                if s.text == "std" and _at(statement, k + 1, "::", "*"):
                    return f"line {t.line}: a glob import of `std` would bring in `std::process`"
                if s.text in ("std", "self") and _at(statement, k + 1, "as") and "std" in texts:
                    return f"line {t.line}: renaming `std` hides which paths the candidate uses"
    return None


def _unsafe_or_foreign_code(tokens: list[Token]) -> str | None:
    for i, t in enumerate(tokens):
        if t.kind != "ident":
            continue
        if t.text == "unsafe":
            return f"line {t.line}: `unsafe` code is not allowed"
        if t.text == "extern":
            return f"line {t.line}: `extern` items are not allowed"
        if t.text in _ASSEMBLY and _at(tokens, i + 1, "!"):
            return f"line {t.line}: inline assembly is not allowed"
        if t.text in _LINKER_ATTRIBUTES and i >= 2 and tokens[i - 1].text == "[" and tokens[i - 2].text == "#":
            return f"line {t.line}: linker attribute `#[{t.text}]` is not allowed"
    return None


def _shadows_std_names(tokens: list[Token]) -> str | None:
    for i, t in enumerate(tokens):
        if t.text == "macro_rules" and _at(tokens, i + 1, "!") and i + 2 < len(tokens):
            name = tokens[i + 2].text
            if name in _STD_MACROS:
                return f"line {t.line}: defines a macro named `{name}`, shadowing the standard one"
        if t.text == "as" and i + 1 < len(tokens):
            name = tokens[i + 1].text
            if name in _STD_MACROS or name in _PRELUDE_NAMES:
                return f"line {t.line}: renames an item to `{name}`, shadowing the standard one"
        if t.text in _ITEM_KEYWORDS and i + 1 < len(tokens) and tokens[i + 1].kind == "ident":
            name = tokens[i + 1].text
            if name in _PRELUDE_NAMES:
                return f"line {t.line}: defines `{name}`, shadowing the standard prelude item"
    return None


def _cfg_test_outside_module(tokens: list[Token]) -> str | None:
    for i, t in enumerate(tokens):
        if not (_at(tokens, i, "#", "[") and i + 2 < len(tokens)):
            continue
        if tokens[i + 2].text not in ("cfg", "cfg_attr"):
            continue
        attribute, after = _bracketed(tokens, i + 1)
        if not any(a.text == "test" for a in attribute):
            continue
        if tokens[i + 2].text == "cfg_attr":
            return f"line {t.line}: `cfg_attr` on `test` makes code behave differently under test"
        while _at(tokens, after, "#", "["):
            after = _bracketed(tokens, after + 1)[1]
        if _at(tokens, after, "pub", "("):
            after = _bracketed(tokens, after + 1)[1]
        elif _at(tokens, after, "pub"):
            after += 1
        if not _at(tokens, after, "mod"):
            return f"line {t.line}: `cfg(test)` on something other than a module hard-codes test behaviour"
    return None


def _until_semicolon(tokens: list[Token], start: int) -> list[Token]:
    for end in range(start, len(tokens)):
        if tokens[end].text == ";":
            return tokens[start:end]
    return tokens[start:]


def _bracketed(tokens: list[Token], open_index: int) -> tuple[list[Token], int]:
    """Tokens inside the bracket at open_index, and the index after its closing bracket."""
    close = matching_bracket(tokens, open_index)
    if close is None:
        return tokens[open_index + 1 :], len(tokens)
    return tokens[open_index + 1 : close], close + 1
