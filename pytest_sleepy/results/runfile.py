"""Outcome records, their aggregation, episode logs and run files.

One `Outcome` per pytest item (koan x strategy x sample). Items travel from xdist
workers to the controller as `report.user_properties[("sleepy_outcome", dict)]`, and
the controller aggregates them here into a `RunSummary`.

Statistics, documented where they are computed:
- a strategy's pass rate is the mean over koans of each koan's pass rate over its
  samples; its 95 % Wilson interval counts koans, not samples, as trials (samples of one
  koan are correlated, so counting them would narrow the interval dishonestly);
- pass@k (samples > 1) is Chen et al.'s unbiased estimator, averaged over koans;
- a comparison of strategy B with the first strategy A counts, over koans both ran,
  gains (B's rate above A's) and losses (below), and tests them with the exact
  McNemar test, which with one sample per koan is McNemar's test itself and with
  several is the sign test on per-koan rates;
- with every comparison, the smallest net difference (gain rate minus loss rate) the
  exact McNemar test would find with power 0.8 at alpha 0.05 over this many koans,
  holding the loss rate at the one observed (stats.detectable_difference, exact, no
  simulation); a comparison whose observed difference is below it is "underpowered":
  a real difference that size would usually go unseen, so "not significant" says
  little;
- items with status "error" (a replay cache miss, an invalid koan) are infrastructure
  problems: listed, never counted as failures.

Run file (`--sleepy-json`), JSON:
    format      "pytest-sleepy/run"
    version     1
    run_id      unique id shared by the run's episodes
    provenance  package version, git commit + dirty flag, rustc -vV, sandbox mode,
                model spec + identities, strategy definitions, seeds, options, koan digests
    outcomes    list of Outcome records
    aggregates  RunSummary.to_dict()
"""

from __future__ import annotations

import fcntl
import json
import re
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..jsonfiles import write_json_atomic
from ..stats import detectable_difference, exact_mcnemar, pass_at_k, wilson_interval

__all__ = [
    "Outcome", "StrategySummary", "Comparison", "RunSummary", "EpisodeLog", "column_name", "columns_in_order",
    "RunFile", "RunFileError", "write_run_file", "read_run_file", "ALPHA", "RUN_FORMAT", "RUN_VERSION",
    "PASSED", "FAILED", "ERROR", "power_of", "is_underpowered", "EpisodeFileError", "read_episodes",
]

ALPHA = 0.05
RUN_FORMAT = "pytest-sleepy/run"
RUN_VERSION = 1
PASSED, FAILED, ERROR = "passed", "failed", "error"


def column_name(strategy: str, variant: str = "") -> str:
    """The strategy, or strategy:variant: how outcomes, items and episodes name a column."""
    return f"{strategy}:{variant}" if variant else strategy


@dataclass
class Outcome:
    koan: str
    strategy: str
    sample: int
    seed: int
    status: str  # PASSED, FAILED or ERROR
    reason: str  # "" when passed
    family: str = ""
    pattern: str = ""
    split: str = ""
    koan_digest: str = ""
    steps: int = 0  # model calls made
    model_seconds: float = 0.0
    verify_seconds: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    model_identity: str = ""
    replayed: int = 0  # completions answered from the record/replay cache
    replayed_seconds: float = 0.0  # model time recorded with those answers (not in model_seconds)
    # A strategy that evaluates several configurations (e.g. one adapter at a time)
    # names each one here; the forgetting matrix gives each its own column.
    variant: str = ""
    # Continual learning: the training stage the model had reached (0 = untrained);
    # None for runs without stages. See continual.py.
    stage: int | None = None
    # Routed strategies: the pattern the router chose at the first step ("" = none,
    # the base model answered); None when the strategy does not route.
    route: str | None = None
    # The adapter the first step used (None: the base model): with a hot-swapped
    # adapter (lora_feedback) items of one run may use different ones.
    adapter: str | None = None

    @property
    def column(self) -> str:
        """The strategy, or strategy:variant: one column of the forgetting matrix."""
        return column_name(self.strategy, self.variant)

    @property
    def solved(self) -> bool:
        return self.status == PASSED

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Outcome":
        return cls(**data)


@dataclass
class StrategySummary:
    strategy: str
    koans: int
    samples: int  # per koan (the most any koan had)
    solved: float  # sum over koans of per-koan pass rates
    rate: float
    low: float
    high: float
    median_steps: float | None  # over solved items: steps taken to solve
    mean_model_seconds: float
    mean_verify_seconds: float
    pass_at: dict[int, float] = field(default_factory=dict)  # k -> pass@k, samples > 1 only
    errors: int = 0


