"""Re-verifying a finished run's candidates under the current verifier, without a model.

`sleepy rescore RUN.json --episodes EP.jsonl` exists for a verifier fix or a toolchain
upgrade: the candidates a model wrote are in the episode log, so their verdicts can be
recomputed without asking the model again. What the agent would have done with the new
verdicts is replayed from the recorded attempts:

- an outcome is solved at the first attempt whose code now passes (its `steps` become
  that attempt's step: later attempts would not have been asked for); attempts without
  code (no code in the answer, a model error) are not verified;
- otherwise it failed, with the last verified attempt's reason in agent.py's wording
  ("still E0382 after 2 steps"), unless the last attempt held no code, whose recorded
  reason ("no code in the answer ...", "model error at step N ...") does not depend on
  the verifier and is kept; `steps` stays the number of model calls the agent made.
  An outcome that passed before and fails now is a lower bound: the agent stopped at
  the attempt that passed then and never asked for the steps that would have followed;
- `verify_seconds` is the time of the new verifications (the buggy code is not
  re-verified); model fields (seconds, tokens, identity, replays) are kept as they were.

Outcomes are kept unchanged, and listed in `skipped` with the reason, when they cannot be
rescored honestly: status "error" (an infrastructure problem, never a verdict), a koan
that is missing from the corpus or whose digest differs from the run's (its tests are not
the ones the run was judged against), no recorded episodes, or episodes that do not
cover exactly the model calls the outcome counts.

The rescored run keeps its `run_id` (its episodes still match it) and records in
`provenance["rescored"]` the toolchain it was first verified with, the new toolchain,
the verifier VERSION and when.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .verify import verifier as verifier_module
from .agent import NO_CODE_AFTER_A_CHANGE, _steps, _still
from .koans import Koan
from .results import ERROR, FAILED, PASSED, EpisodeFileError, Outcome, RunFile, RunSummary, read_episodes
from .verify.verifier import Verifier

__all__ = ["RescoreChange", "RescoreResult", "EpisodeFileError", "rescore_run", "read_episodes"]

_EPISODE_FIELDS = ("koan", "strategy", "sample", "step", "code")


@dataclass
class RescoreChange:
    """One outcome whose status, reason or steps the new verdicts changed."""

    koan: str
    strategy: str
    sample: int
    before_status: str
    before_reason: str
    after_status: str
    after_reason: str
    before_steps: int = 0
    after_steps: int = 0
    variant: str = ""


@dataclass
class RescoreResult:
    run: RunFile  # the rescored run: same run_id, new outcomes, aggregates and provenance
    changed: list[RescoreChange] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item label, why it was kept as is)
    rescored: int = 0  # outcomes re-verified (changed or not)


def rescore_run(run: RunFile, episodes: list[dict], koans: dict[str, Koan], verifier: Verifier) -> RescoreResult:
    """Re-verify the run's recorded candidates with `verifier`; `run` is not modified."""
    attempts = _group_episodes(run.run_id, episodes)
    keys = [_key(o) for o in run.outcomes]
    shared = {k for k in keys if keys.count(k) > 1}
    result = RescoreResult(run=run)
    outcomes = []
    for original in run.outcomes:
        outcome = Outcome.from_dict(copy.deepcopy(original.to_dict()))
        outcomes.append(outcome)
        why = _why_not(outcome, koans, attempts.get(_key(outcome)), _key(outcome) in shared)
        if why:
            result.skipped.append((_label(outcome), why))
            continue
        _rescore(outcome, koans[outcome.koan], attempts[_key(outcome)], verifier)
        result.rescored += 1
        if (outcome.status, outcome.reason, outcome.steps) != (original.status, original.reason, original.steps):
            result.changed.append(RescoreChange(
                koan=outcome.koan, strategy=outcome.strategy, sample=outcome.sample,
                before_status=original.status, before_reason=original.reason,
                after_status=outcome.status, after_reason=outcome.reason,
                before_steps=original.steps, after_steps=outcome.steps, variant=getattr(outcome, "variant", ""),
            ))
    provenance = copy.deepcopy(run.provenance)
    old_rustc = provenance.get("rustc") or ""
    new_rustc = verifier.toolchain.version
    provenance["rescored"] = {
        "from_rustc": _first_line(old_rustc),
        "rustc": _first_line(new_rustc),
        "verifier": verifier_module.VERSION,
        "sandbox": verifier.sandbox.mode,
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "outcomes": result.rescored,
        "changed": len(result.changed),
        "skipped": len(result.skipped),
    }
    provenance["rustc"] = new_rustc
    provenance["sandbox"] = verifier.sandbox.mode
    order = [s["name"] for s in provenance.get("strategies", []) if isinstance(s, dict) and "name" in s]
    aggregates = RunSummary.from_outcomes(outcomes, order).to_dict()
    result.run = RunFile(run_id=run.run_id, provenance=provenance, outcomes=outcomes, aggregates=aggregates)
    return result


