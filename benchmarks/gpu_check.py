"""The CUDA paths, proven on a machine with an NVIDIA GPU. One line of figures per part.

    python benchmarks/gpu_check.py [--skip-install] [--parts hf,lora,qlora,share,llamacpp,vllm]

Run it from the repository root after the README install. It installs what the GPU
parts need (bitsandbytes; a CUDA build of llama-cpp-python; vLLM if it installs), then:

- hf:        the hf backend in bf16 on the GPU: a real repair request, tokens/s;
- lora:      LoRA training (peft) for a few steps on a tiny Qwen2 built here, on CUDA;
- qlora:     the same with the base loaded in 4 bits (bitsandbytes nf4);
- share:     a Share Phase-2 step on CUDA, gradients only on the new task's coefficients;
- llamacpp:  the realmodel tests with every layer on the GPU (n_gpu_layers=-1);
- vllm:      serving a LoRA adapter per request with vLLM (`--enable-lora`), if vLLM installs.

A part that cannot run says why on its line and the script goes on; the exit status
is the number of parts that failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
PARTS = ("hf", "lora", "qlora", "share", "llamacpp", "vllm")


def pip(*args: str, env: dict | None = None) -> bool:
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], env={**os.environ, **(env or {})})
    return result.returncode == 0


def install() -> None:
    pip("bitsandbytes>=0.43")
    pip("--force-reinstall", "--no-deps", "llama-cpp-python", env={"CMAKE_ARGS": "-DGGML_CUDA=on -DLLAVA_BUILD=OFF"})
    pip("vllm")  # optional: the vllm part says so when it is missing


def tiny_model(folder: Path) -> Path:
    from tiny_model import build_tiny_qwen2

    return build_tiny_qwen2(folder / "qwen2")


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


def _train(work: Path, load_in_4bit: bool) -> str:
    import torch

    from pytest_sleepy.training.lora import TrainConfig, train_lora

    records = [{"kind": "sft", "messages": [{"role": "user", "content": f"fix {i}"},
                                             {"role": "assistant", "content": f"```rust\nfn f() -> u8 {{ {i} }}\n```"}],
                "metadata": {"weight": 1.0}} for i in range(8)]
    config = TrainConfig(steps=5, batch_size=2, load_in_4bit=load_in_4bit, dtype="bf16")
    started = time.perf_counter()
    log = train_lora(str(tiny_model(work)), records, config, work / "adapter").log
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
    started = time.perf_counter()
    env = {**os.environ, "SLEEPY_REALMODEL_LLAMACPP": "&n_gpu_layers=-1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "realmodel", "-p", "no:cacheprovider",
                             "tests/test_realmodel.py"], cwd=REPO, env=env, capture_output=True, text=True)
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-200:]
    return f"realmodel tests with n_gpu_layers=-1: {last} ({time.perf_counter() - started:.0f} s)"


def part_vllm(work: Path) -> str:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "SKIPPED: vLLM did not install here"
    return ("vLLM is installed; serve an adapter with: VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve MODEL "
            "--enable-lora, then pytest --model='openai:MODEL?base_url=http://127.0.0.1:8000/v1' --strategy=lora")


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
            except Exception as error:  # a part that fails says why and the others go on
                failed += 1
                line = f"FAILED: {type(error).__name__}: {error}"
                traceback.print_exc()
            print(f"{name:9s} {line}", flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
