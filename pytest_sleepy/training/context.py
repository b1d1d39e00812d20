"""What training strategies get in `Strategy.train(context)`: data, adapters, Share
and the router, each built once and cached in the artifact store.

The data: SFT records of the `train` split (each train koan, plus the variants of
`[tool.sleepy.train] variants` when given), built with the asking strategy's own
prompt builder and the real verifier's diagnostics, every one checked by the leakage
guard. Selections (`records(kind)`):

- targeted: records of the patterns the baseline fails. "The baseline" is the run file
  of `--sleepy-baseline` (or `[tool.sleepy.train] baseline`); a pattern counts as
  failed when any of its koans failed there. Without a baseline run every train
  pattern is targeted, and `targeting` says so.
- replay: targeted plus a share (`replay_ratio`, default 0.5) of records from the
  other patterns, drawn with the training seed.
- weighted: every record, weighted by how the baseline did on its pattern (critical
  failed, medium solved after several steps, good solved at once; good without a
  baseline), sampled in proportion to weight.

Adapter identities, which requests and the completion cache carry, are
`lora:<key>.<build>`, `share:<key>.<build>:<pattern>` and `share:<key>.<build>:average`:
the artifact's content address and the id of the build that made it, so a retrained
adapter is a new identity and never gets the old one's cached answers.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import __version__
from ..koans import Koan
from ..progress import training_reporter
from ..results import Outcome
from ..verify.verifier import Verifier
from .artifacts import Artifact, ArtifactStore, artifact_key, records_digest, training_material
from .leakage import LeakageGuard
from .lora import TrainConfig, train_lora
from .records import read_records, sft_record, weight_class_for

__all__ = ["TrainingContext", "read_peft_factors"]

Say = Callable[[str], None]


class TrainingContext:
    def __init__(self, *, model, store: ArtifactStore, config: TrainConfig, train_koans: Sequence[Koan],
                 eval_koans: Sequence[Koan], verifier: Verifier, baseline_outcomes: Sequence[Outcome] = (),
                 variants_file: Path | None = None, replay_ratio: float = 0.5, retrain: bool = False,
                 feedback_dir: Path | None = None, say: Say = lambda line: None):
        if not hasattr(model, "register_adapter"):
            raise ValueError(f"--model={model.spec.text}: training strategies need a model whose adapters can be "
                             "applied; use an hf: model (e.g. --model=hf:Qwen/Qwen2.5-Coder-1.5B-Instruct)")
        leaked = [k.id for k in train_koans if k.split != "train"]
        if leaked:
            raise ValueError(f"training data must come from the train split only; got {', '.join(leaked)}")
        self.model = model
        self.store = store
        self.config = config
        self.train_koans = list(train_koans)
        self.verifier = verifier
        self.guard = LeakageGuard(list(eval_koans))
        self.baseline_outcomes = list(baseline_outcomes)
        self.variants_file = variants_file
        self.replay_ratio = replay_ratio
        self.retrain = retrain
        self.feedback_dir = feedback_dir
        self.say = say
        self._records: dict[str, list[dict]] = {}  # strategy name -> its SFT records
        self._rebuilt: set[str] = set()  # artifact keys (re)built in this session

    # -- data ------------------------------------------------------------------------

    @property
    def base_name(self) -> str:
        return str(self.model.path) if getattr(self.model, "local", False) else self.model.name

    def sft_records(self, strategy) -> list[dict]:
        """Every train koan (and variant) as an SFT record in `strategy`'s prompt format."""
        if strategy.name not in self._records:
            koans = list(self.train_koans)
            if self.variants_file is not None:
                from .records import koan_from_variant_record

                for index, record in enumerate(read_records(self.variants_file, kinds=("variant",)), 1):
                    if record.get("leaks") or record.get("split") != "train":
                        raise ValueError(f"{self.variants_file}, record {index}: not a train-split variant; "
                                         "training refuses eval material")
                    koans.append(koan_from_variant_record(record, f"{self.variants_file}, record {index}"))
            records = []
            for koan in koans:
                verdict = self.verifier.verify_candidate(koan, koan.buggy)
                if verdict.passed:
                    continue
                source = koan.id.split("~")[0]
                record = sft_record(koan, verdict, strategy, source=source,
                                    variant=koan.id if "~" in koan.id else None,
                                    weight_class=self._weight_class(koan.pattern))
                self.guard.check_record(record, label=f"training record for {koan.id}")
                records.append(record)
            self._records[strategy.name] = records
        return self._records[strategy.name]

    def _baseline_by_pattern(self) -> dict[str, list[Outcome]]:
        """The baseline run's counted outcomes by pattern: of its `baseline` strategy
        (else its first), never of errored items, whose results are unknown."""
        strategies = [o.strategy for o in self.baseline_outcomes]
        reference = "baseline" if "baseline" in strategies else (strategies[0] if strategies else None)
        by_pattern: dict[str, list[Outcome]] = {}
        for o in self.baseline_outcomes:
            if o.strategy == reference and not o.variant and o.status != "error":
                by_pattern.setdefault(o.pattern, []).append(o)
        return by_pattern

    def _weight_class(self, pattern: str) -> str:
        return weight_class_for(self._baseline_by_pattern().get(pattern, []))

    @property
    def targeting(self) -> str:
        if not self.baseline_outcomes:
            return "no baseline run: every train pattern is targeted"
        return f"patterns the baseline run failed: {', '.join(sorted(self.targeted_patterns())) or 'none'}"

    def targeted_patterns(self) -> set[str]:
        train_patterns = {k.pattern for k in self.train_koans}
        if not self.baseline_outcomes:
            return train_patterns
        failed = {p for p, outcomes in self._baseline_by_pattern().items() if any(not o.solved for o in outcomes)}
        return failed & train_patterns

    def records(self, strategy, kind: str) -> list[dict]:
        records = self.sft_records(strategy)
        targeted = self.targeted_patterns()
        if kind == "targeted":
            return [r for r in records if r["metadata"]["pattern"] in targeted]
        if kind == "replay":
            chosen = [r for r in records if r["metadata"]["pattern"] in targeted]
            others = [r for r in records if r["metadata"]["pattern"] not in targeted]
            count = min(len(others), round(self.replay_ratio * len(chosen)))
            return chosen + random.Random(self.config.seed).sample(others, count)
        if kind == "weighted":
            return records
        raise ValueError(f"unknown training selection {kind!r}; use targeted, replay or weighted")

    # -- artifacts -------------------------------------------------------------------

    @staticmethod
    def _trained_on(records: Sequence[dict]) -> list[dict]:
        """What training reads of the records (the chats and their weights): the
        artifact's address, so strategies with the same data share one adapter."""
        return [{"messages": r["messages"], "weight": r["metadata"]["weight"]} for r in records]

    def config_for(self, strategy) -> TrainConfig:
        overrides = getattr(strategy, "train_overrides", None) or {}
        return TrainConfig.from_table(dict(overrides), f"strategies/{strategy.name}.py train_overrides", base=self.config)

    def _progress(self, label: str):
        return training_reporter(f"training {label}", self.say)

    def lora(self, strategy, records: Sequence[dict], *, name: str = "", config: TrainConfig | None = None) -> str:
        """Train (or load) a LoRA adapter on `records`; returns its identity, registered
        with the model."""
        config = config or self.config_for(strategy)
        label = f"{strategy.name}{':' + name if name else ''}"
        material = training_material("lora", base_model=self.model.identity, base_name=self.base_name,
                                     records=self._trained_on(records), hyperparameters=config.to_dict(),
                                     seed=config.seed, name=name)

        def build(folder: Path) -> dict:
            self.say(f"training {label}: {len(records)} records, {config.steps} steps")
            return train_lora(self.base_name, records, config, folder, self._progress(label)).metrics()

        artifact = self._artifact("lora", material, build, strategy)
        identity = f"lora:{_address(artifact)}"
        self.model.register_adapter(identity, artifact.path)
        return identity

    def _artifact(self, kind: str, material: dict, build, strategy) -> Artifact:
        """Get or build an artifact. With --sleepy-retrain each artifact is rebuilt once
        per session, however many strategies share it."""
        key = artifact_key({**material, "kind": kind})
        retrain = self.retrain and key not in self._rebuilt
        artifact = self.store.get_or_create(kind, material, build, made_by=strategy.name, retrain=retrain)
        self._rebuilt.add(artifact.key)
        return artifact

    def per_pattern_loras(self, strategy, records: Sequence[dict]) -> dict[str, Artifact]:
        """One LoRA per pattern present in `records` (Share's Phase 1 input)."""
        config = self.config_for(strategy)
        adapters = {}
        for pattern in sorted({r["metadata"]["pattern"] for r in records}):
            subset = [r for r in records if r["metadata"]["pattern"] == pattern]
            material = training_material("lora", base_model=self.model.identity, base_name=self.base_name,
                                         records=self._trained_on(subset), hyperparameters=config.to_dict(),
                                         seed=config.seed, name=pattern)

            def build(folder: Path, subset=subset, pattern=pattern) -> dict:
                self.say(f"training {strategy.name}:{pattern}: {len(subset)} records, {config.steps} steps")
                return train_lora(self.base_name, subset, config, folder,
                                  self._progress(f"{strategy.name}:{pattern}")).metrics()

            adapters[pattern] = self._artifact("lora", material, build, strategy)
        return adapters

    def share(self, strategy, records: Sequence[dict], share_config) -> dict[str, str]:
        """Share from per-pattern LoRAs (Phase 1), exported per pattern and averaged
        (core-averaged, rank p). Returns pattern -> adapter identity, plus "average"."""
        from dataclasses import asdict

        from .share import average, export_task, phase1, save_share, write_peft_adapter

        loras = self.per_pattern_loras(strategy, records)
        material = {"kind": "share", "base_model": self.model.identity, "base_name": self.base_name,
                    "records": records_digest(self._trained_on(records)), "hyperparameters": asdict(share_config),
                    "seed": share_config.seed, "loras": {p: a.key for p, a in sorted(loras.items())},
                    "version": __version__}

        def build(folder: Path) -> dict:
            self.say(f"{strategy.name}: Share Phase 1 over {len(loras)} pattern adapters")
            share = phase1({p: read_peft_factors(a.path) for p, a in loras.items()}, share_config)
            save_share(share, folder / "share")
            for pattern in share.tasks:
                write_peft_adapter(export_task(share, pattern), folder / "tasks" / pattern, base_model=self.base_name,
                                   rank=share_config.p, alpha=share_config.p)
            write_peft_adapter(average(share, share_config.p), folder / "average", base_model=self.base_name,
                               rank=share_config.p, alpha=share_config.p)
            return {"tasks": list(share.tasks), "parameters": share.parameter_count()}

        artifact = self._artifact("share", material, build, strategy)
        identities = {}
        for pattern in artifact.meta.get("tasks", []):
            identities[pattern] = f"share:{_address(artifact)}:{pattern}"
            self.model.register_adapter(identities[pattern], artifact.path / "tasks" / pattern)
        identities["average"] = f"share:{_address(artifact)}:average"
        self.model.register_adapter(identities["average"], artifact.path / "average")
        return identities

    def share_sequential(self, strategy, groups: Sequence[tuple[str, Sequence[dict]]], share_config,
                         phase2: TrainConfig) -> list[dict[str, str]]:
        """Learn pattern groups one stage at a time: stage 1 is Share Phase 1 over the
        first group's per-pattern LoRAs; every later stage trains each new pattern's
        coefficients with the basis frozen (Phase 2) and merges it in (Phase 3).
        Returns, per stage, pattern -> adapter identity of every task learned so far."""
        from dataclasses import asdict

        from .lora import _load_base, train_parameters
        from .share import attach_phase2, export_task, merge, phase1, save_share, write_peft_adapter

        first_name, first_records = groups[0]
        loras = self.per_pattern_loras(strategy, first_records)
        material = {"kind": "share_sequential", "base_model": self.model.identity, "base_name": self.base_name,
                    "records": [[name, records_digest(self._trained_on(records))] for name, records in groups],
                    "hyperparameters": {"share": asdict(share_config), "phase2": phase2.to_dict()},
                    "seed": share_config.seed, "loras": {p: a.key for p, a in sorted(loras.items())},
                    "version": __version__}

        def export(share, folder: Path) -> None:
            for pattern in share.tasks:
                write_peft_adapter(export_task(share, pattern), folder / pattern, base_model=self.base_name,
                                   rank=share_config.p, alpha=share_config.p)

        def build(folder: Path) -> dict:
            self.say(f"{strategy.name}: stage 1 ({first_name}): Share Phase 1 over {len(loras)} pattern adapters")
            share = phase1({p: read_peft_factors(a.path) for p, a in loras.items()}, share_config)
            export(share, folder / "stage1")
            learned = [list(share.tasks)]
            model, tokenizer = _load_base(self.base_name, phase2)
            for stage, (name, records) in enumerate(groups[1:], start=2):
                for pattern in sorted({r["metadata"]["pattern"] for r in records}):
                    subset = [r for r in records if r["metadata"]["pattern"] == pattern]
                    label = f"{strategy.name} stage {stage} ({name}) {pattern}"
                    self.say(f"training {label}: Phase 2, {len(subset)} records, {phase2.steps} steps")
                    handle = attach_phase2(model, share, pattern, share_config)
                    try:
                        train_parameters(model, tokenizer, subset, handle.parameters(), phase2, self._progress(label))
                        expanded = handle.expanded()
                    finally:
                        handle.detach()
                    share = merge(share, pattern, expanded)  # Phase 3
                export(share, folder / f"stage{stage}")
                learned.append(list(share.tasks))
            save_share(share, folder / "share")
            return {"stages": learned}

        artifact = self._artifact("share_sequential", material, build, strategy)
        stages = []
        for stage, patterns in enumerate(artifact.meta["stages"], start=1):
            identities = {}
            for pattern in patterns:
                identities[pattern] = f"share:{_address(artifact)}:stage{stage}:{pattern}"
                self.model.register_adapter(identities[pattern], artifact.path / f"stage{stage}" / pattern)
            stages.append(identities)
        return stages

    def router(self, strategy):
        """The diagnostics router, trained on the train split's real verdicts."""
        from ..router import Router, build_router

        material = {"kind": "router", "base_model": None, "base_name": None, "seed": 0, "hyperparameters": {},
                    "records": sorted((k.id, k.digest) for k in self.train_koans),
                    "rustc": self.verifier.toolchain.version,
                    "version": __version__}

        def build(folder: Path) -> dict:
            router = build_router(self.train_koans, self.verifier)
            router.save(folder / "router.json")
            return {"patterns": len({k.pattern for k in self.train_koans})}

        artifact = self._artifact("router", material, build, strategy)
        return Router.load(artifact.path / "router.json")


def _address(artifact: Artifact) -> str:
    """An adapter's identity: the artifact's content address plus its build id, so a
    retrained adapter (--sleepy-retrain) is never served the old one's cached answers."""
    return f"{artifact.key[:16]}.{str(artifact.meta.get('build', ''))[:8]}"


def read_peft_factors(directory: Path) -> dict:
    """A peft LoRA directory as Share's LoraFactors per module (scale kept: Share folds
    it into B on ingest)."""
    from safetensors.torch import load_file

    from .share import LoraFactors

    config = json.loads((directory / "adapter_config.json").read_text())
    tensors = load_file(str(directory / "adapter_model.safetensors"))
    factors = {}
    for key, A in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        B = tensors[key.replace(".lora_A.", ".lora_B.")]
        factors[module] = LoraFactors(B=B.float(), A=A.float(), alpha=float(config["lora_alpha"]),
                                      rank=int(config["r"]), rslora=bool(config.get("use_rslora", False)))
    return factors
