"""The real model, live: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF) through `llamacpp:`.

The GGUF is joined from its PyPI slices on first use (tests/realmodel.py). Three eval
koans, one step each, greedy, twice with the completion cache off: the answers must
repeat token for token, and every verdict must be the real verifier's.
"""

from __future__ import annotations

import json

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
    model = f"llamacpp:{qwen}?n_ctx=4096&n_threads=2"
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
