"""Routing: which koan pattern a candidate's diagnostics look like.

"Routed" strategies keep one adapter per koan pattern (`use_after_move`,
`missing_hash_derive`, `map_err`, ...) and must decide, for a candidate they are
about to repair, which adapter to apply, or none (the base model). The router makes
that decision from the candidate's **verdict only**: `Router.route(verdict)` never
receives a koan, its id, title, file name or path, so it cannot key on them (the
earlier system's classifier could; see `LESSONS.md`). `route` refuses anything that
is not a `Verdict`.

Of a verdict it reads `diagnostics`, `compiled` and `passed`, nothing else: not
`reason` or `failed_tests` (they name the hidden tests, which are koan-specific),
not `test_output`.

Features (a set per verdict: presence, not counts, so five copies of one error
weigh what one does). Only error-level diagnostics contribute; warnings do not.

- `code:E0382` -- the code of each error (`code:<no code>` for errors without one,
  as `diagnostics.error_codes` names them).
- `msg:<word>` -- the words of each error's message *template*: every backticked
  span (`` `name` ``, `` `Vec<u32>` ``) becomes the placeholder `<span>`, file
  paths (`candidate.rs:13:36`) become `<path>`, numbers become `<n>`, the text is
  lowercased and split into whole word tokens (`[a-z_][a-z0-9_]*`, with `'s`/`'t`
  kept: `doesn't`). Features are whole tokens compared for equality; nothing is ever
  matched as a substring, so a message saying "word" yields `msg:word`, never an
  `ord`-anything.
- `note:<word>` -- the same for each error's child messages (rustc's notes and
  helps; the level, `note` or `help`, is the first word).
- `std:<Name>` -- well-known standard-library names (a fixed list, `STD_NAMES`:
  traits such as `Clone`, `Ord`, `Hash`, `Display`, `Send`, `From`, types such as
  `Option`, `Result`, `Rc`) found as whole identifiers inside the backticked spans of
  messages and notes. The templates erase every span, which leaves "the trait bound
  `<span>` is not satisfied" identical for a missing `Clone` and a missing `Ord`;
  these names restore that distinction without letting the program's own
  identifiers (struct and variable names, which differ from koan to koan) in.
  `PartialOrd` is one identifier: it gives `std:PartialOrd`, never `std:Ord`.
- `test` -- the candidate compiled but did not pass (hidden tests failed, timed out
  or crashed): a logic bug.

Model: nearest centroid with cosine similarity over TF-IDF weights, trained on
(verdict, pattern) pairs from the `train` split only. Each training verdict's
feature set becomes a vector of smoothed IDF weights (`ln((1 + N) / (1 + df)) + 1`,
N training verdicts, df those having the feature), normalised to length 1; a
pattern's centroid is the normalised mean of its verdicts' vectors. A candidate's
score for a pattern is the cosine between its vector (features unseen in training
are ignored) and the centroid: 1 means the same features with the same weights, 0
nothing in common. The decision shows the top-3 scores and the shared features that
contributed most (`evidence`), so every route can be explained.

Nearest centroid was chosen over multinomial naive Bayes by leave-one-out on the
train split (the top-scoring pattern was right for 8 of the 10 koans whose pattern
has two train koans, against 6 of 10), and
because its confidence is an absolute similarity: naive Bayes normalises over the
known patterns, so a candidate unlike all of them still gets a confident posterior.

No route (pattern None: the base model) when

1. the verdict has no features (it passed, or failed without diagnostics, such as
   tampering);
2. none of its error codes (`test` for a logic bug) occurred in training: an
   adapter never trained on this kind of error has no business repairing it;
3. the best score is below `THRESHOLD` (0.30), a bit below the weakest correct
   route in leave-one-out on the train split (0.36). A candidate whose only
   familiar feature is its error code scores the code's weight in the centroid:
   0.30 to 0.45 for codes that one pattern owns (E0382, E0502, E0515, E0597, ...),
   which are still routed, and 0.17 to 0.19 for codes many patterns share (E0277,
   E0599, E0369), which are not: there the message has to match too. The threshold
   does not tell a new pattern from a known one (in that leave-one-out, koans of
   patterns left without training examples scored 0.32 to 0.87 against the wrong
   pattern): a new pattern needs training koans;
4. the best score is tied with the second (within 1e-9): the diagnostics do not
   tell the patterns apart (the five logic-bug patterns all reduce to `test`), and
   picking one by name would be arbitrary.

`build_router(train_koans, verifier)` verifies each train koan's buggy program with
the real (cached) verifier and trains on the verdicts; it refuses koans of any other
split. A router is saved as JSON with sorted keys, and `Router.digest()` is the
SHA-256 of that JSON: training twice on the same verdicts gives the same file and
digest, whatever the order of the examples.

`confusion(decisions)` tabulates (declared pattern, routed pattern or None) pairs;
`render_confusion(table, fmt)` draws it as text or Markdown with tabulate.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from tabulate import tabulate

from .stats import wilson_interval
from .verify.verifier import Verdict

__all__ = [
    "THRESHOLD",
    "STD_NAMES",
    "FORMAT",
    "template",
    "words",
    "features",
    "RouteDecision",
    "Router",
    "build_router",
    "ConfusionRow",
    "ConfusionTable",
    "confusion",
    "render_confusion",
    "RouterEvaluation",
    "evaluate_router",
]

FORMAT = "pytest-sleepy-router"
VERSION = 1  # bump when features or the model change: saved routers of another version are refused
THRESHOLD = 0.30
TIE = 1e-9
TOP = 3
EVIDENCE = 5
NO_CODE = "<no code>"
TEST = "test"

# Standard-library names worth keeping from backticked spans (whole identifiers only).
STD_NAMES = frozenset("""
    Clone Copy Debug Display Default PartialEq Eq PartialOrd Ord Hash Send Sync Sized
    From Into TryFrom TryInto FromStr FromIterator IntoIterator Iterator ToString
    Add Sub Mul Div Rem Neg AddAssign SubAssign Fn FnMut FnOnce Error FromResidual Deref AsRef
    Option Result Some None Ok Err String str Vec HashMap HashSet BTreeMap BTreeSet VecDeque
    Box Rc Arc RefCell Cell Mutex ParseIntError ParseFloatError
    derive move mut static
