"""The pytest plugin end to end, through its `pytest11` entry point, with pytester,
on the small corpus of the `bench` fixture (conftest.py)."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from pytest_sleepy.results import read_run_file

from conftest import EVAL, KOANS, fixing_reply
from ollama_server import OllamaServer



def add_tool_table(pytester, body: str) -> None:
    path = pytester.path / "pyproject.toml"
    path.write_text(path.read_text() + "\n[tool.sleepy]\n" + body + "\n")


def collected(result) -> list[str]:
    return [line for line in result.stdout.lines if "::" in line]


def outcomes_of(path):
    return {(o.koan, o.strategy, o.sample): (o.status, o.reason, o.steps) for o in read_run_file(path).outcomes}


# -- collection -----------------------------------------------------------------------


def test_plugin_registers_the_sandbox_opt_out(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*pytest-sleepy koan benchmark*", "*--sleepy-unsafe-no-sandbox*"])


def test_each_eval_koan_is_one_item_per_strategy(bench):
    result = bench.runpytest("--collect-only", "-q", "--strategy=baseline,hints")
    assert collected(result) == [
        f"koans/{KOANS[k]}/{k}.toml::{k}[{s}]" for k in ["bc_001", "bc_003", "rh_001", "tb_008"] for s in ("baseline", "hints")
    ]


def test_only_the_eval_split_is_collected_unless_asked(bench):
    train = bench.runpytest("--collect-only", "-q", "--sleepy-split=train")
    everything = bench.runpytest("--collect-only", "-q", "--sleepy-split=all")
    assert collected(train) == ["koans/borrow_checker/bc_101.toml::bc_101[baseline]"]
    assert len(collected(everything)) == 5


def test_markers_select_by_family_and_strategy(bench):
    result = bench.runpytest("--collect-only", "-q", "--strict-markers", "--strategy=baseline,hints",
                             "-m", "family_borrow_checker and strategy_hints")
    assert collected(result) == ["koans/borrow_checker/bc_001.toml::bc_001[hints]",
                                 "koans/borrow_checker/bc_003.toml::bc_003[hints]"]


def test_markers_select_by_pattern(bench):
    result = bench.runpytest("--collect-only", "-q", "-m", "pattern_question_mark_wrong_return")
    assert collected(result) == ["koans/result_handling/rh_001.toml::rh_001[baseline]"]


def test_samples_get_one_item_each(bench):
    result = bench.runpytest("--collect-only", "-q", "--sleepy-samples=2", "-k", "bc_001")
    assert collected(result) == ["koans/borrow_checker/bc_001.toml::bc_001[baseline-0]",
                                 "koans/borrow_checker/bc_001.toml::bc_001[baseline-1]"]


def test_the_tool_table_sets_defaults(bench):
    add_tool_table(bench, 'strategy = ["hints"]\nsplit = "train"')
    assert collected(bench.runpytest("--collect-only", "-q")) == ["koans/borrow_checker/bc_101.toml::bc_101[hints]"]


def test_the_command_line_wins_over_the_tool_table(bench):
    add_tool_table(bench, 'strategy = "hints"')
    result = bench.runpytest("--collect-only", "-q", "--strategy=baseline", "-k", "bc_001")
    assert collected(result) == ["koans/borrow_checker/bc_001.toml::bc_001[baseline]"]


def test_the_koans_folder_is_an_ini_option(bench):
    (bench.path / "koans").rename(bench.path / "corpus")
    path = bench.path / "pyproject.toml"
    path.write_text(path.read_text().replace('testpaths = ["koans"]', 'testpaths = ["corpus"]\nsleepy_koans = "corpus"'))
    assert len(collected(bench.runpytest("--collect-only", "-q"))) == 4


def test_a_broken_koan_file_is_a_collection_error_naming_file_and_field(bench):
    broken = bench.path / "koans" / "borrow_checker" / "bc_003.toml"
    broken.write_text(broken.read_text().replace('edition = "2021"', 'edition = "1999"'))
    result = bench.runpytest("-q", "-k", "bc_001")
    result.stdout.fnmatch_lines(["*bc_003.toml: field 'edition'*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED  # collection errors stop the run


def test_a_koan_file_that_is_not_utf8_is_a_collection_error_naming_the_file(bench):
    broken = bench.path / "koans" / "borrow_checker" / "bc_003.toml"
    broken.write_bytes(broken.read_bytes().replace(b"title = ", b"title = \"\xe9\" # "))
    result = bench.runpytest("-q", "-k", "bc_001")
    result.stdout.fnmatch_lines(["*bc_003.toml: is not UTF-8 (byte *); save the file as UTF-8*"])
    assert "Traceback" not in result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED


# -- usage errors ---------------------------------------------------------------------


def test_an_unknown_strategy_is_a_usage_error_listing_the_known_ones(bench):
    result = bench.runpytest("--strategy=baseline,share")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown strategy 'share'; known: baseline, hints*"])


def test_a_bad_option_value_is_a_usage_error_naming_the_flag(bench):
    result = bench.runpytest("--max-steps=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--max-steps: must be at least 1, got 0*"])


def test_a_bad_tool_table_value_names_the_key(bench):
    add_tool_table(bench, 'cache = "sometimes"')
    result = bench.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*[[]tool.sleepy[]] cache: use one of off, read, write, rw*"])


# -- running --------------------------------------------------------------------------


def test_repaired_koans_pass_and_the_others_fail_with_the_reason(bench):
    result = bench.runpytest("-v")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines([
        "*bc_001.toml::bc_001[[]baseline[]] PASSED*",
        "*bc_003.toml::bc_003[[]baseline[]] FAILED*",
        "*rh_001[[]baseline[]]: not repaired: no code in the answer after 3 steps (it said: 'rustc offers no*",
    ])


def test_the_summary_prints_rates_intervals_families_and_comparisons(bench):
    result = bench.runpytest("--strategy=baseline,hints")
    result.stdout.fnmatch_lines([
        "*= pytest-sleepy summary =*",
        "pass rates by strategy (suite eval (digest *), model rustfix)",
        "strategy*koans*solved*pass rate*95% CI (Wilson)*median steps*model s/item*verify s/item",
        "baseline*4*2*50.0%*15.0% - 85.0%*1*",
        "hints*4*2*50.0%*15.0% - 85.0%*1*",
        "pass rates by family",
        "borrow_checker*1/2 (50.0%)*1/2 (50.0%)",
        "gains and losses against the first strategy",
        "hints vs baseline*0*0*+0*1*not significant*",
    ])


def test_the_run_file_can_be_read_back(bench):
    result = bench.runpytest("--strategy=baseline,hints", "--sleepy-json=run.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    run = read_run_file(bench.path / "run.json")
    assert len(run.outcomes) == 8
    assert {o.koan for o in run.outcomes if o.solved} == {"bc_001", "tb_008"}
    provenance = run.provenance
    assert provenance["model"] == {"spec": "rustfix", "backend": "rustfix", "identities": ["rustfix/MachineApplicable"]}
    assert [s["name"] for s in provenance["strategies"]] == ["baseline", "hints"]
    assert provenance["rustc"].startswith("rustc ") and provenance["seeds"] == [0]
    assert set(provenance["koans"]) == set(EVAL)
    assert provenance["options"]["max-steps"] == 3
    assert {"version", "name"} <= set(provenance["package"]) and "commit" in provenance["git"]
    assert run.aggregates["strategies"][0]["rate"] == 0.5


def test_episodes_hold_one_record_per_attempt(bench):
    bench.runpytest("--sleepy-json=run.json", "--sleepy-episodes=episodes.jsonl")
    run = read_run_file(bench.path / "run.json")
    episodes = [json.loads(line) for line in (bench.path / "episodes.jsonl").read_text().splitlines()]
    assert len(episodes) == sum(o.steps for o in run.outcomes)
    assert {e["run_id"] for e in episodes} == {run.run_id}
    solved = next(e for e in episodes if e["koan"] == "bc_001")
    assert solved["verdict"]["passed"] and solved["diff"].startswith("--- buggy.rs")
    assert solved["diagnostics"] and len(solved["prompt_hash"]) == 64
    assert solved["messages"][0]["role"] == "system" and solved["model"] == "rustfix"


def test_results_are_the_same_with_and_without_xdist(bench):
    bench.runpytest("--strategy=baseline,hints", "--sleepy-json=serial.json", "--sleepy-cache=off")
    parallel = bench.runpytest_subprocess("--strategy=baseline,hints", "-n", "2", "--sleepy-json=parallel.json",
                                          "--sleepy-episodes=episodes.jsonl", "--sleepy-cache=off")
    assert outcomes_of(bench.path / "serial.json") == outcomes_of(bench.path / "parallel.json")
    parallel.stdout.fnmatch_lines(["*= pytest-sleepy summary =*", "baseline*4*2*50.0%*"])
    run_id = read_run_file(bench.path / "parallel.json").run_id
    episodes = (bench.path / "episodes.jsonl").read_text().splitlines()
    assert {json.loads(line)["run_id"] for line in episodes} == {run_id}


# -- model servers and replay ---------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_server_that_is_down_stops_the_session_once_with_the_fix(bench, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", f"http://127.0.0.1:{closed_port()}")
    result = bench.runpytest_subprocess("--model=ollama:qwen2.5-coder:7b", "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    assert output.count("ollama serve") == 1
    assert "passed" not in output and "failed" not in output


def test_a_model_that_is_not_pulled_stops_the_session_with_the_pull_command(bench, monkeypatch):
    with OllamaServer(models={"llama3:8b": "0" * 64}) as server:
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        result = bench.runpytest("--model=ollama:qwen2.5-coder:7b")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "ollama pull qwen2.5-coder:7b" in result.stdout.str() + result.stderr.str()




def test_a_recorded_run_replays_without_the_model(bench, monkeypatch):
    with OllamaServer(reply=fixing_reply) as server:
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        live = bench.runpytest("--model=ollama:qwen2.5-coder:7b", "--sleepy-json=live.json")
        asked = len(server.chat_requests)
    live.assert_outcomes(passed=4)
    assert asked == 4
    monkeypatch.setenv("OLLAMA_HOST", f"http://127.0.0.1:{closed_port()}")
    replay = bench.runpytest("--model=ollama:qwen2.5-coder:7b", "--sleepy-cache=read", "--sleepy-json=replay.json")
    replay.assert_outcomes(passed=4)
    replay.stdout.fnmatch_lines(["4 of 4 model answers were replayed from *"])
    assert outcomes_of(bench.path / "live.json") == outcomes_of(bench.path / "replay.json")
    identities = read_run_file(bench.path / "replay.json").provenance["model"]["identities"]
    assert identities == [f"ollama:qwen2.5-coder:7b@{server.models['qwen2.5-coder:7b']}"]


def test_replay_of_an_unrecorded_koan_is_an_error_naming_it_and_not_counted(bench, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", f"http://127.0.0.1:{closed_port()}")
    result = bench.runpytest("--model=ollama:qwen2.5-coder:7b", "--sleepy-cache=read", "-k", "bc_001")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*bc_001[[]baseline[]]: ERROR (not counted): bc_001: no recorded answer of ollama:qwen2.5-coder:7b*",
        "1 item(s) errored and are not counted in any rate",
    ])


def test_a_model_error_fails_the_koan_and_the_session_goes_on(bench, monkeypatch):
    from ollama_server import Failure

    with OllamaServer(reply=fixing_reply) as server:
        server.failures.extend([Failure(status=400, error="bad request")])
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        result = bench.runpytest("--model=ollama:qwen2.5-coder:7b?retries=0", "-p", "no:randomly")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*not repaired: model error at step 1: ollama qwen2.5-coder:7b at *bad request*"])


@pytest.fixture
def dying_server(monkeypatch):
    """An Ollama server that answers one chat request, then shuts down."""
    import threading

    server = OllamaServer(reply=fixing_reply).start()

    def reply_then_die(request):
        threading.Thread(target=server.stop).start()
        server.stopping.wait(5)
        return fixing_reply(request)

    server.reply = reply_then_die
    monkeypatch.setenv("OLLAMA_HOST", server.url)
    return server


def test_a_server_that_dies_mid_run_stops_the_session_instead_of_failing_koans(bench, dying_server):
    result = bench.runpytest("--model=ollama:qwen2.5-coder:7b?retries=0", "-p", "no:randomly",
                             "--sleepy-json=run.json")
    result.stdout.fnmatch_lines([
        "*infrastructure problem, session stopped: the Ollama server at * stopped answering*`ollama serve`*",
        "*Interrupted: pytest-sleepy: the Ollama server at * stopped answering*",
    ])
    outcomes = read_run_file(bench.path / "run.json").outcomes
    assert [(o.koan, o.status) for o in outcomes] == [("bc_001", "passed")]  # the outage is nobody's score


def test_a_transformers_model_runs_the_benchmark_end_to_end(bench, tmp_path):
    from tiny_model import build_tiny_qwen2

    weights = build_tiny_qwen2(tmp_path / "tiny-qwen2")
    result = bench.runpytest(f"--model=hf:{weights}", "--max-steps=1", "--sleepy-max-tokens=8",
                             "-k", "bc_001 or rh_001", "--sleepy-json=run.json", "--sleepy-episodes=episodes.jsonl")
    # Random weights repair nothing, but every step is asked, answered and recorded.
    result.assert_outcomes(failed=2)
    run = read_run_file(bench.path / "run.json")
    [identity] = run.provenance["model"]["identities"]
    assert identity.startswith("sha256:") and identity.endswith("?dtype=fp32")
    episodes = [json.loads(line) for line in (bench.path / "episodes.jsonl").read_text().splitlines()]
    assert len(episodes) == 2 and all(0 < e["tokens_out"] <= 8 and e["tokens_in"] > 100 for e in episodes)


def test_the_session_fixture_gives_a_projects_own_tests_the_benchmark(bench):
    bench.makepyfile(test_mine="""
        def test_uses_the_benchmark(sleepy_benchmark):
            assert [s.name for s in sleepy_benchmark.strategies] == ["baseline", "hints"]
            assert sleepy_benchmark.model.identity == "rustfix/MachineApplicable"
    """)
    result = bench.runpytest("test_mine.py", "--strategy=baseline,hints")
    result.assert_outcomes(passed=1)


def test_a_run_stopped_by_an_outage_resumes_from_its_cached_answers(bench, dying_server, monkeypatch):
    bench.runpytest("--model=ollama:qwen2.5-coder:7b?retries=0", "-p", "no:randomly")
    assert len(dying_server.chat_requests) == 1
    with OllamaServer(reply=fixing_reply) as server:
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        resumed = bench.runpytest("--model=ollama:qwen2.5-coder:7b", "-p", "no:randomly")
        asked = len(server.chat_requests)
    resumed.assert_outcomes(passed=4)
    assert asked == 3  # the answer given before the outage is not asked for again
    resumed.stdout.fnmatch_lines(["1 of 4 model answers were replayed from *"])


def test_a_run_interrupted_by_ctrl_c_resumes_from_its_cached_answers(bench, monkeypatch):
    import signal
    import sys
    import threading

    interrupted = threading.Event()

    def interrupt_at_the_second_request(request):
        if len(server.chat_requests) == 2:
            run.send_signal(signal.SIGINT)
            interrupted.set()
            server.stopping.wait(60)  # never answers: the run is gone first
        return fixing_reply(request)

    with OllamaServer(reply=interrupt_at_the_second_request) as server:
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        run = bench.popen([sys.executable, "-m", "pytest", "--model=ollama:qwen2.5-coder:7b"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output = run.communicate(timeout=300)[0].decode()
        assert interrupted.is_set() and run.returncode == pytest.ExitCode.INTERRUPTED, output
    with OllamaServer(reply=fixing_reply) as server:
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        resumed = bench.runpytest("--model=ollama:qwen2.5-coder:7b")
        asked = len(server.chat_requests)
    resumed.assert_outcomes(passed=4)
    assert asked == 3
    resumed.stdout.fnmatch_lines(["1 of 4 model answers were replayed from *"])


def test_under_xdist_a_server_that_dies_stops_every_worker(bench, dying_server):
    result = bench.runpytest_subprocess("--model=ollama:qwen2.5-coder:7b?retries=0", "-n", "2", "--sleepy-json=run.json")
    assert "stopped answering" in result.stdout.str()
    assert result.ret != pytest.ExitCode.OK
    outcomes = read_run_file(bench.path / "run.json").outcomes
    assert len(outcomes) < 4 and all(o.status == "passed" for o in outcomes)  # no outage scored as a failure
