"""Human feedback: weighted correction records, the buffer, and the background training
they start (pytest_sleepy/feedback.py)."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from pytest_sleepy.feedback import (
    BUFFER_FILE, LOG_FILE, STATE_FILE, AddResult, FeedbackBuffer, FeedbackConfig, FeedbackError, _proc_start,
    add_feedback, correction_record, episode_id, find_episode, latest_adapter, list_episodes, start_training,
    training_state,
)
from pytest_sleepy.koans import Koan, load_corpus
from pytest_sleepy.training.lora import _batches
from pytest_sleepy.training.leakage import LeakageGuard

MISSING_MODEL = "hf:/nonexistent/feedback-test-model"


@pytest.fixture(scope="module")
def corpus() -> dict[str, Koan]:
    return {k.id: k for k in load_corpus(REPO_ROOT / "koans")}


@pytest.fixture(scope="module")
def guard(corpus) -> LeakageGuard:
    return LeakageGuard([k for k in corpus.values() if k.split == "eval"])


def make_episode(koan: Koan, *, step: int = 1, sample: int = 0, code: str | None = None, passed: bool = False,
                 reason: str = "still E0382 after 1 step", model_error: str | None = None,
                 model_seconds: float = 1.5, run_id: str = "20250101T000000Z-feedback", answered: bool = False) -> dict:
    """An episode as Benchmark.episode writes it."""
    code = koan.buggy if code is None else code
    messages = [{"role": "system", "content": "You repair Rust programs."},
                {"role": "user", "content": f"Repair this Rust program.\n\n```rust\n{koan.buggy.strip()}\n```"}]
    if answered:
        messages.append({"role": "assistant", "content": f"```rust\n{code}\n```"})
    return {
        "run_id": run_id, "koan": koan.id, "koan_digest": koan.digest, "strategy": "baseline", "variant": "",
        "model": "hf:tiny", "model_identity": "sha256:0?dtype=fp32", "adapter": None, "route": None,
        "sample": sample, "seed": sample, "step": step, "prompt_hash": "p" * 16, "messages": messages,
        "settings": {"temperature": 0.0}, "response": f"```rust\n{code}\n```", "code": code, "diff": "",
        "diagnostics": ["E0382"],
        "verdict": None if model_error else {"passed": passed, "compiled": False, "reason": "" if passed else reason,
                                             "error_codes": [], "tests_passed": 0, "tests_failed": 0,
                                             "tests_total": 2, "failed_tests": [], "timed_out": False,
                                             "tampering": None},
        "model_error": model_error, "tokens_in": 100, "tokens_out": 50, "model_seconds": model_seconds,
        "verify_seconds": 0.3, "cached": False,
    }


def record(weight_class: str = "good", n: int = 0) -> dict:
    """A plain weighted SFT record, numbered by `n`."""
    weight = {"critical": 10.0, "medium": 3.0, "good": 1.0}[weight_class]
    return {"kind": "sft", "messages": [{"role": "user", "content": f"fix {n}"},
                                        {"role": "assistant", "content": f"```rust\nfn f{n}() {{}}\n```"}],
            "code": {"buggy": f"fn f{n}(", "fixed": f"fn f{n}() {{}}"},
            "metadata": {"source_koan": f"k{n}", "n": n, "weight_class": weight_class, "weight": weight}}


def wait_for(directory: Path, statuses: tuple[str, ...], timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = training_state(directory)
        if state and state["status"] in statuses:
            return state
        time.sleep(0.2)
    log = (directory / LOG_FILE).read_text() if (directory / LOG_FILE).exists() else "(no log)"
    raise AssertionError(f"training never reached {statuses}: {training_state(directory)}\n{log}")


# -- configuration -----------------------------------------------------------------------

def test_config_defaults_follow_the_tool_table(tmp_path):
    config = FeedbackConfig.from_table({}, "pyproject.toml: [tool.sleepy.feedback]", base_dir=tmp_path,
                                       default_model="hf:Qwen/Qwen2.5-Coder-1.5B-Instruct")
    assert config.dir == tmp_path / ".sleepy" / "feedback"
    assert (config.buffer_size, config.threshold) == (100, 10)
    assert dict(config.weights) == {"critical": 10.0, "medium": 3.0, "good": 1.0}
    assert config.model == "hf:Qwen/Qwen2.5-Coder-1.5B-Instruct"
    assert config.train.steps == 100 and config.train.weighted


def test_config_keys_override_the_defaults_and_training_stays_weighted(tmp_path):
    config = FeedbackConfig.from_table(
        {"dir": "fb", "buffer-size": 5, "threshold": 2, "weights": {"critical": 20},
         "model": "hf:./models/tiny", "train": {"steps": 3, "batch-size": 1, "warmup": 0}},
        "where", base_dir=tmp_path, default_model="rustfix")
    assert config.dir == tmp_path / "fb"
    assert (config.buffer_size, config.threshold) == (5, 2)
    assert dict(config.weights) == {"critical": 20.0, "medium": 3.0, "good": 1.0}
    assert config.model == f"hf:{(tmp_path / 'models' / 'tiny').resolve()}"  # relative to the pyproject
    assert (config.train.steps, config.train.batch_size, config.train.weighted) == (3, 1, True)


@pytest.mark.parametrize("table, named", [
    ({"buffer_sise": 3}, "'buffer_sise'"),
    ({"threshold": 0}, "threshold"),
    ({"weights": {"urgent": 5}}, "weights.urgent"),
    ({"weights": {"good": -1}}, "weights.good"),
    ({"train": {"steps": "many"}}, "train: steps"),
    ({"train": {"weighted": False}}, "train.weighted"),
    ({"buffer-size": 5, "threshold": 6}, "threshold (6) is larger than buffer-size (5)"),
    ({"model": "gpt:4"}, "model"),
])
def test_a_bad_config_value_is_refused_naming_the_key(tmp_path, table, named):
    with pytest.raises(FeedbackError, match="pyproject.toml: \\[tool.sleepy.feedback\\]") as raised:
        FeedbackConfig.from_table(table, "pyproject.toml: [tool.sleepy.feedback]", base_dir=tmp_path)
    assert named in str(raised.value)


def test_records_carry_the_weight_of_their_class_from_the_config(corpus):
    config = FeedbackConfig.from_table({"weights": {"critical": 20, "good": 2}}, "where")
    koan = corpus["bc_101"]
    weights = {c: correction_record(make_episode(koan), koan, weight_class=c, weights=config.weights)["metadata"]
               for c in ("critical", "medium", "good")}
    assert {c: (m["weight_class"], m["weight"]) for c, m in weights.items()} == {
        "critical": ("critical", 20.0), "medium": ("medium", 3.0), "good": ("good", 2.0)}


def test_training_draws_critical_records_ten_times_as_often_as_good_ones(corpus):
    config = FeedbackConfig.from_table({"train": {"batch_size": 1}}, "where")
    koan = corpus["bc_101"]
    records = [correction_record(make_episode(koan, sample=i), koan, weight_class=c)
               for i, c in enumerate(["critical", "medium", "good"])]
    batches = _batches(records, config.train)  # the sampler train_lora uses with this config
    draws = Counter(index for _ in range(28_000) for index in next(batches))
    assert 9.0 < draws[0] / draws[2] < 11.0
    assert 2.6 < draws[1] / draws[2] < 3.4


# -- episodes ------------------------------------------------------------------------------

def test_an_episode_id_is_twelve_stable_hex_digits_distinct_per_attempt(corpus):
    episode = make_episode(corpus["bc_101"])
    ident = episode_id(episode)
    assert len(ident) == 12 and int(ident, 16) >= 0
    assert episode_id(json.loads(json.dumps(episode))) == ident
    assert episode_id({**episode, "response": "something else"}) == ident
    assert len({ident, episode_id({**episode, "step": 2}), episode_id({**episode, "sample": 1}),
                episode_id({**episode, "strategy": "hints"}), episode_id({**episode, "run_id": "other"})}) == 5
    assert find_episode([make_episode(corpus["bc_102"]), episode], ident[:6]) is episode


def test_listing_finds_failed_attempts_model_errors_and_slow_ones(corpus):
    koan = corpus["bc_101"]
    passed = make_episode(koan, step=1, passed=True, model_seconds=0.5)
    failed = make_episode(koan, step=2, reason="still E0382 after 2 steps")
    broken = make_episode(koan, step=3, model_error="connection refused")
    slow = make_episode(koan, sample=1, passed=True, model_seconds=30.0)
    listed = list_episodes([passed, failed, broken, slow])
    assert [(item.id, item.reason) for item in listed] == [
        (episode_id(failed), "still E0382 after 2 steps"), (episode_id(broken), "model error: connection refused")]
    with_slow = list_episodes([passed, failed, broken, slow], slow_seconds=10)
    assert [(item.id, item.failed, item.slow) for item in with_slow][-1] == (episode_id(slow), False, True)


# -- correction records -----------------------------------------------------------------

def test_a_correction_answers_the_episodes_prompt_with_the_reference_fix(corpus, guard):
    koan = corpus["bc_101"]
    episode = make_episode(koan, step=2, code="fn wrong() {}", answered=True)
    made = correction_record(episode, koan, weight_class="critical", note="moved twice", guard=guard)
    assert made["kind"] == "sft"
    assert made["messages"][:-1] == episode["messages"][:-1]  # the episode's answer is dropped
    assert made["messages"][-1] == {"role": "assistant", "content": f"```rust\n{koan.fixed.strip()}\n```"}
    assert made["code"] == {"buggy": "fn wrong() {}", "fixed": koan.fixed}
    meta = made["metadata"]
    assert (meta["source_koan"], meta["pattern"], meta["family"], meta["split"]) == (
        koan.id, koan.pattern, koan.family, "train")
    assert (meta["episode"], meta["run_id"], meta["note"], meta["fix"]) == (
        episode_id(episode), episode["run_id"], "moved twice", "reference")
    assert (meta["weight_class"], meta["weight"], meta["leaks"]) == ("critical", 10.0, False)


def test_a_fix_of_ones_own_is_verified_and_trained_on(verifier, shop_koan):
    fix = shop_koan.fixed.replace("let empty", "let nothing").replace("if empty", "if nothing")
    made = correction_record(make_episode(shop_koan), shop_koan, weight_class="medium", fix_code=fix,
                             verifier=verifier)
    assert made["code"]["fixed"] == fix and made["metadata"]["fix"] == "person"
    assert made["messages"][-1]["content"] == f"```rust\n{fix.strip()}\n```"


def test_an_unverified_fix_is_refused_with_the_verdicts_reason(verifier, shop_koan):
    wrong = "pub fn total(items: Vec<u32>) -> u32 { items.len() as u32 }"
    expected = verifier.verify_candidate(shop_koan, wrong).reason
    with pytest.raises(FeedbackError, match="does not pass shop_001") as refused:
        correction_record(make_episode(shop_koan), shop_koan, weight_class="critical", fix_code=wrong,
                          verifier=verifier)
    assert expected and expected in str(refused.value)


def test_a_correction_of_an_eval_koan_is_refused_without_allow_eval(corpus, guard):
    koan = corpus["bc_001"]
    with pytest.raises(FeedbackError, match="bc_001 is an eval koan.*--allow-eval"):
        correction_record(make_episode(koan), koan, weight_class="critical", guard=guard)
    allowed = correction_record(make_episode(koan), koan, weight_class="critical", guard=guard, allow_eval=True)
    assert allowed["metadata"]["leaks"] is True


def test_the_leakage_guard_refuses_a_record_that_copies_an_eval_koan(corpus, guard):
    koan = corpus["bc_101"]
    copied = corpus["bc_001"].fixed  # the model answered with an eval koan's code
    with pytest.raises(FeedbackError, match="leakage guard"):
        correction_record(make_episode(koan, code=copied), koan, weight_class="good", guard=guard)


def test_an_episode_of_an_older_version_of_the_koan_is_refused(corpus):
    koan = corpus["bc_101"]
    with pytest.raises(FeedbackError, match="changed since the run"):
        correction_record({**make_episode(koan), "koan_digest": "sha256:old"}, koan, weight_class="good")


# -- the buffer ------------------------------------------------------------------------------

def test_the_buffer_keeps_the_newest_capacity_records(tmp_path):
    buffer = FeedbackBuffer(tmp_path / "fb", capacity=3)
    results = [buffer.add(record(n=n)) for n in range(5)]
    assert [r.size for r in results] == [1, 2, 3, 3, 3]
    assert [r["metadata"]["n"] for r in buffer.records()] == [2, 3, 4]
    status = buffer.status()
    assert (status.size, status.capacity, status.total, status.pending) == (3, 3, 5, 5)


def test_the_buffer_persists_across_processes(tmp_path):
    directory = tmp_path / "fb"
    script = ("import sys; sys.path.insert(0, sys.argv[2]); from test_feedback import record; "
              "from pytest_sleepy.feedback import FeedbackBuffer; b = FeedbackBuffer(sys.argv[1], 10); "
              "[b.add(record('critical', n)) for n in range(2)]")
    subprocess.run([sys.executable, "-c", script, str(directory), str(Path(__file__).parent)], check=True)
    buffer = FeedbackBuffer(directory, 10)
    assert [(r["metadata"]["n"], r["metadata"]["weight"]) for r in buffer.records()] == [(0, 10.0), (1, 10.0)]
    assert buffer.status().weight == 20.0
    assert json.loads((directory / BUFFER_FILE).read_text())["total"] == 2


def _add_at_once(directory: str, n: int, barrier, results) -> None:
    config = FeedbackConfig(dir=Path(directory), buffer_size=10, threshold=4, model=MISSING_MODEL,
                            artifacts_dir=Path(directory) / "artifacts")
    barrier.wait()
    results.put(add_feedback(FeedbackBuffer(directory, 10), record(n=n), config, start=True))


def test_processes_crossing_the_threshold_at_once_start_exactly_one_training(tmp_path):
    directory = tmp_path / "fb"
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_add_at_once, args=(str(directory), n, barrier, results)) for n in range(4)]
    for worker in workers:
        worker.start()
    outcomes: list[AddResult] = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert sorted(r.pending for r in outcomes) == [0, 1, 2, 3]  # no addition was lost
    assert sum(r.crossed for r in outcomes) == 1 and sum(r.started for r in outcomes) == 1
    state = wait_for(directory, ("done", "failed"))  # the model does not exist: the worker fails fast
    launches = [line for line in (directory / LOG_FILE).read_text().splitlines() if "feedback worker pid" in line]
    assert len(launches) == 1 and state["run"] == 1
    assert FeedbackBuffer(directory, 10).status().size == 4


def test_a_training_is_not_started_while_one_is_running(tmp_path):
    directory = tmp_path / "fb"
    buffer = FeedbackBuffer(directory, 10)
    directory.mkdir()
    running = {"run": 1, "status": "running", "pid": os.getpid(), "proc_start": _proc_start(os.getpid()),
               "started": "2025-01-01T00:00:00+00:00"}
    (directory / STATE_FILE).write_text(json.dumps(running))
    config = FeedbackConfig(dir=directory, buffer_size=10, threshold=1, model=MISSING_MODEL)
    result = add_feedback(buffer, record(), config)
    assert result.crossed and not result.started and "already running" in result.why_not
    assert result.pending == 1  # kept for the next training
    with pytest.raises(FeedbackError, match="already running"):
        start_training(buffer, config)


def test_a_running_training_whose_process_died_reads_as_failed(tmp_path):
    directory = tmp_path / "fb"
    directory.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (directory / STATE_FILE).write_text(json.dumps({"run": 1, "status": "running", "pid": gone.pid,
                                                    "started": "2025-01-01T00:00:00+00:00"}))
    state = training_state(directory)
    assert state["status"] == "failed" and f"pid {gone.pid}" in state["error"]


def test_crossing_the_threshold_without_an_hf_model_records_and_says_why(tmp_path):
    config = FeedbackConfig(dir=tmp_path / "fb", buffer_size=10, threshold=1, model="rustfix")
    result = add_feedback(FeedbackBuffer(config.dir, 10), record(), config)
    assert result.crossed and not result.started and "hf:NAME_OR_PATH" in result.why_not
    assert result.size == 1 and training_state(config.dir) is None


def test_a_failed_training_leaves_the_buffer_intact_and_says_why(tmp_path):
    config = FeedbackConfig(dir=tmp_path / "fb", buffer_size=10, threshold=2, model=MISSING_MODEL,
                            artifacts_dir=tmp_path / "artifacts")
    buffer = FeedbackBuffer(config.dir, 10)
    results = [add_feedback(buffer, record(c, n), config) for n, c in enumerate(["critical", "good"])]
    assert results[1].started and results[1].pending == 0
    state = wait_for(config.dir, ("done", "failed"))
    assert state["status"] == "failed"
    assert "does not exist" in state["error"] and "/nonexistent/feedback-test-model" in state["error"]
    assert [r["metadata"]["n"] for r in buffer.records()] == [0, 1]
    assert latest_adapter(config.dir) is None


# -- end to end --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from tiny_model import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny") / "qwen2")


def tiny_config(tmp_path: Path, model: Path, threshold: int) -> FeedbackConfig:
    return FeedbackConfig.from_table(
        {"dir": "fb", "threshold": threshold, "model": f"hf:{model}",
         "train": {"steps": 2, "batch_size": 1, "warmup": 0, "max_length": 768}},
        "where", base_dir=tmp_path, artifacts_dir=tmp_path / "artifacts")


def test_enough_feedback_trains_a_feedback_adapter_in_the_background(tmp_path, tiny_model, corpus, guard):
    model = tiny_model
    config = tiny_config(tmp_path, model, threshold=3)
    buffer = FeedbackBuffer(config.dir, config.buffer_size)
    results = []
    for koan_id, weight_class in (("bc_101", "critical"), ("bc_102", "medium"), ("bc_103", "good")):
        koan = corpus[koan_id]
        made = correction_record(make_episode(koan), koan, weight_class=weight_class, guard=guard,
                                 weights=config.weights)
        began = time.monotonic()
        results.append(add_feedback(buffer, made, config))
        assert time.monotonic() - began < 5  # adding never waits for training
    assert [r.started for r in results] == [False, False, True]
    assert results[-1].pid and results[-1].pending == 0
    state = wait_for(config.dir, ("done", "failed"))
    assert state["status"] == "done", state.get("error")
    assert (state["step"], state["steps"], state["records"]) == (2, 2, 3)
    assert isinstance(state["loss"], float) and state["loss"] > 0
    latest = latest_adapter(config.dir)
    assert latest is not None and (latest.path / "adapter_config.json").is_file()
    assert (latest.path / "adapter_model.safetensors").is_file()
    meta = json.loads((latest.path / "artifact.json").read_text())
    assert meta["kind"] == "feedback" and meta["material"]["base_name"] == str(model)
    assert latest.identity == f"feedback:{meta['key'][:16]}.{meta['build'][:8]}" == state["adapter"]["identity"]
    assert latest.records == 3 and latest.path.parent == tmp_path / "artifacts"


def test_feedback_gathered_during_a_training_starts_the_next_one_after_it(tmp_path, tiny_model, corpus):
    config = tiny_config(tmp_path, tiny_model, threshold=2)
    buffer = FeedbackBuffer(config.dir, config.buffer_size)

    def add(koan_id: str) -> AddResult:
        koan = corpus[koan_id]
        return add_feedback(buffer, correction_record(make_episode(koan), koan, weight_class="good"), config)

    assert [add("bc_101").started, add("bc_102").started] == [False, True]
    wait_for(config.dir, ("running", "done", "failed"))  # the first training took its snapshot
    first, second = add("bc_103"), add("bc_104")
    if not second.started:  # the first one was still running: the next one waits for it
        assert second.crossed and "already running" in second.why_not
    deadline = time.monotonic() + 120
    while not (training_state(config.dir)["run"] == 2 and training_state(config.dir)["status"] in ("done", "failed")):
        assert time.monotonic() < deadline, training_state(config.dir)
        time.sleep(0.2)
    state = training_state(config.dir)
    assert state["status"] == "done" and state["records"] == 4
    assert latest_adapter(config.dir).records == 4 and buffer.status().pending == 0
