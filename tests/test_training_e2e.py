"""Every training strategy through pytest with `-n 2` on a tiny model built here:
artifacts are trained once, before the workers start, and the next run loads them."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest

pytest.importorskip("peft")

from pytest_sleepy.results import read_run_file  # noqa: E402
from pytest_sleepy.training.context import read_peft_factors  # noqa: E402

from conftest import REPO_ROOT, use_tiny_model  # noqa: E402

STRATEGIES = "baseline,lora,lora_replay,lora_weighted,share_averaged,share_routed,share_sequential"
COLUMNS = [*STRATEGIES.split(",")[:-1], *(f"share_sequential:stage{i}" for i in range(4))]


@pytest.fixture
def training_bench(bench, tmp_path_factory, monkeypatch):
    from tiny_model import build_tiny_qwen2

    # Two more train patterns in two more families: Share has three tasks to put in one
    # subspace, and share_sequential three stages (Phase 1, then two merges).
    shutil.copy(REPO_ROOT / "koans" / "trait_bounds" / "tb_101.toml", bench.path / "koans" / "trait_bounds")
    (bench.path / "koans" / "result_handling").mkdir(exist_ok=True)
    shutil.copy(REPO_ROOT / "koans" / "result_handling" / "rh_101.toml", bench.path / "koans" / "result_handling")
    model = build_tiny_qwen2(tmp_path_factory.mktemp("tiny") / "qwen2")
    # One thread per process: two xdist workers on two cores must not fight.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    use_tiny_model(bench, model, """
[tool.sleepy.train]
steps = 2
batch_size = 1
warmup = 0
max_length = 640
target_modules = ["q_proj", "v_proj"]
""")
    return bench


def test_every_training_strategy_trains_once_and_then_loads(training_bench):
    first = training_bench.runpytest_subprocess(f"--strategy={STRATEGIES}", "-n", "2", "--sleepy-json=first.json",
                                                "--sleepy-matrix=full")
    output = first.stdout.str()
    assert "training lora: step 2/2" in output  # progress, shown by the controller
    first.stdout.fnmatch_lines([
        "*= pytest-sleepy summary =*",
        *(f"{column} *4*0*" for column in COLUMNS),
        "forgetting matrix: all koans*",
        "router of share_routed: routed pattern against the koan's declared pattern*",
        "continual learning: share_sequential",
        "after stage 2 (*)*",
        "after stage 3 (*)*",
        "BWT *",
    ])
    store = training_bench.path / ".sleepy" / "artifacts"
    artifacts = sorted(p.name for p in store.iterdir() if p.is_dir())
    kinds = Counter(json.loads((store / key / "artifact.json").read_text())["kind"] for key in artifacts)
    # Without a baseline run every pattern is targeted and nothing is left to replay, so
    # lora and lora_replay train on the same data and share one adapter; lora_weighted
    # samples by weight (another adapter); one LoRA per train pattern, one Share and one
    # router serve both Share strategies (and share_sequential, whose first stage reuses
    # the borrow_checker pattern's LoRA).
    assert kinds == {"lora": 2 + 3, "share": 1, "share_sequential": 1, "router": 1}
    # Merging later stages (Phase 3) keeps what stage 1 learned: each stage-1 pattern's
    # exported dW after stage 3 is its Phase-1 reconstruction.
    sequential = next(store / key for key in artifacts if kinds and json.loads(
        (store / key / "artifact.json").read_text())["kind"] == "share_sequential")
    for pattern in (p.name for p in (sequential / "stage1").iterdir()):
        first, last = read_peft_factors(sequential / "stage1" / pattern), read_peft_factors(sequential / "stage3" / pattern)
        for module, factors in first.items():
            before, after = factors.delta_w().double(), last[module].delta_w().double()
            error = float((after - before).norm()) / max(float(before.norm()), 1e-12)
            assert error <= 1e-4, f"{pattern} {module}: stage 3 changed stage 1's dW by {error:.3g} (relative)"

    second = training_bench.runpytest_subprocess(f"--strategy={STRATEGIES}", "-n", "2", "--sleepy-json=second.json")
    assert "training lora" not in second.stdout.str() and "Share Phase 1" not in second.stdout.str()
    assert sorted(p.name for p in (training_bench.path / ".sleepy" / "artifacts").iterdir() if p.is_dir()) == artifacts

    def outcomes(name):
        return {(o.koan, o.strategy): (o.status, o.reason) for o in read_run_file(training_bench.path / name).outcomes}

    assert outcomes("first.json") == outcomes("second.json")
    routes = {o.route for o in read_run_file(training_bench.path / "second.json").outcomes if o.strategy == "share_routed"}
    assert routes <= {"", "use_after_move", "missing_clone_derive", "question_mark_wrong_return"}  # trained, or base


def test_a_training_strategy_with_a_model_that_takes_no_adapters_is_a_usage_error(bench):
    result = bench.runpytest("--strategy=lora")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*training strategies need a model whose adapters can be applied; use an hf: model*"])


def test_a_bad_training_setting_is_a_usage_error_naming_the_key(bench):
    path = bench.path / "pyproject.toml"
    path.write_text(path.read_text() + "\n[tool.sleepy.train]\nranks = 4\n")
    result = bench.runpytest("--strategy=lora")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*[[]tool.sleepy.train[]]: unknown key 'ranks'*"])