def _key(record: Outcome | dict) -> tuple:
    """What ties an episode to its outcome. Episodes carry no variant or stage today;
    when they do, outcomes that differ only in those are told apart."""
    if isinstance(record, Outcome):
        return (record.koan, record.strategy, record.sample,
                getattr(record, "variant", "") or "", getattr(record, "stage", None))
    return (record["koan"], record["strategy"], record["sample"], record.get("variant") or "", record.get("stage"))


def _group_episodes(run_id: str, episodes: list[dict]) -> dict[tuple, list[dict]]:
    grouped: dict[tuple, list[dict]] = {}
    for index, episode in enumerate(episodes):
        if episode.get("run_id") != run_id:
            continue
        missing = [name for name in _EPISODE_FIELDS if name not in episode]
        if missing:
            raise EpisodeFileError(f"episode {index + 1} (run {run_id}): missing field {missing[0]!r}")
        grouped.setdefault(_key(episode), []).append(episode)
    for records in grouped.values():
        records.sort(key=lambda e: e["step"])
    return grouped


def _why_not(outcome: Outcome, koans: dict[str, Koan], records: list[dict] | None, shared: bool) -> str | None:
    """Why this outcome cannot be rescored, or None when it can."""
    if outcome.status == ERROR:
        return f"not rescored: status error ({outcome.reason or 'no reason recorded'}), kept as is"
    if outcome.status not in (PASSED, FAILED):
        return f"not rescored: unknown status {outcome.status!r}"
    koan = koans.get(outcome.koan)
    if koan is None:
        return "not rescored: koan missing since the run (not in the corpus)"
    if not outcome.koan_digest:
        return "not rescored: the run recorded no koan digest, so its tests cannot be matched"
    if koan.digest != outcome.koan_digest:
        return (f"not rescored: koan changed since the run (digest {outcome.koan_digest} then, {koan.digest} now); "
                "its tests are not the ones the run was judged against")
    if shared:
        return "not rescored: several outcomes share this koan, strategy and sample, and episodes do not say which is which"
    if not records:
        return "not rescored: no episodes of this run recorded for it"
    steps = [e["step"] for e in records]
    if steps != list(range(1, outcome.steps + 1)):
        return (f"not rescored: episodes incomplete (steps recorded {steps}, "
                f"the outcome made {outcome.steps} model call(s))")
    if any(e.get("koan_digest") not in (None, outcome.koan_digest) for e in records):
        return "not rescored: its episodes record another koan digest than the run"
    return None


def _rescore(outcome: Outcome, koan: Koan, records: list[dict], verifier: Verifier) -> None:
    seconds = 0.0
    last_verdict, last_step = None, 0
    for episode in records:
        code = episode["code"]
        if code is None:
            continue
        started = time.perf_counter()
        verdict = verifier.verify_candidate(koan, code)
        seconds += time.perf_counter() - started
        if verdict.passed:
            outcome.status, outcome.reason, outcome.steps = PASSED, "", episode["step"]
            outcome.verify_seconds = round(seconds, 4)
            return
        last_verdict, last_step = verdict, episode["step"]
    outcome.status = FAILED
    outcome.verify_seconds = round(seconds, 4)
    # The agent's reason describes its last attempt: a verdict when that attempt held
    # code; "no code in the answer" and model errors do not depend on the verifier,
    # except where the reason also says where an earlier answer left the program.
    if last_verdict is not None and records[-1]["code"] is not None:
        outcome.reason = f"{_still(last_verdict)} after {_steps(last_step)}"
    elif last_verdict is not None and NO_CODE_AFTER_A_CHANGE in outcome.reason:
        tail = outcome.reason[outcome.reason.index(NO_CODE_AFTER_A_CHANGE):]
        outcome.reason = f"{_still(last_verdict)} after {_steps(records[-1]['step'])}{tail}"


def _label(outcome: Outcome) -> str:
    suffix = f", stage {outcome.stage}" if outcome.stage is not None else ""
    return f"{outcome.koan}[{outcome.column}-{outcome.sample}{suffix}]"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
