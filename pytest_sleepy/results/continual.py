"""Continual-learning metrics for runs that train a model in stages.

A run that trains in stages evaluates the model after each stage, and each outcome
records the stage the model had reached (`Outcome.stage`: 0 = the untrained model,
i = after training stage i, None = a run without stages). A single pass rate cannot
say whether stage 3 undid what stage 1 taught; the accuracy matrix and the metrics
below can.

Documented format: a run declares its curriculum in its provenance, under
`provenance["curriculum"]`:

    {
      "order":  ["borrowing", "lifetimes", "traits"],      # training order
      "groups": {                                           # group -> koan patterns
        "borrowing": ["use_after_move", "double_borrow"],
        "lifetimes": ["dangling_ref"],
        "traits":    ["missing_impl", "orphan_rule"]
      }
    }

- `order` is a non-empty list of distinct group names; stage i (1..T, T = len(order))
  trained on the koans of group `order[i-1]`.
- `groups` maps every group of `order` (and no other) to a non-empty list of koan
  patterns (`Outcome.pattern`); a pattern belongs to at most one group.
- Other keys are ignored, so the format can grow.

Koans whose pattern is in no group are not in any column of the matrix; outcomes with
`stage` None are not staged and are skipped.

The accuracy matrix (0-based indices in code, 1-based stage numbers in the report):
R[i][j] is the pass rate on group j's koans after stage i+1, and b[j] the pass rate of
the untrained model (stage 0) on group j, GEM's b-bar. A pass rate is the mean over
koans of each koan's pass rate over its samples, the convention of `runfile.py`, so a
koan with more samples does not weigh more; items with status "error" are
infrastructure problems and are excluded. A cell without outcomes is None, and every
metric that needs it is None with the reason.

The metrics, for T tasks, 0-based:
- ACC = (1/T) sum_{j=0}^{T-1} R[T-1][j]                  (Lopez-Paz & Ranzato 2017, GEM)
- BWT = 1/(T-1) sum_{j=0}^{T-2} (R[T-1][j] - R[j][j])    (GEM)
- FWT = 1/(T-1) sum_{j=1}^{T-1} (R[j-1][j] - b[j])       (GEM)
- F   = 1/(T-1) sum_{j=0}^{T-2} f_j,  f_j = max_{l=0}^{T-2} R[l][j] - R[T-1][j]
  Chaudhry et al. 2018 (RWalk, "Riemannian Walk for Incremental Learning"), eq. for
  f_j^k = max_{l in 1..k-1} a_{l,j} - a_{k,j} and F_k = 1/(k-1) sum_{j<k} f_j^k at the
  final stage k = T. As in the paper, the max runs over every stage before the last,
  including stages before task j was trained (l < j), and never over the untrained
  model b; f_j is not clipped at 0, so a task that improved at the end forgets
  negatively.
With T = 1, BWT, FWT and F have no terms and are None.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from tabulate import tabulate

from .runfile import ERROR, Outcome

__all__ = ["Curriculum", "AccuracyMatrix", "ContinualMetrics", "accuracy_matrix", "continual_metrics",
           "render_continual", "LEGEND"]

_FIELD = "provenance.curriculum"

LEGEND = """\
legend (stages and groups numbered 1..T in training order, as in the table):
  R[i][j]  pass rate on group j's koans after training stage i; b̄[j] the same for the
           untrained model (stage 0). A pass rate is the mean over koans of each koan's
           pass rate over its samples; errored items are not counted.
  ACC  = (1/T) Σ_j R[T][j]
         average accuracy: mean pass rate over all groups after the last stage (GEM).
  BWT  = 1/(T-1) Σ_{j=1..T-1} (R[T][j] - R[j][j])
         backward transfer: how training on later groups changed each earlier group,
         from just after it was trained to the end; negative = forgetting (GEM).
  FWT  = 1/(T-1) Σ_{j=2..T} (R[j-1][j] - b̄[j])
         forward transfer: how training on earlier groups changed a group before it
         was trained, against the untrained model; positive = helps (GEM).
  F    = 1/(T-1) Σ_{j=1..T-1} (max_{l=1..T-1} R[l][j] - R[T][j])
         average forgetting: drop from each earlier group's best pass rate at any stage
         before the last (including stages before it was trained, as in Chaudhry et
         al. 2018, RWalk) to its final one; positive = forgotten, not clipped at 0.
  Transfers and forgetting are in percentage points (pp); with one stage they are n/a."""


@dataclass(frozen=True)
class Curriculum:
    """The training order and which koan patterns each stage trained on; read from a
    run's provenance so the report can tell trained groups from untouched ones."""

    order: tuple[str, ...]
    groups: dict[str, tuple[str, ...]]

    @property
    def stages(self) -> int:
        return len(self.order)

    def group_of(self, pattern: str) -> str | None:
        for name, patterns in self.groups.items():
            if pattern in patterns:
                return name
        return None

    @classmethod
    def from_provenance(cls, provenance: dict) -> "Curriculum | None":
        """The run's curriculum, or None for a run without stages. Raises ValueError
        naming the field, because a malformed curriculum would silently put koans in
        the wrong column."""
        data = provenance.get("curriculum") if isinstance(provenance, dict) else None
        if data is None:
            return None
        if not isinstance(data, dict):
            raise ValueError(f"{_FIELD}: expected an object with 'order' and 'groups', got {type(data).__name__}")
        order = data.get("order")
        if not isinstance(order, list):
            raise ValueError(f"{_FIELD}.order: expected a list of group names, got {_kind(order)}")
        if not order:
            raise ValueError(f"{_FIELD}.order: is empty; name at least one group to train on")
        for name in order:
            if not isinstance(name, str) or not name:
                raise ValueError(f"{_FIELD}.order: {name!r} is not a group name (a non-empty string)")
        for name in order:
            if order.count(name) > 1:
                raise ValueError(f"{_FIELD}.order: group {name!r} appears twice; each stage trains a distinct group")
        groups = data.get("groups")
        if not isinstance(groups, dict):
            raise ValueError(f"{_FIELD}.groups: expected an object mapping group names to pattern lists, got {_kind(groups)}")
        seen: dict[str, str] = {}
        for name, patterns in groups.items():
            where = f"{_FIELD}.groups.{name}"
            if not isinstance(patterns, list):
                raise ValueError(f"{where}: expected a list of koan patterns, got {_kind(patterns)}")
            if not patterns:
                raise ValueError(f"{where}: is empty; a group needs at least one koan pattern")
            for pattern in patterns:
                if not isinstance(pattern, str) or not pattern:
                    raise ValueError(f"{where}: {pattern!r} is not a koan pattern (a non-empty string)")
                if pattern in seen and seen[pattern] != name:
                    raise ValueError(f"{_FIELD}.groups: pattern {pattern!r} is in two groups ({seen[pattern]!r} and {name!r})")
                seen[pattern] = name
        for name in order:
            if name not in groups:
                raise ValueError(f"{_FIELD}.order: names unknown group {name!r}; {_FIELD}.groups defines {sorted(groups)}")
        for name in groups:
            if name not in order:
                raise ValueError(f"{_FIELD}.groups: group {name!r} is not in {_FIELD}.order; every group is trained at one stage")
        return cls(tuple(order), {name: tuple(dict.fromkeys(groups[name])) for name in order})


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


