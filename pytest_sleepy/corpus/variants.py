"""Koan variants: hypothesis strategies that derive new, verified koans as training data.

A variant is the source koan with one or more small, meaning-preserving edits applied
to its texts. Every variant must keep the koan's contract, exactly as the corpus
self-test (validation.py) proves it for the source: the buggy code fails with exactly
the declared error codes, all pointing into the code the model sees (or, for
`expect = ["test"]`, it compiles and fails at least one hidden test), and the fixed
code passes the (equally transformed) hidden tests. The transformations below are
designed to keep that contract; `check_variant` proves it with the real verifier, and
`draw_variants` emits only the variants it proved. Anything that slips through the
design (a literal change that breaks an expected value, a width change that makes an
`as` cast redundant) is discarded and counted, never emitted.

Every edit works on token spans from `rustlex`, never on raw text: identifiers,
literals and type names inside string literals and comments are never touched, and
comments and formatting survive every edit except the formatting edits themselves.

The transformations (`TRANSFORMATIONS`, in shrinking order):

``rename``
    One identifier *declared in the koan's own code* (a fn, struct, enum, trait, type
    alias, const, static, module, enum variant, field, type or const parameter, `let`
    / `for` / closure binding or fn parameter in buggy, fixed or tests) gets a fresh
    name, consistently in buggy, fixed AND tests (the tests call the public API). Every
    token with that exact text is renamed: as every declaration and every use of the
    name change together, to a name that collides with nothing, each use still
    resolves to the same declaration, and shadowing and field-init shorthand
    (`Garage { capacity }`) stay correct. A name is never renamable when it is a keyword, a primitive type,
    a standard prelude item, a standard macro or a common standard method/field/
    associated-type name (`new`, `len`, `fmt`, `from`, `next`, `Item`, ...); when it is
    used as a macro (`name!`), inside an attribute, after a path that is not the
    koan's own (`std::fmt::Display`, `cmp::max`, `use` trees), as a method call
    (`.name(`) without being a koan fn or as a field access (`.name`) without being a
    koan field (both mean the name also denotes something foreign, as in `let count
    = it.count()`); when it names a fn, associated type or const inside an `impl` of a
    trait the koan does not declare (`fmt` in `impl Display`, `next` in `impl
    Iterator`); and when it appears as a word inside any string literal. The last
    rule covers format-string captures (`println!("{hours}")` uses the local `hours`)
    and test expectations spelled out from Debug output (`"Receipt { lines: 2 }"`):
    marking such names non-renamable is simpler and safer than editing strings.
    New names follow the original's case style (snake_case, CamelCase or
    SCREAMING_CASE), shrink towards one letter, and avoid keywords, reserved and std
    names, every identifier and every string word already in the koan.

``literal``
    One decimal integer literal (value >= 2, never a tuple index such as `.1`, never
    inside an attribute) moves by 1..9, keeping its type suffix and staying within the
    range of the smallest integer type its original value fits (127, 255, ...); or one
    plain string literal without escapes or braces (so never a format string with
    placeholders) gets one letter or digit replaced by another of the same class. The
    change is applied to every token with that exact text in buggy, fixed and tests.
    This can break tests whose expectations were computed from the literal (`12` as
    `3 + 4 + 5`); the verifier rejects those variants, which are counted as discarded.
    0 and 1 are left alone: they are indices, identities and loop bounds far more
    often than data.

``width``
    Every `u32` (type name or literal suffix) becomes `u64`, and likewise i32 -> i64,
    u8 -> u16, i8 -> i16, u16 -> u32, i16 -> i32, in all three texts, only when the
    wider type appears nowhere in the koan: a type that is replaced everywhere keeps
    every (mis)match between the koan's own types, and mixing with an already present
    wider type is what would change the errors. `usize`/`isize` are kept: indexing and
    `len()` fix them.

``add_item``
    A small unrelated item with fresh names (`#[allow(dead_code)]` fn, const or struct)
    is inserted before the first or after the last top-level item of buggy AND fixed,
    the same text in both, never into the tests. Fresh names cannot satisfy an
    unresolved name the buggy code relies on for its error, and the attribute keeps
    the build free of new warnings; no new error is possible.

``reorder``
    One top-level item (with its attributes, doc comments and a trailing same-line
    comment) moves next to another one, the same move in buggy and fixed; the gaps
    between items (blank lines, detached comments, `//!` docs) stay where they are.
    Module-level items are order-independent in Rust, except `macro_rules!`, whose
    textual scope starts at its definition: macro definitions stay where they are and
    nothing moves across them, and a top-level macro invocation (which could expand to
    anything) prevents moves. Buggy and fixed items are matched by kind and name
    (impls by their header without the impl's generics and lifetimes, `use` by its
    path); only items found in both move, and only when those are in the same order in
    both, so that a move means the same in both texts. Items that only one of them has
    (an `impl` or `use` the fix adds) stay in place.

``reindent``
    Indentation is rewritten with another unit (2, 8 or 3 spaces, or tabs) in buggy,
    fixed and tests. Whitespace between tokens has no meaning in Rust, so only lines
    that start inside a multi-line string literal, whose content is data, are left
    alone.

``blank_lines``
    The blank lines between consecutive top-level items (where only whitespace
    separates them) are set to 0, 1 or 2, in buggy, fixed and tests.

Known limit of renaming: names are resolved by text, not by type. A koan field or
local that is also a field of a foreign struct used without a call (`range.start`) is
only protected when the name is in the std list; such a variant fails to compile and is
discarded by `check_variant` (a sweep of 15 renaming variants of each of the 73 koans
found none).

API: `koan_variants(koan)` (and `renamings(koan)`, the renaming-only strategy) draw
`Variant`s; `check_variant(variant, verifier)` proves one; `draw_variants(koan, n,
seed=..., verifier=...)` draws, deduplicates, checks and keeps the first n valid ones,
reporting what it did in a `VariantDraw`. The pure text functions behind each
transformation (`rename_identifier`, `replace_literal`, `substitute_width`,
`insert_item`, `move_item`, `reindent`, `space_items`, `top_level_items`,
`renamable_names`) are public for tests and tools.

Shrinking: a variant is a list of 1..k transformation kinds (hypothesis shrinks a list
by deleting elements, and each kind towards `rename`), each followed by its own draws
(which name, which literal, which item), which all shrink towards the first candidate,
the smallest change and the shortest fresh name. So a failing property is reported
with a minimal variant: one transformation, a one-letter name, a change by 1.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache

import hypothesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st

from ..koans import Koan
from ..verify.rustlex import LexError, Token, matching_bracket
from ..verify.rustlex import tokenize as _tokenize
from ..verify.harness import HIDDEN_TEST_MODULE
from ..verify.verifier import Verdict, Verifier

__all__ = [
    "TRANSFORMATIONS",
    "Variant",
    "VariantCheck",
    "VariantDraw",
    "TopLevelItem",
    "koan_variants",
    "renamings",
    "check_variant",
    "draw_variants",
    "renamable_names",
    "rename_identifier",
    "replace_literal",
    "substitute_width",
    "top_level_items",
    "move_item",
    "insert_item",
    "reindent",
    "space_items",
]

TRANSFORMATIONS = ("rename", "literal", "width", "add_item", "reorder", "reindent", "blank_lines")
MAX_TRANSFORMATIONS = 4

# -- names ----------------------------------------------------------------------------

KEYWORDS = frozenset(
    "as break const continue crate else enum extern false fn for if impl in let loop match mod move mut "
    "pub ref return self Self static struct super trait true type unsafe use where while async await dyn "
    "abstract become box do final macro override priv typeof unsized virtual yield try gen union "
    "macro_rules raw safe _".split()
)
PRIMITIVES = frozenset("bool char str u8 u16 u32 u64 u128 usize i8 i16 i32 i64 i128 isize f32 f64".split())
STD_MACROS = frozenset(
    "assert assert_eq assert_ne debug_assert debug_assert_eq debug_assert_ne panic unreachable todo "
    "unimplemented matches vec format print println eprint eprintln write writeln dbg format_args concat "
    "stringify line file column cfg include include_str include_bytes env option_env compile_error".split()
)
STD_TYPES = frozenset(
    "Option Some None Result Ok Err String Vec Box ToString ToOwned Clone Copy Send Sync Sized Unpin Drop "
    "Fn FnMut FnOnce PartialEq Eq PartialOrd Ord AsRef AsMut Into From Default Iterator IntoIterator Extend "
    "DoubleEndedIterator ExactSizeIterator TryFrom TryInto FromIterator std core alloc HashMap HashSet "
    "BTreeMap BTreeSet VecDeque BinaryHeap LinkedList Rc Arc Weak RefCell Cell Mutex RwLock Cow Ordering "
    "Display Debug Formatter Hash Hasher Add Sub Mul Div Rem Neg Not AddAssign SubAssign MulAssign Deref "
    "DerefMut Index IndexMut Range RangeInclusive Error FromStr ParseIntError ParseFloatError Path PathBuf "
    "Duration Instant PhantomData Less Greater Equal Borrow BorrowMut Any Sum Product Entry Chars Peekable "
    "Output Item Target Err Rhs IntoIter Owned".split()
)
# Standard methods, functions, fields and modules that koans commonly call: a koan
# name that is also one of these could not be renamed without breaking the call.
STD_NAMES = frozenset(
    "new default len is_empty push push_str pop insert remove get get_mut contains contains_key iter "
    "iter_mut into_iter map filter filter_map fold sum product count collect clone cloned copied to_string "
    "to_owned to_vec as_str as_ref as_mut as_slice unwrap unwrap_or unwrap_or_default unwrap_or_else expect "
    "expect_err unwrap_err ok err ok_or ok_or_else map_err and_then or_else is_some is_none is_ok is_err fmt "
    "from into try_from try_into from_str parse eq ne cmp partial_cmp lt le gt ge max min clamp hash next "
    "next_back size_hint deref deref_mut drop add sub mul div rem neg not add_assign sub_assign mul_assign "
    "div_assign index index_mut borrow borrow_mut write write_str write_fmt write_char read flush main test "
    "sort sort_by sort_by_key sort_unstable sort_unstable_by dedup dedup_by_key retain extend truncate clear "
    "split split_once split_whitespace split_at trim trim_start trim_end lines chars bytes char_indices "
    "enumerate zip rev skip take chain any all find position last first keys values values_mut entry "
    "or_insert or_insert_with or_default and_modify key value start end abs pow checked_add checked_sub "
    "checked_mul checked_div saturating_add saturating_sub wrapping_add wrapping_sub powi powf sqrt floor "
    "ceil round join concat repeat replace starts_with ends_with to_uppercase to_lowercase "
    "to_ascii_uppercase to_ascii_lowercase is_alphabetic is_numeric is_alphanumeric is_digit is_ascii_digit "
    "is_whitespace as_bytes capacity with_capacity reserve swap binary_search windows chunks step_by "
    "take_while skip_while flat_map flatten peekable peek inspect for_each min_by_key max_by_key min_by "
    "max_by then then_some call call_mut call_once type_id source description cause leak get_or_insert_with "
    "as_deref map_or map_or_else drain append split_off get_key_value len_utf8 to_digit from_digit from_u32 "
    "debug_struct debug_tuple debug_list field finish pad width precision alternate lock send recv spawn "
    "clone_from eq_ignore_ascii_case and or xor shl shr bitand bitor bitxor fmt io cmp ops mem collections "
    "num iter string vec convert error thread sync rc cell str char unwrap_or_else is_positive is_negative "
    "signum to_le_bytes from_le_bytes exp ln log10 log2 trunc fract min_max rposition rfind nth last_mut "
    "first_mut contains_str push_back push_front pop_back pop_front front back extend_from_slice copy_from_slice "
    "iter_rev rsplit splitn chunks_exact as_mut_slice into_boxed_slice into_inner get_or_insert replace_range "
    "strip_prefix strip_suffix char_count matches match_indices sum_by product_by is_sorted".split()
)
RESERVED_NAMES = KEYWORDS | PRIMITIVES | STD_MACROS | STD_TYPES | STD_NAMES | {HIDDEN_TEST_MODULE}

_ITEM_KEYWORDS = {
    "fn": "function", "struct": "struct", "enum": "enum", "union": "union", "trait": "trait",
    "type": "type", "const": "constant", "static": "static", "mod": "module",
}
_NAMESPACE_KINDS = {"struct", "enum", "union", "trait", "type", "module", "type parameter"}
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DECIMAL = re.compile(r"^([0-9][0-9_]*)((?:[iu](?:8|16|32|64|128|size)))?$")
_PLAIN_STRING = re.compile(r'^"[A-Za-z0-9 _\-.,:;!?/@#=+*%&()\[\]<>|~^$]*"$')


@lru_cache(maxsize=256)
def _cached_tokens(text: str) -> tuple[Token, ...]:
    return tuple(_tokenize(text))


def tokenize(text: str) -> list[Token]:
    """rustlex.tokenize, memoized: a draw looks at the same few texts many times."""
    return list(_cached_tokens(text))


# -- the results ----------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """A derived koan and how it was derived."""

    koan: Koan  # id "<source id>~<content hash>", same family/pattern/split/expect/edition
    source: str  # the source koan's id
    transformations: tuple[str, ...]  # human-readable, in the order applied


@dataclass(frozen=True)
class VariantCheck:
    ok: bool
    problem: str = ""  # a short category, "" when ok (what VariantDraw.problems counts)
    detail: str = ""  # the verifier's reason, for a person
    buggy: Verdict | None = None
    fixed: Verdict | None = None


@dataclass
class VariantDraw:
    """What draw_variants did: drawn = kept + duplicates + discarded + unused."""

    kept: list[Variant]
    drawn: int
    duplicates: int  # same texts as an earlier draw, or as the source koan
    discarded: int  # proven not to keep the koan's contract (see problems)
    problems: Counter = field(default_factory=Counter)  # problem -> count
    unused: int = 0  # drawn but never checked: n variants had been kept already


# -- public API -----------------------------------------------------------------------


def koan_variants(
    koan: Koan, *, kinds: Sequence[str] = TRANSFORMATIONS, max_transformations: int = MAX_TRANSFORMATIONS
) -> st.SearchStrategy[Variant]:
    """Variants of `koan`, each with 1..max_transformations transformations of `kinds`.

    Returns `st.nothing()` when none of the kinds applies to the koan.
    """
    unknown = sorted(set(kinds) - set(TRANSFORMATIONS))
    if unknown:
        raise ValueError(f"unknown transformation(s) {', '.join(unknown)}; known: {', '.join(TRANSFORMATIONS)}")
    if max_transformations < 1:
        raise ValueError("max_transformations must be at least 1")
    start = _Texts(koan.buggy, koan.fixed, koan.tests)
    available = tuple(k for k in TRANSFORMATIONS if k in kinds and _applies(k, start))
    if not available:
        return st.nothing()
    return _variants(koan, available, max_transformations)


def _applies(kind: str, texts: "_Texts") -> bool:
    try:
        return _STEPS[kind](None, texts) is not None
    except LexError:
        return False


def renamings(koan: Koan, *, max_transformations: int = 3) -> st.SearchStrategy[Variant]:
    """Variants made by identifier renaming only."""
    return koan_variants(koan, kinds=("rename",), max_transformations=max_transformations)


def check_variant(variant: Variant, verifier: Verifier) -> VariantCheck:
    """Prove the variant keeps its koan's contract with the real verifier."""
    koan = variant.koan
    buggy = verifier.verify_candidate(koan, koan.buggy)
    problem = _buggy_problem(koan, buggy)
    if problem is not None:
        return VariantCheck(False, problem[0], problem[1], buggy=buggy)
    fixed = verifier.verify_candidate(koan, koan.fixed)
    if not fixed.passed:
        if fixed.tampering:
            category = "fixed is rejected by the anti-tamper rules"
        elif not fixed.compiled:
            category = f"fixed does not compile: {', '.join(fixed.error_codes) or 'no error code'}"
        elif fixed.tests_failed:
            category = "fixed fails hidden tests"
        elif fixed.timed_out:
            category = "fixed times out"
        else:
            category = "fixed does not pass"
        return VariantCheck(False, category, fixed.reason, buggy=buggy, fixed=fixed)
    return VariantCheck(True, buggy=buggy, fixed=fixed)


