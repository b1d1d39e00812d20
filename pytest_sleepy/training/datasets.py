"""Building training files from the corpus: variants, SFT and preference records.

Plain functions behind `sleepy variants` and `sleepy data ...`. Each returns what it
did (counts, refusals) for the command to print. The leakage guard checks every
record before it is written: a refused record is left out and reported, and the
others are still written, so nothing already computed is lost.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..koans import Koan
from ..results import Outcome
from ..verify.sandbox import Sandbox, Toolchain
from ..strategies import Strategy
from ..verify.verifier import VERSION, VerificationCache, Verifier
from .leakage import LeakageError, LeakageGuard
from .records import (dpo_records, koan_from_variant_record, sft_record, variant_record, weight_class_for,
                      write_records)

__all__ = ["KoanDraw", "VariantFile", "DataFile", "make_variants", "make_sft", "make_dpo", "koan_seed"]


def koan_seed(seed: int, koan_id: str) -> int:
    """Each koan gets its own stream of draws, reproducible from the run's seed."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{koan_id}".encode()).digest()[:4], "big")


@dataclass
class KoanDraw:
    koan: str
    drawn: int  # candidates examined (hypothesis may generate more than are needed)
    kept: int
    duplicates: int
    discarded: int
    refused: int  # kept by the verifier, refused by the leakage guard
    problems: Counter
    seconds: float


@dataclass
class VariantFile:
    draws: list[KoanDraw]
    written: int
    refusals: list[str] = field(default_factory=list)


@dataclass
class DataFile:
    written: int
    refusals: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    weight_classes: Counter = field(default_factory=Counter)


def _verifier(cache_dir: Path | None, unsafe_no_sandbox: bool) -> Verifier:
    cache = VerificationCache(cache_dir) if cache_dir else None
    return Verifier(Sandbox(Toolchain.detect(), unsafe_no_sandbox=unsafe_no_sandbox), cache)


def _draw_one(koan: Koan, per_koan: int, seed: int, cache_dir: Path | None, unsafe: bool):
    # Runs in a worker process: hypothesis and the verifier are set up per process.
    import time

    from ..corpus.variants import draw_variants

    started = time.perf_counter()
    draw = draw_variants(koan, per_koan, seed=koan_seed(seed, koan.id), verifier=_verifier(cache_dir, unsafe))
    return draw, time.perf_counter() - started


def make_variants(koans: Sequence[Koan], eval_koans: Sequence[Koan], out: Path, *, per_koan: int, seed: int,
                  leaks: bool, jobs: int, cache_dir: Path | None, unsafe_no_sandbox: bool = False,
                  progress: Callable[[KoanDraw], None] | None = None) -> VariantFile:
    guard = LeakageGuard(list(eval_koans))
    toolchain = Toolchain.detect()
    verified_by = {"rustc": toolchain.version.splitlines()[0], "verifier": VERSION}
    records, draws, refusals = [], [], []
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(_draw_one, koan, per_koan, seed, cache_dir, unsafe_no_sandbox) for koan in koans]
        for koan, future in zip(koans, futures):
            draw, seconds = future.result()
            refused = 0
            for variant in draw.kept:
                record = variant_record(variant.koan, source=variant.source, transformations=variant.transformations,
                                        seed=seed, leaks=leaks, verified_by=verified_by)
                if not leaks:
                    try:
                        guard.check_record(record, label=f"variant {variant.koan.id}")
                    except LeakageError as error:
                        refused += 1
                        refusals.append(str(error))
                        continue
                records.append(record)
            summary = KoanDraw(koan.id, draw.drawn - draw.unused, len(draw.kept) - refused, draw.duplicates, draw.discarded,
                               refused, draw.problems, seconds)
            draws.append(summary)
            if progress:
                progress(summary)
    written = write_records(out, records)
    return VariantFile(draws, written, refusals)


def make_sft(variant_records: Sequence[dict], strategy: Strategy, verifier: Verifier, guard: LeakageGuard, out: Path,
             *, outcomes: Sequence[Outcome] = (), allow_leaks: bool = False) -> DataFile:
    """One SFT record per variant, weighted by how the model did on the source koan
    in `outcomes` (a run file), when given."""
    by_koan: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_koan.setdefault(o.koan, []).append(o)
    result = DataFile(0)
    records = []
    for index, record in enumerate(variant_records, 1):
        where = f"variant record {index} ({record.get('id', '?')})"
        if record.get("leaks") and not allow_leaks:
            result.refusals.append(f"{where}: made from eval koans (--i-know-this-leaks was used for it); "
                                   "pass --i-know-this-leaks again to use it")
            continue
        koan = koan_from_variant_record(record, where)
        verdict = verifier.verify_candidate(koan, koan.buggy)
        if verdict.passed:
            result.skipped.append(f"{where}: its buggy code passes the hidden tests")
            continue
        weight_class = record.get("weight_class") or weight_class_for(by_koan.get(record["source"], []))
        sft = sft_record(koan, verdict, strategy, source=record["source"], variant=koan.id,
                         transformations=record.get("transformations", ()), seed=record.get("seed"),
                         weight_class=weight_class, leaks=bool(record.get("leaks")))
        if not record.get("leaks"):
            try:
                guard.check_record(sft, label=where)
            except LeakageError as error:
                result.refusals.append(str(error))
                continue
        result.weight_classes[weight_class] += 1
        records.append(sft)
    result.written = write_records(out, records)
    return result


def make_dpo(episodes: Sequence[dict], koans: dict[str, Koan], guard: LeakageGuard, out: Path, *,
             allow_leaks: bool = False) -> DataFile:
    result = DataFile(0)
    records = []
    for index, record in enumerate(dpo_records(episodes, koans), 1):
        metadata = record["metadata"]
        where = f"pair {index} ({metadata['source_koan']}, prompt {metadata['prompt_hash'][:12]})"
        if metadata["split"] != "train":
            if not allow_leaks:
                result.refusals.append(f"{where}: koan {metadata['source_koan']} is in the "
                                       f"{metadata['split'] or 'unknown'} split, not train; only train koans may feed "
                                       "training (--i-know-this-leaks overrides and marks the records)")
                continue
            metadata["leaks"] = True
        else:
            try:
                guard.check_record(record, label=where)
            except LeakageError as error:
                result.refusals.append(str(error))
                continue
        result.weight_classes[metadata["weight_class"]] += 1
        records.append(record)
    result.written = write_records(out, records)
    return result
