"""A small lexer for Rust source: enough to reason about code without parsing it.

The anti-tamper rules, the test-name scan and (later) the variant generator and the
leakage guard all need to see Rust as tokens rather than text: a forbidden name inside
a string literal or a comment is not a use of it, and `process` in `self.process()` is
not `std::process`. A full parser would be overkill; this lexer handles what Rust
source actually contains: nested block comments, raw and byte strings, char literals
versus lifetimes, raw identifiers and numeric literals with suffixes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Token", "LexError", "tokenize", "matching_bracket", "bracket_pairs", "UsePath", "use_tree_paths"]


@dataclass(frozen=True)
class Token:
    kind: str  # "ident", "lifetime", "string", "char", "number", "punct"
    text: str
    line: int  # 1-based line of the token's first character
    start: int  # offset into the source
    end: int


class LexError(ValueError):
    """The source cannot be tokenized (for example an unterminated string)."""


# Identifiers as rustc reads them (Unicode XID, which Python's \w approximates), so that
# a non-ASCII identifier is one token here as it is one name there.
_IDENT = re.compile(r"(?:r#)?[^\W\d]\w*")
# rustc's whitespace: Unicode Pattern_White_Space, not only the ASCII four. A form feed
# or a left-to-right mark between `include_str` and `!` is nothing to rustc.
WHITESPACE = frozenset(" \t\n\r\x0b\x0c\x85\u200e\u200f\u2028\u2029")
_NUMBER = re.compile(
    r"(?:0x[0-9A-Fa-f_]+|0o[0-7_]+|0b[01_]+"
    r"|[0-9][0-9_]*(?:\.(?![.A-Za-z_])[0-9_]*)?(?:[eE][+-]?[0-9_]+)?)"
    r"(?:[iu](?:8|16|32|64|128|size)|f32|f64)?"
)
_RAW_STRING_START = re.compile(r"(?:br|cr|r)(#*)\"")
_CHAR = re.compile(r"'(?:\\(?:x[0-9A-Fa-f]{2}|u\{[0-9A-Fa-f_]{1,8}\}|.)|[^\\'\n])'")
_LIFETIME = re.compile(r"'(?:r#)?[A-Za-z_][A-Za-z0-9_]*")
# Longest first, so that `::` is one token and `..=` is not `..` then `=`.
_PUNCT = sorted(
    "... ..= <<= >>= :: -> => == != <= >= && || += -= *= /= %= ^= &= |= << >> .. "
    "; , . ( ) { } [ ] @ # ~ ? : $ = ! < > - & | + * / ^ % '".split(),
    key=len,
    reverse=True,
)


def tokenize(source: str) -> list[Token]:
    """Split Rust source into tokens, dropping whitespace and comments (and, as rustc
    does, a leading byte-order mark and a first-line shebang)."""
    tokens: list[Token] = []
    i, n, line = _start_of_code(source), len(source), 1

    def emit(kind: str, end: int) -> None:
        nonlocal i, line
        tokens.append(Token(kind, source[i:end], line, i, end))
        line += source.count("\n", i, end)
        i = end

    while i < n:
        c = source[i]
        if c in WHITESPACE:
            if c == "\n":
                line += 1
            i += 1
        elif source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end
        elif source.startswith("/*", i):
            end = _block_comment_end(source, i, line)
            line += source.count("\n", i, end)
            i = end
        elif (m := _RAW_STRING_START.match(source, i)) is not None:
            closing = '"' + m.group(1)
            end = source.find(closing, m.end())
            if end < 0:
                raise LexError(f"line {line}: unterminated raw string")
            emit("string", end + len(closing))
        elif c == '"' or (c in "bc" and source.startswith('"', i + 1)):
            emit("string", _quoted_end(source, i + (c != '"'), line))
        elif c == "b" and source.startswith("'", i + 1):
            m = _CHAR.match(source, i + 1)
            if m is None:
                raise LexError(f"line {line}: malformed byte literal")
            emit("char", m.end())
        elif c == "'":
            if (m := _CHAR.match(source, i)) is not None:
                emit("char", m.end())
            elif (m := _LIFETIME.match(source, i)) is not None:
                emit("lifetime", m.end())
            else:
                emit("punct", i + 1)
        elif "0" <= c <= "9":
            emit("number", _NUMBER.match(source, i).end())
        elif (m := _IDENT.match(source, i)) is not None:
            emit("ident", m.end())
        else:
            for p in _PUNCT:
                if source.startswith(p, i):
                    emit("punct", i + len(p))
                    break
            else:
                # Non-ASCII identifiers and stray characters: one token each, so that
                # nothing is silently dropped.
                emit("punct", i + 1)
    return tokens


def _start_of_code(source: str) -> int:
    """Where rustc starts reading: after a byte-order mark, and after a first line that
    starts with `#!` unless what follows `#!` (past whitespace and comments) is `[`,
    which makes it an inner attribute. Reading a shebang as code would let it hide
    the rest of the file from every rule (`#!r#"` opens a raw string to us, not to rustc)."""
    start = 1 if source.startswith("\ufeff") else 0
    if not source.startswith("#!", start):
        return start
    k = start + 2
    while k < len(source):
        if source[k] in WHITESPACE:
            k += 1
        elif _is_doc_comment(source, k):
            break  # a doc comment is a token to rustc: the line is a shebang
        elif source.startswith("//", k):
            end = source.find("\n", k)
            k = len(source) if end < 0 else end
        elif source.startswith("/*", k):
            try:
                k = _block_comment_end(source, k, 1)
            except LexError:
                return start  # rustc would fail on the comment too
        else:
            break
    if source.startswith("[", k):
        return start
    end = source.find("\n", start)
    return len(source) if end < 0 else end


def _is_doc_comment(source: str, k: int) -> bool:
    """`///x`, `//!`, `/**x`, `/*!` start doc comments; `////` and `/**/` do not."""
    if source.startswith(("//!", "/*!"), k):
        return True
    if source.startswith("///", k):
        return not source.startswith("////", k)
    return source.startswith("/**", k) and not source.startswith(("/***", "/**/"), k)


def matching_bracket(tokens: list[Token], open_index: int) -> int | None:
    """Index of the token that closes the bracket at open_index, or None if it never closes."""
    depth = 0
    for k in range(open_index, len(tokens)):
        if tokens[k].text in _OPENING:
            depth += 1
        elif tokens[k].text in _CLOSING:
            depth -= 1
            if depth == 0:
                return k
    return None


def bracket_pairs(tokens: list[Token]) -> list[int]:
    """For every token, the index of its partner bracket (-1 for none), in one pass:
    rules that jump over brackets stay linear however deep the nesting."""
    pairs = [-1] * len(tokens)
    stack: list[int] = []
    for k, token in enumerate(tokens):
        if token.text in _OPENING:
            stack.append(k)
        elif token.text in _CLOSING and stack:
            opening = stack.pop()
            pairs[opening], pairs[k] = k, opening
    return pairs


_OPENING, _CLOSING = {"(", "[", "{"}, {")", "]", "}"}


def _block_comment_end(source: str, start: int, line: int) -> int:
    depth, i = 0, start
    while i < len(source):
        if source.startswith("/*", i):
            depth += 1
            i += 2
        elif source.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    raise LexError(f"line {line}: unterminated block comment")


def _quoted_end(source: str, quote: int, line: int) -> int:
    i = quote + 1
    while i < len(source):
        if source[i] == "\\":
            i += 2
        elif source[i] == '"':
            return i + 1
        else:
            i += 1
    raise LexError(f"line {line}: unterminated string literal")


class UsePath:
    """One path of a flattened `use` tree. Extending it is O(1) (it points at its
    parent), so flattening stays linear however deep the tree nests; `segments()`
    walks back up for callers that want the whole path."""

    __slots__ = ("parent", "segment", "first", "length", "last", "watched")

    def __init__(self, parent: "UsePath | None" = None, segment: str | None = None, watch: frozenset = frozenset()):
        self.parent, self.segment = parent, segment
        self.first = parent.first if parent and parent.first else segment
        self.length = (parent.length if parent else 0) + (segment is not None)
        self.last = segment if segment is not None else (parent.last if parent else None)
        self.watched = bool(parent and parent.watched) or segment in watch

    def extended(self, segment: str, watch: frozenset = frozenset()) -> "UsePath":
        if segment in ("::", "self"):
            return self
        return UsePath(self, segment, watch)

    def segments(self) -> list[str]:
        out, node = [], self
        while node is not None:
            if node.segment is not None:
                out.append(node.segment)
            node = node.parent
        return out[::-1]


def use_tree_paths(tokens: list[Token], start: int, end: int, pairs: list[int],
                   watch: frozenset = frozenset()) -> list[tuple[UsePath, str | None]]:
    """Flatten the `use` tree in tokens[start:end] (without `use` and `;`) into (path,
    alias) pairs, without recursion. `self` and `::` are not segments: `use
    std::fmt::{self as f}` gives (std::fmt, "f"). A path is `watched` when one of its
    segments is in `watch`."""
    paths: list[tuple[UsePath, str | None]] = []
    groups = [(start, end, UsePath())]
    while groups:
        k, stop, prefix = groups.pop()
        path: UsePath | None = prefix
        extended = False
        while k < stop:
            text = tokens[k].text
            if text == "{":
                close = pairs[k] if pairs[k] > k else stop
                if path is not None:
                    groups.append((k + 1, min(close, stop), path))
                path, k = None, close + 1
            elif text == ",":
                if path is not None and extended:
                    paths.append((path, None))
                path, extended, k = prefix, False, k + 1
            elif text == "as" and k + 1 < stop:
                if path is not None:
                    paths.append((path, tokens[k + 1].text))
                path, k = None, k + 2
            else:
                if path is not None:
                    path, extended = path.extended(text, watch), True
                k += 1
        if path is not None and extended:
            paths.append((path, None))
    return paths