@dataclass
class AccuracyMatrix:
    """Pass rates by (stage, group), the input of every continual-learning metric.
    Kept with its koan counts, because one koan in a small group moves a cell by many
    points."""

    groups: list[str]  # training order; column j and stage j+1 are groups[j]
    R: list[list[float | None]]  # R[i][j]: after stage i+1, group j (0-based)
    baseline: list[float | None]  # b[j]: the untrained model (stage 0), group j
    koans: list[list[int]]  # koans counted per cell, [stage 0..T][group]
    strategy: str | None = None
    errors: int = 0  # items excluded because their status was "error"

    @property
    def stages(self) -> int:
        return len(self.groups)

    def missing(self) -> list[str]:
        """Cells without outcomes, in words, so a report can say what was not run."""
        cells = [(0, j) for j, value in enumerate(self.baseline) if value is None]
        cells += [(i + 1, j) for i, row in enumerate(self.R) for j, value in enumerate(row) if value is None]
        return [f"no outcomes for {_cell_words(stage, j, self.groups)}" for stage, j in cells]

    def metrics(self) -> "ContinualMetrics":
        return continual_metrics(self.R, self.baseline, groups=self.groups)

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "groups": list(self.groups), "stages": self.stages,
                "baseline": list(self.baseline), "matrix": [list(row) for row in self.R],
                "koans": [list(row) for row in self.koans], "errors": self.errors, "missing": self.missing()}


