"""Tables for a run, drawn with tabulate: the terminal summary, `sleepy report`'s text
and Markdown, and the JSON form of the same numbers.

`RunReport` gathers what one report shows; `render(report, fmt)` draws it as `text`
(terminal) or `markdown` (GitHub tables, fit for a PR comment).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tabulate import tabulate

from .comparison import (GAIN, GAIN_NOT_SIGNIFICANT, KEPT_FAIL, KEPT_PASS, LOSS, LOSS_NOT_SIGNIFICANT, NOT_COMPARED,
                         SYMBOL_NAMES, BaselineComparison, ForgettingMatrix, GateResult, evaluate_gate,
                         forgetting_matrix, koan_changes_can_be_significant, too_few_samples)
from .continual import AccuracyMatrix, Curriculum, accuracy_matrix, render_continual
from .runfile import ERROR, Outcome, RunFile, RunSummary, is_underpowered, power_of
from ..stats import exact_mcnemar

__all__ = ["RunReport", "build_report", "render", "render_summary", "report_dict", "MATRIX_LEGEND"]

MATRIX_LEGEND = (", ".join(f"{symbol} {name}" for symbol, name in SYMBOL_NAMES.items()) + ", blank not run; "
                 "with samples, + and - need a significant change (one-sided Fisher exact); a koan whose state "
                 "(solved in at least half the samples) flipped without one is +? or -?")
# The order in which matrix totals and count columns list the symbols.
_SYMBOL_ORDER = (KEPT_PASS, GAIN, GAIN_NOT_SIGNIFICANT, LOSS, LOSS_NOT_SIGNIFICANT, KEPT_FAIL, NOT_COMPARED)


@dataclass
class RunReport:
    summary: RunSummary
    model: str = ""
    comparison: BaselineComparison | None = None
    matrix: ForgettingMatrix | None = None
    gate: GateResult | None = None
    continual: list[AccuracyMatrix] = field(default_factory=list)  # one per strategy with training stages
    routing: dict = field(default_factory=dict)  # routed strategy -> router ConfusionTable
    suite: str = ""  # "eval-v1 (digest ...)": the koans the rates are measured on
    # Added to the pass-rate table by pytest_sleepy_summary_columns hooks: (header, {strategy: text}).
    columns: list[tuple[str, dict[str, str]]] = field(default_factory=list)


def build_report(outcomes: list[Outcome], provenance: dict, *, strategies: list[str], model: str = "",
                 baseline: RunFile | None = None, alpha: float = 0.05, gate: str | None = None,
                 fail_under: float | None = None) -> RunReport:
    """Everything a report shows, from outcomes and provenance (a live session's or a
    run file's). `gate` (any|significant) or `fail_under` also evaluate the gate."""
    summary = RunSummary.from_outcomes(outcomes, strategies)
    columns = [s.strategy for s in summary.strategies]  # strategies, and strategy:variant columns
    comparison = None
    if baseline is not None:
        comparison = BaselineComparison.build(baseline, outcomes, provenance, columns, alpha)
    matrix = forgetting_matrix(outcomes, strategies, comparison, alpha)
    result = None
    if gate is not None and (baseline is not None or fail_under is not None):
        result = evaluate_gate(outcomes, comparison, gate=gate, alpha=alpha, fail_under=fail_under,
                               rates={s.strategy: s.rate for s in summary.strategies if s.koans})
    continual = []
    curriculum = Curriculum.from_provenance(provenance)
    if curriculum is not None:
        staged = [s for s in strategies if any(o.strategy == s and o.stage is not None for o in outcomes)]
        continual = [accuracy_matrix(outcomes, curriculum, strategy) for strategy in staged]
    routing = {}
    for strategy in strategies:
        decisions = [(o.pattern, o.route or None) for o in outcomes
                     if o.strategy == strategy and o.route is not None and o.status != ERROR]
        if decisions:
            from ..router import confusion

            routing[strategy] = confusion(decisions)
    suite = provenance.get("suite")
    return RunReport(summary, model, comparison, matrix, result, continual, routing,
                     f"{suite['name']} (digest {suite['digest']})" if suite else "")


def report_dict(report: RunReport) -> dict:
    """The report's numbers as JSON-able data (`sleepy report --format json`)."""
    data = {"summary": report.summary.to_dict(),
            "matrix": report.matrix.to_dict() if report.matrix else None}
    if report.comparison is not None:
        data["baseline"] = {
            "run_id": report.comparison.baseline.run_id,
            "references": [vars(r) for r in report.comparison.references],
            "changes": [{"koan": c.koan, "strategy": c.strategy, "symbol": c.symbol, "p_value": c.p_value}
                        for c in report.comparison.changes],
            "mismatches": [vars(m) for m in report.comparison.mismatches],
            "changed_koans": report.comparison.changed_koans(),
            "new_koans": report.comparison.new_koans(),
        }
    if report.gate is not None:
        data["gate"] = {"passed": report.gate.passed, "lines": report.gate.lines}
    if report.routing:
        data["routing"] = {s: {"accuracy": t.accuracy, "total": t.total, "correct": t.correct, "unrouted": t.unrouted,
                               "rows": [vars(r) for r in t.rows]} for s, t in report.routing.items()}
    if report.continual:
        data["continual"] = [{"matrix": m.to_dict(), "metrics": m.metrics().to_dict()} for m in report.continual]
    return data


def render(report: RunReport, fmt: str = "text", matrix_rows: str = "changed") -> str:
    style = _Style(fmt)
    sections = [_strategy_table(report.summary, report.model, report.suite, style, report.columns)]
    if report.summary.families:
        sections.append(_family_table(report.summary, style))
    if report.summary.comparisons:
        sections.append(_comparison_table(report.summary, style))
    if report.summary.errors:
        lines = [style.heading(f"{len(report.summary.errors)} item(s) errored and are not counted in any rate")]
        lines += [style.item(f"{o.koan}[{o.strategy}] sample {o.sample}: {o.reason}") for o in report.summary.errors]
        sections.append("\n".join(lines))
    if report.comparison is not None:
        sections.extend(_baseline_sections(report.comparison, style))
    if report.matrix is not None and matrix_rows != "off" and len(report.matrix.columns) > 1:
        sections.append(_matrix_table(report.matrix, matrix_rows, style))
    for strategy, table in report.routing.items():
        from ..router import render_confusion

        title = f"router of {strategy}: routed pattern against the koan's declared pattern (first step)"
        sections.append(f"{style.heading(title)}\n{render_confusion(table, fmt)}")
    for matrix in report.continual:
        title = f"continual learning: {matrix.strategy}" if matrix.strategy else "continual learning"
        sections.append(f"{style.heading(title)}\n{render_continual(matrix, matrix.metrics(), fmt)}")
    if report.gate is not None:
        sections.append("\n".join([style.heading("regression gate: " + ("passed" if report.gate.passed else "FAILED")),
                                   *(style.item(line) for line in report.gate.lines)]))
    return "\n\n".join(sections)


def render_summary(summary: RunSummary, *, model: str = "") -> str:
    return render(RunReport(summary, model))


class _Style:
    def __init__(self, fmt: str):
        if fmt not in ("text", "markdown"):
            raise ValueError(f"unknown report format {fmt!r}; use text or markdown")
        self.markdown = fmt == "markdown"
        self.tablefmt = "github" if self.markdown else "simple"

    def heading(self, text: str) -> str:
        return f"### {text}\n" if self.markdown else text

    def item(self, text: str) -> str:
        return f"- {text}" if self.markdown else f"  {text}"

    def table(self, rows, headers) -> str:
        return tabulate(rows, headers, tablefmt=self.tablefmt, disable_numparse=True)


def _strategy_table(summary: RunSummary, model: str, suite: str, style: _Style,
                    columns: list[tuple[str, dict[str, str]]] = ()) -> str:
    ks = sorted({k for s in summary.strategies for k in s.pass_at})
    headers = ["strategy", "koans", "solved", "pass rate", "95% CI (Wilson)", "median steps",
               "model s/item", "verify s/item", *(f"pass@{k}" for k in ks), *(header for header, _ in columns)]
    rows = []
    for s in summary.strategies:
        rows.append([
            s.strategy, s.koans, _count(s.solved), _percent(s.rate), f"{_percent(s.low)} - {_percent(s.high)}",
            "-" if s.median_steps is None else f"{s.median_steps:g}",
            f"{s.mean_model_seconds:.2f}", f"{s.mean_verify_seconds:.2f}",
            *(_percent(s.pass_at[k]) if k in s.pass_at else "-" for k in ks),
            *(str(cells.get(s.strategy, "-")) for _, cells in columns),
        ])
    about = [f"suite {suite}"] * bool(suite) + [f"model {model}"] * bool(model)
    title = "pass rates by strategy" + (f" ({', '.join(about)})" if about else "")
    samples = max((s.samples for s in summary.strategies), default=1)
    if samples > 1:
        title += f"; {samples} samples per koan, a koan's share is its pass rate over samples, the interval counts koans"
    return f"{style.heading(title)}\n{style.table(rows, headers)}"


def _family_table(summary: RunSummary, style: _Style) -> str:
    names = [s.strategy for s in summary.strategies]
    rows = []
    for family, row in summary.families.items():
        cells = []
        for name in names:
            solved, koans = row.get(name, (0.0, 0))
            cells.append(f"{_count(solved)}/{koans} ({_percent(solved / koans)})" if koans else "-")
        rows.append([family, *cells])
    return f"{style.heading('pass rates by family')}\n{style.table(rows, ['family', *names])}"


def _comparison_table(summary: RunSummary, style: _Style) -> str:
    rows = []
    details = []
    for c in summary.comparisons:
        verdict = "significant" if c.significant else "not significant"
        rows.append([f"{c.strategy} vs {c.reference}", len(c.gains), len(c.losses),
                     f"{len(c.gains) - len(c.losses):+d}", f"{c.p_value:.3g}", verdict,
                     *_power_cells(c.koans, len(c.gains), len(c.losses), c.detectable)])
        if c.gains:
            details.append(style.item(f"{c.strategy} gains: {', '.join(c.gains)}"))
        if c.losses:
            details.append(style.item(f"{c.strategy} losses: {', '.join(c.losses)}"))
    table = style.table(rows, ["comparison", "gains", "losses", "net", "p (exact McNemar)", "at alpha 0.05",
                               *POWER_HEADERS])
    gap = [""] if style.markdown and details else []
    return "\n".join([style.heading("gains and losses against the first strategy"), table, *gap, *details,
                      style.item(POWER_NOTE)])


POWER_HEADERS = ["detectable (power 0.8)", "power"]
POWER_NOTE = ("detectable: the smallest net difference the exact McNemar test finds 8 times in 10 with this many "
              "koans, in the direction observed, at the rate observed the other way; a smaller observed "
              "difference is underpowered, and "
              "\"not significant\" then says little")


def _power_cells(koans: int, gains: int, losses: int, detectable: float | None) -> list[str]:
    shown = "none at this size" if detectable is None else f"{100 * detectable:.1f} points"
    return [shown, "underpowered" if is_underpowered(koans, gains, losses, detectable) else "adequate"]


def _baseline_sections(comparison: BaselineComparison, style: _Style) -> list[str]:
    sections = []
    rows = []
    underpowered = []
    for ref in comparison.references:
        count = {symbol: len(comparison.of(ref.strategy, symbol)) for symbol in _SYMBOL_ORDER}
        p = exact_mcnemar(count[GAIN], count[LOSS])
        verdict = "significant" if p < comparison.alpha else "not significant"
        compared = sum(count[s] for s in _SYMBOL_ORDER if s != NOT_COMPARED)
        rows.append([ref.strategy, ref.baseline_strategy, count[KEPT_PASS], count[KEPT_FAIL], count[GAIN], count[LOSS],
                     count[GAIN_NOT_SIGNIFICANT], count[LOSS_NOT_SIGNIFICANT], count[NOT_COMPARED], f"{p:.3g}", verdict,
                     *_power_cells(compared, count[GAIN], count[LOSS], power_of(compared, count[GAIN], count[LOSS]))])
        changes = [c for c in comparison.changes if c.strategy == ref.strategy]
        if not koan_changes_can_be_significant(changes, comparison.alpha):
            underpowered.append(f"{ref.strategy}: {too_few_samples(changes, comparison.alpha)}, so its gains and "
                                "losses stay 0 and the gate uses the paired sign test over koans (see the gate)")
    head = style.heading(f"against the baseline run {comparison.baseline.run_id}")
    table = style.table(rows, ["strategy", "baseline's", "kept passing", "kept failing", "gains", "losses",
                               "gained (n.s.)", "lost (n.s.)", "not compared", "p (exact McNemar)",
                               f"at alpha {comparison.alpha:g}", *POWER_HEADERS])
    lines = [head, table, *([""] if style.markdown else [])]
    lines += [style.item(f"note: {ref.note}") for ref in comparison.references if ref.note]
    lines += [style.item(f"note: {text}") for text in underpowered]
    lines.append(style.item(POWER_NOTE))
    for ref in comparison.references:
        for change in comparison.of(ref.strategy, LOSS):
            lines.append(style.item(f"REGRESSION {change.koan}[{ref.strategy}]: baseline {_state(change.before)}, "
                                    f"now {_state(change.after)}" + (f": {change.after.reason}" if change.after.reason else "")))
        for change in comparison.of(ref.strategy, GAIN):
            lines.append(style.item(f"gain (XPASS) {change.koan}[{ref.strategy}]: baseline {_state(change.before)}, "
                                    f"now {_state(change.after)}"))
    sections.append("\n".join(lines))
    if comparison.mismatches:
        table = style.table([[m.what, m.baseline, m.this_run] for m in comparison.mismatches],
                            ["differs", "baseline", "this run"])
        sections.append(f"{style.heading('WARNING: this run and the baseline differ beyond the strategies')}\n{table}")
    changed, new = comparison.changed_koans(), comparison.new_koans()
    if changed or new:
        lines = [style.heading("koans not compared with the baseline")]
        if changed:
            lines.append(style.item(f"changed since the baseline: {', '.join(changed)}"))
        if new:
            lines.append(style.item(f"new since the baseline: {', '.join(new)}"))
        sections.append("\n".join(lines))
    return sections


def _state(state) -> str:
    if state is None:
        return "absent"
    if state.total == 1:
        return "solved" if state.passed else "failed"
    return f"{state.passed}/{state.total} samples"


def _matrix_table(matrix: ForgettingMatrix, rows_wanted: str, style: _Style) -> str:
    koans = matrix.koans if rows_wanted == "full" else matrix.changed_rows()
    rows = [[koan, *(matrix.cell(koan, c) or " " for c in matrix.columns)] for koan in koans]
    totals = matrix.totals()
    rows.append(["total", *(" ".join(f"{totals[c][s]}{s}" for s in _SYMBOL_ORDER if totals[c][s])
                            for c in matrix.columns)])
    shown = "all koans" if rows_wanted == "full" else f"{len(koans)} koan(s) that changed (--sleepy-matrix=full shows all)"
    head = style.heading(f"forgetting matrix: {shown}")
    gap = "\n" if style.markdown else ""
    return f"{head}\n{style.table(rows, ['koan', *matrix.columns])}\n{gap}{style.item(MATRIX_LEGEND)}"


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _count(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.2f}"
