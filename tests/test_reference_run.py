"""The recorded reference run of the real model replays with no model at all.

results/qwen2.5-coder-1.5b-instruct-q4_k_m/ holds what a live run recorded: the
completion cache (`cache/completions`), the episodes and the run file of each strategy.
Replaying with `--sleepy-cache=read` asks no model (a missing answer would be an error,
not a failure), re-verifies every answer with today's verifier, and must give the same
outcome for every koan, and the pass rate the README's Results table states.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from pytest_sleepy.results import RunSummary, read_run_file

REFERENCE = REPO_ROOT / "results" / "qwen2.5-coder-1.5b-instruct-q4_k_m"
RUNS = sorted(REFERENCE.glob("run-*.json"))


def suite_of(run_file: Path) -> str:
    # run-baseline.json was recorded before run files named their suite: its 30 koans
    # are eval-v1's (the digests of its outcomes say so).
    return (read_run_file(run_file).provenance.get("suite") or {}).get("name", "eval-v1")


def replay(run_file: Path, tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    recorded = read_run_file(run_file)
    options = recorded.provenance["options"]
    out = tmp_path / "replayed.json"
    # The recorded answers, and a verdict cache of this test's own: every answer is
    # verified again, as on a fresh clone.
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "completions").symlink_to(REFERENCE / "cache" / "completions")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               f"--model={recorded.provenance['model']['spec']}", f"--strategy={','.join(options['strategy'])}",
               f"--max-steps={options['max-steps']}", f"--sleepy-max-tokens={options['max-tokens']}",
               f"--sleepy-history={options.get('history', 'last')}", f"--sleepy-temperature={options['temperature']}",
               f"--sleepy-seed={options['seed']}", f"--sleepy-suite={suite_of(run_file)}",
               "--sleepy-cache=read",
               f"--sleepy-cache-dir={cache}", f"--sleepy-json={out}", *extra]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True), out


@pytest.mark.parametrize("run_file", RUNS, ids=[p.stem for p in RUNS])
def test_the_reference_run_replays_to_the_same_outcome_for_every_koan(run_file, tmp_path):
    result, out = replay(run_file, tmp_path)
    assert "model answers were replayed" in result.stdout, result.stdout[-3000:]
    recorded = {(o.koan, o.strategy): o for o in read_run_file(run_file).outcomes}
    replayed = {(o.koan, o.strategy): o for o in read_run_file(out).outcomes}
    assert len(recorded) == 30 and replayed.keys() == recorded.keys()
    differ = [f"{key}: recorded {recorded[key].status} after {recorded[key].steps} ({recorded[key].reason}), "
              f"replayed {o.status} after {o.steps} ({o.reason})"
              for key, o in replayed.items() if (o.solved, o.steps) != (recorded[key].solved, recorded[key].steps)]
    assert not differ, "\n".join(differ)


def setup_of(run_file: Path) -> str:
    """How the README names a run's setup: greedy, or the sampling it used."""
    options = read_run_file(run_file).provenance["options"]
    steps = f"{options['max-steps']} steps"
    return f"{steps}, greedy" if options["temperature"] == 0 else f"{steps}, T={options['temperature']:g}, seed {options['seed']}"


@pytest.mark.parametrize("run_file", RUNS, ids=[p.stem for p in RUNS])
def test_the_readme_states_the_reference_runs_pass_rate(run_file):
    readme = (REPO_ROOT / "README.md").read_text()
    suite = suite_of(run_file)
    for summary in json.loads(run_file.read_text())["aggregates"]["strategies"]:
        row = (f"| {suite} | Qwen2.5-Coder-1.5B-Instruct Q4_K_M, llamacpp | {summary['strategy']} | "
               f"{setup_of(run_file)} | {round(summary['solved'])}/{summary['koans']}")
        assert row in readme
        rate = f"{100 * summary['rate']:.1f}%"
        interval = f"{100 * summary['low']:.1f}–{100 * summary['high']:.1f}%"
        assert re.search(re.escape(row) + r"[^\n]*" + re.escape(rate) + r"[^\n]*" + re.escape(interval), readme)


def test_the_readme_states_the_paired_comparison_of_hints_and_baseline():
    outcomes = [o for name in ("baseline", "hints") for o in read_run_file(REFERENCE / f"run-{name}.json").outcomes]
    [comparison] = RunSummary.from_outcomes(outcomes, ["baseline", "hints"]).comparisons
    verdict = "significant" if comparison.significant else "not significant"
    row = (f"| hints vs baseline | {len(comparison.gains)} | {len(comparison.losses)} | {comparison.p_value:.3f} | "
           f"{100 * comparison.detectable:.1f} points | {verdict}")
    assert row in (REPO_ROOT / "README.md").read_text()


def test_the_readmes_replay_command_replays_with_the_model_in_another_home_folder(tmp_path):
    readme = (REPO_ROOT / "README.md").read_text()
    block = next(b for b in readme.split("```sh\n")[1:] if b.startswith('M="llamacpp:')).split("```")[0]
    lines = block.replace("\\\n", " ").splitlines()  # one line per command
    replay_line = next(line for line in lines if "--sleepy-cache=read" in line)
    # The answers as committed; verdicts in a cache of the test's own, so nothing is
    # written into the repository.
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "completions").symlink_to(REFERENCE / "cache" / "completions")
    # Another user's home folder: rustup still needs the real $HOME, so the model path
    # says where that user keeps the GGUF.
    model_line = lines[0].replace("$HOME", str(tmp_path / "another-home"))
    assert model_line != lines[0]
    script = "\n".join([model_line, lines[1], replay_line.replace("--sleepy-cache-dir=$R/cache", f"--sleepy-cache-dir={cache}")
                        + f" -q -p no:cacheprovider --sleepy-json={tmp_path / 'replayed.json'}"])
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # `pytest` is this interpreter's
    done = subprocess.run(["bash", "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={**os.environ, "PATH": path})
    assert "model answers were replayed" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]
    replayed = {(o.koan, o.strategy): o.solved for o in read_run_file(tmp_path / "replayed.json").outcomes}
    recorded = {(o.koan, o.strategy): o.solved for name in ("baseline", "hints")
                for o in read_run_file(REFERENCE / f"run-{name}.json").outcomes}
    assert replayed == recorded
