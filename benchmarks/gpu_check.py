"""The CUDA paths, proven on a machine with an NVIDIA GPU. One line of figures per part.

    python benchmarks/gpu_check.py [--skip-install] [--parts hf,lora,qlora,share,llamacpp,vllm]

Run it from the repository root after the README install. It installs what the GPU
parts need (bitsandbytes; a CUDA build of llama-cpp-python, built afresh, never pip's
cached CPU wheel; vLLM, if it installs, in a virtual environment of its own under
.gpu-check/, so its torch cannot replace the one the other parts test), then:

- hf:        the hf backend in bf16 on the GPU: a real repair request, tokens/s;
- lora:      LoRA training (peft) for a few steps on a tiny Qwen2 built here, on CUDA;
- qlora:     the same with the base loaded in 4 bits (bitsandbytes nf4);
- share:     a Share Phase-2 step on CUDA, gradients only on the new task's coefficients;
- llamacpp:  the realmodel tests with every layer on the GPU (n_gpu_layers=-1), after
             checking that the installed llama.cpp can offload at all;
- vllm:      a vLLM server with `--enable-lora` on a tiny Qwen2 built here, a LoRA
             adapter trained here loaded per request through the openai backend, and
             one answer with and one without it.

A part that fails says why on its line and the script goes on; a part that could not
run (vLLM did not install) says NOT RUN. The exit status is the number of parts that
failed or did not run.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
PARTS = ("hf", "lora", "qlora", "share", "llamacpp", "vllm")
VLLM_ENV = REPO / ".gpu-check" / "vllm-venv"


class NotRun(Exception):
    """The part could not run here (not a failure of the code it checks)."""


def pip(*args: str, python: str = sys.executable, env: dict | None = None) -> bool:
    result = subprocess.run([python, "-m", "pip", "install", "-q", *args], env={**os.environ, **(env or {})})
    return result.returncode == 0


def install() -> None:
    pip("bitsandbytes>=0.43")
    # --no-cache-dir: pip would otherwise reuse the CPU wheel it built before.
    pip("--force-reinstall", "--no-deps", "--no-cache-dir", "llama-cpp-python",
        env={"CMAKE_ARGS": "-DGGML_CUDA=on -DLLAVA_BUILD=OFF", "FORCE_CMAKE": "1"})
    if not (VLLM_ENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VLLM_ENV)], check=True)
    pip("vllm", python=str(VLLM_ENV / "bin" / "python"))  # optional: the vllm part says when it is missing


def tiny_model(folder: Path, **shape) -> Path:
    from tiny_model import build_tiny_qwen2

    return build_tiny_qwen2(folder / "qwen2", **shape)


def part_hf(work: Path) -> str:
    from realmodel import qwen_gguf  # noqa: F401  (the GGUF is not used here: hf needs safetensors)
    from pytest_sleepy.models import CompletionRequest, GenerationSettings, Message, load_model

    model = load_model(f"hf:{tiny_model(work)}?dtype=bf16&device=cuda")
    request = CompletionRequest((Message("user", "fn main() { let x = 1; }"),), GenerationSettings(max_tokens=64))
    model.complete(request)  # load and warm up
    started = time.perf_counter()
    completion = model.complete(request)
    seconds = time.perf_counter() - started
    return f"bf16 on {model._model.device}, dtype {model._model.dtype}: {completion.tokens_out} tokens in {seconds:.2f} s"


def _train_adapter(base: Path, out: Path, load_in_4bit: bool):
    from pytest_sleepy.training.lora import TrainConfig, train_lora

    records = [{"kind": "sft", "messages": [{"role": "user", "content": f"fix {i}"},
                                             {"role": "assistant", "content": f"```rust\nfn f() -> u8 {{ {i} }}\n```"}],
                "metadata": {"weight": 1.0}} for i in range(8)]
    config = TrainConfig(steps=5, batch_size=2, load_in_4bit=load_in_4bit, dtype="bf16")
    return train_lora(str(base), records, config, out).log


def _train(work: Path, load_in_4bit: bool) -> str:
    import torch

    started = time.perf_counter()
    log = _train_adapter(tiny_model(work), work / "adapter", load_in_4bit)
    return (f"{'QLoRA (nf4)' if load_in_4bit else 'LoRA'} on {torch.cuda.get_device_name()}: 5 steps in "
            f"{time.perf_counter() - started:.1f} s, losses {[round(x, 3) for x in log.losses]}")


def part_lora(work: Path) -> str:
    return _train(work, load_in_4bit=False)


def part_qlora(work: Path) -> str:
    return _train(work, load_in_4bit=True)


def part_share(work: Path) -> str:
    import torch
    from transformers import AutoModelForCausalLM

    from pytest_sleepy.training.share import LoraFactors, ShareConfig, attach_phase2, phase1

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model(work))).to("cuda")
    shapes = {name: (m.out_features, m.in_features) for name, m in model.named_modules()
              if name.endswith(("q_proj", "v_proj"))}
    gen = torch.Generator().manual_seed(0)
    adapters = {f"t{i}": {n: LoraFactors(torch.randn(o, 4, generator=gen) * 0.1, torch.randn(4, i_, generator=gen) * 0.1,
                                         8.0, 4) for n, (o, i_) in shapes.items()} for i in range(3)}
    share = phase1(adapters, ShareConfig(k_max=16, p=4, phi=2))
    handle = attach_phase2(model, share, "new", share.config)
    ids = torch.randint(0, model.config.vocab_size, (1, 16), device="cuda")
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    trained = [p for p in handle.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    frozen = [p for p in model.parameters() if p.grad is not None and not any(p is q for q in handle.parameters())]
    handle.detach()
    return (f"Phase 2 on {next(model.parameters()).device}: loss {loss.item():.3f}, {len(trained)} trained tensors "
            f"with gradients, {len(frozen)} frozen tensors with gradients (must be 0)")


def part_llamacpp(work: Path) -> str:
    offload = subprocess.run([sys.executable, "-c", "import llama_cpp; print(llama_cpp.llama_supports_gpu_offload())"],
                             capture_output=True, text=True)
    if offload.stdout.strip() != "True":
        raise RuntimeError(f"this llama-cpp-python cannot offload to the GPU ({offload.stdout.strip() or offload.stderr[-200:]}); "
                           "rebuild it with CMAKE_ARGS=-DGGML_CUDA=on")
    started = time.perf_counter()
    env = {**os.environ, "SLEEPY_REALMODEL_LLAMACPP": "&n_gpu_layers=-1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "realmodel", "-p", "no:cacheprovider",
                             "tests/test_realmodel.py"], cwd=REPO, env=env, capture_output=True, text=True)
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-200:]
    if result.returncode != 0:  # 5: no test ran; 1: one failed
        raise RuntimeError(f"realmodel tests with n_gpu_layers=-1 ended with {result.returncode}: {last}")
    return f"realmodel tests with n_gpu_layers=-1: {last} ({time.perf_counter() - started:.0f} s)"


def part_vllm(work: Path) -> str:
    import httpx

    from pytest_sleepy.models import CompletionRequest, GenerationSettings, Message, load_model

    python = VLLM_ENV / "bin" / "python"
    if not python.exists() or subprocess.run([str(python), "-c", "import vllm"], capture_output=True).returncode:
        raise NotRun(f"vLLM did not install into {VLLM_ENV} (run without --skip-install, or install it there)")
    # vLLM's attention kernels want a head size of 64 or more; the tests' tiny model has 16.
    base = tiny_model(work, hidden_size=256, num_attention_heads=4, num_key_value_heads=2)
    _train_adapter(base, work / "adapter", load_in_4bit=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(work / "vllm.log", "w")
    started = time.perf_counter()
    server = subprocess.Popen(
        [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(base), "--port", str(port),
         "--enable-lora", "--max-lora-rank", "8", "--max-model-len", "1024", "--gpu-memory-utilization", "0.3",
         "--enforce-eager"],
        env={**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"vllm exited with {server.returncode}: {(work / 'vllm.log').read_text()[-400:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - started > 900:
                raise RuntimeError("vllm did not answer /v1/models within 900 s")
            time.sleep(2)
        up = time.perf_counter() - started
        model = load_model(f"openai:{base}?base_url=http://127.0.0.1:{port}/v1")
        model.preflight()
        model.register_adapter("gpu-check-adapter", work / "adapter")
        request = CompletionRequest((Message("user", "fn main() { let x = 1; }"),), GenerationSettings(max_tokens=32))
        plain = model.complete(request)
        asked = time.perf_counter()
        adapted = model.complete(CompletionRequest(request.messages, request.settings, adapter="gpu-check-adapter"))
        seconds = time.perf_counter() - asked
        loaded = [entry["id"] for entry in httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"]]
        if "gpu-check-adapter" not in loaded:
            raise RuntimeError(f"the adapter is not among the served models after the request: {loaded}")
        return (f"vLLM up in {up:.0f} s; adapter loaded per request and answered {adapted.tokens_out} tokens in "
                f"{seconds:.2f} s (base answered {plain.tokens_out}); served ids: {len(loaded)}")
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-install", action="store_true")
    parser.add_argument("--parts", default=",".join(PARTS))
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to check here")
        return 1
    if not args.skip_install:
        install()
    failed = 0
    for name in args.parts.split(","):
        with tempfile.TemporaryDirectory() as work:
            try:
                line = globals()[f"part_{name}"](Path(work))
            except NotRun as reason:
                failed += 1
                line = f"NOT RUN: {reason}"
            except Exception as error:  # a part that fails says why and the others go on
                failed += 1
                line = f"FAILED: {type(error).__name__}: {error}"
                traceback.print_exc()
            print(f"{name:9s} {line}", flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
