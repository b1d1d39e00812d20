"""`sleepy feedback list|add|status|train`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from pytest_sleepy.cli import main
from pytest_sleepy.feedback import BUFFER_FILE, episode_id, training_state
from pytest_sleepy.koans import load_corpus
from test_feedback import MISSING_MODEL, make_episode, wait_for

KOANS = REPO_ROOT / "koans"


@pytest.fixture(scope="module")
def corpus():
    return {k.id: k for k in load_corpus(KOANS)}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder (the cwd) whose pyproject.toml configures feedback."""
    monkeypatch.chdir(tmp_path)

    def configure(**feedback) -> Path:
        lines = ["[tool.sleepy]", 'model = "rustfix"', "", "[tool.sleepy.feedback]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in feedback.items()]
        (tmp_path / "pyproject.toml").write_text("\n".join(lines) + "\n")
        return tmp_path

    configure()
    return configure


def write_episodes(path: Path, episodes: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in episodes))
    return path


def test_list_shows_failed_attempts_with_their_ids(tmp_path, corpus, capsys):
    koan = corpus["bc_101"]
    passed = make_episode(koan, step=1, passed=True)
    failed = make_episode(koan, step=2, reason="still E0382 after 2 steps", model_seconds=2.25)
    broken = make_episode(koan, step=3, model_error="connection refused")
    episodes = write_episodes(tmp_path / "episodes.jsonl", [passed, failed, broken])
    assert main(["feedback", "list", str(episodes)]) == 0
    out = capsys.readouterr().out
    assert episode_id(failed) in out and "still E0382 after 2 steps" in out and "2.25" in out
    assert episode_id(broken) in out and "model error: connection refused" in out
    assert episode_id(passed) not in out
    assert "2 failed, 0 slow" in out


def test_list_with_slow_shows_slow_attempts_too(tmp_path, corpus, capsys):
    slow = make_episode(corpus["bc_101"], passed=True, model_seconds=42.0)
    episodes = write_episodes(tmp_path / "episodes.jsonl", [slow])
    assert main(["feedback", "list", str(episodes), "--slow", "10"]) == 0
    out = capsys.readouterr().out
    assert episode_id(slow) in out and "slow: passed" in out and "42.00" in out


def test_add_records_a_weighted_correction_in_the_buffer(project, corpus, capsys):
    root = project(threshold=5)
    episode = make_episode(corpus["bc_101"])
    episodes = write_episodes(root / "episodes.jsonl", [episode])
    code = main(["feedback", "add", episode_id(episode)[:8], "--episodes", str(episodes), "--critical",
                 "--note", "moved twice", "--koans", str(KOANS)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"recorded feedback on episode {episode_id(episode)} (bc_101, critical 10x, reference fix)" in out
    assert "buffer 1/100; 1 pending of threshold 5" in out
    buffer = json.loads((root / ".sleepy" / "feedback" / BUFFER_FILE).read_text())
    (saved,) = buffer["records"]
    assert (saved["metadata"]["weight"], saved["metadata"]["note"]) == (10.0, "moved twice")


def test_add_crossing_the_threshold_starts_training_in_the_background(project, corpus, capsys):
    root = project(threshold=1, model=MISSING_MODEL)
    episode = make_episode(corpus["bc_101"])
    episodes = write_episodes(root / "episodes.jsonl", [episode])
    began = time.monotonic()
    code = main(["feedback", "add", episode_id(episode), "--episodes", str(episodes), "--good",
                 "--koans", str(KOANS), "--feedback-dir", "fb"])
    assert time.monotonic() - began < 5
    out = capsys.readouterr().out
    assert code == 0, out
    pid = training_state(root / "fb")["pid"]
    assert f"training started in the background (pid {pid}); see `sleepy feedback status`" in out
    wait_for(root / "fb", ("done", "failed"))
    assert main(["feedback", "status", "--feedback-dir", "fb"]) == 0
    status = capsys.readouterr().out
    assert "buffer: 1/100 records (0 critical, 0 medium, 1 good; total weight 1)" in status
    assert "pending: 0 of threshold 1" in status
    assert "training 1: failed" in status and "error:" in status and "does not exist" in status
    assert f"log: {(root / 'fb' / 'train.log').resolve()}" in status


def test_add_with_no_train_only_records(project, corpus, capsys):
    root = project(threshold=1, model=MISSING_MODEL)
    episode = make_episode(corpus["bc_101"])
    episodes = write_episodes(root / "episodes.jsonl", [episode])
    assert main(["feedback", "add", episode_id(episode), "--episodes", str(episodes), "--medium",
                 "--koans", str(KOANS), "--no-train"]) == 0
    assert "no training started: training was not asked for (--no-train)" in capsys.readouterr().out
    assert training_state(root / ".sleepy" / "feedback") is None


def test_add_refuses_an_eval_koan_without_allow_eval(project, corpus, capsys):
    root = project()
    episode = make_episode(corpus["bc_001"])
    episodes = write_episodes(root / "episodes.jsonl", [episode])
    args = ["feedback", "add", episode_id(episode), "--episodes", str(episodes), "--critical", "--koans", str(KOANS)]
    assert main(args) == 2
    assert "bc_001 is an eval koan" in capsys.readouterr().err
    assert main([*args, "--allow-eval", "--no-train"]) == 0
    assert "LEAKS" in capsys.readouterr().out


def test_add_refuses_a_fix_that_does_not_pass(project, corpus, sandbox, capsys):
    root = project()
    episode = make_episode(corpus["bc_101"])
    episodes = write_episodes(root / "episodes.jsonl", [episode])
    (root / "fix.rs").write_text("fn main() {}\n")
    assert main(["feedback", "add", episode_id(episode), "--episodes", str(episodes), "--good",
                 "--fix", str(root / "fix.rs"), "--koans", str(KOANS), "--cache-dir", str(root / "cache")]) == 2
    err = capsys.readouterr().err
    assert "your fix does not pass bc_101" in err
    assert not (root / ".sleepy" / "feedback" / BUFFER_FILE).exists()


def test_status_without_feedback_says_so(project, capsys):
    project(threshold=3, **{"buffer-size": 7})
    assert main(["feedback", "status"]) == 0
    out = capsys.readouterr().out
    assert "buffer: 0/7 records" in out and "pending: 0 of threshold 3" in out
    assert "training: none yet" in out and "latest adapter: none" in out


def test_train_by_hand_refuses_an_empty_buffer(project, capsys):
    project(model=MISSING_MODEL)
    assert main(["feedback", "train"]) == 2
    assert "buffer is empty" in capsys.readouterr().err


def test_a_bad_feedback_table_is_an_error_naming_the_key(project, capsys):
    project(threshold=0)
    assert main(["feedback", "status"]) == 2
    assert "[tool.sleepy.feedback]: threshold must be a whole number" in capsys.readouterr().err
