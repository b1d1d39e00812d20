"""Deciding whether a candidate repairs a koan.

A candidate is solved only when it passes the anti-tamper rules (tamper.py), compiles
with the koan's hidden tests in a module it cannot see, and every hidden test runs and
passes. The hidden tests live in their own file, `sleepy_hidden_tests.rs`, attached by
one `#[path]` module declaration appended to the candidate, so rustc's spans tell us
whether an error is in the candidate or in the tests (prompts must not show the tests).

Std-only koans take the fast path: one `rustc --test` and one run of the test binary,
both sandboxed. A candidate with errors never reaches code generation or linking:
rustc stops after analysis. Koans with dependencies are built with `cargo test
--no-run --offline` instead.

Verdicts are cached by content (candidate, tests, edition, dependencies, rustc -vV,
limits, sandbox mode and this module's VERSION), one JSON file per key, written
atomically so that concurrent pytest-xdist workers can share the cache.
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

from .diagnostics import HIDDEN_TESTS_FILE, Diagnostic, error_codes, parse_rustc_json
from .jsonfiles import write_json_atomic
from .koans import Koan
from .sandbox import COMPILE_LIMITS, SANDBOX_ROOT, TEST_LIMITS, Limits, Sandbox, SandboxResult, Toolchain
from .tamper import HIDDEN_TEST_MODULE, find_tampering

__all__ = ["Verdict", "Verifier", "VerificationCache", "verify_candidate", "VERSION", "CANDIDATE_FILES"]

# Bump whenever a change here or in tamper.py could change a verdict: it invalidates
# every cached verdict.
VERSION = "3"
TEST_BINARY = "candidate_tests"
# Where the candidate sits, as rustc's spans name it: the rustc path, the cargo path.
CANDIDATE_FILES = ("candidate.rs", "src/main.rs")
OUTPUT_KEPT = 8000  # characters of test output kept in a verdict


@dataclass
class Verdict:
    passed: bool
    compiled: bool
    reason: str  # "" when passed; otherwise why not, in a few words
    error_codes: list[str] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    tests_passed: int = 0
    tests_failed: int = 0
    tests_total: int = 0
    failed_tests: list[str] = field(default_factory=list)
    timed_out: bool = False
    tampering: str | None = None
    test_output: str = ""
    compile_seconds: float = 0.0
    run_seconds: float = 0.0
    cached: bool = False

    def to_dict(self) -> dict:
        data = asdict(self)
        data["diagnostics"] = [d.to_dict() for d in self.diagnostics]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Verdict":
        data = dict(data)
        data["diagnostics"] = [Diagnostic.from_dict(d) for d in data.get("diagnostics", [])]
        return cls(**data)


class VerificationCache:
    """Verdicts on disk, one JSON file per content key; safe for concurrent writers."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Verdict | None:
        try:
            with open(self._path(key), encoding="utf-8") as handle:
                return replace(Verdict.from_dict(json.load(handle)), cached=True)
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def put(self, key: str, verdict: Verdict) -> None:
        write_json_atomic(self._path(key), verdict.to_dict())