@dataclass
class Comparison:
    strategy: str
    reference: str
    gains: list[str]
    losses: list[str]
    p_value: float
    koans: int = 0  # koans both strategies ran
    detectable: float | None = None  # smallest net gain found with power 0.8 (stats.detectable_difference)

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    @property
    def underpowered(self) -> bool:
        """The observed net difference is below what this many koans can detect."""
        return is_underpowered(self.koans, len(self.gains), len(self.losses), self.detectable)


def power_of(koans: int, gains: int, losses: int) -> float | None:
    """The smallest net difference the exact McNemar test finds with power 0.8 over
    `koans` koans, in the direction observed, holding the other direction's rate as
    observed: a net loss is measured at the observed gain rate (the test is symmetric)."""
    return detectable_difference(koans, min(gains, losses) / koans, ALPHA) if koans else None


def is_underpowered(koans: int, gains: int, losses: int, detectable: float | None) -> bool:
    return detectable is None or koans == 0 or abs(gains - losses) / koans < detectable


@dataclass
class RunSummary:
    strategies: list[StrategySummary]
    families: dict[str, dict[str, tuple[float, int]]]  # family -> strategy -> (solved, koans)
    comparisons: list[Comparison]
    errors: list[Outcome]

    @classmethod
    def from_outcomes(cls, outcomes: list[Outcome], order: list[str] | None = None) -> "RunSummary":
        names = columns_in_order(outcomes, order or [])
        counted = [o for o in outcomes if o.status != ERROR]
        rates = _per_koan_rates(counted)  # strategy -> koan -> rate
        family_of = {o.koan: o.family for o in outcomes}
        summaries, families = [], defaultdict(dict)
        for name in names:
            items = [o for o in counted if o.column == name]
            per_koan = rates.get(name, {})
            solved = sum(per_koan.values())
            low, high = wilson_interval(solved, len(per_koan))
            steps = [o.steps for o in items if o.solved]
            summaries.append(StrategySummary(
                strategy=name, koans=len(per_koan),
                samples=max((n for n in _sample_counts(items).values()), default=0),
                solved=solved, rate=solved / len(per_koan) if per_koan else 0.0, low=low, high=high,
                median_steps=statistics.median(steps) if steps else None,
                mean_model_seconds=statistics.fmean(o.model_seconds for o in items) if items else 0.0,
                mean_verify_seconds=statistics.fmean(o.verify_seconds for o in items) if items else 0.0,
                pass_at=_pass_at(items),
                errors=sum(1 for o in outcomes if o.column == name and o.status == ERROR),
            ))
            for koan, rate in per_koan.items():
                solved_koans, total = families[family_of[koan]].get(name, (0.0, 0))
                families[family_of[koan]][name] = (solved_koans + rate, total + 1)
        comparisons = []
        reference_name = next((n for n in names if rates.get(n)), None)
        if reference_name is not None:
            reference = rates[reference_name]
            for name in names[names.index(reference_name) + 1:]:
                other = rates.get(name, {})
                shared = sorted(set(reference) & set(other))
                gains = [k for k in shared if other[k] > reference[k]]
                losses = [k for k in shared if other[k] < reference[k]]
                comparisons.append(Comparison(name, reference_name, gains, losses,
                                              exact_mcnemar(len(gains), len(losses)), len(shared),
                                              power_of(len(shared), len(gains), len(losses))))
        return cls(summaries, dict(sorted(families.items())), comparisons, [o for o in outcomes if o.status == ERROR])

    def to_dict(self) -> dict:
        return {
            "strategies": [asdict(s) for s in self.strategies],
            "families": {f: {s: {"solved": v[0], "koans": v[1]} for s, v in row.items()} for f, row in self.families.items()},
            "comparisons": [asdict(c) | {"significant": c.significant, "underpowered": c.underpowered}
                            for c in self.comparisons],
            "errors": [o.to_dict() for o in self.errors],
        }


