"""Deciding whether a candidate repairs a koan.

A candidate is solved only when it is within the size cap, passes the anti-tamper
rules (tamper.py), compiles with the koan's hidden tests in a module it cannot see,
and every hidden test delivers its proof (harness.py): a fresh secret token that only
the real test wrapper, after the real test body returned, can write. libtest's "ok"
lines and the exit status corroborate the proofs; they never replace them.

The hidden tests live in their own file, `sleepy_hidden_tests.rs`, attached by one
`#[path]` module declaration appended to the candidate, so rustc's spans tell us
whether an error is in the candidate or in the tests (prompts must not show the
tests). Compilation reads the sources from a read-only directory, works in the
sandbox's capped /tmp and copies out one binary; the tests then run from a directory
that holds only that binary, unreadable, with no /proc: the test source, the
harness and the tokens are out of the candidate's reach at run time.

Std-only koans take the fast path: one `rustc --test` and one run of the test binary,
both sandboxed. A candidate with errors never reaches code generation or linking:
rustc stops after analysis. Koans with dependencies are built with `cargo test
--no-run --offline` instead.

Verdicts are cached by content (candidate, tests, edition, dependencies, rustc -vV,
limits, sandbox mode and randomness, and this module's VERSION), one JSON file per
key, written atomically so that concurrent pytest-xdist workers can share the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..koans import Koan
from .diagnostics import Diagnostic, error_codes, parse_rustc_json
from .verdict import Verdict
from .cache import VerificationCache
from .harness import (
    HIDDEN_TEST_MODULE, HIDDEN_TESTS_FILE, PROOF_MARK, HiddenTestError, draw_tokens, hidden_module_source,
    hidden_tests, proven_tests, tokens_input,
)
from .rustlex import LexError, tokenize
from .sandbox import COMPILE_LIMITS, SANDBOX_ROOT, TEST_LIMITS, Limits, Sandbox, SandboxResult, Toolchain
from .tamper import find_tampering

__all__ = [
    "Verdict", "Verifier", "VerificationCache", "verify_candidate", "VERSION", "CANDIDATE_FILES",
    "MAX_CANDIDATE_BYTES",
]

# Bump whenever a change here or in harness.py could change a built and tested verdict:
# it invalidates every cached verdict. The tamper screen (tamper.py) runs before the
# cache is consulted and its refusals are never cached, so changing its rules needs no
# bump.
VERSION = "4"
# Larger candidates are refused before any work is done (a koan is 20-120 lines).
MAX_CANDIDATE_BYTES = 256 * 1024
TEST_BINARY = "candidate_tests"
# Where the candidate sits, as rustc's spans name it: the rustc path, the cargo path.
CANDIDATE_FILES = ("candidate.rs", "src/main.rs")
OUTPUT_KEPT = 8000  # characters of test output kept in a verdict
WORKDIR_PREFIX = "sleepy-verify-"


class Verifier:
    """Verifies candidates for koans in a sandbox, with an optional verdict cache."""

    def __init__(
        self,
        sandbox: Sandbox | None = None,
        cache: VerificationCache | None = None,
        *,
        compile_limits: Limits = COMPILE_LIMITS,
        test_limits: Limits = TEST_LIMITS,
        max_candidate_bytes: int = MAX_CANDIDATE_BYTES,
    ):
        self.sandbox = sandbox or Sandbox(Toolchain.detect())
        self.toolchain = self.sandbox.toolchain
        self.cache = cache
        self.compile_limits = compile_limits
        self.test_limits = test_limits
        self.max_candidate_bytes = max_candidate_bytes

    def verify_candidate(self, koan: Koan, code: str) -> Verdict:
        refused = self.screen(koan, code)
        if refused is not None:
            return refused
        key = self.cache_key(koan, code) if self.cache else None
        if key and (cached := self.cache.get(key)) is not None:
            return cached
        # The process id in the name tells whose work directory it is (tests check
        # that a verification leaves none behind while other processes verify too).
        workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))
        try:
            verdict = self._build_and_test(koan, code, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        # A timeout can be load on the machine rather than the candidate: not cached.
        if key and not verdict.timed_out:
            self.cache.put(key, verdict)
        return verdict

    def screen(self, koan: Koan, code: str) -> Verdict | None:
        """The checks made on the host before anything runs (None: go on); each is linear in
        the size of the candidate."""
        size = len(code.encode("utf-8", "surrogatepass"))
        if size > self.max_candidate_bytes:
            return Verdict(passed=False, compiled=False, reason=(
                f"too large: the candidate is {size:,} bytes, over the limit of {self.max_candidate_bytes:,} "
                "(a repair is a program of the koan's size)"))
        try:
            tests = hidden_tests(koan.tests)
        except HiddenTestError as error:
            return Verdict(passed=False, compiled=False, reason=f"the koan's hidden tests cannot be run: {error}")
        if not tests:
            return Verdict(passed=False, compiled=False, reason=(
                "the koan has no hidden tests, and a candidate passes only on tests that ran: "
                "add #[test] functions to the koan's `tests`"))
        try:
            code.encode("utf-8")
        except UnicodeEncodeError as error:
            return Verdict(passed=False, compiled=False, tests_total=len(tests), reason=(
                f"does not compile: character {error.start} is a lone surrogate ({code[error.start]!a}), "
                "which is not text and cannot be written as UTF-8"))
        try:
            tokens = tokenize(code)
        except LexError as error:
            return Verdict(passed=False, compiled=False, tests_total=len(tests),
                           reason=f"does not compile: {error}")
        tampering = find_tampering(tokens, (koan.buggy, koan.fixed), koan.tests)
        if tampering:
            return Verdict(passed=False, compiled=False, reason=tampering, tampering=tampering, tests_total=len(tests))
        return None

    def cache_key(self, koan: Koan, code: str) -> str:
        digest = hashlib.sha256()
        material = {
            "verifier": VERSION,
            "code": code,
            "tests": koan.tests,
            # The hidden module imports the standard names the koan's programs use.
            "programs": [koan.buggy, koan.fixed],
            "edition": koan.edition,
            "rustc": self.toolchain.version,
            "sandbox": self.sandbox.mode,
            # A verdict can hang on hash order: one made with the host's random keys
            # is not one made with fixed keys.
            "randomness": self.sandbox.randomness,
            "limits": [asdict(self.compile_limits), asdict(self.test_limits)],
            "dependencies": {name: _tree_digest(path) for name, path in sorted(koan.dependencies.items())},
        }
        digest.update(json.dumps(material, sort_keys=True).encode())
        return digest.hexdigest()

    # -- building -------------------------------------------------------------------

    def _build_and_test(self, koan: Koan, code: str, workdir: Path) -> Verdict:
        expected = tuple(test.name for test in hidden_tests(koan.tests))
        (workdir / "run").mkdir()
        compile = self._compile_with_cargo if koan.dependencies else self._compile_with_rustc
        result, diagnostics = compile(koan, code, workdir)
        binary = workdir / "run" / TEST_BINARY
        base = Verdict(
            passed=False, compiled=False, reason="", diagnostics=diagnostics,
            error_codes=error_codes(diagnostics), tests_total=len(expected),
            compile_seconds=round(result.seconds, 4),
        )
        if result.timed_out:
            return replace(base, timed_out=True, reason=f"timeout: compilation took longer than {self.compile_limits.wall_seconds:g} s")
        if result.output_exceeded:
            return replace(base, reason="output limit exceeded: the compiler printed too much")
        if base.error_codes or result.returncode != 0 or not binary.is_file():
            return replace(base, reason=_compile_failure(diagnostics, result))
        # Executable but not readable: the binary holds the tests' constants.
        binary.chmod(0o111)
        tokens = draw_tokens(expected)
        run = self.sandbox.run(
            [f"./{TEST_BINARY}", "--exact", "--test-threads=1", "--color", "never",
             *(f"{HIDDEN_TEST_MODULE}::{name}" for name in expected)],
            workdir=workdir / "run", limits=self.test_limits, stdin=tokens_input(tokens), proc=False,
            env={"LD_LIBRARY_PATH": self.toolchain.std_library_dir},
        )
        proven = proven_tests(run.stdout, tokens)
        return _judge_test_run(replace(base, compiled=True, run_seconds=round(run.seconds, 4)),
                               run, expected, proven, self.test_limits)

    def _write_sources(self, koan: Koan, code: str, source_dir: Path) -> None:
        source_dir.mkdir(parents=True, exist_ok=True)
        (source_dir / Path(self._candidate_file(koan)).name).write_text(_with_hidden_module(code), encoding="utf-8")
        (source_dir / HIDDEN_TESTS_FILE).write_text(
            hidden_module_source(koan.tests, (koan.buggy, koan.fixed), code), encoding="utf-8")

    @staticmethod
    def _candidate_file(koan: Koan) -> str:
        return CANDIDATE_FILES[1] if koan.dependencies else CANDIDATE_FILES[0]

    def _compile_with_rustc(self, koan: Koan, code: str, workdir: Path):
        self._write_sources(koan, code, workdir)
        scratch = self.sandbox.scratch(workdir)
        output = f"{scratch}/{TEST_BINARY}"
        result = self.sandbox.run(
            ["/bin/sh", "-c", _COPY_OUT.format(binary=output), "sh",
             self.toolchain.rustc, "--test", "--edition", koan.edition, "--crate-name", "candidate",
             "--error-format=json", "-F", "unsafe_code", "-C", "debuginfo=0",
             # std's debug info is most of what the linker copies; tests never need it.
             "-C", "strip=debuginfo",
             # Linking std as a shared library leaves the linker a fraction of the work;
             # the test run finds it in the (read-only) toolchain, see LD_LIBRARY_PATH.
             "-C", "prefer-dynamic",
             "-o", output, CANDIDATE_FILES[0]],
            workdir=workdir, limits=self.compile_limits, writable=("run",),
        )
        return result, parse_rustc_json(result.stderr)

    def _compile_with_cargo(self, koan: Koan, code: str, workdir: Path):
        cargo = self.toolchain.require_cargo()
        self._write_sources(koan, code, workdir / "project" / "src")
        isolated = self.sandbox.isolated
        inside = {name: f"/deps/{name}" if isolated else str(path) for name, path in koan.dependencies.items()}
        # json.dumps gives a valid TOML basic string for any path.
        dependencies = "\n".join(f"{name} = {{ path = {json.dumps(path)} }}" for name, path in inside.items())
        (workdir / "project" / "Cargo.toml").write_text(
            f'[package]\nname = "candidate"\nversion = "0.0.0"\nedition = "{koan.edition}"\n\n'
            f'[dependencies]\n{dependencies}\n\n[lints.rust]\nunsafe_code = "forbid"\n',
            encoding="utf-8",
        )
        scratch = self.sandbox.scratch(workdir)
        result = self.sandbox.run(
            ["/bin/sh", "-c", _CARGO_BUILD, "sh", cargo],
            workdir=workdir, limits=self.compile_limits, writable=("run",),
            read_only={str(koan.dependencies[name]): path for name, path in inside.items()} if isolated else None,
            env={"CARGO_HOME": f"{scratch}/cargo-home", "CARGO_TARGET_DIR": f"{scratch}/target",
                 "RUSTC": self.toolchain.rustc, "CARGO_TERM_COLOR": "never"},
        )
        # The candidate's own files are the only relative paths in cargo's spans;
        # dependencies (trusted koan material) appear under absolute paths.
        diagnostics = [d for d in parse_rustc_json(result.stdout)
                       if d.primary_span is None or not os.path.isabs(d.primary_span.file)]
        if result.returncode != 0 and not error_codes(diagnostics):
            stderr = result.stderr.strip().splitlines()
            diagnostics.append(Diagnostic(level="error", code=None, message="cargo failed",
                                          rendered="\n".join(stderr[-20:])))
        return result, diagnostics


# Compilation reads the sources from the read-only working directory, writes every
# intermediate file to the capped /tmp, and copies the one binary into `run/`.
_COPY_OUT = 'set -e; "$@"; cp "{binary}" run/'
# Cargo writes Cargo.lock next to the manifest, so the project is copied to /tmp first;
# the test binary is the artifact cargo reports with a test profile.
_CARGO_BUILD = (
    'set -e; cp -R project "$TMPDIR/project"; cd "$TMPDIR/project"; status=0; '
    '"$1" test --offline --no-run --message-format=json --color never > "$TMPDIR/messages" || status=$?; '
    'cat "$TMPDIR/messages"; '
    'if [ "$status" -eq 0 ]; then '
    'binary=$(grep \'"reason":"compiler-artifact"\' "$TMPDIR/messages" | grep \'"test":true\' '
    '| grep -o \'"executable":"[^"]*"\' | tail -n 1 | cut -d\'"\' -f4); '
    'cp "$binary" "$OLDPWD/run/candidate_tests"; fi; exit "$status"'
)


def verify_candidate(koan: Koan, code: str, verifier: Verifier | None = None) -> Verdict:
    """Verify `code` as a repair of `koan` (with a default sandboxed, uncached verifier)."""
    return (verifier or Verifier()).verify_candidate(koan, code)


def _with_hidden_module(code: str) -> str:
    # The `const _` first takes any attribute the candidate leaves dangling at its end
    # (`#[cfg(any())]` would otherwise switch the hidden module off).
    return (f'{code}\n\nconst _: () = ();\n'
            f'#[cfg(test)]\n#[path = "{HIDDEN_TESTS_FILE}"]\nmod {HIDDEN_TEST_MODULE};\n')


def _compile_failure(diagnostics: list[Diagnostic], result: SandboxResult) -> str:
    errors = [d for d in diagnostics if d.is_error]
    if not errors:
        return f"does not compile: the compiler exited with status {result.returncode}"
    codes = error_codes(diagnostics)
    if any(d.code == "unsafe_code" for d in errors):
        return "tampering: `unsafe` code is not allowed"
    if all(d.in_hidden_tests for d in errors):
        return (f"hidden tests do not compile against the candidate ({', '.join(codes)}): "
                "a function, type or signature they use is missing or changed")
    return f"does not compile: {', '.join(codes)}"


def _judge_test_run(verdict: Verdict, run: SandboxResult, expected: tuple[str, ...], proven: set[str],
                    limits: Limits) -> Verdict:
    """Only proofs count as passes; whatever the output says, a test without one failed."""
    output = _without_proofs(run.stdout) + ("\n" + run.stderr if run.stderr.strip() else "")
    failed = [name for name in expected if name not in proven]
    verdict = replace(verdict, tests_passed=len(expected) - len(failed), tests_failed=len(failed),
                      failed_tests=failed, test_output=output[-OUTPUT_KEPT:])
    if run.timed_out:
        return replace(verdict, timed_out=True, reason=f"timeout: the tests ran longer than {limits.wall_seconds:g} s")
    if run.output_exceeded:
        return replace(verdict, reason=f"output limit exceeded: the tests printed more than {limits.output_bytes // 1024} KiB")
    if "memory allocation of" in run.stderr:
        return replace(verdict, reason=f"memory limit exceeded: the tests tried to use more than {limits.memory_bytes // 2**20} MiB")
    if run.signal is not None:
        name = signal.Signals(run.signal).name if run.signal in signal.Signals._value2member_map_ else str(run.signal)
        return replace(verdict, reason=f"the test binary was killed by {name}")
    if failed and run.returncode == 0:
        return replace(verdict, reason=(
            f"hidden tests did not all run: {len(failed)} of {len(expected)} gave no proof of passing "
            f"({', '.join(failed)}) although the program exited with status 0: it ended early or "
            "imitated the test output"))
    if failed:
        return replace(verdict, reason=f"hidden tests failed: {len(failed)} of {len(expected)} ({', '.join(failed)})")
    if run.returncode != 0:
        return replace(verdict, reason=f"the test binary exited with status {run.returncode} after every test passed")
    return replace(verdict, passed=True, reason="")


def _without_proofs(stdout: str) -> str:
    return "\n".join(line for line in stdout.split("\n") if not line.startswith(PROOF_MARK))


def _tree_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file() and "target" not in path.relative_to(directory).parts:
            digest.update(str(path.relative_to(directory)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()