def draw_variants(
    koan: Koan,
    n: int,
    *,
    seed: int,
    verifier: Verifier,
    max_draws: int | None = None,
    jobs: int = 1,
    strategy: st.SearchStrategy[Variant] | None = None,
) -> VariantDraw:
    """Draw up to `max_draws` variants (deterministic for `seed`), drop duplicates, check
    the rest in order and keep the first `n` valid ones.

    `jobs` checks that many candidates at once (same result, it only saves time);
    `strategy` replaces `koan_variants(koan)` (tests use it).
    """
    if max_draws is None:
        max_draws = max(4 * n, n + 20)
    candidates = _generate(strategy if strategy is not None else koan_variants(koan), max_draws, seed) if n > 0 else []
    draw = VariantDraw(kept=[], drawn=len(candidates), duplicates=0, discarded=0)
    seen = {(koan.buggy, koan.fixed, koan.tests)}
    jobs = max(1, jobs)
    position = 0  # candidates accounted for, in order
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while position < len(candidates) and len(draw.kept) < n:
            # The next candidates, up to `jobs` new ones, checked at once.
            batch: list[Variant | None] = []
            fresh = 0
            while position + len(batch) < len(candidates) and fresh < jobs:
                variant = candidates[position + len(batch)]
                key = (variant.koan.buggy, variant.koan.fixed, variant.koan.tests)
                if key in seen:
                    batch.append(None)
                else:
                    seen.add(key)
                    batch.append(variant)
                    fresh += 1
            checks = list(pool.map(lambda v: None if v is None else check_variant(v, verifier), batch))
            for variant, check in zip(batch, checks):
                if len(draw.kept) >= n:
                    break  # checked in the same batch but not needed: unused
                position += 1
                if variant is None:
                    draw.duplicates += 1
                elif check.ok:
                    draw.kept.append(variant)
                else:
                    draw.discarded += 1
                    draw.problems[check.problem] += 1
    draw.unused = draw.drawn - position
    return draw


