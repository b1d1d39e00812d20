"""The leakage guard: training data must never contain the benchmark, even disguised.

The earlier system copied eval koans verbatim into its training data (LESSONS.md), so
its numbers on those koans measured recall, not repair. Here every code string that
goes into training data is compared with every eval koan's `buggy`, `fixed` and `tests`
before it is written, and refused when it overlaps one of them too much.

Normalization (`normalized_tokens`)
-----------------------------------
Code is compared as `rustlex` tokens, so whitespace, layout and comments never matter,
and then abstracted so that the cheap disguises do not matter either:

* identifiers become ``ID``: renaming every variable, field, function and type of an
  eval koan gives exactly the same token sequence;
* except Rust keywords (`fn`, `let`, `mut`, `impl`, `self`, `Self`, ...), which stay,
  and a small set of std/prelude names (`STD_NAMES`) that a program cannot rename
  without becoming a different program: the primitive types (`u32`, `str`, `bool`,
  ...), `String`, `Vec`, `Option`, `Result`, `Box`, `Some`, `None`, `Ok`, `Err` and the
  std macros (`println`, `format`, `vec`, `assert_eq`, `write`, `matches`, ...).
  Keeping them makes the structure more specific (`Vec<u32>` is not `Option<String>`).
  Everything else is abstracted, std method and trait names included: keeping a
  hundred common ones (`push`, `iter`, `parse`, `Display`, ...) was tried and moved
  the calibration below by less than 0.03, not worth a vocabulary to maintain;
* literals become ``NUM``, ``STR`` and ``CHAR`` (new numbers and messages change
  nothing), lifetimes become ``LT``; punctuation is kept.

Code that does not lex (an answer cut off inside a string, an unterminated block
comment) is still compared: the lines before the one the lexer names are normalized
as above (recursively, should they fail too) and the rest falls back to
whitespace-split words, so a truncated copy of an eval koan is caught by its intact
part. Text with no lexable prefix is whitespace-split words only.

Measures, candidate against one eval field
------------------------------------------
* ``longest_run``: the longest run of normalized tokens the two share, in order and
  contiguous -- what ``difflib.SequenceMatcher(None, a, b, autojunk=False)
  .find_longest_match()`` finds (the tests check they agree). difflib took 70-85 ms per
  candidate against the 90 eval fields, so runs are found from k-window indexes
  instead (chains of shared windows on one diagonal; see `_Indexed.longest_run`).
* ``similarity``: containment of the candidate's token 8-gram shingles in the eval
  field's shingles, and the reverse; the larger: ``shared / min(|A|, |B|)``.
  Containment, not Jaccard, so an eval koan padded with unrelated items is still 1.0;
  sets of shingles, so reordering the items of a copy does not hide it. k = 8 tokens is
  about one short statement (``let mut ID = ID :: ID ( ) ;``): long enough that two
  programs sharing only the usual idioms share few shingles, short enough that an edit
  every few lines leaves most shingles of a copy intact (k = 6..16 were measured: a
  larger k lowers the train koans and the edited copies alike). The denominator is at
  least ``MIN_SHINGLES`` = 64 (about 70 tokens, half of the smallest eval field), so a
  short snippet of shared boilerplate (a derive and a struct, a `fn main`) is never
  "100 % contained" in an eval koan.

A candidate is refused when, for any eval field, the longest run reaches ``max_run``
or the similarity reaches ``max_similarity`` (eval `buggy`/`fixed`) or
``max_tests_similarity`` (eval `tests`): hidden tests are formulaic (call, assert,
call, assert) and one train koan's tests follow an eval koan's tests line by line in
another domain, so they get their own, higher limit. Against eval `tests` it is also
refused when the similarity reaches ``edited_tests_similarity`` *and* the run reaches
``edited_tests_run``: an eval koan's tests with a line in ten dropped keep both, while
train tests that follow an eval koan's closely keep one or the other.

Calibration (the shipped corpus: 200 eval koans, 216 train koans)
-----------------------------------------------------------------
Worst overlap over the 1,552 eval codes (buggy, fixed, tests, alternatives, decoys).
Train koans are different programs with the same bug patterns -- what training data
is made of -- and must pass, tests included (variant records carry them); disguised
eval koans must be refused. "max" rows are the worst train code, "min" rows the
best-hidden copy; "refused" counts codes under the chosen limits:

=================================================  =====  ==========  ===========  =======
population                                         codes  similarity  longest run  refused
=================================================  =====  ==========  ===========  =======
train buggy/fixed vs eval buggy/fixed, max           432       0.722           64        0
train buggy/fixed vs eval tests, max                 432       0.410           42        0
train tests vs eval buggy/fixed, max                 216       0.364           51        0
train tests vs eval tests, max (lg_132 vs lg_027)    216       0.891          108        0
  (the next highest: mu_105 vs gt_006)                         0.881           48
  (longest run: mp_104 vs mp_007)                              0.636          108
train all fields vs eval alternatives/decoys, max    648       0.722          103        0
eval koans themselves, min                           600       1.000          110      600
eval koans, every identifier renamed, min            600       1.000          110      600
eval koans, every literal changed, min               600       1.000          110      600
eval koans, an unrelated fn before and after, min    600       1.000          110      600
eval koans, renamed + literals + padded, min         600       1.000          110      600
eval koans, between two train koans, min             600       1.000          110      600
eval buggy/fixed, top-level items reversed, min      400       0.784           47      400
eval buggy/fixed, every 10th line dropped, min       400       0.806           39      400
eval buggy/fixed, first half only, min               400       0.453           38      391
eval tests, top-level items reversed, min            200       0.866           64      200
eval tests, every 10th line dropped, min             200       0.846           75      200
eval tests, first half only, min                     200       0.531           43      199
=================================================  =====  ==========  ===========  =======

Chosen: ``MAX_SIMILARITY = 0.75`` (train programs reach 0.72; copies of eval programs
with items reordered or lines dropped stay above 0.78, plain disguises are 1.0),
``MAX_TESTS_SIMILARITY = 0.92`` (train tests reach 0.89), ``MAX_RUN = 120`` tokens
(train code shares at most 108; a copy of any whole eval field of 120 tokens or more
is refused by its run alone), and ``EDITED_TESTS_SIMILARITY = 0.80`` with
``EDITED_TESTS_RUN = 60``: train tests with a similarity of 0.80 or more share at most
55 tokens in a row, and those sharing 60 or more reach a similarity of 0.75, while
every eval koan's tests with a line in ten dropped keep 0.85 and a run of 75. Without
that pair, 26 of those 200 and 2 of the reversed ones passed.

Known limits: a fragment of an eval koan shorter than about 120 tokens can pass
(train koans legitimately share runs of up to 108 tokens with eval koans, so a
fragment that short cannot be told from a shared pattern): 9 first halves of the
smallest eval programs (110-167 tokens; similarity 0.45-0.63, runs 38-48) and the
first half of mu_004's tests (0.53, 43). The margins are thin (0.722 against 0.75;
55 against 60): a train koan that comes closer is refused by the tests, and must be
rewritten, not the limits raised. `tests/test_leakage.py` pins both sides on the real
corpus.

Speed: `LeakageGuard.worst` takes 66 ms (median; 95th percentile 93 ms) per train
program against the 1,552 eval codes, lexing included, measured with a model running
on the other core; building the guard takes 2.2 s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tabulate import tabulate

from ..extraction import extract_code
from ..koans import Koan
from ..verify.rustlex import LexError, tokenize

__all__ = [
    "KEYWORDS",
    "STD_NAMES",
    "SHINGLE_K",
    "MIN_SHINGLES",
    "MAX_SIMILARITY",
    "MAX_TESTS_SIMILARITY",
    "MAX_RUN",
    "EDITED_TESTS_SIMILARITY",
    "EDITED_TESTS_RUN",
    "EVAL_FIELDS",
    "normalized_tokens",
    "shingles",
    "longest_run",
    "Overlap",
    "LeakageError",
    "LeakageGuard",
    "record_code",
    "AuditReport",
    "audit",
    "render_audit",
]

KEYWORDS = frozenset(
    # strict keywords (2015-2024), the reserved ones and the weak ones that shape code
    "as async await break const continue crate dyn else enum extern false fn for gen if "
    "impl in let loop match mod move mut pub ref return self Self static struct super "
    "trait true type unsafe use where while abstract become box do final macro override "
    "priv try typeof unsized virtual yield union macro_rules".split()
)
STD_NAMES = frozenset(
    "i8 i16 i32 i64 i128 isize u8 u16 u32 u64 u128 usize f32 f64 bool char str "
    "String Vec Option Result Box Some None Ok Err "
    "println print eprintln eprint format vec panic assert assert_eq assert_ne "
    "debug_assert write writeln unreachable todo unimplemented matches dbg".split()
)
SHINGLE_K = 8
MIN_SHINGLES = 64
MAX_SIMILARITY = 0.75
MAX_TESTS_SIMILARITY = 0.92
MAX_RUN = 120
# Eval tests edited line by line keep most of their shingles *and* a long run; train
# tests that follow an eval koan's tests closely keep one or the other (module docstring).
EDITED_TESTS_SIMILARITY = 0.80
EDITED_TESTS_RUN = 60
EVAL_FIELDS = ("buggy", "fixed", "tests")

_LEX_ERROR_LINE = re.compile(r"^line (\d+):")
_LITERALS = {"number": "NUM", "string": "STR", "char": "CHAR", "lifetime": "LT"}


def normalized_tokens(code: str) -> tuple[str, ...]:
    """The tokens of `code` with identifiers, literals and lifetimes abstracted (see the
    module docstring); whitespace-split words for the part that does not lex."""
    try:
        tokens = tokenize(code)
    except LexError as error:
        match = _LEX_ERROR_LINE.match(str(error))
        lines = code.splitlines(keepends=True)
        cut = int(match.group(1)) - 1 if match else 0
        head, rest = "".join(lines[:cut]), "".join(lines[cut:])
        if not head.strip() or len(head) >= len(code):
            return tuple(code.split())
        return normalized_tokens(head) + tuple(rest.split())
    out = []
    for token in tokens:
        if token.kind == "ident":
            out.append(token.text if token.text in KEYWORDS or token.text in STD_NAMES else "ID")
        else:
            out.append(_LITERALS.get(token.kind, token.text))
    return tuple(out)


def shingles(tokens: tuple[str, ...], k: int = SHINGLE_K) -> frozenset[tuple[str, ...]]:
    """The set of k-token windows (the whole sequence when it is shorter than k)."""
    if len(tokens) <= k:
        return frozenset([tokens]) if tokens else frozenset()
    return frozenset(tokens[i : i + k] for i in range(len(tokens) - k + 1))


def longest_run(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """The longest run of tokens a and b share, in order and contiguous (the size of
    `difflib.SequenceMatcher(None, a, b, autojunk=False).find_longest_match()`)."""
    return _Indexed(a).longest_run(_Indexed(b))


class _Indexed:
    """Normalized code with what comparing it needs: its shingle set (similarity) and
    its k-window indexes (longest run), each computed once."""

    def __init__(self, tokens: tuple[str, ...]):
        self.tokens = tokens
        self.shingles = shingles(tokens)
        self._starts: dict[int, dict[tuple[str, ...], list[int]]] = {}

    def starts(self, k: int) -> dict[tuple[str, ...], list[int]]:
        """Every k-token window (none when the code is shorter) -> its start positions."""
        if k not in self._starts:
            starts: dict[tuple[str, ...], list[int]] = {}
            for i in range(len(self.tokens) - k + 1):
                starts.setdefault(self.tokens[i : i + k], []).append(i)
            self._starts[k] = starts
        return self._starts[k]

    def longest_run(self, other: _Indexed) -> int:
        """A shared run of n >= k tokens is n - k + 1 shared k-windows that start on one
        diagonal (i - j constant) at consecutive positions: the longest chain gives the
        run. 8-token windows first; only when none is shared (a run under 8 tokens),
        4- then 2-token windows, then single tokens."""
        for k in (SHINGLE_K, 4, 2):
            mine, theirs = self.starts(k), other.starts(k)
            diagonals: dict[int, list[int]] = {}
            for window in mine.keys() & theirs.keys():
                for i in mine[window]:
                    for j in theirs[window]:
                        diagonals.setdefault(i - j, []).append(i)
            best = 0
            for starts in diagonals.values():
                starts.sort()
                length = 1
                for previous, current in zip(starts, starts[1:]):
                    if current == previous + 1:
                        length += 1
                    else:
                        best, length = max(best, length), 1
                best = max(best, length)
            if best:
                return best + k - 1
        return 1 if set(self.tokens) & set(other.tokens) else 0


@dataclass(frozen=True)
class Overlap:
    """How much one candidate code string overlaps one eval koan's field."""

    eval_koan: str
    eval_field: str  # "buggy", "fixed" or "tests"
    candidate_label: str
    similarity: float  # 0..1: shingle containment, the larger of the two directions
    longest_run: int  # normalized tokens shared contiguously, in order
    eval_tokens: int  # length of the eval code, in normalized tokens
    candidate_tokens: int = 0

    def describe(self) -> str:
        return (
            f"{self.candidate_label} overlaps eval koan {self.eval_koan} ({self.eval_field}): "
            f"similarity {self.similarity:.2f}, longest shared run {self.longest_run} tokens "
            f"(the eval code has {self.eval_tokens}, the candidate {self.candidate_tokens})"
        )


