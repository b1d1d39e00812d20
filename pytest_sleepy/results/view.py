"""One self-contained HTML file that shows a run: `sleepy view RUN.json [--vs BASE.json]
[--episodes EP.jsonl] -o report.html`, or `pytest --sleepy-html=report.html`.

It holds the summary (pass rates with their interval drawn as a bar, families, the
comparisons with p-values and the power note), the forgetting matrix as a heatmap whose
cells link to the koan, the router's confusion tables and the continual-learning
metrics when the run has them, an index of every koan and strategy with filters
(family, pattern, outcome, strategy) and a search box, and a page per koan and
strategy with every attempt side by side: the prompt, the raw answer, the code as a
diff against the buggy program, rustc's diagnostics and the verdict.

Everything is inline (styles, a few lines of script) and nothing is fetched, so the file
opens from a CI artifact with no network. Jinja2 renders it with autoescaping on: model
answers and koan code are text, never markup.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from ..router import render_confusion
from .comparison import GAIN, GAIN_NOT_SIGNIFICANT, KEPT_FAIL, KEPT_PASS, LOSS, LOSS_NOT_SIGNIFICANT, NOT_COMPARED
from .continual import render_continual
from .report import POWER_NOTE, RunReport
from .runfile import ERROR, Outcome, column_name

__all__ = ["render_view", "write_view", "OUTCOME_CLASSES"]

# What the index's outcome filter offers, from a koan's forgetting-matrix cell.
OUTCOME_CLASSES = {
    KEPT_PASS: "solved", GAIN: "gained", GAIN_NOT_SIGNIFICANT: "gained", LOSS: "lost",
    LOSS_NOT_SIGNIFICANT: "lost", KEPT_FAIL: "still failing", NOT_COMPARED: "not compared",
}
HEAT = {KEPT_PASS: "pass", KEPT_FAIL: "fail", GAIN: "gain", GAIN_NOT_SIGNIFICANT: "gain-ns", LOSS: "loss",
        LOSS_NOT_SIGNIFICANT: "loss-ns", NOT_COMPARED: "nc"}

_environment = Environment(loader=PackageLoader("pytest_sleepy.results", "templates"),
                           autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)


def page_id(koan: str, column: str, sample: int = 0) -> str:
    """The anchor of a koan x strategy (x sample) page: readable, and made unique by a
    short hash, since `lora:stage1` and `lora_stage1` read alike once sanitised."""
    digest = hashlib.sha256(f"{koan}\0{column}\0{sample}".encode()).hexdigest()[:6]
    return "page-" + re.sub(r"[^A-Za-z0-9_-]", "_", f"{koan}--{column}") + f"-{digest}"


def _outcome_class(outcome: Outcome, cell: str) -> str:
    """The koan's gain or loss when this item went that way; otherwise what this item
    (one sample) did: with samples, a koan's cell is its majority, not every sample's."""
    if outcome.status == ERROR:
        return "error"
    kind = OUTCOME_CLASSES.get(cell)
    if kind == "not compared" or (kind == "gained" and outcome.solved) or (kind == "lost" and not outcome.solved):
        return kind
    return "solved" if outcome.solved else "still failing"


def render_view(report: RunReport, outcomes: list[Outcome], *, run_id: str, episodes: list[dict] = (),
                baseline_id: str = "", episode_runs: set[str] | None = None) -> str:
    """The HTML text of the view of a run (`report` built from its `outcomes`). Episodes
    of other runs than `episode_runs` (default: `run_id`) are left out: an episodes file
    grows by appending, run after run."""
    summary, matrix = report.summary, report.matrix
    runs = episode_runs or {run_id}
    attempts: dict[tuple, list[dict]] = defaultdict(list)
    for episode in episodes:
        # Records of other runs, or that are not attempts at all, are not shown.
        if episode.get("run_id") in runs and all(key in episode for key in ("koan", "strategy", "step")):
            column = column_name(episode["strategy"], episode.get("variant") or "")
            attempts[(episode["koan"], column, episode.get("sample", 0))].append(episode)
    items = []
    for outcome in sorted(outcomes, key=lambda o: (o.koan, o.column, o.sample)):
        cell = matrix.cell(outcome.koan, outcome.column) if matrix else ""
        steps = sorted(attempts.get((outcome.koan, outcome.column, outcome.sample), []), key=lambda e: e["step"])
        items.append({
            "outcome": outcome, "cell": cell, "class": _outcome_class(outcome, cell),
            "page": page_id(outcome.koan, outcome.column, outcome.sample),
            "attempts": steps,
        })
    matrix_rows = []
    if matrix is not None:
        pages = {(i["outcome"].koan, i["outcome"].column): i["page"] for i in items}
        for koan in matrix.koans:
            cells = [{"symbol": matrix.cell(koan, column), "heat": HEAT.get(matrix.cell(koan, column), "none"),
                      "page": pages.get((koan, column))} for column in matrix.columns]
            matrix_rows.append({"koan": koan, "cells": cells})
    sections = []
    for strategy, table in report.routing.items():
        sections.append((f"router of {strategy}: routed pattern against the koan's declared pattern (first step)",
                         render_confusion(table, "text")))
    for accuracy in report.continual:
        sections.append((f"continual learning: {accuracy.strategy}" if accuracy.strategy else "continual learning",
                         render_continual(accuracy, accuracy.metrics(), "text")))
    template = _environment.get_template("view.html")
    return template.render(
        run_id=run_id, baseline_id=baseline_id, suite=report.suite, model=report.model, summary=summary,
        items=items, matrix=matrix, matrix_rows=matrix_rows, extra_sections=sections, gate=report.gate,
        power_note=POWER_NOTE, columns=[s.strategy for s in summary.strategies],
        families=sorted({i["outcome"].family for i in items}), patterns=sorted({i["outcome"].pattern for i in items}),
        outcome_classes=sorted({i["class"] for i in items}),
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def write_view(path: Path | str, html: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
