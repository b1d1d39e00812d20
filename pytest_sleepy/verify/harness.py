"""The hidden test module, and the proof channel that decides which tests passed.

A koan's hidden tests are compiled into the candidate's crate, so the candidate's code
runs in the same process as the tests. Whatever that process prints, and its exit
status, the candidate can forge. So a hidden test counts as passed only when it
delivers a **proof**: a 128-bit token drawn afresh for every verification and every
test, which the candidate can neither read nor predict.

How the tokens travel:

- The host draws one token per hidden test and writes `name token` lines to the test
  binary's standard input, then closes it. Nothing else holds them: not the source,
  not the binary, not the arguments, not the environment, not a file.
- Every hidden `#[test] fn NAME` becomes a plain function, called by a generated
  wrapper test of the same name. The wrapper first claims its token (the first claim
  reads all of standard input into a private static, before any candidate code has
  run: safe Rust has no code before `main`, and libtest runs only the wrappers), then
  runs the test body, and writes the token to standard output only if the body
  returned normally (or, for `#[should_panic]`, panicked as expected).
- The wrappers and the tokens live in a private module of the hidden test module. The
  candidate cannot name that module (tamper.py refuses the name), privacy keeps it
  out of reach through globs, and safe Rust cannot read another module's statics.

The host counts a test as passed only if its token appears in the output. A candidate
that exits early, prints libtest's "... ok" lines, closes or floods its output, or
kills the process simply lacks the tokens of the tests it skipped.

Two more properties are structural, not rules about names:

- The test bodies call every standard macro by its absolute path (`::std::assert_eq!`),
  so a candidate's `macro_rules! assert_eq` cannot reach them.
- The module imports by name the prelude's items, the primitive types and every
  standard item the koan's own programs (buggy and fixed) import at their top level.
  Explicit imports beat the `use super::*` glob, so a candidate's `String`, `u64` or
  `HashMap` never replaces the standard one inside the tests.
- A trait (or an item renamed with `as`) that the candidate adds, and that neither of
  the koan's programs has, is shadowed inside the module by an empty enum of the same
  name. The glob then does not bring it into scope, so it cannot capture a method call
  the tests make on a standard type (a by-value `is_empty(self)` on `Vec` is chosen
  before the inherent `is_empty(&self)`). The tests need only the koan's own names.
"""

from __future__ import annotations

import functools
import re
import secrets
from dataclasses import dataclass

from .rustlex import LexError, Token, bracket_pairs, matching_bracket, tokenize, use_tree_paths

__all__ = [
    "HIDDEN_TEST_MODULE",
    "HIDDEN_TESTS_FILE",
    "HiddenTest",
    "HiddenTestError",
    "hidden_tests",
    "hidden_test_names",
    "hidden_module_source",
    "draw_tokens",
    "proven_tests",
    "STD_MACROS",
    "PRELUDE_NAMES",
    "PRIMITIVE_TYPES",
]

HIDDEN_TEST_MODULE = "sleepy_hidden_tests"
HIDDEN_TESTS_FILE = f"{HIDDEN_TEST_MODULE}.rs"
# Prefix of a delivered proof on standard output; the token that follows is what counts.
PROOF_MARK = "sleepy-proof:"
_HARNESS = "__sleepy_harness"
_BODY = "__sleepy_test_"

STD_MACROS = frozenset({
    "assert", "assert_eq", "assert_ne", "debug_assert", "debug_assert_eq", "debug_assert_ne",
    "panic", "unreachable", "todo", "unimplemented", "matches", "vec", "format", "print",
    "println", "eprint", "eprintln", "write", "writeln", "dbg", "format_args", "concat",
    "stringify", "line", "file", "column", "cfg", "module_path",
})
# The Rust 2021 prelude (std::prelude::rust_2021), and the crate names a path can start with.
PRELUDE_NAMES = frozenset({
    "Option", "Some", "None", "Result", "Ok", "Err", "String", "Vec", "Box", "ToString",
    "ToOwned", "Clone", "Copy", "Send", "Sync", "Sized", "Unpin", "Drop", "Fn", "FnMut",
    "FnOnce", "PartialEq", "Eq", "PartialOrd", "Ord", "AsRef", "AsMut", "Into", "From",
    "Default", "Iterator", "IntoIterator", "Extend", "DoubleEndedIterator",
    "ExactSizeIterator", "TryFrom", "TryInto", "FromIterator", "Debug", "Hash", "drop",
})
CRATE_NAMES = frozenset({"std", "core", "alloc"})
PRIMITIVE_TYPES = frozenset({
    "bool", "char", "str", "f32", "f64", "i8", "i16", "i32", "i64", "i128", "isize",
    "u8", "u16", "u32", "u64", "u128", "usize",
})
# Where each prelude name is imported from inside the hidden module.
_PRELUDE_PATHS = {name: f"::std::prelude::rust_2021::{name}" for name in PRELUDE_NAMES}
_PRELUDE_PATHS.update(Debug="::std::fmt::Debug", Hash="::std::hash::Hash")