""".split())

_BACKTICKED = re.compile(r"`[^`]*`")
_PATH = re.compile(r"[\w./-]+\.rs(?::\d+)*")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")
_WORD = re.compile(r"<span>|<path>|<n>|[a-z_][a-z0-9_]*(?:'[a-z]+)?")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# -- features ---------------------------------------------------------------------------


def template(text: str) -> str:
    """`text` with backticked spans, paths and numbers abstracted, lowercased, spaces
    normalised: "borrow of moved value: `name`" -> "borrow of moved value: <span>"."""
    text = _BACKTICKED.sub(" <span> ", text)
    text = _PATH.sub(" <path> ", text)
    text = _NUMBER.sub(" <n> ", text)
    return " ".join(text.lower().split())


def words(text: str) -> list[str]:
    """The whole-word tokens of `text`'s template, in order."""
    return _WORD.findall(template(text))


def _std_names(text: str) -> set[str]:
    return {name for span in _BACKTICKED.findall(text) for name in _IDENTIFIER.findall(span) if name in STD_NAMES}


def features(verdict: Verdict) -> list[str]:
    """The sorted, distinct routing features of a verdict (see the module docstring)."""
    _require_verdict(verdict)
    found: set[str] = set()
    for diagnostic in verdict.diagnostics:
        if not diagnostic.is_error:
            continue
        found.add(f"code:{diagnostic.code or NO_CODE}")
        found.update(f"msg:{w}" for w in words(diagnostic.message))
        found.update(f"std:{n}" for n in _std_names(diagnostic.message))
        for note in diagnostic.notes:
            found.update(f"note:{w}" for w in words(note))
            found.update(f"std:{n}" for n in _std_names(note))
    if verdict.compiled and not verdict.passed:
        found.add(TEST)
    return sorted(found)


def _codes(found: Iterable[str]) -> set[str]:
    """The error codes among features, with `test` standing for a logic bug."""
    return {f[len("code:"):] for f in found if f.startswith("code:")} | ({TEST} & set(found))


def _require_verdict(verdict: object) -> None:
    if not isinstance(verdict, Verdict):
        raise TypeError(f"the router decides from a Verdict only, not from {type(verdict).__name__}")


# -- the model --------------------------------------------------------------------------


@dataclass
class RouteDecision:
    pattern: str | None  # None: no route, use the base model
    confidence: float  # the best pattern's cosine score (0 when there is none)
    scores: list[tuple[str, float]]  # the top-3 (pattern, score), best first
    features: list[str]  # the verdict's features, sorted
    reason: str = ""  # why this decision, in a few words
    evidence: list[tuple[str, float]] = field(default_factory=list)  # top shared features of the best pattern