class LeakageError(ValueError):
    """A candidate for training data overlaps an eval koan."""

    def __init__(self, overlap: Overlap, limits: str):
        self.overlap = overlap
        super().__init__(
            f"{overlap.describe()}; refused at {limits}. Training data must never contain the "
            f"benchmark, even renamed, re-literaled, padded or edited: drop this candidate and build "
            f"training data from `train` koans only (whatever produced it drew on eval koan "
            f"{overlap.eval_koan})."
        )


@dataclass(frozen=True)
class _EvalCode:
    koan: str
    field: str
    code: _Indexed


class LeakageGuard:
    """Compares code with every eval koan's buggy, fixed and tests code, and its
    alternatives and decoys.

    Refused when, for any eval field, the longest shared run reaches `max_run` tokens or
    the similarity reaches `max_similarity` (eval buggy/fixed) or `max_tests_similarity`
    (eval tests), or, against eval tests, the similarity reaches `edited_tests_similarity`
    while the run reaches `edited_tests_run`. The defaults are calibrated on the shipped
    corpus (module docstring)."""

    def __init__(self, eval_koans: list[Koan], *, max_similarity: float = MAX_SIMILARITY,
                 max_run: int = MAX_RUN, max_tests_similarity: float = MAX_TESTS_SIMILARITY,
                 edited_tests_similarity: float = EDITED_TESTS_SIMILARITY, edited_tests_run: int = EDITED_TESTS_RUN):
        for name, value in (("max_similarity", max_similarity), ("max_tests_similarity", max_tests_similarity),
                            ("edited_tests_similarity", edited_tests_similarity)):
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], not {value}")
        for name, value in (("max_run", max_run), ("edited_tests_run", edited_tests_run)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1 token, not {value}")
        self.max_similarity = max_similarity
        self.max_tests_similarity = max_tests_similarity
        self.max_run = max_run
        self.edited_tests_similarity = edited_tests_similarity
        self.edited_tests_run = edited_tests_run
        self.eval_koans = list(eval_koans)
        self._codes: list[_EvalCode] = []
        for koan in self.eval_koans:
            # Alternatives and decoys are the koan's own text too: a valid fix or a known
            # wrong one of an eval koan must not become training data either.
            texts = [(name, getattr(koan, name)) for name in EVAL_FIELDS]
            texts += [(f"alternatives[{i}]", program.code) for i, program in enumerate(koan.alternatives)]
            texts += [(f"decoys[{i}]", program.code) for i, program in enumerate(koan.decoys)]
            for name, text in texts:
                tokens = normalized_tokens(text)
                if tokens:
                    indexed = _Indexed(tokens)
                    indexed.starts(SHINGLE_K)  # the level almost every comparison needs
                    self._codes.append(_EvalCode(koan.id, name, indexed))

    def similarity_limit(self, eval_field: str) -> float:
        return self.max_tests_similarity if eval_field == "tests" else self.max_similarity

    def exceeds(self, overlap: Overlap) -> bool:
        """Whether the overlap is over a threshold (the candidate would be refused)."""
        if overlap.longest_run >= self.max_run or overlap.similarity >= self.similarity_limit(overlap.eval_field):
            return True
        return (overlap.eval_field == "tests" and overlap.similarity >= self.edited_tests_similarity
                and overlap.longest_run >= self.edited_tests_run)

    @property
    def limits(self) -> str:
        """The refusal rule, in the words the error and the audit print."""
        return (f"similarity >= {self.max_similarity:.2f} (eval tests: {self.max_tests_similarity:.2f}, or "
                f"{self.edited_tests_similarity:.2f} with a run >= {self.edited_tests_run} tokens) "
                f"or a run >= {self.max_run} tokens")

    def _severity(self, overlap: Overlap) -> tuple:
        return (self.exceeds(overlap), overlap.similarity, overlap.longest_run)

    def overlaps(self, code: str, *, label: str = "candidate") -> list[Overlap]:
        """The overlap of `code` with every eval field, in corpus order."""
        own = _Indexed(normalized_tokens(code))
        result = []
        for ev in self._codes:
            other = ev.code
            shared = len(own.shingles & other.shingles)
            similarity = shared / max(min(len(own.shingles), len(other.shingles)), MIN_SHINGLES)
            result.append(Overlap(
                ev.koan, ev.field, label, round(similarity, 4), own.longest_run(other),
                len(other.tokens), len(own.tokens),
            ))
        return result

    def worst(self, code: str, *, label: str = "candidate") -> Overlap:
        """The worst overlap over all eval koans and fields: one over a threshold first,
        then the highest similarity, then the longest run."""
        found = self.overlaps(code, label=label)
        if not found:  # no eval koans
            return Overlap("", "", label, 0.0, 0, 0, len(normalized_tokens(code)))
        return max(found, key=self._severity)

    def check(self, code: str, *, label: str) -> Overlap:
        """The worst overlap; raise LeakageError when it is over a threshold."""
        overlap = self.worst(code, label=label)
        if self.exceeds(overlap):
            raise LeakageError(overlap, self.limits)
        return overlap

    def check_record(self, record: dict, *, label: str) -> list[Overlap]:
        """Check every code string of a training record (`record_code`); return the worst
        overlap of each, or raise LeakageError for the first over a threshold."""
        return [self.check(code, label=f"{label} {name}") for name, code in record_code(record)]


def record_code(record: dict) -> list[tuple[str, str]]:
    """The code strings of a training record, as (name, code):

    * ``code``: a dict of name -> code (variant records: buggy, fixed, tests; SFT: buggy,
      fixed; DPO: chosen, rejected), or one string;
    * ``chosen`` / ``rejected`` (preference answers), ``completion``, ``response`` and
      ``prompt``, and the content of each message of ``messages`` or of a ``prompt``
      that is a list of chat messages: texts that may hold a fenced ```rust block -- the
      code `extract_code` takes from them, or the raw text when it finds none.
    """
    found: list[tuple[str, str]] = []
    code = record.get("code")
    if isinstance(code, str):
        found.append(("code", code))
    elif isinstance(code, dict):
        found.extend((f"code.{name}", value) for name, value in code.items() if isinstance(value, str))
    for name in ("chosen", "rejected", "completion", "response", "prompt", "messages"):
        value = record.get(name)
        if isinstance(value, str):
            found.append((name, extract_code(value) or value))
        elif isinstance(value, list):
            for i, message in enumerate(value):
                if isinstance(message, dict) and isinstance(message.get("content"), str):
                    found.append((f"{name}[{i}]", extract_code(message["content"]) or message["content"]))
    return found


@dataclass
class AuditReport:
    records: int
    overlaps: list[Overlap]  # the worst overlap of each record that has code, in record order
    leaks: list[Overlap]  # those over a threshold
    without_code: list[str]  # labels of records with no code string at all
    highest_similarity: float
    longest_run: int
    limits: str  # the guard's refusal rule (LeakageGuard.limits)
    coverage: dict[str, int] = field(default_factory=dict)  # eval pattern -> records with it
    uncovered: list[str] = field(default_factory=list)  # eval patterns without records

    @property
    def over_threshold(self) -> int:
        return len(self.leaks)


def _metadata(record: dict) -> dict:
    metadata = record.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _record_label(index: int, record: dict) -> str:
    """`#index source_koan/variant` (SFT, DPO) or `#index id` (variant records)."""
    metadata = _metadata(record)
    parts = [str(metadata[key]) for key in ("source_koan", "variant") if metadata.get(key)]
    if not parts and record.get("id"):
        parts = [str(record["id"])]
    return f"#{index} {'/'.join(parts)}" if parts else f"#{index}"


def _record_pattern(record: dict):
    return _metadata(record).get("pattern", record.get("pattern"))


def audit(records: list[dict], guard: LeakageGuard, eval_koans: list[Koan]) -> AuditReport:
    """The worst overlap of every record (without raising), and how many records each
    eval pattern has (`record["metadata"]["pattern"]`, or `record["pattern"]` for
    variant records)."""
    overlaps, without_code = [], []
    for index, record in enumerate(records):
        label = _record_label(index, record)
        worst = [guard.worst(code, label=f"{label} {name}") for name, code in record_code(record)]
        if worst:
            overlaps.append(max(worst, key=guard._severity))
        else:
            without_code.append(label)
    patterns = sorted({k.pattern for k in eval_koans})
    coverage = dict.fromkeys(patterns, 0)
    for record in records:
        pattern = _record_pattern(record)
        if pattern in coverage:
            coverage[pattern] += 1
    return AuditReport(
        records=len(records),
        overlaps=overlaps,
        leaks=[o for o in overlaps if guard.exceeds(o)],
        without_code=without_code,
        highest_similarity=max((o.similarity for o in overlaps), default=0.0),
        longest_run=max((o.longest_run for o in overlaps), default=0),
        limits=guard.limits,
        coverage=coverage,
        uncovered=[p for p in patterns if coverage[p] == 0],
    )


def render_audit(report: AuditReport, fmt: str = "text") -> str:
    """The audit as plain text or markdown: the overlap summary and the 10 worst
    records, records per eval pattern, and the eval patterns without records."""
    if fmt not in ("text", "markdown"):
        raise ValueError(f"unknown audit format {fmt!r}; use 'text' or 'markdown'")
    markdown = fmt == "markdown"
    table_format = "github" if markdown else "simple"

    def heading(title: str) -> str:
        return f"## {title}" if markdown else f"{title}\n{'-' * len(title)}"

    summary = [
        ("records", report.records),
        ("records with code", len(report.overlaps)),
        ("over threshold", report.over_threshold),
        ("highest similarity", f"{report.highest_similarity:.3f}"),
        ("longest shared run (tokens)", report.longest_run),
    ]
    out = [heading("Leakage"), f"Refused when {report.limits} against any eval koan.",
           tabulate(summary, headers=["", "value"], tablefmt=table_format, disable_numparse=True)]
    if report.without_code:
        out.append(f"Records without code: {', '.join(report.without_code)}")
    leaked = {id(o) for o in report.leaks}
    worst = sorted(report.overlaps, key=lambda o: (id(o) in leaked, o.similarity, o.longest_run), reverse=True)[:10]
    if worst:
        rows = [(o.candidate_label, o.eval_koan, o.eval_field, f"{o.similarity:.3f}", o.longest_run,
                 "LEAK" if id(o) in leaked else "ok") for o in worst]
        out.append(heading(f"Worst overlaps ({len(worst)} of {len(report.overlaps)})"))
        out.append(tabulate(rows, headers=["record", "eval koan", "field", "similarity", "run", "verdict"],
                            tablefmt=table_format, disable_numparse=True))
    out.append(heading("Coverage of eval patterns"))
    out.append(tabulate(list(report.coverage.items()), headers=["eval pattern", "records"], tablefmt=table_format))
    out.append(heading("Uncovered eval patterns"))
    out.append("\n".join(f"- {p}" for p in report.uncovered) if report.uncovered
               else "None: every eval pattern has training records.")
    return "\n\n".join(out) + "\n"