class HiddenTestError(ValueError):
    """The hidden tests use a form the harness cannot wrap (named in the message)."""


@dataclass(frozen=True)
class HiddenTest:
    name: str
    should_panic: bool = False
    expected_panic: str | None = None  # `#[should_panic(expected = "...")]`


def hidden_tests(source: str) -> tuple[HiddenTest, ...]:
    """The top-level `#[test]` functions of a hidden-test source, in order."""
    return tuple(test for test, _ in _test_functions(_tokens(source)))


def hidden_test_names(source: str) -> tuple[str, ...]:
    """Names of the top-level `#[test]` functions of a hidden-test source, in order."""
    try:
        return tuple(test.name for test in hidden_tests(source))
    except HiddenTestError:
        return ()


def draw_tokens(names) -> dict[str, str]:
    """One fresh, unpredictable token per hidden test."""
    return {name: secrets.token_hex(16) for name in names}


def tokens_input(tokens: dict[str, str]) -> bytes:
    """What the test binary reads on standard input."""
    return "".join(f"{name} {token}\n" for name, token in tokens.items()).encode("ascii")


def proven_tests(output: str, tokens: dict[str, str]) -> set[str]:
    """The tests whose proof appears in the output (the only evidence of a pass)."""
    return {name for name, token in tokens.items() if f"{PROOF_MARK}{token}" in output}


def hidden_module_source(tests: str, programs: tuple[str, ...] = (), candidate: str = "") -> str:
    """The file compiled as `mod sleepy_hidden_tests`: the koan's tests, each wrapped so
    that it proves its pass, with standard macros absolute, the standard names the tests
    may mean imported by name (`programs`: the koan's buggy and fixed code), and the
    candidate's own traits and renames kept out of the tests' scope."""
    koan = _koan_part(tests, tuple(programs))
    hidden = sorted(_traits_and_renames(candidate) - koan.reserved)
    shadows = "".join(f"#[allow(dead_code)]\nenum {name} {{}}\n" for name in hidden)
    return f"{koan.head}{shadows}\n{koan.body}"


@dataclass(frozen=True)
class _KoanPart:
    head: str  # `use super::*` and the imports by name
    body: str  # the tests, their wrappers and the harness module
    reserved: frozenset[str]  # names a shadow must not take


@functools.lru_cache(maxsize=512)
def _koan_part(tests: str, programs: tuple[str, ...]) -> _KoanPart:
    """Everything of the module that depends on the koan alone, built once per koan."""
    tokens = _tokens(tests)
    edits: list[tuple[int, int, str]] = []
    wrappers: list[str] = []
    for test, (attributes, name_token) in _test_functions(tokens):
        edits += [(start, end, " " * (end - start)) for start, end in attributes]
        edits.append((name_token.start, name_token.end, _BODY + test.name))
        wrappers.append(_wrapper(test))
    for i, token in enumerate(tokens):
        if (token.kind == "ident" and token.text in STD_MACROS and i + 1 < len(tokens)
                and tokens[i + 1].text == "!" and not (i > 0 and tokens[i - 1].text == "::")
                and not (i > 0 and tokens[i - 1].text == "macro_rules")):
            edits.append((token.start, token.start, "::std::"))
    declared_by_tests = _names_the_tests_declare(tokens)
    standard = {name: path for name, path in _PRELUDE_PATHS.items() if name not in declared_by_tests}
    koan_names: set[str] = set()
    for program in programs:
        koan_names |= _declared_names(program)
        standard.update({name: path for name, path in _std_imports(program).items() if name not in declared_by_tests})
    primitives = sorted(set(PRIMITIVE_TYPES) - declared_by_tests - set(standard))
    imports = "".join(f"#[allow(unused_imports)]\nuse {path} as {name};\n" for name, path in sorted(standard.items()))
    head = ("#[allow(unused_imports)]\nuse super::*;\n" f"{imports}"
            f"#[allow(unused_imports)]\nuse ::std::primitive::{{{', '.join(primitives)}}};\n")
    body = f"{_apply(tests, edits)}\n\n{''.join(wrappers)}\n{_HARNESS_MODULE}"
    reserved = frozenset(koan_names | declared_by_tests | set(standard) | set(primitives))
    return _KoanPart(head, body, reserved)


