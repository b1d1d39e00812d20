"""The feedback loop closed: corrections -> background training -> `lora_feedback`,
with the newest adapter hot-swapped between items."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("peft")

from test_hf_adapters import ask, base_weights_digest, write_adapter  # noqa: E402
from tiny_model import build_tiny_qwen2  # noqa: E402

from pytest_sleepy.cli import main  # noqa: E402
from pytest_sleepy.feedback import training_state  # noqa: E402
from pytest_sleepy.models import load_model  # noqa: E402
from pytest_sleepy.results import read_run_file  # noqa: E402
from pytest_sleepy.strategies import StepView, load_strategies  # noqa: E402

from conftest import REPO_ROOT, use_tiny_model  # noqa: E402


def point_latest_at(folder, identity, adapter_dir, base_identity) -> None:
    (folder / "latest.json").write_text(json.dumps({
        "identity": identity, "path": str(adapter_dir), "key": identity, "created": "now",
        "base_model": base_identity, "base_name": "", "records": 10, "run": 1}))


@pytest.fixture
def feedback_setup(tmp_path):
    """A tiny base model, two feedback adapters, and lora_feedback trained on the first."""
    base = build_tiny_qwen2(tmp_path / "base")
    first, second = write_adapter(base, tmp_path / "first", 1), write_adapter(base, tmp_path / "second", 2)
    model = load_model(f"hf:{base}")
    feedback = tmp_path / "feedback"
    feedback.mkdir()
    strategy = load_strategies(REPO_ROOT / "strategies")["lora_feedback"]
    point_latest_at(feedback, "feedback:first", first, model.identity)
    strategy.train(SimpleNamespace(model=model, feedback_dir=feedback))
    return SimpleNamespace(model=model, feedback=feedback, strategy=strategy, second=second)


def test_a_newer_feedback_adapter_is_swapped_in_between_items_without_touching_the_base(feedback_setup):
    model, strategy = feedback_setup.model, feedback_setup.strategy
    model.complete(ask())
    before = base_weights_digest(model)
    view = StepView(step=1, code="", verdict=None)

    item_one = strategy.adapter(view)
    answer_one = model.complete(ask(item_one)).text
    point_latest_at(feedback_setup.feedback, "feedback:second", feedback_setup.second, model.identity)  # finished mid-run
    item_two = strategy.adapter(view)
    answer_two = model.complete(ask(item_two)).text

    assert (item_one, item_two) == ("feedback:first", "feedback:second")
    assert answer_one != answer_two
    assert base_weights_digest(model) == before


def test_the_adapter_is_not_swapped_within_an_item(feedback_setup):
    strategy = feedback_setup.strategy
    assert strategy.adapter(StepView(step=1, code="", verdict=None)) == "feedback:first"
    point_latest_at(feedback_setup.feedback, "feedback:second", feedback_setup.second, feedback_setup.model.identity)
    assert strategy.adapter(StepView(step=2, code="", verdict=None)) == "feedback:first"


def test_without_a_feedback_adapter_the_strategy_says_how_to_make_one(bench, tmp_path):
    base = build_tiny_qwen2(tmp_path / "base")
    result = bench.runpytest(f"--model=hf:{base}", "--strategy=lora_feedback")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no feedback adapter in * yet; record corrections with `sleepy feedback add`*"])


def test_ten_corrections_train_in_the_background_and_lora_feedback_uses_the_result(bench, tmp_path, monkeypatch, capsys):
    base = build_tiny_qwen2(tmp_path / "base")
    use_tiny_model(bench, base, """
[tool.sleepy.feedback]
threshold = 10

[tool.sleepy.feedback.train]
steps = 2
batch_size = 1
warmup = 0
max_length = 640
""")
    # Episodes of the train koans: the answers people correct.
    bench.runpytest("--sleepy-split=train", "--sleepy-episodes=episodes.jsonl")
    monkeypatch.chdir(bench.path)
    assert main(["feedback", "list", "episodes.jsonl"]) == 0
    ids = [json.loads(line) for line in (bench.path / "episodes.jsonl").read_text().splitlines()]
    from pytest_sleepy.feedback import episode_id

    episode_ids = [episode_id(e) for e in ids]
    weights = ["--critical", "--medium", "--good"]
    for n in range(10):
        status = main(["feedback", "add", episode_ids[n % len(episode_ids)], "--episodes", "episodes.jsonl",
                       weights[n % 3], "--koans", "koans", "--cache-dir", str(tmp_path / "cache")])
        assert status == 0
    out = capsys.readouterr().out
    assert "training started in the background" in out
    deadline = time.time() + 180
    while (state := training_state(bench.path / ".sleepy" / "feedback"))["status"] in ("starting", "running"):
        assert time.time() < deadline, state
        time.sleep(0.5)
    assert state["status"] == "done", state

    result = bench.runpytest("--strategy=baseline,lora_feedback", "-n", "2", "--sleepy-json=run.json")
    result.stdout.fnmatch_lines(["*= pytest-sleepy summary =*", "baseline *4*", "lora_feedback *4*"])
    used = {o.adapter for o in read_run_file(bench.path / "run.json").outcomes if o.strategy == "lora_feedback"}
    assert used == {state["adapter"]["identity"]}