class Router:
    """A trained nearest-centroid router; build it with `train`, `build_router` or `load`."""

    def __init__(self, idf: dict[str, float], centroids: dict[str, dict[str, float]], counts: dict[str, int],
                 codes: Sequence[str], threshold: float = THRESHOLD):
        self.idf = dict(sorted(idf.items()))
        self.centroids = {p: dict(sorted(c.items())) for p, c in sorted(centroids.items())}
        self.counts = dict(sorted(counts.items()))
        self.codes = sorted(codes)
        self.threshold = threshold

    @property
    def patterns(self) -> list[str]:
        return list(self.centroids)

    # -- training ---------------------------------------------------------------------

    @classmethod
    def train(cls, examples: Sequence[tuple[Verdict, str]], *, threshold: float = THRESHOLD) -> "Router":
        """Train on (verdict, pattern) pairs. Verdicts without features teach nothing and
        are skipped. The result does not depend on the order of the examples."""
        labelled = []
        for verdict, pattern in examples:
            _require_verdict(verdict)
            if not isinstance(pattern, str) or not pattern:
                raise ValueError(f"a training label must be a pattern name, not {pattern!r}")
            found = features(verdict)
            if found:
                labelled.append((pattern, found))
        if not labelled:
            raise ValueError("no training example has any feature: nothing to route by")
        labelled.sort()  # summation order, hence every float, independent of the input order
        n = len(labelled)
        df = Counter(f for _, found in labelled for f in found)
        idf = {f: _round(math.log((1 + n) / (1 + d)) + 1) for f, d in df.items()}
        sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for pattern, found in labelled:
            for f, w in _unit({f: idf[f] for f in found}).items():
                sums[pattern][f] += w
        centroids = {p: {f: _round(w) for f, w in _unit(s).items()} for p, s in sums.items()}
        counts = Counter(p for p, _ in labelled)
        codes = set().union(*(_codes(found) for _, found in labelled))
        return cls(idf, centroids, dict(counts), sorted(codes), threshold)

    # -- routing ----------------------------------------------------------------------

    def route(self, verdict: Verdict) -> RouteDecision:
        """The pattern whose adapter should repair this candidate, or None (base model)."""
        _require_verdict(verdict)
        found = features(verdict)
        if not found:
            return RouteDecision(None, 0.0, [], found, "no features: nothing to route by")
        vector = self._vector(found)
        ranked = sorted(((self._score(vector, c), p) for p, c in self.centroids.items()), key=lambda t: (-t[0], t[1]))
        scores = [(p, round(s, 6)) for s, p in ranked[:TOP]]
        best, pattern = ranked[0]
        confidence = round(best, 6)
        codes = _codes(found)
        if not codes & set(self.codes):
            return RouteDecision(None, confidence, scores, found,
                                 f"error codes never seen in training: {', '.join(sorted(codes))}")
        if best < self.threshold:
            return RouteDecision(None, confidence, scores, found,
                                 f"best score {best:.2f} ({pattern}) below the threshold {self.threshold:.2f}")
        if len(ranked) > 1 and best - ranked[1][0] <= TIE:
            tied = [p for s, p in ranked if best - s <= TIE]
            return RouteDecision(None, confidence, scores, found, f"tie between {', '.join(tied)}")
        centroid = self.centroids[pattern]
        evidence = sorted(((f, round(w * centroid[f], 6)) for f, w in vector.items() if f in centroid),
                          key=lambda t: (-t[1], t[0]))[:EVIDENCE]
        return RouteDecision(pattern, confidence, scores, found, f"nearest pattern, score {best:.2f}", evidence)

    def _vector(self, found: Iterable[str]) -> dict[str, float]:
        return _unit({f: self.idf[f] for f in found if f in self.idf})

    @staticmethod
    def _score(vector: dict[str, float], centroid: dict[str, float]) -> float:
        return sum(w * centroid.get(f, 0.0) for f, w in sorted(vector.items()))

    # -- persistence ------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "threshold": self.threshold, "codes": self.codes,
                "counts": self.counts, "idf": self.idf, "centroids": self.centroids}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=1, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> "Router":
        if data.get("format") != FORMAT:
            raise ValueError(f"not a saved router (format {data.get('format')!r}, expected {FORMAT!r})")
        if data.get("version") != VERSION:
            raise ValueError(f"router version {data.get('version')!r} is not this code's version {VERSION}: retrain it")
        return cls(data["idf"], data["centroids"], data["counts"], data["codes"], data["threshold"])

    def digest(self) -> str:
        """SHA-256 of the saved JSON: the router's content address."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path | str) -> "Router":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _unit(vector: dict[str, float]) -> dict[str, float]:
    norm = math.sqrt(sum(w * w for _, w in sorted(vector.items())))
    return {f: w / norm for f, w in vector.items()} if norm else {}


def _round(value: float) -> float:
    return round(value, 12)


def build_router(train_koans, verifier, *, threshold: float = THRESHOLD) -> Router:
    """Verify each train koan's buggy program (real verifier, cached) and train on the
    verdicts, labelled with the koans' patterns. Refuses koans of any other split."""
    train_koans = list(train_koans)
    leaked = sorted(k.id for k in train_koans if k.split != "train")
    if leaked:
        raise ValueError(f"router: refusing to train on non-train koans: {', '.join(leaked)}")
    if not train_koans:
        raise ValueError("router: no train koans to learn from")
    examples = [(verifier.verify_candidate(koan, koan.buggy), koan.pattern) for koan in train_koans]
    return Router.train(examples, threshold=threshold)


