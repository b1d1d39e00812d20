"""What an eval suite holds, in the terms its authoring rules are stated in.

`sleepy koans stats [--suite NAME] [--rustfix RUN.json]` prints, for one suite:

- koans per family (no family may be over 15 %, logic bugs at least 15 %), per error
  code of `expect`, and per difficulty;
- the multi-error share: koans whose `expect` lists two or more distinct codes (a fix
  that exposes a second error is not visible in `expect`, so the share is a floor);
- the mutation scores that `sleepy koans validate --mutants --record` wrote into the
  proof ledger, as a distribution; koans without a current proof are named;
- with `--rustfix RUN.json`, a run file of the rustfix model on this suite, the share
  rustfix repairs (at most 20 % for a suite to discriminate between models).

Nothing is verified here: the figures come from the koan files, the ledger and the
run file, so the command takes a second.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from ..koans import Koan
from ..results import RunFile
from ..stats import wilson_interval
from .proofs import ProofLedger
from .suites import Suite

__all__ = ["SuiteStatistics", "suite_statistics", "render_statistics", "SCORE_BANDS"]

# Mutation-score bands, highest first: (label, lowest score in the band).
SCORE_BANDS = (("100%", 1.0), ("95-99%", 0.95), ("90-94%", 0.90), ("under 90%", 0.0))


@dataclass
class SuiteStatistics:
    suite: str
    digest: str
    koans: int
    families: Counter
    codes: Counter
    difficulties: Counter
    multi_error: list[str]  # koans whose expect has two or more distinct codes
    scores: dict[str, float]  # koan -> recorded mutation score (koans with mutants only)
    unproven: list[str]  # koans without a current proof
    rustfix_solved: list[str] | None = None  # with a rustfix run file
    rustfix_run: str = ""
    notes: list[str] = field(default_factory=list)


def suite_statistics(suite: Suite, members: list[Koan], ledger: ProofLedger, rustc: str,
                     rustfix: RunFile | None = None, rustfix_path: Path | None = None) -> SuiteStatistics:
    """The figures of `suite` (its `members` as loaded). A rustfix run file must be of
    the rustfix model on this very suite: ValueError names what differs."""
    scores, unproven = {}, []
    for koan in members:
        proof = ledger.current(koan, rustc)
        if proof is None:
            unproven.append(koan.id)
        elif proof.viable:
            scores[koan.id] = proof.killed / proof.viable
    stats = SuiteStatistics(
        suite=suite.name, digest=suite.digest, koans=len(members),
        families=Counter(k.family for k in members),
        codes=Counter(code for k in members for code in dict.fromkeys(k.expect)),
        difficulties=Counter(k.difficulty for k in members),
        multi_error=[k.id for k in members if len(set(k.expect)) >= 2],
        scores=scores, unproven=unproven,
    )
    if rustfix is not None:
        where = rustfix_path or "the run file"
        model = rustfix.provenance.get("model", {}).get("spec", "")
        if not model.startswith("rustfix"):
            raise ValueError(f"{where}: its model is {model!r}, not rustfix; pass a run of `pytest --model=rustfix`")
        ran = rustfix.provenance.get("suite") or {}
        if ran.get("name") != suite.name or ran.get("digest") != suite.digest:
            raise ValueError(f"{where}: it ran the suite {ran.get('name')!r} (digest {ran.get('digest')}), not "
                             f"{suite.name!r} (digest {suite.digest}); pass a rustfix run of {suite.name} "
                             f"(pytest --sleepy-suite={suite.name})")
        if rustfix.provenance.get("complete") is False:
            raise ValueError(f"{where}: the session stopped early, so it judged only some koans; run the suite whole")
        strategies = {o.column for o in rustfix.outcomes}
        ran_koans = {o.koan for o in rustfix.outcomes}
        if len(strategies) != 1 or ran_koans != {k.id for k in members}:
            raise ValueError(f"{where}: it ran {len(ran_koans)} of the suite's {len(members)} koans with "
                             f"{len(strategies)} strategies; the share needs one strategy over every koan "
                             "(no -k, no second --strategy)")
        solved = {o.koan for o in rustfix.outcomes if o.solved}
        stats.rustfix_solved = sorted(solved)
        stats.rustfix_run = str(where)
    return stats


def _share(count: int, total: int) -> str:
    return f"{count} ({100 * count / total:.1f}%)" if total else str(count)


def render_statistics(stats: SuiteStatistics) -> str:
    total = stats.koans
    out = [f"suite {stats.suite} (digest {stats.digest}): {total} koans"]
    out.append(tabulate([(family, _share(n, total)) for family, n in sorted(stats.families.items())],
                        headers=["family", "koans"]))
    out.append(tabulate([(code, n) for code, n in sorted(stats.codes.items(), key=lambda item: (-item[1], item[0]))],
                        headers=["error code", "koans"]))
    out.append(tabulate([(level or "-", _share(n, total)) for level, n in sorted(stats.difficulties.items(),
                                                                                   key=lambda item: item[0] or 0)],
                        headers=["difficulty", "koans"]))
    lines = [f"multi-error koans (two or more codes in expect): {_share(len(stats.multi_error), total)}"]
    if stats.scores:
        values = sorted(stats.scores.values())
        bands = Counter(next(label for label, low in SCORE_BANDS if score >= low) for score in values)
        lines.append(f"mutation scores ({len(values)} koans with mutants, from the proof ledger): min {values[0]:.0%}, "
                     f"median {values[len(values) // 2]:.0%}; "
                     + ", ".join(f"{label}: {bands[label]}" for label, _ in SCORE_BANDS))
    if stats.unproven:
        lines.append(f"without a current proof ({len(stats.unproven)}; run `sleepy koans validate --mutants --record`): "
                     + ", ".join(stats.unproven[:10]) + (", ..." if len(stats.unproven) > 10 else ""))
    if stats.rustfix_solved is not None:
        solved = len(stats.rustfix_solved)
        low, high = wilson_interval(solved, total)
        lines.append(f"rustfix repairs {_share(solved, total)} (95% CI {100 * low:.1f}-{100 * high:.1f}%, "
                     f"from {stats.rustfix_run}): {', '.join(stats.rustfix_solved)}")
    out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"