def _generate(strategy: st.SearchStrategy[Variant], count: int, seed: int) -> list[Variant]:
    """Examples of `strategy` as hypothesis generates them for a test seeded with `seed`."""
    examples: list[Variant] = []
    if count <= 0 or strategy.is_empty:
        return examples

    @hypothesis.seed(seed)
    @hypothesis.settings(
        max_examples=count,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),  # generation only: no test to judge
        print_blob=False,
    )
    @hypothesis.given(strategy)
    def collect(variant: Variant) -> None:
        examples.append(variant)

    collect()
    return examples


def _buggy_problem(koan: Koan, verdict: Verdict) -> tuple[str, str] | None:
    if verdict.tampering:
        return "buggy is rejected by the anti-tamper rules", verdict.tampering
    if verdict.timed_out:
        return "buggy times out", verdict.reason
    if koan.is_logic_bug:
        if not verdict.compiled:
            return f"buggy does not compile: {', '.join(verdict.error_codes) or 'no error code'}", verdict.reason
        if verdict.passed:
            return "buggy passes every hidden test", "the tests no longer detect the bug"
        if verdict.tests_failed == 0:
            return "buggy fails no hidden test", verdict.reason
        return None
    if verdict.compiled:
        return "buggy compiles", f"expected {', '.join(koan.expect)}; {verdict.reason or 'the tests pass'}"
    if set(verdict.error_codes) != set(koan.expect):
        return f"buggy fails with {', '.join(verdict.error_codes) or 'no error code'}", verdict.reason
    if any(d.in_hidden_tests for d in verdict.diagnostics if d.is_error):
        return "buggy's errors point into the hidden tests", verdict.reason
    return None


# -- the strategy ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Texts:
    buggy: str
    fixed: str
    tests: str

    @property
    def all(self) -> tuple[str, str, str]:
        return (self.buggy, self.fixed, self.tests)

    def map(self, function: Callable[[str], str], tests: bool = True) -> "_Texts":
        return _Texts(function(self.buggy), function(self.fixed), function(self.tests) if tests else self.tests)