class Verifier:
    """Verifies candidates for koans in a sandbox, with an optional verdict cache."""

    def __init__(
        self,
        sandbox: Sandbox | None = None,
        cache: VerificationCache | None = None,
        *,
        compile_limits: Limits = COMPILE_LIMITS,
        test_limits: Limits = TEST_LIMITS,
    ):
        self.sandbox = sandbox or Sandbox(Toolchain.detect())
        self.toolchain = self.sandbox.toolchain
        self.cache = cache
        self.compile_limits = compile_limits
        self.test_limits = test_limits

    def verify_candidate(self, koan: Koan, code: str) -> Verdict:
        tampering = find_tampering(code)
        if tampering:
            return Verdict(passed=False, compiled=False, reason=tampering, tampering=tampering,
                           tests_total=len(koan.test_names))
        key = self.cache_key(koan, code) if self.cache else None
        if key and (cached := self.cache.get(key)) is not None:
            return cached
        workdir = Path(tempfile.mkdtemp(prefix="sleepy-verify-"))
        try:
            verdict = self._build_and_test(koan, code, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        # A timeout can be load on the machine rather than the candidate: not cached.
        if key and not verdict.timed_out:
            self.cache.put(key, verdict)
        return verdict

    def cache_key(self, koan: Koan, code: str) -> str:
        digest = hashlib.sha256()
        material = {
            "verifier": VERSION,
            "code": code,
            "tests": koan.tests,
            "edition": koan.edition,
            "rustc": self.toolchain.version,
            "sandbox": self.sandbox.mode,
            "limits": [asdict(self.compile_limits), asdict(self.test_limits)],
            "dependencies": {name: _tree_digest(path) for name, path in sorted(koan.dependencies.items())},
        }
        digest.update(json.dumps(material, sort_keys=True).encode())
        return digest.hexdigest()

    # -- building -------------------------------------------------------------------

    def _build_and_test(self, koan: Koan, code: str, workdir: Path) -> Verdict:
        expected = koan.test_names
        compile = self._compile_with_cargo if koan.dependencies else self._compile_with_rustc
        result, diagnostics, binary = compile(koan, code, workdir)
        base = Verdict(
            passed=False, compiled=False, reason="", diagnostics=diagnostics,
            error_codes=error_codes(diagnostics), tests_total=len(expected),
            compile_seconds=round(result.seconds, 4),
        )
        if result.timed_out:
            return replace(base, timed_out=True, reason=f"timeout: compilation took longer than {self.compile_limits.wall_seconds:g} s")
        if result.output_exceeded:
            return replace(base, reason="output limit exceeded: the compiler printed too much")
        if base.error_codes or binary is None:
            return replace(base, reason=_compile_failure(diagnostics, result))
        run = self.sandbox.run(
            [f"./{binary}", "--exact", "--test-threads=1", "--color", "never",
             *(f"{HIDDEN_TEST_MODULE}::{name}" for name in expected)],
            workdir=workdir, limits=self.test_limits, writable=False,
        )
        return _judge_test_run(replace(base, compiled=True, run_seconds=round(run.seconds, 4)), run, expected, self.test_limits)

    def _compile_with_rustc(self, koan: Koan, code: str, workdir: Path):
        (workdir / CANDIDATE_FILES[0]).write_text(_with_hidden_module(code), encoding="utf-8")
        (workdir / HIDDEN_TESTS_FILE).write_text(_hidden_tests_source(koan), encoding="utf-8")
        result = self.sandbox.run(
            [self.toolchain.rustc, "--test", "--edition", koan.edition, "--crate-name", "candidate",
             "--error-format=json", "-F", "unsafe_code", "-C", "debuginfo=0",
             # std's debug info is most of what the linker copies; tests never need it.
             "-C", "strip=debuginfo",
             "-o", TEST_BINARY, CANDIDATE_FILES[0]],
            workdir=workdir, limits=self.compile_limits,
        )
        binary = TEST_BINARY if result.returncode == 0 else None
        return result, parse_rustc_json(result.stderr), binary

    def _compile_with_cargo(self, koan: Koan, code: str, workdir: Path):
        cargo = self.toolchain.require_cargo()
        (workdir / "src").mkdir()
        (workdir / CANDIDATE_FILES[1]).write_text(_with_hidden_module(code), encoding="utf-8")
        (workdir / "src" / HIDDEN_TESTS_FILE).write_text(_hidden_tests_source(koan), encoding="utf-8")
        isolated = self.sandbox.isolated
        inside = {name: f"/deps/{name}" if isolated else str(path) for name, path in koan.dependencies.items()}
        # json.dumps gives a valid TOML basic string for any path.
        dependencies = "\n".join(f"{name} = {{ path = {json.dumps(path)} }}" for name, path in inside.items())
        (workdir / "Cargo.toml").write_text(
            f'[package]\nname = "candidate"\nversion = "0.0.0"\nedition = "{koan.edition}"\n\n'
            f'[dependencies]\n{dependencies}\n\n[lints.rust]\nunsafe_code = "forbid"\n',
            encoding="utf-8",
        )
        root = SANDBOX_ROOT if isolated else str(workdir)
        result = self.sandbox.run(
            [cargo, "test", "--offline", "--no-run", "--message-format=json", "--color", "never"],
            workdir=workdir, limits=self.compile_limits,
            read_only={str(koan.dependencies[name]): path for name, path in inside.items()} if isolated else None,
            env={"CARGO_HOME": f"{root}/.cargo", "CARGO_TARGET_DIR": f"{root}/target",
                 "RUSTC": self.toolchain.rustc, "CARGO_TERM_COLOR": "never"},
        )
        # The candidate's own files are the only relative paths in cargo's spans;
        # dependencies (trusted koan material) appear under absolute paths.
        diagnostics = [d for d in parse_rustc_json(result.stdout)
                       if d.primary_span is None or not os.path.isabs(d.primary_span.file)]
        binary = None
        for line in result.stdout.splitlines():
            if '"compiler-artifact"' in line:
                record = json.loads(line)
                if record.get("executable") and record.get("profile", {}).get("test"):
                    binary = os.path.relpath(record["executable"].replace(root, str(workdir)), workdir)
        if result.returncode != 0 and not error_codes(diagnostics):
            stderr = result.stderr.strip().splitlines()
            diagnostics.append(Diagnostic(level="error", code=None, message="cargo failed",
                                          rendered="\n".join(stderr[-20:])))
            binary = None
        return result, diagnostics, binary


def verify_candidate(koan: Koan, code: str, verifier: Verifier | None = None) -> Verdict:
    """Verify `code` as a repair of `koan` (with a default sandboxed, uncached verifier)."""
    return (verifier or Verifier()).verify_candidate(koan, code)


def _with_hidden_module(code: str) -> str:
    return f'{code}\n\n#[cfg(test)]\n#[path = "{HIDDEN_TESTS_FILE}"]\nmod {HIDDEN_TEST_MODULE};\n'


def _hidden_tests_source(koan: Koan) -> str:
    return f"#[allow(unused_imports)]\nuse super::*;\n\n{koan.tests}\n"


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


# libtest prints "test m::name ... ok", with " - should panic" before "..." for
# #[should_panic] tests.
_RESULT_LINE = re.compile(rf"^test {HIDDEN_TEST_MODULE}::(\w+)(?: - should panic)? \.\.\. (.*)$", re.MULTILINE)


def _judge_test_run(verdict: Verdict, run: SandboxResult, expected: tuple[str, ...], limits: Limits) -> Verdict:
    output = run.stdout + ("\n" + run.stderr if run.stderr.strip() else "")
    outcomes = {}
    for name, status in _RESULT_LINE.findall(run.stdout):
        # Output a test writes past libtest's capture can land between "..." and "ok".
        outcomes.setdefault(name, "ok" if status.rstrip().endswith("ok") else "FAILED" if "FAILED" in status else "?")
    passed = [n for n in expected if outcomes.get(n) == "ok"]
    failed = [n for n in expected if outcomes.get(n) == "FAILED"]
    verdict = replace(verdict, tests_passed=len(passed), tests_failed=len(failed), failed_tests=failed,
                      test_output=output[-OUTPUT_KEPT:])
    if run.timed_out:
        return replace(verdict, timed_out=True, reason=f"timeout: the tests ran longer than {limits.wall_seconds:g} s")
    if run.output_exceeded:
        return replace(verdict, reason=f"output limit exceeded: the tests printed more than {limits.output_bytes // 1024} KiB")
    if "memory allocation of" in run.stderr:
        return replace(verdict, reason=f"memory limit exceeded: the tests tried to use more than {limits.memory_bytes // 2**20} MiB")
    if run.signal is not None:
        name = signal.Signals(run.signal).name if run.signal in signal.Signals._value2member_map_ else str(run.signal)
        return replace(verdict, reason=f"the test binary was killed by {name}")
    if failed:
        return replace(verdict, reason=f"hidden tests failed: {len(failed)} of {len(expected)} ({', '.join(failed)})")
    if len(passed) < len(expected) or run.returncode != 0:
        return replace(verdict, reason=(
            f"hidden tests did not all run ({len(passed)} of {len(expected)} reported passing, "
            f"exit status {run.returncode}): the program ended early"))
    return replace(verdict, passed=True, reason="")


def _tree_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file() and "target" not in path.relative_to(directory).parts:
            digest.update(str(path.relative_to(directory)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()
