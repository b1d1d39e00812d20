"""What do Share's Phase 1 and its storage cost at Qwen2.5-Coder-1.5B shapes?

    python benchmarks/share_bench.py [--adapters 51] [--rank 8] [--layers 28] [--p 4]
                                     [--k-max 32] [--tau 0.6] [--seed 0] [--threads N]

Builds ``--adapters`` synthetic rank-``--rank`` LoRAs (random weights, seeded; scale
``alpha / r = 2``) on q, k, v, o of ``--layers`` layers at Qwen2.5-Coder-1.5B's shapes
(hidden 1536; q/o 1536x1536; k/v 256x1536, 2 KV heads x 128), then in one run:

(a) Phase 1 on all of them (`pytest_sleepy.training.share.phase1`): wall time and peak
    memory;
(b) the references, in the same run: stacking only (building every module's
    ``[B_1 ... B_N]`` and ``[A_1^T ... A_N^T]``, the data Phase 1 factorises, in fp64)
    and writing the adapters as separate peft directories (what keeping them apart
    costs);
(c) saving the Share model, and merging one more adapter (Phase 3);
(d) storage: Share (bases + coefficients) against the separate adapters, in numbers
    and bytes at fp32 and bf16 (the ratio is the same for both: same dtype on each side),
    plus the bytes actually written (fp32) by both.

Peak memory: tracemalloc does not see torch's allocations and CPU torch keeps no
allocator statistics, so the process's resident set is used. Where Linux allows it,
the peak-RSS mark is reset (``/proc/self/clear_refs``, 5) just before Phase 1 and
``VmHWM - VmRSS(before)`` is the extra memory Phase 1 needed; otherwise the increase of
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (a high-water mark that can only
understate). ``--threads`` sets torch's intra-op threads (default: torch's own
choice). The matrices are small (at most 1536 x 408), so threads buy little, and on a
machine whose cores are busy with other work OpenMP's barriers can make 2 threads
many times slower than 1: state the thread count with any figure. Random adapters share no subspace, so they are Share's worst case for
reconstruction: the relative error printed is an upper bound, not a quality figure.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_sleepy.training.share import (  # noqa: E402
    LoraFactors,
    ShareConfig,
    expanded_from_lora,
    merge,
    phase1,
    save_share,
    write_peft_adapter,
)

HIDDEN = 1536
KV = 2 * 128
SHAPES = {"q_proj": (HIDDEN, HIDDEN), "k_proj": (KV, HIDDEN), "v_proj": (KV, HIDDEN), "o_proj": (HIDDEN, HIDDEN)}


def module_shapes(layers: int) -> dict[str, tuple[int, int]]:
    return {f"model.layers.{i}.self_attn.{m}": shape for i in range(layers) for m, shape in SHAPES.items()}


def make_adapter(gen: torch.Generator, shapes: dict[str, tuple[int, int]], rank: int) -> dict[str, LoraFactors]:
    out = {}
    for name, (d_out, d_in) in shapes.items():
        B = torch.randn(d_out, rank, generator=gen) * 0.01
        A = torch.randn(rank, d_in, generator=gen) / d_in**0.5
        out[name] = LoraFactors(B, A, alpha=2.0 * rank, rank=rank)
    return out


def rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=51)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--p", type=int, default=4)
    parser.add_argument("--k-max", type=int, default=32)
    parser.add_argument("--tau", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    shapes = module_shapes(args.layers)
    config = ShareConfig(k_max=args.k_max, tau=args.tau, p=args.p, seed=args.seed)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(shapes)} modules, "
          f"{args.adapters} adapters of rank {args.rank}; {config}")

    gen = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()
    adapters = {f"task{i:02d}": make_adapter(gen, shapes, args.rank) for i in range(args.adapters)}
    extra = make_adapter(gen, shapes, args.rank)
    print(f"generated the adapters in {time.perf_counter() - started:.1f} s")

    # (a) Phase 1, first, while the current RSS is the process's peak
    rss_before = rss_kib("VmRSS")
    exact_peak = reset_peak() and rss_before is not None
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    share = phase1(adapters, config)
    phase1_s = time.perf_counter() - started
    if exact_peak:
        peak_mib = (rss_kib("VmHWM") - rss_before) / 1024
        how = "VmHWM after reset - VmRSS before"
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - maxrss_before) / 1024
        how = "ru_maxrss increase (can understate)"

    # (b) references
    started = time.perf_counter()
    for name in shapes:
        ingested = [adapters[t][name].ingest() for t in adapters]
        torch.cat([B.double() for B, _ in ingested], dim=1)
        torch.cat([A.double().T for _, A in ingested], dim=1)
    stack_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="share-bench-") as work:
        root = Path(work)
        started = time.perf_counter()
        for task, modules in adapters.items():
            write_peft_adapter({n: (f.B, f.A) for n, f in modules.items()}, root / "separate" / task,
                               base_model="Qwen/Qwen2.5-Coder-1.5B", rank=args.rank, alpha=2 * args.rank)
        separate_s = time.perf_counter() - started
        separate_bytes = dir_bytes(root / "separate")
        # (c) save, merge
        started = time.perf_counter()
        save_share(share, root / "share")
        save_s = time.perf_counter() - started
        share_bytes = dir_bytes(root / "share")
    started = time.perf_counter()
    merged = merge(share, "extra", expanded_from_lora(share, extra))
    merge_s = time.perf_counter() - started

    # (d) storage
    counts = share.parameter_count()
    separate_numbers = args.adapters * sum((d_out + d_in) * args.rank for d_out, d_in in shapes.values())
    kb = [layer.k_beta for layer in share.layers.values()]
    ka = [layer.k_alpha for layer in share.layers.values()]
    per_task = sum(args.p * (layer.k_beta + layer.k_alpha) for layer in share.layers.values())
    per_lora = sum((d_out + d_in) * args.rank for d_out, d_in in shapes.values())

    # reconstruction error on a sample (worst case: random adapters share nothing)
    errors = []
    for task in list(adapters)[:3]:
        for name in list(shapes)[:8]:
            truth = adapters[task][name].delta_w()
            errors.append(float((share.layers[name].delta_w(task) - truth).norm() / truth.norm()))

    print()
    print(f"k_beta {min(kb)}..{max(kb)}, k_alpha {min(ka)}..{max(ka)} (k_max {args.k_max}, tau {args.tau})")
    print(f"(a) Phase 1:                    {phase1_s:8.2f} s   peak extra memory {peak_mib:7.1f} MiB ({how})")
    print(f"(b) stacking only (fp64):       {stack_s:8.2f} s   -> Phase 1 / stacking  = {phase1_s / stack_s:6.1f}x")
    print(f"    {'writing ' + str(args.adapters) + ' peft adapters:':<28}{separate_s:8.2f} s   -> Phase 1 / writing   = {phase1_s / separate_s:6.1f}x")
    print(f"(c) save_share:                 {save_s:8.2f} s")
    print(f"    merge one more adapter:     {merge_s:8.2f} s   ({len(merged.tasks)} tasks after)")
    print("(d) storage, numbers (bytes = 4x at fp32, 2x at bf16; same dtype both sides):")
    print(f"    separate adapters: {separate_numbers:>12,}  = {separate_numbers * 4 / 2**20:8.1f} MiB fp32, "
          f"{separate_numbers * 2 / 2**20:8.1f} MiB bf16")
    print(f"    Share bases:       {counts['bases']:>12,}")
    print(f"    Share coefficients:{counts['coefficients']:>12,}")
    print(f"    Share total:       {counts['total']:>12,}  = {counts['total'] * 4 / 2**20:8.1f} MiB fp32, "
          f"{counts['total'] * 2 / 2**20:8.1f} MiB bf16")
    print(f"    ratio separate / Share = {separate_numbers / counts['total']:.1f}x")
    print(f"    per task: one LoRA {per_lora:,} numbers, one Share task {per_task:,} "
          f"-> {per_lora / per_task:.0f}x (marginal cost once the bases exist)")
    print(f"    written to disk (fp32): separate {separate_bytes / 2**20:.1f} MiB, Share {share_bytes / 2**20:.1f} MiB "
          f"-> {separate_bytes / share_bytes:.1f}x")
    print(f"reconstruction rel. error, {len(errors)} task-modules (random adapters, worst case): "
          f"mean {sum(errors) / len(errors):.3f}, max {max(errors):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