# A step takes (draw, texts). With draw=None it only says whether it applies (None if
# not, True if it does); otherwise it returns (new texts, description) or None when it
# no longer applies (after earlier steps).
_Step = Callable[[Callable | None, _Texts], object]


@st.composite
def _variants(draw, koan: Koan, available: tuple[str, ...], max_transformations: int) -> Variant:
    kinds = draw(st.lists(st.sampled_from(available), min_size=1, max_size=max_transformations))
    texts = _Texts(koan.buggy, koan.fixed, koan.tests)
    done: list[str] = []
    for kind in kinds:
        try:
            result = _STEPS[kind](draw, texts)
        except LexError:
            result = None
        if result is None:
            continue
        texts, description = result
        done.append(description)
    return _variant(koan, texts, tuple(done))


def _variant(koan: Koan, texts: _Texts, transformations: tuple[str, ...]) -> Variant:
    digest = hashlib.sha256(json.dumps(list(texts.all)).encode("utf-8")).hexdigest()[:10]
    derived = replace(koan, id=f"{koan.id}~{digest}", buggy=texts.buggy, fixed=texts.fixed, tests=texts.tests,
                      path=None)
    return Variant(derived, koan.id, transformations)


def _name_strategy(style: str, taken: frozenset[str] | set[str]) -> st.SearchStrategy[str]:
    words = st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=6), min_size=1, max_size=3)
    if style == "camel":
        names = words.map(lambda ws: "".join(w.capitalize() for w in ws))
    elif style == "screaming":
        names = words.map(lambda ws: "_".join(ws).upper())
    else:
        names = words.map("_".join)
    return names.filter(lambda name: name not in taken and name not in RESERVED_NAMES)


def _style(name: str, kind: str) -> str:
    if any(c.islower() for c in name):
        return "camel" if name[0].isupper() else "snake"
    if kind in ("constant", "static") or "_" in name.strip("_"):
        return "screaming"
    return "camel"  # `T`, `A`: a one-letter type


@lru_cache(maxsize=256)
def _taken(texts: _Texts) -> frozenset[str]:
    """Every identifier and every word inside a string literal of the three texts."""
    taken: set[str] = set()
    for text in texts.all:
        for token in tokenize(text):
            if token.kind == "ident":
                taken.add(token.text.removeprefix("r#"))
            elif token.kind == "string":
                taken.update(_WORD.findall(token.text))
    return frozenset(taken)


def _rename_step(draw, texts: _Texts):
    names = _renamable(*texts.all)
    if draw is None:
        return True if names else None
    if not names:
        return None
    old = draw(st.sampled_from(list(names)))
    kind = names[old]
    new = draw(_name_strategy(_style(old, kind), _taken(texts)))
    return texts.map(lambda text: rename_identifier(text, old, new)), f"rename {kind} {old} -> {new}"


