"""This run against a baseline run: per-koan changes, provenance mismatches, the gate
and the forgetting matrix.

A baseline is a run file (`--sleepy-save-baseline` writes one). Each strategy of this
run is compared with the baseline's strategy of the same name, or, when the baseline
does not hold it, with the baseline's `baseline` strategy (its first strategy if it
has no `baseline`); `Reference.note` says so.

A koan's state in one run is its pass rate over its samples; it is "passing" when the
koan was solved in at least half its samples. With one sample a koan is gained (failed
-> solved) or lost (solved -> failed). With several, a gain or loss counts only when it
is significant: a loss is a one-sided Fisher exact test of a drop at `alpha`, a gain
the same test of a rise. A koan whose state flipped without a significant change is
shown as it is, "lost (not significant)" or "gained (not significant)", never as kept.
Koans whose content changed since the baseline (their digest differs) and koans new
since the baseline are never gains or losses: they are listed apart.

Too few samples for any single koan: with n samples on each side, the smallest
one-sided Fisher p a koan can reach (all n passed, then none) is 1 / C(2n, n): 1/6 for
2 samples, 1/20 = 0.05 for 3, 1/70 for 4. When that is not below `alpha`, no koan can
ever count as gained or lost, and the gate says so and decides instead by the paired
sign test over koans (`strategy_sign_test`): the koans whose pass rate fell against
those whose rate rose, exact two-sided.

The gate (`--sleepy-gate`): `any` fails on any loss; `significant` fails only when a
strategy's losses outnumber its gains and the exact McNemar test on the two counts
gives p < alpha. When per-koan changes cannot be significant (above), both fail only
when the sign test finds a significant fall. `--sleepy-fail-under` adds a floor on each
strategy's pass rate, and items that errored always fail the gate (their numbers are
unknown).

The forgetting matrix: rows are koans, the first column is the reference (the
baseline's reference strategy, or without a baseline this run's first strategy) and
then one column per strategy (or strategy:variant). Cells: `P` kept passing, `.` kept
failing, `+` gained, `-` lost, `+?` gained (not significant), `-?` lost (not
significant), `~` koan changed or new (not compared), blank not run.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from ..corpus.suites import DRAFT, UNVERSIONED
from .runfile import ERROR, Outcome, RunFile
from ..stats import exact_mcnemar, fisher_drop

__all__ = [
    "KoanState", "KoanChange", "Reference", "Mismatch", "BaselineComparison", "ForgettingMatrix",
    "GateResult", "evaluate_gate", "koan_states", "forgetting_matrix", "baseline_columns", "GAIN", "LOSS", "KEPT_PASS",
    "KEPT_FAIL", "NOT_COMPARED", "GAIN_NOT_SIGNIFICANT", "LOSS_NOT_SIGNIFICANT", "SYMBOL_NAMES",
    "smallest_koan_p", "koan_changes_can_be_significant", "strategy_sign_test", "SignTest",
]

KEPT_PASS, KEPT_FAIL, GAIN, LOSS, NOT_COMPARED = "P", ".", "+", "-", "~"
GAIN_NOT_SIGNIFICANT, LOSS_NOT_SIGNIFICANT = "+?", "-?"
SYMBOL_NAMES = {
    KEPT_PASS: "kept passing", KEPT_FAIL: "kept failing", GAIN: "gained", LOSS: "lost",
    GAIN_NOT_SIGNIFICANT: "gained (not significant)", LOSS_NOT_SIGNIFICANT: "lost (not significant)",
    NOT_COMPARED: "koan changed or new (not compared)",
}


@dataclass(frozen=True)
class KoanState:
    passed: int
    total: int
    digest: str
    reason: str = ""  # the failure reason of the last failing sample

    @property
    def rate(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def passing(self) -> bool:
        return self.total > 0 and 2 * self.passed >= self.total


def koan_states(outcomes: list[Outcome]) -> dict[str, dict[str, KoanState]]:
    """column -> koan -> state, from counted (non-error) outcomes."""
    tally: dict[str, dict[str, list[Outcome]]] = defaultdict(lambda: defaultdict(list))
    for o in outcomes:
        if o.status != ERROR:
            tally[o.column][o.koan].append(o)
    states: dict[str, dict[str, KoanState]] = {}
    for column, koans in tally.items():
        states[column] = {}
        for koan, items in koans.items():
            failing = [o.reason for o in items if not o.solved]
            states[column][koan] = KoanState(sum(o.solved for o in items), len(items), items[0].koan_digest,
                                             failing[-1] if failing else "")
    return states


def change_between(before: KoanState | None, after: KoanState, alpha: float) -> tuple[str, float | None]:
    """The cell for one koan: (symbol, Fisher p-value when samples > 1)."""
    if before is None or before.digest != after.digest:
        return NOT_COMPARED, None
    if before.total == 1 and after.total == 1:
        if before.passed == after.passed:
            return (KEPT_PASS if after.passed else KEPT_FAIL), None
        return (GAIN if after.passed else LOSS), None
    drop = fisher_drop(before.passed, before.total, after.passed, after.total)
    rise = fisher_drop(after.passed, after.total, before.passed, before.total)
    if drop < alpha:
        return LOSS, drop
    if rise < alpha:
        return GAIN, rise
    if before.passing != after.passing:
        return (GAIN_NOT_SIGNIFICANT if after.passing else LOSS_NOT_SIGNIFICANT), min(drop, rise)
    return (KEPT_PASS if after.passing else KEPT_FAIL), min(drop, rise)


def smallest_koan_p(before_total: int, after_total: int) -> float:
    """The smallest one-sided Fisher p one koan can reach with these sample counts."""
    return fisher_drop(before_total, before_total, 0, after_total)


def koan_changes_can_be_significant(changes: list["KoanChange"], alpha: float) -> bool:
    """False when, at these sample counts, no compared koan could ever count as gained or lost."""
    compared = [c for c in changes if c.before is not None and c.symbol != NOT_COMPARED]
    return any(c.before.total == c.after.total == 1 or smallest_koan_p(c.before.total, c.after.total) < alpha
               for c in compared) or not compared


@dataclass(frozen=True)
class SignTest:
    """The paired strategy-level test: koans whose pass rate fell and rose, exact."""

    down: int
    up: int
    p_value: float


def strategy_sign_test(changes: list["KoanChange"]) -> SignTest:
    compared = [c for c in changes if c.before is not None and c.symbol != NOT_COMPARED]
    down = sum(c.after.rate < c.before.rate for c in compared)
    up = sum(c.after.rate > c.before.rate for c in compared)
    return SignTest(down, up, exact_mcnemar(up, down))


@dataclass(frozen=True)
class Reference:
    strategy: str  # the strategy of this run
    baseline_strategy: str  # what it is compared with in the baseline
    note: str = ""  # set when they differ


@dataclass(frozen=True)
class KoanChange:
    koan: str
    strategy: str
    symbol: str  # one of P . + - ~
    before: KoanState | None
    after: KoanState
    p_value: float | None = None


@dataclass(frozen=True)
class Mismatch:
    what: str
    baseline: str
    this_run: str


@dataclass
class BaselineComparison:
    baseline: RunFile
    references: list[Reference]
    changes: list[KoanChange]
    mismatches: list[Mismatch]
    alpha: float

    @classmethod
    def build(cls, baseline: RunFile, outcomes: list[Outcome], provenance: dict, strategies: list[str],
              alpha: float = 0.05) -> "BaselineComparison":
        before_states = koan_states(baseline.outcomes)
        after_states = koan_states(outcomes)
        references = [reference_for(s, baseline_columns(baseline)) for s in strategies]
        changes = []
        for ref in references:
            before = before_states.get(ref.baseline_strategy, {})
            for koan, after in sorted(after_states.get(ref.strategy, {}).items()):
                symbol, p = change_between(before.get(koan), after, alpha)
                changes.append(KoanChange(koan, ref.strategy, symbol, before.get(koan), after, p))
        return cls(baseline, references, changes, provenance_mismatches(baseline, outcomes, provenance), alpha)

    def of(self, strategy: str, symbol: str) -> list[KoanChange]:
        return [c for c in self.changes if c.strategy == strategy and c.symbol == symbol]

    def changed_koans(self) -> list[str]:
        """Koans whose content differs from the baseline's (not new ones)."""
        return sorted({c.koan for c in self.changes if c.symbol == NOT_COMPARED and c.before is not None})

    def new_koans(self) -> list[str]:
        return sorted({c.koan for c in self.changes if c.before is None})

    def reference_state(self, koan: str, strategy: str) -> KoanState | None:
        for c in self.changes:
            if c.koan == koan and c.strategy == strategy:
                return c.before
        return None