# -- evaluation -------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfusionRow:
    declared: str
    routed: str | None  # None: unrouted (base model)
    count: int

    @property
    def correct(self) -> bool:
        return self.routed == self.declared


@dataclass
class ConfusionTable:
    rows: list[ConfusionRow]  # sorted by declared pattern, then routed (unrouted last)
    total: int
    correct: int
    unrouted: int
    unrouted_by_pattern: dict[str, int]  # declared pattern -> decisions routed nowhere

    @property
    def accuracy(self) -> float:
        """Share of decisions routed to the declared pattern (unrouted ones count as wrong)."""
        return self.correct / self.total if self.total else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.total)

    @property
    def confusions(self) -> list[ConfusionRow]:
        """The rows routed to another pattern, most frequent first."""
        wrong = [r for r in self.rows if r.routed is not None and not r.correct]
        return sorted(wrong, key=lambda r: (-r.count, r.declared, r.routed))


def confusion(decisions: Iterable[tuple[str, str | None]]) -> ConfusionTable:
    """Tabulate (declared pattern, routed pattern or None) pairs."""
    counts = Counter((declared, routed) for declared, routed in decisions)
    rows = [ConfusionRow(d, r, n) for (d, r), n in
            sorted(counts.items(), key=lambda item: (item[0][0], item[0][1] is None, item[0][1] or ""))]
    unrouted_by_pattern = {r.declared: r.count for r in rows if r.routed is None}
    return ConfusionTable(
        rows=rows,
        total=sum(counts.values()),
        correct=sum(r.count for r in rows if r.correct),
        unrouted=sum(unrouted_by_pattern.values()),
        unrouted_by_pattern=unrouted_by_pattern,
    )


UNROUTED = "(unrouted: base model)"


def render_confusion(table: ConfusionTable, fmt: str = "text") -> str:
    """The table and its accuracy line, as `text` (terminal) or `markdown` (GitHub)."""
    if fmt not in ("text", "markdown"):
        raise ValueError(f"fmt must be 'text' or 'markdown', got {fmt!r}")
    tablefmt = "simple" if fmt == "text" else "github"
    body = tabulate([[r.declared, r.routed or UNROUTED, r.count, "yes" if r.correct else "no"] for r in table.rows],
                    headers=["declared pattern", "routed pattern", "count", "correct"],
                    tablefmt=tablefmt, disable_numparse=True)
    low, high = table.interval
    summary = (f"routed to the declared pattern: {table.correct} of {table.total} "
               f"({100 * table.accuracy:.1f}%, 95% CI {100 * low:.1f}-{100 * high:.1f}%); "
               f"unrouted (base model): {table.unrouted}")
    return f"{body}\n\n{summary}"


@dataclass
class RouterEvaluation:
    """A router's decisions on koans with known patterns (the router sees only verdicts)."""

    decisions: list[tuple[str, str, RouteDecision]]  # (koan id, declared pattern, decision)
    table: ConfusionTable

    @property
    def accuracy(self) -> float:
        return self.table.accuracy


def evaluate_router(router: Router, koans, verifier) -> RouterEvaluation:
    """Route each koan's buggy verdict; the koan's id and pattern stay on this side."""
    decisions = []
    for koan in koans:
        decision = router.route(verifier.verify_candidate(koan, koan.buggy))
        decisions.append((koan.id, koan.pattern, decision))
    return RouterEvaluation(decisions, confusion((pattern, d.pattern) for _, pattern, d in decisions))