def _literal_step(draw, texts: _Texts):
    candidates = _literals(texts)
    if draw is None:
        return True if candidates else None
    if not candidates:
        return None
    old = draw(st.sampled_from(candidates))
    if old.startswith('"'):
        positions = [i for i, c in enumerate(old) if c.isalnum()]
        position = positions[draw(st.integers(0, len(positions) - 1))]
        original = old[position]
        alphabet = ("0123456789" if original.isdigit() else
                    "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if original.isupper() else "abcdefghijklmnopqrstuvwxyz")
        letter = draw(st.sampled_from([c for c in alphabet if c != original]))
        new = old[:position] + letter + old[position + 1:]
    else:
        digits, suffix = _DECIMAL.match(old).groups()
        value = int(digits.replace("_", ""))
        limit = _limit(value, suffix)
        delta = draw(st.integers(1, 9))
        down = draw(st.booleans())
        changed = value - delta if down else value + delta
        if not 0 <= changed <= limit:
            changed = value + delta if down else value - delta
        new = f"{changed}{suffix or ''}"
    return texts.map(lambda text: replace_literal(text, old, new)), f"literal {old} -> {new}"


_WIDTHS = (("u32", "u64"), ("i32", "i64"), ("u8", "u16"), ("i8", "i16"), ("u16", "u32"), ("i16", "i32"))


def _width_step(draw, texts: _Texts):
    present = _type_names(texts)
    options = [pair for pair in _WIDTHS if pair[0] in present and pair[1] not in present]
    if draw is None:
        return True if options else None
    if not options:
        return None
    old, new = draw(st.sampled_from(options))
    return texts.map(lambda text: substitute_width(text, old, new)), f"integer width {old} -> {new}"


def _add_item_step(draw, texts: _Texts):
    if top_level_items(texts.buggy) is None or top_level_items(texts.fixed) is None:
        return None
    if not top_level_items(texts.buggy) or not top_level_items(texts.fixed):
        return None
    if draw is None:
        return True
    taken = _taken(texts)
    kind = draw(st.sampled_from(["fn", "const", "struct"]))
    where = draw(st.sampled_from(["before", "after"]))
    value = draw(st.integers(0, 99))
    if kind == "fn":
        name = draw(_name_strategy("snake", taken))
        item = f"#[allow(dead_code)]\nfn {name}() -> u32 {{\n    {value}\n}}"
    elif kind == "const":
        name = draw(_name_strategy("screaming", taken))
        item = f"#[allow(dead_code)]\nconst {name}: u32 = {value};"
    else:
        name = draw(_name_strategy("camel", taken))
        member = draw(_name_strategy("snake", taken | {name}))
        item = f"#[allow(dead_code)]\nstruct {name} {{\n    {member}: u32,\n}}"
    return (_Texts(insert_item(texts.buggy, item, where), insert_item(texts.fixed, item, where), texts.tests),
            f"add item {where}: {kind} {name}")


def _reorder_step(draw, texts: _Texts):
    moves = _possible_moves(texts.buggy, texts.fixed)
    if draw is None:
        return True if moves else None
    if not moves:
        return None
    source = draw(st.sampled_from(list(moves)))
    target = draw(st.sampled_from(moves[source]))
    labels = {i.key: i.label for i in top_level_items(texts.buggy)}
    keys = list(labels)
    where = "before" if keys.index(target) < keys.index(source) else "after"
    return (_Texts(_move_by_key(texts.buggy, source, target), _move_by_key(texts.fixed, source, target), texts.tests),
            f"reorder items: {labels[source]} moved {where} {labels[target]}")


_INDENTS = (2, 8, 3, "tab")


def _reindent_step(draw, texts: _Texts):
    options = [u for u in _INDENTS if texts.map(lambda text: reindent(text, u)) != texts]
    if draw is None:
        return True if options else None
    if not options:
        return None
    unit = draw(st.sampled_from(options))
    return texts.map(lambda text: reindent(text, unit)), "reindent tabs" if unit == "tab" else f"reindent {unit} spaces"


def _blank_lines_step(draw, texts: _Texts):
    options = [k for k in (0, 2, 1) if texts.map(lambda text: space_items(text, k)) != texts]
    if draw is None:
        return True if options else None
    if not options:
        return None
    count = draw(st.sampled_from(options))
    return texts.map(lambda text: space_items(text, count)), f"blank lines between items: {count}"


_STEPS: dict[str, _Step] = {
    "rename": _rename_step,
    "literal": _literal_step,
    "width": _width_step,
    "add_item": _add_item_step,
    "reorder": _reorder_step,
    "reindent": _reindent_step,
    "blank_lines": _blank_lines_step,
}


# -- renaming -------------------------------------------------------------------------


def renamable_names(koan: Koan) -> dict[str, str]:
    """The koan's renamable identifiers, mapped to how each is first declared
    ("function", "struct", "field", "local", ...), in order of first declaration
    (buggy, then fixed, then tests)."""
    return dict(_renamable(koan.buggy, koan.fixed, koan.tests))


@lru_cache(maxsize=256)
def _renamable(buggy: str, fixed: str, tests: str) -> dict[str, str]:
    streams = [tokenize(text) for text in (buggy, fixed, tests)]
    declared: dict[str, str] = {}
    kinds: dict[str, set[str]] = {}
    for tokens in streams:
        for name, kind in _declarations(tokens):
            declared.setdefault(name, kind)
            kinds.setdefault(name, set()).add(kind)
    blocked: set[str] = set(RESERVED_NAMES)
    for tokens in streams:
        blocked |= _blocked(tokens, kinds)
    return {name: kind for name, kind in declared.items() if name not in blocked and not name.startswith("r#")}


def rename_identifier(text: str, old: str, new: str) -> str:
    """Every identifier token `old` becomes `new` (strings and comments untouched)."""
    spans = [(t.start, t.end) for t in tokenize(text) if t.kind == "ident" and t.text == old]
    return _splice(text, [(s, e, new) for s, e in spans])


def _splice(text: str, edits: Iterable[tuple[int, int, str]]) -> str:
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def _declarations(tokens: list[Token]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    n = len(tokens)

    def text(k: int) -> str:
        return tokens[k].text if 0 <= k < n else ""

    for i, token in enumerate(tokens):
        if token.kind != "ident":
            continue
        word = token.text
        if word in _ITEM_KEYWORDS and i + 1 < n and tokens[i + 1].kind == "ident":
            j = i + 1
            if word == "static" and text(j) == "mut":
                j += 1
            name = text(j)
            if name in KEYWORDS or tokens[j].kind != "ident":
                continue  # `const fn`, `impl Trait for` etc.
            if word == "type" and text(i - 1) in ("::", "."):
                continue
            out.append((name, _ITEM_KEYWORDS[word]))
            after = j + 1
            if text(after) == "<":
                after = _generics(tokens, after, out)
            if word in ("struct", "union"):
                body = _next_body(tokens, after)
                if body is not None and text(body) == "{":
                    out.extend((f, "field") for f in _fields(tokens, body))
            elif word == "enum":
                body = _next_body(tokens, after)
                if body is not None:
                    out.extend(_variants_of(tokens, body))
            elif word == "fn" and text(after) == "(":
                close = matching_bracket(tokens, after)
                if close is not None:
                    out.extend((b, "parameter") for b in _parameter_bindings(tokens[after + 1: close]))
        elif word == "impl" and text(i + 1) == "<":
            _generics(tokens, i + 1, out)
        elif word == "let":
            end = i + 1
            depth = 0
            while end < n:
                t = text(end)
                if t in ("(", "[", "{"):
                    depth += 1
                elif t in (")", "]", "}"):
                    depth -= 1
                elif depth == 0 and t in ("=", ":", ";", "else"):
                    break
                end += 1
            out.extend((b, "local") for b in _pattern_bindings(tokens[i + 1: end]))
        elif word == "for" and text(i + 1) != "<":
            end, depth = i + 1, 0
            while end < n:
                t = text(end)
                if depth == 0 and t in ("in", "{", ";"):
                    break
                if t in ("(", "["):
                    depth += 1
                elif t in (")", "]"):
                    depth -= 1
                end += 1
            if text(end) == "in":
                out.extend((b, "local") for b in _pattern_bindings(tokens[i + 1: end]))
    # Closure parameters: `|a, (b, c)|` where an expression may start.
    for i, token in enumerate(tokens):
        if token.text == "|" and (i == 0 or tokens[i - 1].text in _CLOSURE_STARTS):
            end, depth = i + 1, 0
            while end < n:
                t = text(end)
                if depth == 0 and t == "|":
                    break
                if t in ("(", "[", "{", "<"):
                    depth += 1
                elif t in (")", "]", "}", ">"):
                    depth -= 1
                end += 1
            if end < n:
                out.extend((b, "closure parameter") for b in _parameter_bindings(tokens[i + 1: end]))
    return out


_CLOSURE_STARTS = ("(", ",", "=", "=>", "{", ";", "move", "return", ":")


def _generics(tokens: list[Token], open_index: int, out: list[tuple[str, str]]) -> int:
    """Record the parameters of `<...>` at open_index; return the index after `>`."""
    depth, k = 0, open_index
    while k < len(tokens):
        t = tokens[k].text
        if t == "<":
            depth += 1
        elif t in (">", ">>"):
            depth -= len(t)
            if depth <= 0:
                return k + 1
        elif t in ("(", "["):
            close = matching_bracket(tokens, k)
            k = close if close is not None else k
        elif depth == 1 and tokens[k - 1].text in ("<", ","):
            if t == "const" and k + 1 < len(tokens) and tokens[k + 1].kind == "ident":
                out.append((tokens[k + 1].text, "const parameter"))
            elif tokens[k].kind == "ident" and t not in KEYWORDS:
                out.append((t, "type parameter"))
        k += 1
    return k


def _next_body(tokens: list[Token], start: int) -> int | None:
    """Index of the `{` or `(` that opens the item body after start (None at `;`)."""
    k = start
    while k < len(tokens):
        t = tokens[k].text
        if t in ("{", "("):
            return k
        if t == ";":
            return None
        if t == "[":
            close = matching_bracket(tokens, k)
            k = close if close is not None else k
        k += 1
    return None


def _fields(tokens: list[Token], open_index: int) -> list[str]:
    close = matching_bracket(tokens, open_index)
    if close is None:
        return []
    names, depth = [], 0
    for k in range(open_index + 1, close):
        t = tokens[k].text
        if t in ("(", "[", "{", "<"):
            depth += 1
        elif t in (")", "]", "}", ">", ">>"):
            depth -= len(t) if t == ">>" else 1
        elif depth == 0 and tokens[k].kind == "ident" and t not in KEYWORDS and tokens[k + 1].text == ":":
            names.append(t)
    return names


def _variants_of(tokens: list[Token], open_index: int) -> list[tuple[str, str]]:
    close = matching_bracket(tokens, open_index)
    if close is None:
        return []
    out, k, expect_variant = [], open_index + 1, True
    while k < close:
        t = tokens[k].text
        if t == "#" and tokens[k + 1].text == "[":
            k = (matching_bracket(tokens, k + 1) or k) + 1
            continue
        if expect_variant and tokens[k].kind == "ident":
            out.append((t, "variant"))
            expect_variant = False
        elif t == "{":
            out.extend((f, "field") for f in _fields(tokens, k))
            k = matching_bracket(tokens, k) or k
        elif t in ("(", "["):
            k = matching_bracket(tokens, k) or k
        elif t == ",":
            expect_variant = True
        k += 1
    return out


def _split_top(tokens: list[Token], separator: str = ",") -> list[list[Token]]:
    parts, current, depth = [], [], 0
    for t in tokens:
        if t.text in ("(", "[", "{", "<"):
            depth += 1
        elif t.text in (")", "]", "}", ">"):
            depth -= 1
        elif t.text == ">>":
            depth -= 2
        if depth == 0 and t.text == separator:
            parts.append(current)
            current = []
        else:
            current.append(t)
    if current:
        parts.append(current)
    return parts


def _parameter_bindings(tokens: list[Token]) -> list[str]:
    names = []
    for part in _split_top(tokens):
        depth, end = 0, len(part)
        for k, t in enumerate(part):
            if t.text in ("(", "[", "{"):
                depth += 1
            elif t.text in (")", "]", "}"):
                depth -= 1
            elif depth == 0 and t.text == ":":
                end = k
                break
        names.extend(_pattern_bindings(part[:end]))
    return names


def _pattern_bindings(tokens: list[Token]) -> list[str]:
    names = []
    for k, t in enumerate(tokens):
        if t.kind != "ident" or t.text in KEYWORDS or not (t.text[0].islower() or t.text[0] == "_"):
            continue
        after = tokens[k + 1].text if k + 1 < len(tokens) else ""
        before = tokens[k - 1].text if k > 0 else ""
        if after in ("(", "{", "::", "!", ":") or before in ("::", "."):
            continue
        names.append(t.text)
    return names


def _blocked(tokens: list[Token], kinds: dict[str, set[str]]) -> set[str]:
    """Names that are used, somewhere in these tokens, as something the koan does not declare."""
    blocked: set[str] = set()
    n = len(tokens)
    for k, t in enumerate(tokens):
        if t.kind == "string":
            blocked.update(_WORD.findall(t.text))
            continue
        if t.kind != "ident":
            continue
        after = tokens[k + 1].text if k + 1 < n else ""
        before = tokens[k - 1].text if k > 0 else ""
        if after == "!" or t.text.startswith("r#"):
            blocked.add(t.text)
        if before == "::":
            prefix = tokens[k - 2] if k >= 2 else None
            if not (prefix is not None and prefix.kind == "ident"
                    and (prefix.text in ("Self", "self", "super", "crate")
                         or kinds.get(prefix.text, set()) & _NAMESPACE_KINDS)):
                blocked.add(t.text)
        if before == ".":
            called = after in ("(", "::")
            if called and "function" not in kinds.get(t.text, set()):
                blocked.add(t.text)
            if not called and "field" not in kinds.get(t.text, set()):
                blocked.add(t.text)
        if t.text == "macro_rules" and k + 2 < n:
            blocked.add(tokens[k + 2].text)
    # Attributes and `use` trees rooted outside the koan.
    k = 0
    while k < n:
        if tokens[k].text == "#" and k + 1 < n and tokens[k + 1].text in ("[", "!"):
            open_index = k + 1 if tokens[k + 1].text == "[" else k + 2
            close = matching_bracket(tokens, open_index) if open_index < n else None
            if close is None:
                break
            blocked.update(x.text for x in tokens[open_index:close] if x.kind == "ident")
            k = close
        elif tokens[k].text == "use" and k + 1 < n and tokens[k + 1].text not in ("crate", "self", "super"):
            end = k
            while end < n and tokens[end].text != ";":
                end += 1
            root = tokens[k + 1].text.lstrip(":")
            if not (kinds.get(root, set()) & _NAMESPACE_KINDS):
                blocked.update(x.text for x in tokens[k:end] if x.kind == "ident")
            k = end
        k += 1
    blocked |= _foreign_impl_members(tokens, kinds)
    return blocked


def _foreign_impl_members(tokens: list[Token], kinds: dict[str, set[str]]) -> set[str]:
    """fn, type and const names inside `impl Trait for X` where the koan does not declare Trait."""
    blocked: set[str] = set()
    n = len(tokens)
    for i, t in enumerate(tokens):
        if t.text != "impl" or (i > 0 and tokens[i - 1].text not in ("}", ";", "]", "{", "unsafe", "default")):
            continue
        depth, k, for_at, generics_end = 0, i + 1, None, i + 1
        while k < n:
            x = tokens[k].text
            if x == "<":
                depth += 1
            elif x in (">", ">>"):
                depth -= len(x)
                if depth == 0 and generics_end == i + 1 and tokens[i + 1].text == "<":
                    generics_end = k + 1
            elif x in ("(", "["):
                k = matching_bracket(tokens, k) or k
            elif x == "for" and depth == 0:
                for_at = k
            elif x == "{" and depth == 0:
                break
            k += 1
        if for_at is None or k >= n:
            continue
        trait, depth = None, 0
        for x in tokens[generics_end:for_at]:
            if x.text == "<":
                depth += 1
            elif x.text in (">", ">>"):
                depth -= len(x.text)
            elif depth == 0 and x.kind == "ident":
                trait = x.text
        if trait is not None and "trait" in kinds.get(trait, set()):
            continue
        close = matching_bracket(tokens, k) or n - 1
        depth = 0
        for j in range(k + 1, close):
            x = tokens[j].text
            if x in ("{", "(", "["):
                depth += 1
            elif x in ("}", ")", "]"):
                depth -= 1
            elif depth == 0 and x in ("fn", "type", "const") and j + 1 < close and tokens[j + 1].kind == "ident":
                blocked.add(tokens[j + 1].text)
    return blocked


# -- literals and widths --------------------------------------------------------------


@lru_cache(maxsize=256)
def _literals(texts: _Texts) -> tuple[str, ...]:
    """Changeable literal texts, in order of first appearance."""
    found: dict[str, bool] = {}
    for text in texts.all:
        tokens = tokenize(text)
        attributes = _attribute_tokens(tokens)
        for k, t in enumerate(tokens):
            if t.kind == "number" and (m := _DECIMAL.match(t.text)):
                value = int(m.group(1).replace("_", ""))
                ok = value >= 2 and k not in attributes and not (k > 0 and tokens[k - 1].text == ".")
                found[t.text] = found.get(t.text, True) and ok
            elif t.kind == "string" and _PLAIN_STRING.match(t.text) and any(c.isalnum() for c in t.text):
                found[t.text] = found.get(t.text, True) and k not in attributes
    return tuple(literal for literal, ok in found.items() if ok)


def _attribute_tokens(tokens: list[Token]) -> set[int]:
    inside: set[int] = set()
    for k, t in enumerate(tokens):
        if t.text == "#" and k + 1 < len(tokens) and tokens[k + 1].text in ("[", "!"):
            open_index = k + 1 if tokens[k + 1].text == "[" else k + 2
            close = matching_bracket(tokens, open_index) if open_index < len(tokens) else None
            if close is not None:
                inside.update(range(k, close + 1))
    return inside


def _limit(value: int, suffix: str | None) -> int:
    if suffix:
        bits = 64 if suffix.endswith("size") else int(suffix[1:])
        return 2 ** (bits - 1) - 1 if suffix[0] == "i" else 2**bits - 1
    for limit in (127, 255, 32767, 65535, 2**31 - 1, 2**32 - 1, 2**63 - 1):
        if value <= limit:
            return limit
    return value + 9


def replace_literal(text: str, old: str, new: str) -> str:
    """Every number or string literal token `old` becomes `new`."""
    return _splice(text, [(t.start, t.end, new) for t in tokenize(text)
                          if t.kind in ("number", "string") and t.text == old])


@lru_cache(maxsize=256)
def _type_names(texts: _Texts) -> frozenset[str]:
    present: set[str] = set()
    for text in texts.all:
        for t in tokenize(text):
            if t.kind == "ident" and t.text in PRIMITIVES:
                present.add(t.text)
            elif t.kind == "number" and (m := re.search(r"([iu](?:8|16|32|64|128|size)|f32|f64)$", t.text)):
                present.add(m.group(1))
    return frozenset(present)


def substitute_width(text: str, old: str, new: str) -> str:
    """Every type name `old` (and literal suffix `old`) becomes `new`."""
    edits = []
    for t in tokenize(text):
        if t.kind == "ident" and t.text == old:
            edits.append((t.start, t.end, new))
        elif t.kind == "number" and t.text.endswith(old) and not t.text.startswith(("0x", "0X")):
            if re.fullmatch(rf"[0-9][0-9_]*{old}", t.text):
                edits.append((t.end - len(old), t.end, new))
    return _splice(text, edits)


# -- top-level items ------------------------------------------------------------------


@dataclass(frozen=True)
class TopLevelItem:
    kind: str  # "fn", "struct", ..., "impl", "use", "macro_rules", "macro"
    key: str  # how buggy's and fixed's items are matched: kind, name and occurrence
    label: str  # for descriptions: "fn main", "impl Display for Receipt"
    start: int  # offset of its first attached line (doc comments, attributes)
    end: int  # offset just after it (and after a comment on its last line)


def top_level_items(text: str) -> list[TopLevelItem] | None:
    """The module-level items of `text`, or None where the text is not understood."""
    items = _items(text)
    return None if items is None else list(items)


@lru_cache(maxsize=256)
def _items(text: str) -> tuple[TopLevelItem, ...] | None:
    try:
        tokens = tokenize(text)
    except LexError:
        return None
    items: list[TopLevelItem] = []
    counts: Counter = Counter()
    n, i, previous_end = len(tokens), 0, 0

    def text_at(k: int) -> str:
        return tokens[k].text if k < n else ""

    while i < n:
        if text_at(i) == "#" and text_at(i + 1) == "!":
            close = matching_bracket(tokens, i + 2)
            if close is None or items:
                return None
            i = close + 1
            previous_end = tokens[close].end
            continue
        first = i
        while text_at(i) == "#" and text_at(i + 1) == "[":
            close = matching_bracket(tokens, i + 1)
            if close is None:
                return None
            i = close + 1
        j = i
        if text_at(j) == "pub":
            j += 1
            if text_at(j) == "(":
                close = matching_bracket(tokens, j)
                if close is None:
                    return None
                j = close + 1
        while text_at(j) in ("const", "async", "unsafe", "default") and text_at(j + 1) in (
                "fn", "async", "unsafe", "impl", "trait", "const"):
            j += 1
        keyword = text_at(j)
        if keyword in ("fn", "struct", "union", "enum", "trait", "impl", "mod"):
            end = _item_end(tokens, j, braces_end=True)
            if keyword == "impl":
                header = tokens[j + 1: _header_end(tokens, j)]
                label = " ".join(text[tokens[j].start: header[-1].end].split()) if header else "impl"
                name = _impl_name(header)  # impl generics and lifetimes left out: a fix may add them
            else:
                name = text_at(j + 1)
                label = f"{keyword} {name}"
        elif keyword in ("const", "static", "type", "use"):
            end = _item_end(tokens, j, braces_end=False)
            if end is None:
                return None
            if keyword == "use":
                name = " ".join(text[tokens[j + 1].start: tokens[end - 1].end].split())
            else:
                name = text_at(j + 1)
            if keyword == "static" and name == "mut":
                name = text_at(j + 2)
            label = f"{keyword} {name}"
        elif keyword == "macro_rules" and text_at(j + 1) == "!":
            end = _macro_end(tokens, j + 3)
            name, label = text_at(j + 2), f"macro_rules! {text_at(j + 2)}"
        elif tokens[j].kind == "ident" and text_at(j + 1) == "!":
            keyword, end = "macro", _macro_end(tokens, j + 2)
            name, label = keyword, f"{text_at(j)}!"
        else:
            return None
        if end is None:
            return None
        base = f"{keyword} {name}"
        key = f"{base} #{counts[base]}"
        counts[base] += 1
        start = _attached_start(text, tokens[first].start, previous_end)
        stop = _attached_end(text, tokens[end].end)
        items.append(TopLevelItem(keyword, key, label, start, stop))
        previous_end = stop
        i = end + 1
    return tuple(items)


def _impl_name(header: list[Token]) -> str:
    """An impl header without the impl's own generics and without lifetimes:
    `Display for Receipt`, `From < ParseIntError > for OrderError`, `PacketReader < >`."""
    start = 0
    if header and header[0].text == "<":
        depth = 0
        for k, t in enumerate(header):
            depth += 1 if t.text == "<" else -len(t.text) if t.text in (">", ">>") else 0
            if depth <= 0:
                start = k + 1
                break
    return " ".join(t.text for t in header[start:] if t.kind != "lifetime" and t.text != ",")


def _header_end(tokens: list[Token], start: int) -> int:
    k = start
    while k < len(tokens) and tokens[k].text != "{":
        if tokens[k].text in ("(", "["):
            k = matching_bracket(tokens, k) or k
        k += 1
    return k


def _item_end(tokens: list[Token], start: int, braces_end: bool) -> int | None:
    """Index of the item's last token: the `;` at depth 0, or (braces_end) the `}`
    closing its first top-level brace."""
    k = start
    while k < len(tokens):
        t = tokens[k].text
        if t == ";":
            return k
        if t in ("(", "[", "{"):
            close = matching_bracket(tokens, k)
            if close is None:
                return None
            if t == "{" and braces_end:
                return close
            k = close
        k += 1
    return None


def _macro_end(tokens: list[Token], open_index: int) -> int | None:
    if open_index >= len(tokens) or tokens[open_index].text not in ("{", "(", "["):
        return None
    close = matching_bracket(tokens, open_index)
    if close is None:
        return None
    if tokens[open_index].text != "{":
        return close + 1 if close + 1 < len(tokens) and tokens[close + 1].text == ";" else None
    if close + 1 < len(tokens) and tokens[close + 1].text == ";":
        return close + 1
    return close


def _attached_start(text: str, start: int, floor: int) -> int:
    """Move start back over the indentation and the `//` comment lines right above it."""
    line_start = text.rfind("\n", 0, start) + 1
    if text[line_start:start].strip() or line_start < floor:
        return start
    while line_start > floor:
        previous = text.rfind("\n", 0, line_start - 1) + 1
        if previous < floor:
            break
        line = text[previous: line_start - 1].strip()
        if not line.startswith("//") or line.startswith("//!"):
            break
        line_start = previous
    return line_start


def _attached_end(text: str, end: int) -> int:
    newline = text.find("\n", end)
    rest = text[end: len(text) if newline < 0 else newline]
    return end + len(rest) if rest.strip().startswith("//") else end


def _rebuild(text: str, items: list[TopLevelItem], order: list[int]) -> str:
    pieces = [text[: items[0].start]]
    for position, index in enumerate(order):
        pieces.append(text[items[index].start: items[index].end])
        following = items[position + 1].start if position + 1 < len(items) else len(text)
        pieces.append(text[items[position].end: following])
    return "".join(pieces)


def move_item(text: str, source: int, target: int) -> str:
    """Move top-level item `source` to position `target` (the others keep their order);
    the gaps between items (blank lines, detached comments) stay where they are."""
    items = top_level_items(text)
    if items is None:
        raise ValueError("the text's top-level items are not understood")
    order = list(range(len(items)))
    order.insert(target, order.pop(source))
    return _rebuild(text, items, order)


@lru_cache(maxsize=256)
def _possible_moves(buggy: str, fixed: str) -> dict[str, list[str]]:
    """source key -> target keys: moves of an item found in both buggy and fixed (by
    key) next to another such item, possible in both texts alike. Items found in only
    one of them (what the fix adds or removes) stay where they are; nothing moves
    across a `macro_rules!` definition; a top-level macro invocation prevents moves."""
    items, others = top_level_items(buggy), top_level_items(fixed)
    if not items or not others or any(i.kind == "macro" for i in items + others):
        return {}
    common = {i.key for i in items} & {i.key for i in others}

    def runs(listing: list[TopLevelItem]) -> list[list[str]]:
        out: list[list[str]] = [[]]
        for item in listing:
            if item.kind == "macro_rules":
                out.append([])
            elif item.key in common:
                out[-1].append(item.key)
        return out

    buggy_runs, fixed_runs = runs(items), runs(others)
    if [k for run in buggy_runs for k in run] != [k for run in fixed_runs for k in run]:
        return {}  # the common items are in another order: no move means the same in both
    run_of = {key: (n, m) for n, run in enumerate(buggy_runs) for key in run
              for m, other in enumerate(fixed_runs) if key in other}
    moves = {}
    for run in buggy_runs:
        for source in run:
            targets = [t for t in run if t != source and run_of[t] == run_of[source]]
            if targets:
                moves[source] = targets
    return moves


def _move_by_key(text: str, source: str, target: str) -> str:
    items = top_level_items(text)
    keys = [i.key for i in items]
    return move_item(text, keys.index(source), keys.index(target))


def insert_item(text: str, item: str, where: str) -> str:
    """Insert `item` before the first or after the last top-level item of text."""
    items = top_level_items(text)
    if not items:
        raise ValueError("the text has no top-level items understood")
    if where == "before":
        return text[: items[0].start] + item + "\n\n" + text[items[0].start:]
    if where == "after":
        return text[: items[-1].end] + "\n\n" + item + text[items[-1].end:]
    raise ValueError(f"where must be 'before' or 'after', not {where!r}")


@lru_cache(maxsize=256)
def space_items(text: str, blank_lines: int) -> str:
    """Put exactly `blank_lines` blank lines between consecutive top-level items that
    are separated by whitespace only (and at least one line break)."""
    items = top_level_items(text)
    if not items:
        return text
    edits = []
    for before, after in zip(items, items[1:]):
        gap = text[before.end: after.start]
        if not gap.strip() and "\n" in gap and gap.count("\n") != blank_lines + 1:
            # The gap ends at the start of the next item's line (its indentation is part
            # of the item), so a gap of only newlines loses nothing.
            edits.append((before.end, after.start, "\n" * (blank_lines + 1) + gap[gap.rfind("\n") + 1:]))
    return _splice(text, edits)


# -- indentation ----------------------------------------------------------------------


@lru_cache(maxsize=256)
def reindent(text: str, unit: int | str) -> str:
    """Rewrite leading indentation with `unit` spaces (or "tab") per level; lines that
    start inside a multi-line string literal are left alone. The original unit is the
    smallest indentation of a line that starts with code."""
    tokens = tokenize(text)
    strings = [(t.start, t.end) for t in tokens if t.kind == "string" and "\n" in t.text]
    starts = {t.start for t in tokens}
    offsets, position = [], 0
    for line in text.split("\n"):
        offsets.append((position, line))
        position += len(line) + 1
    code_indents = [len(line) - len(line.lstrip(" ")) for offset, line in offsets
                    if line.strip() and line.startswith(" ")
                    and offset + len(line) - len(line.lstrip(" ")) in starts
                    and not any(s < offset < e for s, e in strings)]
    if not code_indents:
        return text
    original = min(code_indents)
    step = "\t" if unit == "tab" else " " * int(unit)
    lines = []
    for offset, line in offsets:
        if not line.strip() or any(s < offset < e for s, e in strings):
            lines.append(line)
            continue
        spaces = len(line) - len(line.lstrip(" "))
        lines.append(step * (spaces // original) + " " * (spaces % original) + line[spaces:])
    return "\n".join(lines)
