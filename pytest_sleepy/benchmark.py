"""One process's benchmark: settings, strategies, model, caches, verifier and episodes.

The pytest plugin builds one `Benchmark` per process (controller and each xdist
worker) and calls `run(koan, strategy, sample)` per item; everything here is plain
Python so it can be driven without pytest. Building it is cheap and contacts nothing:
the model server and the sandbox are touched by `preflight()` (once, on the
controller) and by the first `run()`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

from .agent import Attempt, repair
from .prompts import describe_verdict
from .corpus.suites import Suite, select_suite
from .koans import Koan, KoanFileError, is_koan_file, load_families, load_koan
from .models import CacheMiss, CompletionCache, GenerationSettings, load_model
from .results import ERROR, FAILED, PASSED, EpisodeLog, Outcome
from .verify.sandbox import Sandbox, Toolchain
from .settings import BenchmarkSettings, completion_cache_dir, verdict_cache_dir
from .extensions import Extensions
from .strategies import Strategy, known_strategies, select_strategies
from .verify.verifier import VerificationCache, Verifier

__all__ = ["Benchmark", "new_run_id", "git_state"]


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]


class Benchmark:
    def __init__(
        self,
        settings: BenchmarkSettings,
        *,
        koans_dir: Path,
        strategies_dir: Path,
        run_id: str | None = None,
        unsafe_no_sandbox: bool = False,
        rootdir: Path = Path("."),
        extensions: Extensions | None = None,
    ):
        self.settings = settings
        self.rootdir = rootdir
        self.koans_dir = koans_dir
        self.run_id = run_id or new_run_id()
        self.unsafe_no_sandbox = unsafe_no_sandbox
        extensions = extensions or Extensions()
        self.strategies: list[Strategy] = select_strategies(
            known_strategies(strategies_dir, extensions.strategies), settings.strategy)
        self.model = load_model(settings.model, extensions.backends)
        self.completions = CompletionCache(completion_cache_dir(settings.cache_dir), settings.cache)
        self.episodes = EpisodeLog(settings.episodes) if settings.episodes else None
        self._verifier: Verifier | None = None
        self._prepared = False
        if any(s.needs_training for s in self.strategies):
            train = self.train_koans()
            for strategy in self.strategies:
                strategy.plan(train)

    @property
    def verifier(self) -> Verifier:
        """Built on first use: it checks bubblewrap and rustc (and may refuse to run)."""
        if self._verifier is None:
            cache = None if self.settings.cache == "off" else VerificationCache(verdict_cache_dir(self.settings.cache_dir))
            self._verifier = Verifier(Sandbox(Toolchain.detect(), unsafe_no_sandbox=self.unsafe_no_sandbox), cache,
                                      max_candidate_bytes=self.settings.max_candidate_kib * 1024)
        return self._verifier

    def strategy(self, name: str) -> Strategy:
        return next(s for s in self.strategies if s.name == name)

    def preflight(self) -> None:
        """Raise ModelUnavailable / SandboxUnavailable / ToolchainMissing before any item
        runs. Replaying a recorded run (`--sleepy-cache=read`) needs no model."""
        self.verifier
        if self.settings.cache != "read":
            self.model.preflight()

    @functools.cached_property
    def families(self) -> dict[str, str]:
        return load_families(self.koans_dir)

    def load_koan(self, path: Path) -> Koan:
        return load_koan(path, self.families)

    def train_koans(self) -> list[Koan]:
        """The train split, the only koans strategies may learn from."""
        return [k for k in self.corpus if k.split == "train" and not k.flagged]

    def _prepare(self, say=lambda line: None) -> None:
        if not self._prepared:
            train = self.train_koans()
            for strategy in self.strategies:
                strategy.prepare(train, self.verifier.verify_candidate)
            if any(s.needs_training for s in self.strategies):
                context = self.training_context(train, say)
                for strategy in self.strategies:
                    if strategy.needs_training:
                        strategy.train(context)
            self._prepared = True

    def train_strategies(self, say) -> None:
        """Build (or load) every strategy's artifacts now, reporting progress with
        `say`: the controller does this before any worker starts, so each worker finds
        them in the artifact store."""
        self._prepare(say)

    def training_context(self, train_koans: list[Koan], say):
        """The training context of [tool.sleepy.train] (TrainConfig keys plus `variants`,
        `baseline` and `replay_ratio`) and [tool.sleepy.feedback]."""
        from .feedback import FeedbackConfig
        from .results import read_run_file
        from .training.artifacts import ArtifactStore
        from .training.context import TrainingContext
        from .training.lora import TrainConfig

        table = dict(self.settings.train)
        source = self.settings.pyproject or "pyproject.toml"
        where = f"{source}: [tool.sleepy.train]"
        base = self.settings.pyproject.parent if self.settings.pyproject else self.rootdir
        paths = {}
        for key in ("variants", "baseline"):
            value = table.pop(key, None)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{where} {key}: expected a path (a string), got {value!r}")
            paths[key] = base / value if value else None
        variants, baseline_file = paths["variants"], self.settings.baseline or paths["baseline"]
        replay_ratio = table.pop("replay_ratio", table.pop("replay-ratio", 0.5))
        if not isinstance(replay_ratio, (int, float)) or isinstance(replay_ratio, bool) or not 0 <= replay_ratio <= 10:
            raise ValueError(f"{where} replay_ratio: expected a number between 0 and 10, got {replay_ratio!r}")
        config = TrainConfig.from_table(table, where)
        feedback = FeedbackConfig.from_table(self.settings.feedback, f"{source}: [tool.sleepy.feedback]",
                                             base_dir=base, default_model=self.settings.model,
                                             artifacts_dir=self.settings.artifacts_dir)
        eval_koans = [k for k in self.corpus if k.split == "eval"]  # every suite's: none may leak into training
        return TrainingContext(
            model=self.model, store=ArtifactStore(self.settings.artifacts_dir), config=config,
            train_koans=train_koans, eval_koans=eval_koans, verifier=self.verifier,
            baseline_outcomes=read_run_file(baseline_file).outcomes if baseline_file else (),
            variants_file=variants, replay_ratio=float(replay_ratio),
            retrain=self.settings.retrain, feedback_dir=feedback.dir, say=say)

    @functools.cached_property
    def suite(self) -> Suite:
        """The eval suite this run measures; SuiteError when it is unknown or a frozen
        member changed."""
        return select_suite(self.koans_dir, self.corpus, self.settings.suite)

    def collects(self, koan: Koan) -> bool:
        """Whether this run's split (and suite) holds the koan."""
        if koan.split == "eval":
            return self.settings.split in ("eval", "all") and koan.id in self.suite.koans
        return self.settings.split in ("train", "all")

    @functools.cached_property
    def corpus(self) -> list[Koan]:
        """Every koan, read once per process. A broken file is skipped here; collection
        reports it as an error of its own."""
        koans = []
        for path in sorted(self.koans_dir.rglob("*.toml")):
            if is_koan_file(path, self.koans_dir):
                try:
                    koans.append(self.load_koan(path))
                except KoanFileError:
                    continue
        return koans

    def seed(self, sample: int) -> int:
        return self.settings.seed + sample

    def run(self, koan: Koan, strategy_name: str, sample: int, variant: str = "") -> Outcome:
        """Repair `koan` with one strategy (one of its variants) and one sample;
        ModelUnavailable propagates."""
        self._prepare()
        seed = self.seed(sample)
        strategy = self.strategy(strategy_name)
        outcome = Outcome(koan=koan.id, strategy=strategy_name, sample=sample, seed=seed, status=FAILED, reason="",
                          family=koan.family, pattern=koan.pattern, split=koan.split, koan_digest=koan.digest,
                          variant=variant, stage=strategy.stage_of(variant))
        settings = GenerationSettings(temperature=self.settings.temperature, seed=seed,
                                      max_tokens=self.settings.max_tokens)

        def record(attempt: Attempt) -> None:
            if self.episodes is not None:
                self.episodes.append(self.episode(koan, strategy_name, sample, seed, attempt))

        try:
            result = repair(koan, strategy, self.model, self.verifier,
                            max_steps=self.settings.max_steps, settings=settings, cache=self.completions,
                            on_attempt=record, variant=variant, history=self.settings.history)
        except CacheMiss as miss:
            outcome.status, outcome.reason = ERROR, f"{koan.id}: {miss}"
            return outcome
        outcome.status = PASSED if result.solved else FAILED
        outcome.reason = result.reason
        if result.initial.passed:
            outcome.status = ERROR
        outcome.steps = result.steps
        outcome.model_seconds = round(result.model_seconds, 4)
        outcome.verify_seconds = round(result.verify_seconds, 4)
        outcome.tokens_in, outcome.tokens_out = result.tokens
        outcome.model_identity = next((a.model_identity for a in reversed(result.attempts) if a.model_identity), "")
        outcome.replayed = sum(1 for a in result.attempts if a.cached)
        outcome.replayed_seconds = round(result.recorded_seconds, 4)
        outcome.route = result.attempts[0].route if result.attempts else None
        outcome.adapter = result.attempts[0].request.adapter if result.attempts else None
        return outcome

    def episode(self, koan: Koan, strategy: str, sample: int, seed: int, attempt: Attempt) -> dict:
        verdict = attempt.verdict
        return {
            "run_id": self.run_id,
            "koan": koan.id,
            "koan_digest": koan.digest,
            "strategy": strategy,
            "variant": attempt.variant,
            "model": self.model.spec.text,
            "model_identity": attempt.model_identity,
            "adapter": attempt.request.adapter,
            "route": attempt.route,
            "sample": sample,
            "seed": seed,
            "step": attempt.step,
            "prompt_hash": attempt.request.digest(),
            "messages": [{"role": m.role, "content": m.content} for m in attempt.request.messages],
            "settings": attempt.request.to_dict()["settings"],
            "response": attempt.response,
            "code": attempt.code,
            "diff": attempt.diff,
            "diagnostics": [d.code for d in attempt.request.diagnostics if d.is_error and d.code],
            "verdict": None if verdict is None else {
                "passed": verdict.passed, "compiled": verdict.compiled, "reason": verdict.reason,
                "error_codes": verdict.error_codes, "tests_passed": verdict.tests_passed,
                "tests_failed": verdict.tests_failed, "tests_total": verdict.tests_total,
                "failed_tests": verdict.failed_tests, "timed_out": verdict.timed_out, "tampering": verdict.tampering,
                # rustc's diagnostics or the failing tests, as the next prompt would show them.
                "feedback": describe_verdict(verdict),
            },
            "model_error": attempt.model_error,
            "tokens_in": attempt.tokens_in,
            "tokens_out": attempt.tokens_out,
            "model_seconds": round(attempt.model_seconds, 4),
            "recorded_seconds": round(attempt.recorded_seconds, 4),
            "verify_seconds": round(attempt.verify_seconds, 4),
            "cached": attempt.cached,
            "unchanged": attempt.unchanged,
        }

    def provenance(self, outcomes: list[Outcome], rootdir: Path, started: str) -> dict:
        seeds = sorted({o.seed for o in outcomes})
        return {
            "package": {"name": "pytest-sleepy", "version": importlib.metadata.version("pytest-sleepy")},
            "git": git_state(rootdir),
            "rustc": self.verifier.toolchain.version,
            "sandbox": self.verifier.sandbox.mode,
            "model": {"spec": self.model.spec.text, "backend": self.model.spec.backend,
                      "identities": sorted({o.model_identity for o in outcomes if o.model_identity})},
            "strategies": [s.definition() for s in self.strategies],
            **({"curriculum": curricula[0]} if (curricula := [c for s in self.strategies if (c := s.curriculum())]) else {}),
            "seeds": seeds,
            "options": self.settings.to_dict(),
            **({"suite": self.suite.record()} if self.settings.split != "train" else {}),
            "koans": {o.koan: o.koan_digest for o in sorted(outcomes, key=lambda o: o.koan)},
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "started": started,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def git_state(directory: Path) -> dict:
    """The commit the run was made from, and whether the working tree had changes."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
