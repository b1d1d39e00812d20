"""What the training context reads from a baseline run (training/context.py)."""

from __future__ import annotations

from types import SimpleNamespace

from pytest_sleepy.results import Outcome
from pytest_sleepy.training.artifacts import ArtifactStore
from pytest_sleepy.training.context import TrainingContext
from pytest_sleepy.training.lora import TrainConfig

from conftest import make_koan


def context(baseline_outcomes=(), store=None, retrain=False) -> TrainingContext:
    model = SimpleNamespace(register_adapter=lambda *a: None, spec=SimpleNamespace(text="hf:x"), identity="x")
    return TrainingContext(model=model, store=store, config=TrainConfig(), verifier=None, eval_koans=[],
                           train_koans=[make_koan(pattern="use_after_move"), make_koan(id="k2", pattern="missing_mut")],
                           baseline_outcomes=baseline_outcomes, retrain=retrain)


def outcome(pattern, status, strategy="baseline"):
    return Outcome(koan=f"{pattern}-{strategy}", strategy=strategy, sample=0, seed=0, status=status, reason="",
                   pattern=pattern)


def test_targeted_patterns_are_those_the_baseline_failed():
    ctx = context([outcome("use_after_move", "failed"), outcome("missing_mut", "passed")])
    assert ctx.targeted_patterns() == {"use_after_move"}


def test_an_errored_baseline_item_targets_nothing():
    ctx = context([outcome("use_after_move", "error"), outcome("missing_mut", "passed")])
    assert ctx.targeted_patterns() == set()


def test_only_the_baselines_reference_strategy_counts():
    ctx = context([outcome("use_after_move", "passed"), outcome("use_after_move", "failed", strategy="hints")])
    assert ctx.targeted_patterns() == set()


def test_without_a_baseline_run_every_train_pattern_is_targeted():
    ctx = context([])
    assert ctx.targeted_patterns() == {"use_after_move", "missing_mut"}
    assert ctx.targeting == "no baseline run: every train pattern is targeted"


def test_retraining_rebuilds_a_shared_artifact_once_per_session(tmp_path):
    store = ArtifactStore(tmp_path)
    material = {"base_model": "x", "records": "r", "hyperparameters": {}, "seed": 0, "version": "v"}
    builds = []

    def build(folder):
        builds.append(folder)
        (folder / "weights.bin").write_bytes(b"w")
        return {}

    store.get_or_create("lora", material, build)  # an earlier session's artifact
    ctx = context(store=store, retrain=True)
    first = ctx._artifact("lora", material, build, SimpleNamespace(name="share_averaged"))
    second = ctx._artifact("lora", material, build, SimpleNamespace(name="share_routed"))
    assert len(builds) == 2  # the earlier session's build, then one retrain for both strategies
    assert first.meta["build"] == second.meta["build"]
