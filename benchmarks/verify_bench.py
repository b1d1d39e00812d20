"""How fast is verification? Every koan's reference fix, verified three ways in one run.

    python benchmarks/verify_bench.py [--koans DIR] [--limit N]

(a) the earlier system's way: a fresh cargo project per attempt, `cargo check` then
    `cargo test` (no sandbox);
(b) our verifier with a cold cache (sandbox on);
(c) the floor: bare `rustc --test` on the same program and tests (the test module
    inlined), then the test binary, no sandbox.

Also timed: (d) our verifier on every buggy program that does not compile (a
candidate with errors never reaches code generation or linking), and (e) our verifier
answering from a warm cache. The methods alternate koan by koan so that drift in the
machine's speed hits all of them alike. Medians are printed with the ratios the
project's targets are stated in: (b)/(c) <= 1.2, (a)/(b) >= 2.5, (d)/(c) < 0.5,
(e) <= 5 ms per koan.

Last, the host-side checks (size cap, lexer, tamper rules: `Verifier.screen`), which run
in the pytest process before any sandbox: (f) on a 1 MiB candidate built from the
inputs that used to be slow (runs of `use` tokens, deep nesting, long runs of
attributes, raw identifiers), with the size cap lifted so that every check runs, and
(g) on every koan's reference fix, as a ratio. Linearity is shown by the same kind of
candidate at a quarter of the size: (f) / (f at 256 KiB) is near 4 when the checks are
linear (a quadratic check would give 16). (h) is the 1 MiB candidate under the default
cap, which refuses it unread.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_sleepy.koans import load_corpus
from pytest_sleepy.verify.sandbox import Sandbox, Toolchain
from pytest_sleepy.verify.verifier import MAX_CANDIDATE_BYTES, VerificationCache, Verifier

HARNESS = "\n#[cfg(test)]\nmod sleepy_hidden_tests {{\nuse super::*;\n{tests}\n}}\n"


def earlier_system(koan, toolchain: Toolchain) -> float:
    """(a) fresh cargo project, `cargo check`, then `cargo test`."""
    with tempfile.TemporaryDirectory(prefix="bench-cargo-") as work:
        root = Path(work)
        (root / "src").mkdir()
        (root / "Cargo.toml").write_text(f'[package]\nname = "koan"\nversion = "0.1.0"\nedition = "{koan.edition}"\n')
        (root / "src" / "main.rs").write_text(koan.fixed + HARNESS.format(tests=koan.tests))
        env = {**os.environ, "RUSTC": toolchain.rustc, "CARGO_TERM_COLOR": "never"}
        started = time.perf_counter()
        for command in (["check"], ["test"]):
            result = subprocess.run([toolchain.cargo, *command, "--offline", "-q"], cwd=root, env=env, capture_output=True)
            if result.returncode != 0:
                raise RuntimeError(f"{koan.id}: cargo {command[0]} failed:\n{result.stderr.decode()[-2000:]}")
        return time.perf_counter() - started


def bare_rustc(koan, toolchain: Toolchain) -> float:
    """(c) rustc --test and the test binary, nothing else."""
    with tempfile.TemporaryDirectory(prefix="bench-rustc-") as work:
        root = Path(work)
        (root / "k.rs").write_text(koan.fixed + HARNESS.format(tests=koan.tests))
        started = time.perf_counter()
        subprocess.run([toolchain.rustc, "--test", "--edition", koan.edition, "k.rs", "-o", "k"], cwd=root, check=True, capture_output=True)
        subprocess.run(["./k"], cwd=root, check=True, capture_output=True)
        return time.perf_counter() - started


def timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--koans", type=Path, default=Path("koans"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N koans")
    args = parser.parse_args()

    toolchain = Toolchain.detect()
    sandbox = Sandbox(toolchain)
    koans = [k for k in load_corpus(args.koans) if not k.dependencies][: args.limit]
    cache_dir = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    cold = Verifier(sandbox, None)
    cached = Verifier(sandbox, VerificationCache(cache_dir))
    times = {name: [] for name in "abcde"}
    try:
        for index, koan in enumerate(koans):
            methods = [
                ("a", lambda: earlier_system(koan, toolchain)),
                ("b", lambda: _checked(cold, koan, koan.fixed, should_pass=True)),
                ("c", lambda: bare_rustc(koan, toolchain)),
            ]
            rotation = index % len(methods)
            for name, run in methods[rotation:] + methods[:rotation]:
                times[name].append(run() if name in "ac" else timed(run))
            if not koan.is_logic_bug:
                times["d"].append(timed(_checked, cold, koan, koan.buggy, False))
            cached.verify_candidate(koan, koan.fixed)  # fills the cache; not timed
            times["e"].append(timed(_checked, cached, koan, koan.fixed, True))
            print(f"\r{index + 1}/{len(koans)} koans", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)

    median = {name: statistics.median(values) for name, values in times.items()}
    labels = {
        "a": "(a) earlier system: fresh cargo project, check + test",
        "b": "(b) sleepy verifier, cold cache, sandboxed",
        "c": "(c) bare rustc --test + run, no sandbox (floor)",
        "d": "(d) sleepy verifier, non-compiling buggy code",
        "e": "(e) sleepy verifier, warm cache",
    }
    print(f"rustc: {toolchain.version.splitlines()[0]}; sandbox: {sandbox.mode}; {len(koans)} koans")
    for name, label in labels.items():
        print(f"{label:58s} median {median[name] * 1000:8.1f} ms  (n={len(times[name])})")
    print()
    print(f"(b)/(c) = {median['b'] / median['c']:.2f}   target <= 1.2")
    print(f"(a)/(b) = {median['a'] / median['b']:.2f}   target >= 2.5")
    print(f"(d)/(c) = {median['d'] / median['c']:.2f}   target <  0.5")
    print(f"(e)     = {median['e'] * 1000:.2f} ms   target <= 5 ms")
    print()
    host_side_checks(sandbox, koans)
    return 0


def adversarial_candidate(size: int) -> str:
    """Clean code (no rule fires, so every check reads all of it) made of what used to
    make the host-side checks slow."""
    quarter = size // 4
    pieces = [
        "#[cfg(test)]\n" * (quarter // 13) + "mod m {}\n",
        "fn f() -> u32 { " + "(" * (quarter // 2) + "1" + ")" * (quarter // 2) + " }\n",
        "fn g() { " + "let r#a = 1; " * (quarter // 13) + "}\n",
        "use a::{" * (quarter // 8) + "b" + "}" * (quarter // 8) + ";\n",
    ]
    code = "".join(pieces)
    return code + "use " * ((size - len(code)) // 4)


def host_side_checks(sandbox, koans, rounds: int = 3) -> None:
    big, quarter = adversarial_candidate(1024 * 1024), adversarial_candidate(256 * 1024)
    lifted = Verifier(sandbox, None, max_candidate_bytes=2 * len(big))
    capped = Verifier(sandbox, None)
    koan = koans[0]
    if lifted.screen(koan, big) is not None:
        raise RuntimeError(f"the adversarial candidate was refused: {lifted.screen(koan, big).reason}")
    f = min(timed(lifted.screen, koan, big) for _ in range(rounds))
    f_quarter = min(timed(lifted.screen, koan, quarter) for _ in range(rounds))
    g = statistics.median(min(timed(lifted.screen, k, k.fixed) for _ in range(rounds)) for k in koans)
    h = min(timed(capped.screen, koan, big) for _ in range(rounds))
    normal_size = statistics.median(len(k.fixed.encode()) for k in koans)
    print(f"(f) host-side checks, 1 MiB adversarial candidate, cap lifted   {f * 1000:9.1f} ms")
    print(f"(g) host-side checks, a koan's reference fix (median {normal_size / 1024:.1f} KiB) {g * 1000:9.2f} ms")
    print(f"(h) 1 MiB candidate under the default cap ({MAX_CANDIDATE_BYTES // 1024} KiB)       {h * 1000:9.3f} ms")
    print(f"(f)/(g) = {f / g:.0f} for {len(big) / normal_size:.0f} times the bytes")
    print(f"(f) / (f at 256 KiB, {f_quarter * 1000:.1f} ms) = {f / f_quarter:.2f}   linear: 4, quadratic: 16")


def _checked(verifier: Verifier, koan, code: str, should_pass: bool) -> None:
    verdict = verifier.verify_candidate(koan, code)
    if verdict.passed != should_pass:
        raise RuntimeError(f"{koan.id}: unexpected verdict: {verdict.reason}")


if __name__ == "__main__":
    sys.exit(main())