@dataclass
class ContinualMetrics:
    """GEM's ACC/BWT/FWT and Chaudhry's average forgetting F, as fractions (0.05 = 5
    points). A metric that cannot be computed is None and `reasons` says why, so a
    missing number is never mistaken for zero."""

    acc: float | None
    bwt: float | None
    fwt: float | None
    forgetting: float | None
    stages: int
    reasons: dict[str, str] = field(default_factory=dict)  # "ACC"/"BWT"/"FWT"/"F" -> why None

    def to_dict(self) -> dict:
        return {"ACC": self.acc, "BWT": self.bwt, "FWT": self.fwt, "F": self.forgetting,
                "stages": self.stages, "reasons": dict(self.reasons)}


def _cell_words(stage: int, j: int, groups: Sequence[str] | None) -> str:
    group = f"group {groups[j]!r}" if groups else f"group {j + 1}"
    return f"{group} with the untrained model (stage 0)" if stage == 0 else f"{group} after stage {stage}"


def accuracy_matrix(outcomes: Iterable[Outcome], curriculum: Curriculum, strategy: str | None = None) -> AccuracyMatrix:
    """The R matrix and b vector of one strategy's staged outcomes. Refuses to pool
    several strategies (pass `strategy`), because a matrix mixing two training runs
    measures neither."""
    T = curriculum.stages
    staged = [o for o in outcomes if o.stage is not None and (strategy is None or o.strategy == strategy)]
    names = sorted({o.strategy for o in staged})
    if strategy is None and len(names) > 1:
        raise ValueError(f"staged outcomes of several strategies ({', '.join(names)}); pass strategy= to pick one")
    column = {pattern: j for j, name in enumerate(curriculum.order) for pattern in curriculum.groups[name]}
    tally: dict[tuple[int, int], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    errors = 0
    for o in staged:
        if not isinstance(o.stage, int) or not 0 <= o.stage <= T:
            raise ValueError(f"outcome {o.koan}[{o.strategy}] has stage {o.stage!r}; the curriculum has stages 0..{T}")
        j = column.get(o.pattern)
        if j is None:
            continue
        if o.status == ERROR:
            errors += 1
            continue
        tally[o.stage, j][o.koan].append(1 if o.solved else 0)

    def rate(stage: int, j: int) -> float | None:
        per_koan = tally.get((stage, j))
        if not per_koan:
            return None
        return sum(sum(v) / len(v) for v in per_koan.values()) / len(per_koan)

    return AccuracyMatrix(
        groups=list(curriculum.order),
        R=[[rate(i, j) for j in range(T)] for i in range(1, T + 1)],
        baseline=[rate(0, j) for j in range(T)],
        koans=[[len(tally.get((stage, j), {})) for j in range(T)] for stage in range(T + 1)],
        strategy=strategy if strategy is not None else (names[0] if names else None),
        errors=errors,
    )


def continual_metrics(R: Sequence[Sequence[float | None]], b: Sequence[float | None], *,
                      groups: Sequence[str] | None = None) -> ContinualMetrics:
    """ACC, BWT, FWT (GEM) and average forgetting F (Chaudhry et al. 2018) from a
    T x T matrix R (0-based: R[i][j] after stage i+1 on task j) and the untrained
    baseline b; formulas in the module docstring. `groups` only names the tasks in
    the reasons."""
    T = len(R)
    if T == 0:
        raise ValueError("R is empty; the curriculum has at least one stage")
    if any(len(row) != T for row in R):
        raise ValueError(f"R must be {T} x {T} (one row per stage, one column per task)")
    if len(b) != T:
        raise ValueError(f"b has {len(b)} entries; R has {T} tasks")
    reasons: dict[str, str] = {}

    def get(name: str, cells: list[tuple[int, int]]) -> list[float] | None:
        # Cells are (stage, task) with stage 0 = untrained (b) and stage s >= 1 = R[s-1].
        values = []
        for stage, j in cells:
            value = b[j] if stage == 0 else R[stage - 1][j]
            if value is None:
                reasons.setdefault(name, f"{name} needs {_cell_words(stage, j, groups)}, which has no outcomes")
                return None
            values.append(value)
        return values

    last = get("ACC", [(T, j) for j in range(T)])
    acc = sum(last) / T if last is not None else None
    if T == 1:
        for name in ("BWT", "FWT", "F"):
            reasons[name] = f"{name} compares stages; the curriculum has 1 stage"
        return ContinualMetrics(acc, None, None, None, T, reasons)

    bwt = fwt = forgetting = None
    final = get("BWT", [(T, j) for j in range(T - 1)])
    diagonal = get("BWT", [(j + 1, j) for j in range(T - 1)]) if final is not None else None
    if final is not None and diagonal is not None:
        bwt = sum(f - d for f, d in zip(final, diagonal)) / (T - 1)

    before = get("FWT", [(j, j) for j in range(1, T)])  # R[j-1][j]: stage j, task j (0-based)
    untrained = get("FWT", [(0, j) for j in range(1, T)]) if before is not None else None
    if before is not None and untrained is not None:
        fwt = sum(p - u for p, u in zip(before, untrained)) / (T - 1)

    final = get("F", [(T, j) for j in range(T - 1)])
    # Task j's accuracies at every stage before the last, R[0][j] .. R[T-2][j].
    earlier = [get("F", [(l + 1, j) for l in range(T - 1)]) for j in range(T - 1)] if final is not None else []
    if final is not None and all(column is not None for column in earlier):
        forgetting = sum(max(column) - f for column, f in zip(earlier, final)) / (T - 1)
    return ContinualMetrics(acc, bwt, fwt, forgetting, T, reasons)


def render_continual(matrix: AccuracyMatrix, metrics: ContinualMetrics, fmt: str = "text") -> str:
    """The matrix, the four metrics and the legend: the numbers are only readable
    next to their definitions, which differ between papers."""
    if fmt not in ("text", "markdown"):
        raise ValueError(f"fmt must be 'text' or 'markdown', got {fmt!r}")
    tablefmt = "simple" if fmt == "text" else "github"
    rows = [["untrained (b̄)", *(_percent(v) for v in matrix.baseline)]]
    rows += [[f"after stage {i + 1} ({matrix.groups[i]})", *(_percent(v) for v in row)] for i, row in enumerate(matrix.R)]
    title = "continual learning: pass rate by training stage (rows) and koan group (columns)"
    if matrix.strategy:
        title += f", strategy {matrix.strategy}"
    table = tabulate(rows, ["", *matrix.groups], tablefmt=tablefmt, disable_numparse=True)
    lines = [_metric_line("ACC", metrics.acc, metrics, percent=True)]
    lines += [_metric_line(name, value, metrics) for name, value in
              (("BWT", metrics.bwt), ("FWT", metrics.fwt), ("F", metrics.forgetting))]
    notes = []
    if matrix.errors:
        notes.append(f"{matrix.errors} errored item(s) not counted in any cell")
    if fmt == "markdown":
        body = "\n".join(f"- {line}" for line in lines + notes)
        return f"{title}\n\n{table}\n\n{body}\n\n```\n{LEGEND}\n```"
    return "\n\n".join([f"{title}\n{table}", "\n".join(lines + notes), LEGEND])


def _metric_line(name: str, value: float | None, metrics: ContinualMetrics, percent: bool = False) -> str:
    if value is None:
        return f"{name} n/a ({metrics.reasons.get(name, 'not computed')})"
    if percent:
        return f"{name} {_percent(value)}"
    points = round(100 * value, 1) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{name} {points:+.1f} pp"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