def baseline_columns(baseline: RunFile) -> list[str]:
    """The baseline's columns in its own strategy order (the run file's outcomes are
    sorted by name, which is not the order the user gave)."""
    order = [s["name"] for s in baseline.provenance.get("strategies", []) if isinstance(s, dict) and "name" in s]
    columns = list(dict.fromkeys(o.column for o in baseline.outcomes))
    ranked = [c for name in order for c in columns if c == name or c.startswith(f"{name}:")]
    return ranked + [c for c in columns if c not in ranked]


def reference_for(strategy: str, baseline_strategies: list[str]) -> Reference:
    if strategy in baseline_strategies:
        return Reference(strategy, strategy)
    fallback = "baseline" if "baseline" in baseline_strategies else (baseline_strategies or ["baseline"])[0]
    return Reference(strategy, fallback, f"{strategy} is not in the baseline run: compared with its {fallback!r} strategy")


def suite_mismatch(baseline_provenance: dict, suite: dict | None, current: str = "this run") -> str | None:
    """Why `current`, a run of `suite` (a Suite.record()), cannot be compared with the
    baseline, or None. A baseline from before suites were recorded is compared koan by koan."""
    before = baseline_provenance.get("suite")
    if before is None or suite is None or (before["name"], before["digest"]) == (suite["name"], suite["digest"]):
        return None
    if before["name"] == suite["name"] in (UNVERSIONED, DRAFT):
        return None  # an unfrozen set of koans: changed koans are listed apart, koan by koan
    return (f"ran suite {before['name']} (digest {before['digest']}, {before['koans']} koans); {current} is suite "
            f"{suite['name']} (digest {suite['digest']}, {suite['koans']} koans). Runs of different suites are not "
            f"compared: pass --sleepy-suite={before['name']} to compare with it, or record a new baseline on "
            f"{suite['name']}")


