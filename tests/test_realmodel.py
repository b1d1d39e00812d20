"""The real model, live: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF) through `llamacpp:`.

The GGUF is joined from its PyPI slices on first use (tests/realmodel.py). Three eval
koans, one step each, greedy, twice with the completion cache off: the answers must
repeat token for token, and every verdict must be the real verifier's.
"""

from __future__ import annotations

import json
import os

import pytest

from pytest_sleepy.results import read_run_file
from realmodel import GGUF_SHA256, RealModelUnavailable, qwen_gguf

pytestmark = pytest.mark.realmodel
KOANS = "bc_001 or tb_008 or rh_001"  # the koans of the `bench` project's eval split, but bc_003


@pytest.fixture(scope="module")
def qwen():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: pip install 'pytest-sleepy[llamacpp]'")
    try:
        return qwen_gguf()
    except RealModelUnavailable as error:
        pytest.skip(str(error))


def live_run(bench, model: str, name: str):
    return bench.runpytest_subprocess(
        f"--model={model}", "--max-steps=1", "--sleepy-max-tokens=400", "--sleepy-cache=off",
        "-k", KOANS, f"--sleepy-json={name}.json", f"--sleepy-episodes={name}.jsonl", "-p", "no:cacheprovider")


def episodes(bench, name: str) -> dict[str, dict]:
    lines = (bench.path / f"{name}.jsonl").read_text().splitlines()
    return {e["koan"]: e for e in map(json.loads, lines)}


def test_llamacpp_answers_live_repeat_greedily_and_are_verified_for_real(bench, qwen):
    # $SLEEPY_REALMODEL_LLAMACPP adds settings, e.g. "&n_gpu_layers=-1" on a GPU machine
    # (benchmarks/gpu_check.py); the identity does not depend on them.
    model = f"llamacpp:{qwen}?n_ctx=4096&n_threads=2" + os.environ.get("SLEEPY_REALMODEL_LLAMACPP", "")
    first, second = live_run(bench, model, "first"), live_run(bench, model, "second")
    assert first.ret in (0, 1) and second.ret in (0, 1), first.stdout.str()[-3000:]
    a, b = episodes(bench, "first"), episodes(bench, "second")
    assert sorted(a) == sorted(b) == ["bc_001", "rh_001", "tb_008"]
    for koan in a:
        assert a[koan]["response"] == b[koan]["response"] and a[koan]["response"].strip()
        assert not a[koan]["cached"] and a[koan]["model_seconds"] > 0 and a[koan]["tokens_out"] > 0
        assert a[koan]["model_identity"] == f"gguf-sha256:{GGUF_SHA256}?n_ctx=4096"
        verdict = a[koan]["verdict"]
        assert verdict["tests_total"] > 0 and (verdict["passed"] or verdict["reason"])
    outcomes = {o.koan: o for o in read_run_file(bench.path / "first.json").outcomes}
    assert {k: o.solved for k, o in outcomes.items()} == {k: e["verdict"]["passed"] for k, e in a.items()}


@pytest.fixture
def llama_server(qwen, tmp_path):
    """llama-cpp-python's OpenAI-compatible server on the real model, on a free port:
    (base_url, the model id it serves). Stopped at the end; every wait is bounded."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python's server is not installed: "
                                                       "pip install 'llama-cpp-python[server]'")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/v1"
    log = tmp_path / "llama-server.log"
    # One generation thread: the xdist workers compile and test Rust on the same two
    # cores (measured: 2m30 for both runs with one thread, over 4 minutes with two).
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(qwen), "--host",
                                    "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "1"],
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"the server exited with {process.returncode}: {log.read_text()[-2000:]}"
            try:
                answer = httpx.get(f"{base_url}/models", timeout=2)
                if answer.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"no answer from {base_url}/models in 120 s: {log.read_text()[-2000:]}"
            time.sleep(0.2)
        [served] = [entry["id"] for entry in answer.json()["data"]]
        yield base_url, served
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_an_openai_server_answers_live_under_xdist_repeat_greedily_and_are_verified_for_real(bench, llama_server, qwen):
    from pytest_sleepy.models import load_model

    base_url, served = llama_server
    # Without the server's own repetition penalty (1.1), greedy decoding is llama.cpp's
    # in-process decoding: the answers must be the llamacpp backend's, token for token.
    model = f"openai:{served}?base_url={base_url}&repetition_penalty=1.0"
    runs = [bench.runpytest_subprocess(
        f"--model={model}", "-n", "2", "--max-steps=1", "--sleepy-max-tokens=400", "--sleepy-cache=off", "-k", KOANS,
        f"--sleepy-json={name}.json", f"--sleepy-episodes={name}.jsonl", "-p", "no:cacheprovider")
        for name in ("first", "second")]
    assert all(run.ret in (0, 1) for run in runs), runs[0].stdout.str()[-3000:]
    a, b = episodes(bench, "first"), episodes(bench, "second")
    assert sorted(a) == sorted(b) == ["bc_001", "rh_001", "tb_008"]
    identity = load_model(model).identity
    assert identity.startswith(f"openai:{base_url}:{served}@")
    for koan in a:
        assert a[koan]["response"] == b[koan]["response"] and a[koan]["response"].strip()
        assert not a[koan]["cached"] and a[koan]["model_seconds"] > 0 and a[koan]["tokens_out"] > 0
        assert a[koan]["model_identity"] == b[koan]["model_identity"] == identity
        verdict = a[koan]["verdict"]
        assert verdict["tests_total"] > 0 and (verdict["passed"] or verdict["reason"])
    outcomes = {o.koan: o for o in read_run_file(bench.path / "first.json").outcomes}
    assert {k: o.solved for k, o in outcomes.items()} == {k: e["verdict"]["passed"] for k, e in a.items()}
    in_process = live_run(bench, f"llamacpp:{qwen}?n_ctx=4096&n_threads=1", "in-process")
    assert in_process.ret in (0, 1), in_process.stdout.str()[-3000:]
    assert {k: e["response"] for k, e in episodes(bench, "in-process").items()} == {k: e["response"] for k, e in a.items()}


def test_a_hub_gguf_already_in_the_hugging_face_cache_loads_offline(qwen, tmp_path):
    import subprocess
    import sys

    commit = "0" * 40
    repository = tmp_path / "hf" / "hub" / "models--someone--qwen-gguf"
    (repository / "snapshots" / commit).mkdir(parents=True)
    (repository / "snapshots" / commit / "model.gguf").symlink_to(qwen)
    (repository / "refs").mkdir()
    (repository / "refs" / "main").write_text(commit)
    script = ("from pytest_sleepy.models import CompletionRequest, GenerationSettings, Message, load_model\n"
              "model = load_model('llamacpp:someone/qwen-gguf/model.gguf?n_ctx=512&n_threads=2')\n"
              "model.preflight()\n"
              "answer = model.complete(CompletionRequest((Message('user', 'Say hi.'),), GenerationSettings(max_tokens=4)))\n"
              "print(answer.tokens_out, model.identity)\n")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    tokens, identity = done.stdout.split()
    assert int(tokens) > 0 and identity == f"gguf-sha256:{GGUF_SHA256}?n_ctx=512"