def _wrapper(test: HiddenTest) -> str:
    body = f"{_BODY}{test.name}"
    if not test.should_panic:
        return f"#[test]\nfn {test.name}() {{ {_HARNESS}::run({_rust_string(test.name)}, {body}); }}\n"
    expected = "::std::option::Option::None" if test.expected_panic is None else (
        f"::std::option::Option::Some({_rust_string(test.expected_panic)})")
    return (f"#[test]\nfn {test.name}() {{ {_HARNESS}::run_should_panic({_rust_string(test.name)}, "
            f"{expected}, {body}); }}\n")


def _rust_string(text: str) -> str:
    escaped = "".join(c if c.isalnum() or c in " _-.,:;!?()[]{}<>=+*/'#@%&|^~`" else f"\\u{{{ord(c):x}}}" for c in text)
    return f'"{escaped}"'


# The private module that holds the tokens and delivers proofs. Every path is absolute
# and no trait of the candidate is in scope here, so its names cannot change what this
# code calls.
_HARNESS_MODULE = f"""#[allow(dead_code)]
mod {_HARNESS} {{
    static TOKENS: ::std::sync::OnceLock<::std::string::String> = ::std::sync::OnceLock::new();

    fn claim(name: &str) -> &'static str {{
        let text = TOKENS.get_or_init(|| {{
            let mut text = ::std::string::String::new();
            let _ = ::std::io::Read::read_to_string(&mut ::std::io::stdin(), &mut text);
            text
        }});
        for line in text.lines() {{
            if let ::std::option::Option::Some((n, t)) = line.split_once(' ') {{
                if n == name {{
                    return t;
                }}
            }}
        }}
        ""
    }}

    fn deliver(token: &str) {{
        let mut out = ::std::io::stdout().lock();
        let _ = ::std::io::Write::write_all(&mut out, b"\\n{PROOF_MARK}");
        let _ = ::std::io::Write::write_all(&mut out, token.as_bytes());
        let _ = ::std::io::Write::write_all(&mut out, b"\\n");
        let _ = ::std::io::Write::flush(&mut out);
    }}

    pub trait Outcome {{
        fn check(self);
    }}
    impl Outcome for () {{
        fn check(self) {{}}
    }}
    impl<E: ::std::fmt::Debug> Outcome for ::std::result::Result<(), E> {{
        fn check(self) {{
            if let ::std::result::Result::Err(error) = self {{
                ::std::panic!("the test returned an error: {{:?}}", error);
            }}
        }}
    }}

    pub fn run<T: Outcome>(name: &str, body: fn() -> T) {{
        let token = claim(name);
        Outcome::check(body());
        deliver(token);
    }}

    pub fn run_should_panic<T: Outcome>(name: &str, expected: ::std::option::Option<&str>, body: fn() -> T) {{
        let token = claim(name);
        let result = ::std::panic::catch_unwind(move || Outcome::check(body()));
        let payload = match result {{
            ::std::result::Result::Ok(()) => ::std::panic!("the test did not panic"),
            ::std::result::Result::Err(payload) => payload,
        }};
        if let ::std::option::Option::Some(expected) = expected {{
            let message = match payload.downcast_ref::<&str>() {{
                ::std::option::Option::Some(text) => ::std::string::ToString::to_string(*text),
                ::std::option::Option::None => match payload.downcast_ref::<::std::string::String>() {{
                    ::std::option::Option::Some(text) => ::std::clone::Clone::clone(text),
                    ::std::option::Option::None => ::std::string::String::new(),
                }},
            }};
            if !message.contains(expected) {{
                ::std::panic!("the test panicked with {{:?}}, not a message containing {{:?}}", message, expected);
            }}
        }}
        deliver(token);
    }}
}}
"""


def _tokens(source: str) -> list[Token]:
    try:
        return tokenize(source)
    except LexError as error:
        raise HiddenTestError(f"the hidden tests cannot be read as Rust: {error}") from None