def provenance_mismatches(baseline: RunFile, outcomes: list[Outcome], provenance: dict) -> list[Mismatch]:
    """What differs between the runs beyond the strategies being compared."""
    old = baseline.provenance
    rows = []

    def compare(what: str, before, after) -> None:
        if before != after:
            rows.append(Mismatch(what, _short(before), _short(after)))

    compare("rustc", _first_line(old.get("rustc", "")), _first_line(provenance.get("rustc", "")))
    compare("model", old.get("model", {}).get("spec"), provenance.get("model", {}).get("spec"))
    compare("model identity", sorted(old.get("model", {}).get("identities", [])),
            sorted({o.model_identity for o in outcomes if o.model_identity}))
    compare("samples per koan", old.get("options", {}).get("samples"), provenance.get("options", {}).get("samples"))
    for option in ("max-steps", "temperature", "seed"):
        compare(option, old.get("options", {}).get(option), provenance.get("options", {}).get(option))
    compare("sandbox", old.get("sandbox"), provenance.get("sandbox"))
    before = {o.koan: o.koan_digest for o in baseline.outcomes}
    after = {o.koan: o.koan_digest for o in outcomes}
    changed = sorted(k for k in after if k in before and before[k] != after[k])
    if changed:
        rows.append(Mismatch("koan contents", f"{len(changed)} koan(s) differ", ", ".join(changed)))
    missing = sorted(set(before) - set(after))
    if missing:
        # Deleted, deselected or broken since: they silently leave every comparison.
        rows.append(Mismatch("koans not in this run", ", ".join(missing), f"{len(missing)} missing"))
    return rows


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _short(value) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return "-" if value is None else str(value)


def too_few_samples(changes: list[KoanChange], alpha: float) -> str:
    """The plain statement of why no single koan's change can be significant."""
    compared = [c for c in changes if c.before is not None and c.symbol != NOT_COMPARED]
    before = max(c.before.total for c in compared)
    after = max(c.after.total for c in compared)
    samples = f"{after} samples" if before == after else f"{before} and {after} samples"
    return (f"with {samples} per koan no single koan's change can be significant (the smallest one-sided "
            f"Fisher p is {smallest_koan_p(before, after):.3g}, not below alpha {alpha:g})")


@dataclass
class GateResult:
    passed: bool
    lines: list[str] = field(default_factory=list)


