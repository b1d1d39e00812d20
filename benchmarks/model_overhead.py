"""How much of a live run is the benchmark's own work, next to the model's?

    python benchmarks/model_overhead.py [--koans "bc_001 or tb_008 or rh_001"] [--steps 1]
                                        [--model SPEC] [--openai-server]

(a) A live pytest run of the eval koans selected by `--koans` (one step each, greedy,
    the completion cache off) with the real model, `llamacpp:` on the Qwen2.5-Coder
    1.5B GGUF by default (assembled by tests/realmodel.py). The run file gives the sum
    of model seconds over all attempts; everything else in the wall time is the
    benchmark's own: pytest's start, collection, verification, prompts, the plugin,
    and loading the model once (measured apart, in a process of its own during the
    benchmark, and shown both ways).
    Target: the benchmark's own share <= 5 % of the wall time.
(b) With `--openai-server`: throughput of `openai:` against one llama.cpp server
    (llama-cpp-python's `python -m llama_cpp.server`), `-n 1` against `-n 2` on the same
    koans, as a ratio of wall times. That server answers one request at a time (it has
    no `--parallel` slots, unlike llama.cpp's own `llama-server`), so `-n 2` can only
    overlap one worker's verification and prompt building with the other's generation.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from realmodel import qwen_gguf  # noqa: E402


def run_pytest(model: str, koans: str, steps: int, workers: int, out: Path) -> float:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--model={model}",
               f"--max-steps={steps}", "--sleepy-cache=off", "--sleepy-max-tokens=400", "-k", koans,
               f"--sleepy-json={out}", "--sleepy-matrix=off"]
    if workers > 1:
        command += ["-n", str(workers)]
    started = time.perf_counter()
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if finished.returncode not in (0, 1):  # 1: some koans were not repaired
        raise SystemExit(f"pytest ended with {finished.returncode}:\n{(finished.stdout + finished.stderr)[-3000:]}")
    return seconds


def model_seconds(run_file: Path) -> float:
    data = json.loads(run_file.read_text())
    return sum(o["model_seconds"] for o in data["outcomes"])


def load_seconds(model: str) -> float:
    code = ("import time; from pytest_sleepy.models import load_model; m = load_model(%r); "
            "t = time.perf_counter(); m._load(); print(time.perf_counter() - t)" % model)
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    if finished.returncode != 0:
        raise SystemExit(f"loading {model} failed:\n{finished.stderr[-3000:]}")
    return float(finished.stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--koans", default="bc_001 or tb_008 or rh_001", help="a pytest -k expression")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--model", default=None, help="default: llamacpp on the Qwen2.5-Coder 1.5B GGUF")
    parser.add_argument("--openai-server", action="store_true", help="also measure openai: with -n 1 and -n 2")
    args = parser.parse_args()
    gguf = qwen_gguf()
    model = args.model or f"llamacpp:{gguf}?n_ctx=4096"
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "run.json"
        wall = run_pytest(model, args.koans, args.steps, 1, out)
        spent = model_seconds(out)
        loading = load_seconds(model) if model.startswith("llamacpp:") else 0.0
        own = wall - spent - loading
        print(f"(a) {model}, koans: {args.koans}, {args.steps} step(s)")
        print(f"    wall {wall:.1f} s, model {spent:.1f} s, loading the model {loading:.1f} s")
        print(f"    the benchmark's own share: {100 * own / wall:.1f} % of wall (loading counted as the model's), "
              f"{100 * (own + loading) / wall:.1f} % (loading counted as the benchmark's); target <= 5 %")
        if args.openai_server:
            port = free_port()
            server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host",
                                       "127.0.0.1", "--port", str(port), "--n_ctx", "8192"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as answer:
                            served = json.load(answer)["data"][0]["id"]
                        break
                    except OSError:
                        time.sleep(1)
                else:
                    raise RuntimeError("the llama.cpp server did not start in 120 s")
                spec = f"openai:{served}?base_url=http://127.0.0.1:{port}/v1"
                one = run_pytest(spec, args.koans, args.steps, 1, Path(work) / "one.json")
                two = run_pytest(spec, args.koans, args.steps, 2, Path(work) / "two.json")
                print(f"(b) {spec}: -n 1 {one:.1f} s, -n 2 {two:.1f} s; throughput ratio (-n 2 / -n 1) {one / two:.2f}")
            finally:
                server.terminate()
                server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())
