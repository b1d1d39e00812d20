"""Terminal tables for a run, drawn with tabulate from a `RunSummary`."""

from __future__ import annotations

from tabulate import tabulate

from .results import RunSummary

__all__ = ["render_summary"]


def render_summary(summary: RunSummary, *, model: str = "") -> str:
    sections = [_strategy_table(summary, model)]
    if summary.families:
        sections.append(_family_table(summary))
    if summary.comparisons:
        sections.append(_comparison_table(summary))
    if summary.errors:
        lines = [f"{len(summary.errors)} item(s) errored and are not counted in any rate:"]
        lines += [f"  {o.koan}[{o.strategy}] sample {o.sample}: {o.reason}" for o in summary.errors]
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def _strategy_table(summary: RunSummary, model: str) -> str:
    ks = sorted({k for s in summary.strategies for k in s.pass_at})
    headers = ["strategy", "koans", "solved", "pass rate", "95% CI (Wilson)", "median steps",
               "model s/item", "verify s/item", *(f"pass@{k}" for k in ks)]
    rows = []
    for s in summary.strategies:
        rows.append([
            s.strategy, s.koans, _count(s.solved), _percent(s.rate), f"{_percent(s.low)} - {_percent(s.high)}",
            "-" if s.median_steps is None else f"{s.median_steps:g}",
            f"{s.mean_model_seconds:.2f}", f"{s.mean_verify_seconds:.2f}",
            *(_percent(s.pass_at[k]) if k in s.pass_at else "-" for k in ks),
        ])
    title = "pass rates by strategy" + (f" (model {model})" if model else "")
    samples = max((s.samples for s in summary.strategies), default=1)
    if samples > 1:
        title += f"; {samples} samples per koan, a koan's share is its pass rate over samples, the interval counts koans"
    return f"{title}\n{tabulate(rows, headers, tablefmt='simple', disable_numparse=True)}"


def _family_table(summary: RunSummary) -> str:
    names = [s.strategy for s in summary.strategies]
    rows = []
    for family, row in summary.families.items():
        cells = []
        for name in names:
            solved, koans = row.get(name, (0.0, 0))
            cells.append(f"{_count(solved)}/{koans} ({_percent(solved / koans)})" if koans else "-")
        rows.append([family, *cells])
    return "pass rates by family\n" + tabulate(rows, ["family", *names], tablefmt="simple", disable_numparse=True)


def _comparison_table(summary: RunSummary) -> str:
    rows = []
    details = []
    for c in summary.comparisons:
        verdict = "significant" if c.significant else "not significant"
        rows.append([f"{c.strategy} vs {c.reference}", len(c.gains), len(c.losses),
                     f"{len(c.gains) - len(c.losses):+d}", f"{c.p_value:.3g}", verdict])
        if c.gains:
            details.append(f"  {c.strategy} gains: {', '.join(c.gains)}")
        if c.losses:
            details.append(f"  {c.strategy} losses: {', '.join(c.losses)}")
    table = tabulate(rows, ["comparison", "gains", "losses", "net", "p (exact McNemar)", "at alpha 0.05"],
                     tablefmt="simple", disable_numparse=True)
    return "\n".join(["gains and losses against the first strategy", table, *details])


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _count(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.2f}"
