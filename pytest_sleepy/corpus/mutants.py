"""Mutants of a koan's reference fix: how much of its behaviour do the hidden tests pin?

The idea is cargo-mutants' (crates.io is out of reach here, so the mutator is our own,
on rustlex tokens): make small, plausible mistakes in `fixed` and count how many of
the mutants that still compile the hidden tests reject. A suite that cannot tell `<`
from `<=` at a boundary, or notice a dropped statement, lets wrong fixes pass.

Operators, applied inside function bodies only (`fn main` is never mutated: the hidden
tests do not run it):

- `relational`: `<` `<=` `>` `>=` `==` `!=` each swapped for its near neighbour
  (`<` -> `<=`, `==` -> `!=`, ...);
- `arithmetic`: binary `+` <-> `-`, `*` <-> `/`, `%` -> `/`, and the compound
  assignments `+=` <-> `-=`, `*=` <-> `/=`;
- `logical`: `&&` <-> `||`;
- `constant`: a decimal integer literal `0` -> `1`, `1` -> `0`, `n` -> `n + 1`
  (suffix kept), and `true` <-> `false`;
- `statement`: a statement ending in `;` removed (not a `let`: removing one almost
  never compiles);
- `early_return`: `return Default::default();` as a body's first statement, when the
  function returns something;
- `swap_args`: the two arguments of a call with exactly two swapped;
- `todo_body`: a whole body replaced by `{ todo!() }`.

Operators are told apart from look-alikes by the source around them: a binary
operator has white space on both sides (`a < b`, never `Vec<u8>`, `*x` or `&&y`).

Every mutant has a stable id, `operator:line:column:change` (line and column of the
mutated token in `fixed`), which a koan file uses to list equivalent mutants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..verify.rustlex import LexError, Token, bracket_pairs, matching_bracket, tokenize

__all__ = ["Mutant", "mutants", "function_bodies"]

_RELATIONAL = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "=="}
_ARITHMETIC = {"+": "-", "-": "+", "*": "/", "/": "*", "%": "/", "+=": "-=", "-=": "+=", "*=": "/=", "/=": "*="}
_LOGICAL = {"&&": "||", "||": "&&"}
_BOOLEANS = {"true": "false", "false": "true"}
# Words that may stand before `(` without being a call: `let (a, b)`, `if (x)`, `match (a, b)`.
_KEYWORDS = frozenset("let if while match for in return break mut ref move else loop as where".split())


@dataclass(frozen=True)
class Mutant:
    id: str  # operator:line:column:change
    operator: str
    description: str
    code: str


def mutants(code: str) -> list[Mutant]:
    """Every mutant of `code` (a koan's fix), in source order within each operator."""
    try:
        tokens = tokenize(code)
    except LexError:
        return []
    bodies = [(start, end) for name, _, start, end in function_bodies(code, tokens) if name != "main"]

    def inside(token: Token) -> bool:
        return any(start < token.start and token.end < end for start, end in bodies)

    out: list[Mutant] = []

    def add(operator: str, token: Token, change: str, start: int, end: int, replacement: str, description: str):
        line_start = code.rfind("\n", 0, token.start) + 1
        column = token.start - line_start + 1
        out.append(Mutant(f"{operator}:{token.line}:{column}:{change}", operator,
                          f"line {token.line}: {description}", code[:start] + replacement + code[end:]))

    for token in (t for t in tokens if inside(t)):
        text = token.text
        spaced = _spaced(code, token)
        if token.kind == "punct" and spaced:
            for operator, table in (("relational", _RELATIONAL), ("arithmetic", _ARITHMETIC), ("logical", _LOGICAL)):
                if text in table:
                    add(operator, token, f"{text} -> {table[text]}", token.start, token.end, table[text],
                        f"`{text}` replaced by `{table[text]}`")
        if token.kind == "number":
            replaced = _bumped(text)
            if replaced is not None:
                add("constant", token, f"{text} -> {replaced}", token.start, token.end, replaced,
                    f"`{text}` replaced by `{replaced}`")
        elif token.kind == "ident" and text in _BOOLEANS:
            add("constant", token, f"{text} -> {_BOOLEANS[text]}", token.start, token.end, _BOOLEANS[text],
                f"`{text}` replaced by `{_BOOLEANS[text]}`")

    pairs = bracket_pairs(tokens)
    for start, end in bodies:
        first = next(i for i, t in enumerate(tokens) if t.start == start)
        last = pairs[first]
        _statements(code, tokens, pairs, first, last, add)
        _early_return(code, tokens, first, add)
        first_token = tokens[first]
        add("todo_body", first_token, "todo", start, end, "{ todo!() }", "body replaced by `todo!()`")
    _swapped_arguments(code, tokens, pairs, inside, add)
    return out


def function_bodies(code: str, tokens: list[Token] | None = None) -> list[tuple[str, int, int, int]]:
    """(name, occurrence, start, end) of each `fn` body with code (trait defaults
    included), outermost ones only. A body is the first `{` after `fn NAME` at the
    signature's own bracket depth; a `;` first means a body-less trait method."""
    tokens = tokenize(code) if tokens is None else tokens
    bodies, seen = [], {}
    for i, token in enumerate(tokens):
        if token.text != "fn" or i + 1 >= len(tokens) or tokens[i + 1].kind != "ident":
            continue
        name = tokens[i + 1].text
        depth, j = 0, i + 2
        while j < len(tokens):
            text = tokens[j].text
            if text in ("(", "[", "<"):
                depth += 1
            elif text in (")", "]", ">", ">>") and depth > 0:
                # `Option<Vec<String>>` closes two angle brackets with one token.
                depth = max(0, depth - (2 if text == ">>" else 1))
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
    return [b for b in bodies if not any(o[2] < b[2] and b[3] <= o[3] for o in bodies if o is not b)]


def _spaced(code: str, token: Token) -> bool:
    return (token.start > 0 and code[token.start - 1] in " \t\n"
            and token.end < len(code) and code[token.end] in " \t\n")


def _bumped(text: str) -> str | None:
    """`0` -> `1`, `1` -> `0`, `n` -> `n + 1` for a decimal integer literal (suffix kept)."""
    match = _DECIMAL.match(text)
    if match is None:
        return None
    value = int(match.group(1).replace("_", ""))
    return f"{1 if value == 0 else 0 if value == 1 else value + 1}{match.group(2)}"


_DECIMAL = re.compile(r"^([0-9][0-9_]*)((?:[iu](?:8|16|32|64|128|size))?)$")


def _statements(code, tokens, pairs, first, last, add) -> None:
    """Statements of the block tokens[first..last] (and its nested blocks) that end in `;`."""
    begin = first + 1
    k = first + 1
    while k < last:
        text = tokens[k].text
        if text == "{" and pairs[k] > k:
            _statements(code, tokens, pairs, k, pairs[k], add)
            k = pairs[k]
            if k + 1 < last and tokens[k + 1].text not in (";", ".", "?", ")", ","):
                begin = k + 1  # a block statement (if, for, match) ends here
        elif text in ("(", "[") and pairs[k] > k:
            k = pairs[k]
        elif text == ";":
            if begin < k and tokens[begin].text != "let":
                add("statement", tokens[begin], "remove", tokens[begin].start, tokens[k].end, "",
                    "statement removed")
            begin = k + 1
        k += 1


def _early_return(code, tokens, first, add) -> None:
    """`return Default::default();` first, when the signature before the body has `->`."""
    k = first - 1
    depth = 0
    while k >= 0 and tokens[k].text != "fn":
        if tokens[k].text in (")", "]"):
            depth += 1
        elif tokens[k].text in ("(", "["):
            depth -= 1
        elif tokens[k].text == "->" and depth == 0:
            brace = tokens[first]
            add("early_return", brace, "return default", brace.end, brace.end, " return Default::default();",
                "`return Default::default();` at the start")
            return
        k -= 1


def _swapped_arguments(code, tokens, pairs, inside, add) -> None:
    for i, token in enumerate(tokens[:-1]):
        if token.kind != "ident" or token.text in _KEYWORDS or tokens[i + 1].text != "(" or not inside(token):
            continue
        if i > 0 and tokens[i - 1].text in ("fn", "!"):
            continue
        close = pairs[i + 1]
        if close <= i + 1:
            continue
        commas = []
        k = i + 2
        while k < close:
            if tokens[k].text == "," :
                commas.append(k)
            elif pairs[k] > k:
                k = pairs[k]
            k += 1
        if len(commas) != 1 or commas[0] == close - 1:
            continue
        a_start, a_end = tokens[i + 2].start, tokens[commas[0] - 1].end
        b_start, b_end = tokens[commas[0] + 1].start, tokens[close - 1].end
        a, b = code[a_start:a_end], code[b_start:b_end]
        if a == b:
            continue
        add("swap_args", token, f"{token.text}(a, b) -> {token.text}(b, a)", a_start, b_end, f"{b}, {a}",
            f"the arguments of `{token.text}` swapped")