def columns_in_order(outcomes: list[Outcome], strategies: list[str]) -> list[str]:
    """Every column (strategy, or strategy:variant) of the outcomes: strategies in the
    given order, each followed by its variants in the order they first appear."""
    seen: dict[str, list[str]] = {}
    for o in outcomes:
        columns = seen.setdefault(o.strategy, [])
        if o.column not in columns:
            columns.append(o.column)
    # A strategy with no outcomes (deselected, say) gets no column: an empty row would
    # read as a 0 % pass rate and an empty reference for every comparison.
    names = [s for s in strategies if s in seen] + sorted(set(seen) - set(strategies))
    ordered = []
    for strategy in names:
        columns = seen[strategy]
        ordered += sorted(columns, key=lambda c: (c != strategy, _natural(c)))
    return ordered


def _natural(text: str) -> list:
    # stage2 before stage10
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _per_koan_rates(outcomes: list[Outcome]) -> dict[str, dict[str, float]]:
    tally: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for o in outcomes:
        tally[o.column][o.koan].append(1 if o.solved else 0)
    return {s: {k: sum(v) / len(v) for k, v in sorted(koans.items())} for s, koans in tally.items()}


def _sample_counts(items: list[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for o in items:
        counts[o.koan] += 1
    return counts


def _pass_at(items: list[Outcome]) -> dict[int, float]:
    counts = _sample_counts(items)
    fewest = min(counts.values(), default=0)
    if fewest < 2:
        return {}
    correct: dict[str, int] = defaultdict(int)
    for o in items:
        correct[o.koan] += o.solved
    ks = sorted({1, fewest} | {k for k in (5, 10) if k <= fewest})
    return {k: statistics.fmean(pass_at_k(counts[koan], correct[koan], k) for koan in counts) for k in ks}


class EpisodeLog:
    """Episodes as JSON lines, appended under an exclusive lock: xdist workers share
    one file, and a record is tens of kilobytes, far above what O_APPEND keeps whole."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.write(line)
                handle.flush()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class EpisodeFileError(ValueError):
    """An episode file is missing or malformed; the message names the file and line."""


def read_episodes(path: Path | str) -> list[dict]:
    """The episode records of a JSON-lines file (blank lines ignored)."""
    path = Path(path)
    records = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as error:
                    raise EpisodeFileError(
                        f"{path}, line {number}: not JSON ({error}); pass a file written by --sleepy-episodes"
                    ) from None
                if not isinstance(record, dict):
                    raise EpisodeFileError(
                        f"{path}, line {number}: expected a JSON object (one episode), not {type(record).__name__}"
                    )
                records.append(record)
    except OSError as error:
        raise EpisodeFileError(f"{path}: cannot read the episode file: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise EpisodeFileError(f"{path}: not UTF-8 text ({error.reason}); pass a file written by --sleepy-episodes") from None
    return records


class RunFileError(ValueError):
    """A run file is missing or malformed; the message names the file and the field."""


@dataclass
class RunFile:
    run_id: str
    provenance: dict
    outcomes: list[Outcome]
    aggregates: dict

    def to_dict(self) -> dict:
        return {"format": RUN_FORMAT, "version": RUN_VERSION, "run_id": self.run_id, "provenance": self.provenance,
                "outcomes": [o.to_dict() for o in self.outcomes], "aggregates": self.aggregates}


def write_run_file(path: Path | str, run: RunFile, amend=None) -> None:
    """Write `run`; `amend(data)` may first change its JSON object in place (the
    pytest_sleepy_update_run_file hook)."""
    data = run.to_dict()
    if amend is not None:
        amend(data)
    write_json_atomic(path, data, indent=1)


def read_run_file(path: Path | str) -> RunFile:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise RunFileError(f"{path}: cannot read the run file: {error.strerror}") from None
    except ValueError as error:
        raise RunFileError(f"{path}: not JSON ({error}); pass a file written by --sleepy-json") from None
    if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
        raise RunFileError(f"{path}: field 'format' is not {RUN_FORMAT!r}; pass a file written by --sleepy-json")
    if data.get("version") != RUN_VERSION:
        raise RunFileError(f"{path}: field 'version' is {data.get('version')!r}; this pytest-sleepy reads version {RUN_VERSION}")
    try:
        outcomes = [Outcome.from_dict(o) for o in data["outcomes"]]
        return RunFile(data["run_id"], data["provenance"], outcomes, data["aggregates"])
    except KeyError as error:
        raise RunFileError(f"{path}: missing field {error.args[0]!r}") from None
    except TypeError as error:
        raise RunFileError(f"{path}: field 'outcomes' holds a malformed record ({error})") from None