def evaluate_gate(outcomes: list[Outcome], comparison: BaselineComparison | None, *, gate: str = "any",
                  alpha: float = 0.05, fail_under: float | None = None, rates: dict[str, float] | None = None
                  ) -> GateResult:
    """Decide the session's exit status from the run's numbers."""
    result = GateResult(passed=True)
    errors = [o for o in outcomes if o.status == ERROR]
    if errors:
        result.passed = False
        result.lines.append(f"FAIL: {len(errors)} item(s) errored; their results are unknown")
    if comparison is not None:
        for ref in comparison.references:
            changes = [c for c in comparison.changes if c.strategy == ref.strategy]
            if not koan_changes_can_be_significant(changes, alpha):
                test = strategy_sign_test(changes)
                failing = test.p_value < alpha and test.down > test.up
                verdict = "significant" if failing else "not significant"
                result.lines.append(
                    f"{'FAIL' if failing else 'ok'}: {ref.strategy}: {too_few_samples(changes, alpha)}; the paired "
                    f"sign test over koans decides: {test.down} koan(s) fell, {test.up} rose against the baseline's "
                    f"{ref.baseline_strategy} (p = {test.p_value:.3g}, {verdict} at alpha {alpha:g}; gate: {gate})")
                result.passed &= not failing
                continue
            losses = comparison.of(ref.strategy, LOSS)
            gains = comparison.of(ref.strategy, GAIN)
            p = exact_mcnemar(len(gains), len(losses))
            significant = p < alpha and len(losses) > len(gains)
            failing = bool(losses) if gate == "any" else significant
            verdict = "significant" if significant else "not significant"
            head = "FAIL" if failing else "ok"
            result.lines.append(
                f"{head}: {ref.strategy}: {len(losses)} regression(s), {len(gains)} gain(s) against the baseline's "
                f"{ref.baseline_strategy} (exact McNemar p = {p:.3g}, {verdict} at alpha {alpha:g}; gate: {gate})")
            result.passed &= not failing
    if fail_under is not None:
        for strategy, rate in (rates or {}).items():
            failing = rate < fail_under
            result.lines.append(f"{'FAIL' if failing else 'ok'}: {strategy}: pass rate {100 * rate:.1f}% "
                                f"{'<' if failing else '>='} floor {100 * fail_under:.1f}%")
            result.passed &= not failing
    return result


@dataclass
class ForgettingMatrix:
    koans: list[str]
    columns: list[str]  # the reference column first
    cells: dict[tuple[str, str], str]  # (koan, column) -> symbol; missing = not run

    def cell(self, koan: str, column: str) -> str:
        return self.cells.get((koan, column), "")

    def changed_rows(self) -> list[str]:
        changed = (GAIN, LOSS, GAIN_NOT_SIGNIFICANT, LOSS_NOT_SIGNIFICANT)
        return [k for k in self.koans if any(self.cell(k, c) in changed for c in self.columns[1:])]

    def totals(self) -> dict[str, Counter]:
        return {c: Counter(self.cell(k, c) for k in self.koans if self.cell(k, c)) for c in self.columns}

    def to_dict(self) -> dict:
        return {"columns": self.columns,
                "rows": {k: [self.cell(k, c) for c in self.columns] for k in self.koans}}

    @classmethod
    def from_dict(cls, data: dict) -> "ForgettingMatrix":
        columns = list(data["columns"])
        cells = {(k, c): v for k, row in data["rows"].items() for c, v in zip(columns, row) if v}
        return cls(sorted(data["rows"]), columns, cells)


def forgetting_matrix(outcomes: list[Outcome], order: list[str], comparison: BaselineComparison | None = None,
                      alpha: float = 0.05) -> ForgettingMatrix:
    """Rows = koans; columns = the reference, then every column of this run in `order`
    (strategies; their variants follow them)."""
    after = koan_states(outcomes)
    columns = [c for s in order for c in sorted(after, key=lambda c: (c != s, c)) if c == s or c.startswith(f"{s}:")]
    columns += sorted(set(after) - set(columns))
    if comparison is not None:
        before_all = koan_states(comparison.baseline.outcomes)
        known = baseline_columns(comparison.baseline)
        reference = reference_for(order[0] if order else "baseline", known).baseline_strategy
        label = f"baseline run: {reference}"
        before_of = {c: before_all.get(reference_for(c, known).baseline_strategy, {}) for c in columns}
        reference_states = before_all.get(reference, {})
    else:
        if not columns:
            return ForgettingMatrix([], [], {})
        label = columns[0]
        reference_states = after[label]
        before_of = {c: reference_states for c in columns[1:]}
        columns = columns[1:]
    cells = {}
    for koan, state in reference_states.items():
        cells[(koan, label)] = KEPT_PASS if state.passing else KEPT_FAIL
    for column in columns:
        for koan, state in after[column].items():
            cells[(koan, column)] = change_between(before_of[column].get(koan), state, alpha)[0]
    koans = sorted({k for k, _ in cells})
    return ForgettingMatrix(koans, [label, *columns], cells)
