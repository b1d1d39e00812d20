"""Training records: supervised (SFT) and preference (DPO) examples, their weights,
and the weighted sampler.

Every record is one JSON line:

    variant  {"kind": "variant", "id", "source", "split", "family", "pattern", "title", "edition",
              "expect", "code": {"buggy", "fixed", "tests"}, "transformations", "seed", "leaks",
              "verified_by": {"rustc", "verifier"}}          (written by `sleepy variants`)
    SFT  {"kind": "sft", "messages": [{"role", "content"}...], "code": {"buggy", "fixed"},
          "metadata": {...}}
    DPO  {"kind": "dpo", "prompt": [{"role", "content"}...], "chosen": str, "rejected": str,
          "code": {"chosen", "rejected"}, "metadata": {...}}

metadata: source_koan, variant (id or null), pattern, family, split, transformations,
seed, weight_class, weight, leaks (true only when made from eval koans on purpose),
and for DPO the run id, model, strategy and step.

SFT prompts are built by the strategy's own `messages()` (the one prompt builder of
inference) from the real verifier's cleaned diagnostics of the variant's buggy code;
the assistant turn is the reference fix. Never hand-written error text.

Weight classes (the seed's weighted-LoRA design): `critical` 10x, `medium` 3x,
`good` 1x. Defaults, when a run file tells how the model did on the source koan:
failed it (the reference fixes it) -> critical; solved after more than one step ->
medium; solved at the first step -> good. Without a run file -> good. Preference
records are critical (the rejected answer is a real failure of the model). Any record
may carry its own class, which wins.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..koans import Koan
from ..models.base import Message
from ..results import Outcome
from ..strategies import StepView, Strategy
from ..verify.verifier import Verdict

__all__ = [
    "WEIGHT_CLASSES", "RecordFileError", "weight_class_for", "sft_record", "dpo_records", "WeightedSampler",
    "read_records", "write_records", "variant_record", "koan_from_variant_record",
]

WEIGHT_CLASSES = {"critical": 10.0, "medium": 3.0, "good": 1.0}


class RecordFileError(ValueError):
    """A record file is malformed; the message names the file, line and field."""


def weight_class_for(outcomes: Sequence[Outcome]) -> str:
    """The default class of records derived from a koan, from how the model did on it."""
    if not outcomes:
        return "good"
    if any(not o.solved for o in outcomes):
        return "critical"
    if any(o.steps > 1 for o in outcomes):
        return "medium"
    return "good"


def _weighted(metadata: dict, weight_class: str) -> dict:
    if weight_class not in WEIGHT_CLASSES:
        raise ValueError(f"weight class {weight_class!r}: use one of {', '.join(WEIGHT_CLASSES)}")
    return {**metadata, "weight_class": weight_class, "weight": WEIGHT_CLASSES[weight_class]}


def variant_record(koan: Koan, *, source: str, transformations: Sequence[str], seed: int, leaks: bool,
                   verified_by: dict) -> dict:
    """One line of a variants file (`sleepy variants`)."""
    return {
        "kind": "variant", "id": koan.id, "source": source, "split": koan.split, "family": koan.family,
        "pattern": koan.pattern, "title": koan.title, "edition": koan.edition, "expect": list(koan.expect),
        "code": {"buggy": koan.buggy, "fixed": koan.fixed, "tests": koan.tests}, "transformations": list(transformations),
        "seed": seed, "leaks": leaks, "verified_by": verified_by,
    }


def koan_from_variant_record(record: dict, where: str) -> Koan:
    try:
        code = record["code"]
        return Koan(id=record["id"], family=record["family"], pattern=record["pattern"],
                    title=record.get("title", record["id"]), edition=record["edition"], split=record["split"],
                    expect=tuple(record["expect"]), buggy=code["buggy"], fixed=code["fixed"], tests=code["tests"])
    except (KeyError, TypeError) as error:
        raise RecordFileError(f"{where}: a variant record needs field {error.args[0]!r} (in 'code' for code)") from None


def sft_record(koan: Koan, verdict: Verdict, strategy: Strategy, *, source: str, variant: str | None,
               transformations: Sequence[str] = (), seed: int | None = None, weight_class: str = "good",
               leaks: bool = False) -> dict:
    """The chat a strategy would send for `koan` at step 1, answered with the reference fix."""
    if verdict.passed:
        raise ValueError(f"{koan.id}: the buggy code passes; there is nothing to learn from it")
    prompt = strategy.messages(StepView(step=1, code=koan.buggy, verdict=verdict))
    messages = [*prompt, Message("assistant", f"```rust\n{koan.fixed.strip()}\n```")]
    metadata = {"source_koan": source, "variant": variant, "pattern": koan.pattern, "family": koan.family,
                "split": koan.split, "transformations": list(transformations), "seed": seed,
                "strategy": strategy.name, "error_codes": verdict.error_codes, "leaks": leaks}
    return {"kind": "sft", "messages": [{"role": m.role, "content": m.content} for m in messages],
            "code": {"buggy": koan.buggy, "fixed": koan.fixed}, "metadata": _weighted(metadata, weight_class)}


def dpo_records(episodes: Iterable[dict], koans: dict[str, Koan], *, max_pairs_per_prompt: int = 4) -> list[dict]:
    """Pairs of answers to the same prompt (same prompt hash): chosen = an answer whose
    code the verifier passed, rejected = one it did not (or one without code). Pairs
    come from samples, steps, strategies or models that met the same prompt."""
    by_prompt: dict[str, list[dict]] = {}
    for episode in episodes:
        if episode.get("prompt_hash") and episode.get("messages"):
            by_prompt.setdefault(episode["prompt_hash"], []).append(episode)
    records = []
    for prompt_hash, group in sorted(by_prompt.items()):
        chosen = _distinct(e for e in group if (e.get("verdict") or {}).get("passed"))
        rejected = _distinct(e for e in group if not (e.get("verdict") or {}).get("passed"))
        pairs = [(c, r) for c in chosen for r in rejected][:max_pairs_per_prompt]
        for good, bad in pairs:
            koan = koans.get(good["koan"])
            metadata = {"source_koan": good["koan"], "variant": None,
                        "pattern": koan.pattern if koan else None, "family": koan.family if koan else None,
                        "split": koan.split if koan else None, "prompt_hash": prompt_hash,
                        "chosen_from": _origin(good), "rejected_from": _origin(bad), "leaks": False}
            records.append({
                "kind": "dpo",
                "prompt": good["messages"],
                "chosen": good["response"], "rejected": bad["response"],
                "code": {"chosen": good.get("code") or "", "rejected": bad.get("code") or ""},
                "metadata": _weighted(metadata, "critical"),
            })
    return records


def _distinct(episodes: Iterable[dict]) -> list[dict]:
    seen, kept = set(), []
    for episode in episodes:
        if episode["response"] not in seen:
            seen.add(episode["response"])
            kept.append(episode)
    return kept


def _origin(episode: dict) -> dict:
    return {key: episode.get(key) for key in ("run_id", "model", "strategy", "sample", "step")}


class WeightedSampler:
    """Draws records with probability proportional to their weight (with replacement),
    reproducibly for a seed."""

    def __init__(self, records: Sequence[dict], seed: int = 0):
        if not records:
            raise ValueError("nothing to sample: the record list is empty")
        self.records = list(records)
        self.weights = [float(r["metadata"]["weight"]) for r in self.records]
        if any(w <= 0 for w in self.weights):
            raise ValueError("record weights must be positive")
        self._random = random.Random(seed)

    def draw(self, count: int) -> list[dict]:
        return self._random.choices(self.records, weights=self.weights, k=count)


def write_records(path: Path | str, records: Iterable[dict], check: Callable[[dict, str], None] | None = None) -> int:
    """Write records as JSON lines; `check(record, label)` runs first on each (the
    leakage guard) and may raise to refuse the file before anything is written."""
    records = list(records)
    if check is not None:
        for index, record in enumerate(records, 1):
            check(record, _label(record, index))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(records)


def read_records(path: Path | str, kinds: Sequence[str] = ("sft", "dpo", "variant"),
                 check: Callable[[dict, str], None] | None = None) -> list[dict]:
    """Read a record file; every record is validated (and checked by `check`, the
    leakage guard, before training may use it)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise RecordFileError(f"{path}: cannot read the record file: {error.strerror}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            record = json.loads(line)
        except ValueError as error:
            raise RecordFileError(f"{where}: not JSON ({error})") from None
        if not isinstance(record, dict) or record.get("kind") not in kinds:
            raise RecordFileError(f"{where}: field 'kind' must be one of {', '.join(kinds)}")
        if record["kind"] != "variant":
            metadata = record.get("metadata")
            if not isinstance(metadata, dict) or metadata.get("weight_class") not in WEIGHT_CLASSES:
                raise RecordFileError(f"{where}: field 'metadata.weight_class' must be one of {', '.join(WEIGHT_CLASSES)}")
            record["metadata"]["weight"] = WEIGHT_CLASSES[metadata["weight_class"]]
        if check is not None:
            check(record, where)
        records.append(record)
    return records


def _label(record: dict, index: int) -> str:
    metadata = record.get("metadata", {})
    return f"record {index} ({metadata.get('variant') or metadata.get('source_koan') or record.get('id') or '?'})"