def _test_functions(tokens: list[Token]):
    """Yield (HiddenTest, (attribute spans to drop, the name token)) per top-level test."""
    depth, i = 0, 0
    while i < len(tokens):
        text = tokens[i].text
        if depth == 0 and text == "#" and i + 1 < len(tokens) and tokens[i + 1].text == "[":
            attributes, j = [], i
            while j + 1 < len(tokens) and tokens[j].text == "#" and tokens[j + 1].text == "[":
                close = matching_bracket(tokens, j + 1)
                if close is None:
                    raise HiddenTestError(f"line {tokens[j].line}: an attribute is never closed")
                attributes.append((j, close))
                j = close + 1
            if any(tokens[a + 2].text == "test" for a, c in attributes if a + 2 < c):
                while j < len(tokens) and tokens[j].text in ("pub", "async", "const"):
                    j += 1
                if not (j + 1 < len(tokens) and tokens[j].text == "fn"):
                    raise HiddenTestError(f"line {tokens[i].line}: `#[test]` must stand on a function")
                yield _describe(tokens, attributes, tokens[j + 1])
            i = j
            continue
        if text in ("{", "(", "["):
            depth += 1
        elif text in ("}", ")", "]"):
            depth -= 1
        i += 1


def _describe(tokens, attributes, name_token):
    dropped, should_panic, expected = [], False, None
    for a, close in attributes:
        name = tokens[a + 2].text
        inside = tokens[a + 2 : close]
        if name == "test":
            if len(inside) != 1:
                raise HiddenTestError(f"line {tokens[a].line}: `#[test]` takes no arguments")
            dropped.append((tokens[a].start, tokens[close].end))
        elif name == "should_panic":
            should_panic = True
            strings = [t for t in inside if t.kind == "string"]
            if strings:
                expected = _string_value(strings[0])
            dropped.append((tokens[a].start, tokens[close].end))
        elif name == "ignore":
            raise HiddenTestError(
                f"line {tokens[a].line}: hidden test `{name_token.text}` is `#[ignore]`d; an ignored "
                "test never runs, so no candidate could pass: remove it or the attribute")
    return HiddenTest(name_token.text, should_panic, expected), (dropped, name_token)


def _string_value(token: Token) -> str:
    text = token.text
    if text.startswith("r"):
        return text[1:].strip("#")[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "0": "\0"}.get(m.group(1), m.group(1)), text[1:-1])


def _std_imports(program: str) -> dict[str, str]:
    """name -> absolute path of every standard item the program imports at its top level."""
    try:
        tokens = tokenize(program)
    except LexError:
        return {}
    pairs, found, depth = bracket_pairs(tokens), {}, 0
    for i, token in enumerate(tokens):
        depth += {"{": 1, "}": -1}.get(token.text, 0)
        if depth != 0 or token.text != "use":
            continue
        end = next((k for k in range(i, len(tokens)) if tokens[k].text == ";"), len(tokens))
        for path, alias in use_tree_paths(tokens, i + 1, end, pairs):
            segments = path.segments()
            name = alias or (segments[-1] if segments else None)
            if segments and segments[0] in CRATE_NAMES and name not in (None, "*", "_") and "*" not in segments:
                found[name] = "::" + "::".join(segments)
    return found


def _declared_names(program: str) -> set[str]:
    try:
        return _names_the_tests_declare(tokenize(program))
    except LexError:
        return set()


def _traits_and_renames(candidate: str) -> set[str]:
    """Every trait the candidate defines and every name it imports under `as`."""
    try:
        tokens = tokenize(candidate)
    except LexError:
        return set()
    names = set()
    for i, token in enumerate(tokens[:-1]):
        following = tokens[i + 1]
        if token.text in ("trait", "as") and following.kind == "ident" and following.text != "_":
            names.add(following.text.removeprefix("r#"))
    return names - PRIMITIVE_TYPES


def _names_the_tests_declare(tokens: list[Token]) -> set[str]:
    """Names the tests import or define themselves: shielding them again would clash."""
    declared = set()
    for i, token in enumerate(tokens[:-1]):
        following = tokens[i + 1]
        if token.text in ("struct", "enum", "union", "trait", "type", "fn", "mod", "const", "static", "as"):
            declared.add(following.text)
        if token.text == "use":
            close = next((k for k in range(i, len(tokens)) if tokens[k].text == ";"), len(tokens))
            declared.update(t.text for t in tokens[i:close] if t.kind == "ident")
    return declared


def _apply(source: str, edits: list[tuple[int, int, str]]) -> str:
    out, position = [], 0
    for start, end, replacement in sorted(edits):
        out.append(source[position:start])
        out.append(replacement)
        position = end
    out.append(source[position:])
    return "".join(out)
