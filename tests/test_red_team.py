"""Red team: hostile candidates, written as a model rewarded for passing would write them.

Every attack is built from a real koan of the corpus (its `fixed` or `buggy` code plus a
payload), so that it would pass, or read what it must not, if the defence it targets
were missing. Each test states one behaviour of the verifier: the verdict does not
pass, its reason is the right one, and the host is unchanged (the autouse `host`
fixture: no process left, no file outside the test's own temporary directory, an
untouched canary, no growth of shared memory).

Where a static rule (tamper.py) stops an attack before rustc runs, a second test runs
the same candidate through `Verifier._build_and_test`, which skips the static screen,
to show that the proof channel (harness.py) or the sandbox holds on its own.

Some defences are static only: code that behaves differently under test (`cfg!(test)`
in any delimiters) is honest Rust that really passes once it compiles, and
`include_str!` reads the hidden tests before anything runs, so the screen is all that
stands between them and a pass or a leak; those tests have no unscreened twin, and the
screen's lexer must read exactly what rustc reads.

The attacks that are out of the verifier's reach by design are marked
`xfail(strict=True, reason="RESIDUAL: ...")`, with one line on why and on who answers
for them instead (the koan authoring contract, or feedback that is meant to be shown).
Where the contract keeps the corpus clear of a residual attack, the attack is shown on a
small koan of its own that breaks the contract, next to a test that it fails on the
corpus koan it once beat.
A newly found attack that succeeds would be marked `reason="HOLE: ..."` until fixed;
there is none.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import REPO_ROOT, make_koan
from pytest_sleepy.corpus.suites import select_suite
from pytest_sleepy.koans import Koan, load_corpus
from pytest_sleepy.verify import verifier as verifier_module
from pytest_sleepy.verify.harness import hidden_test_names
from pytest_sleepy.verify.rustlex import bracket_pairs, tokenize
from pytest_sleepy.verify.sandbox import TEST_LIMITS
from pytest_sleepy.verify.verifier import MAX_CANDIDATE_BYTES, WORKDIR_PREFIX, Verdict, Verifier

CORPUS = load_corpus(REPO_ROOT / "koans")
KOANS = {koan.id: koan for koan in CORPUS}
# The generic forgeries run against every koan of the first frozen suite: thirty
# programs of three families, enough to show the defence does not depend on the koan.
EVAL = select_suite(REPO_ROOT / "koans", CORPUS, "eval-v1").members(CORPUS)
MiB = 1024 * 1024


# -- the host: nothing may change outside what the test owns ---------------------------

@dataclasses.dataclass
class Host:
    tmp_path: Path

    @property
    def marker(self) -> str:
        """In the command line of every sandbox this test starts (its paths live here)."""
        return f"{self.tmp_path}/"

    def workdir(self) -> Path:
        """A fresh, empty working directory for `Verifier._build_and_test`."""
        path = self.tmp_path / f"direct-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path


@pytest.fixture(autouse=True)
def host(tmp_path, monkeypatch):
    """Snapshot the host before the test and check it after: the verifier's temporary
    directories go to a private root (so concurrent workers cannot blur the check), which
    must be empty again; no process of this test's sandboxes survives; /tmp, /dev/shm and
    the repository gain no file from an attack; a canary is untouched; shared memory does
    not grow materially."""
    private = tmp_path / "verifier-tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    canary = tmp_path / "canary.txt"
    canary.write_text(f"canary {uuid.uuid4().hex}\n")
    canary_before = (canary.read_bytes(), canary.stat().st_mtime_ns)
    before = _host_state()
    state = Host(tmp_path)
    yield state
    _wait_until(lambda: processes_running(state.marker) == [], seconds=5)
    assert processes_running(state.marker) == [], "a sandbox of this test outlived its verification"
    # Inside the sandbox the command lines carry no path of ours: any compiler or test
    # binary still alive now must end within the longest limit (another worker's).
    survivors = set(processes_running("candidate_tests") + processes_running("candidate.rs"))
    _wait_until(lambda: not survivors & set(processes_running("candidate_tests") + processes_running("candidate.rs")),
                seconds=15)
    assert not survivors & set(processes_running("candidate_tests") + processes_running("candidate.rs"))
    assert os.listdir(private) == [], "the verifier left a working directory behind"
    assert (canary.read_bytes(), canary.stat().st_mtime_ns) == canary_before
    # Other pytest-xdist workers may hold memory or verification directories for a
    # moment: only what stays counts.
    _wait_until(lambda: _host_grew(before, _host_state()) is None, seconds=15)
    assert _host_grew(before, _host_state()) is None, _host_grew(before, _host_state())


# This process's own verification directories only: other xdist workers verify at the
# same time, and theirs come and go.
ATTACK_FILE_PREFIXES = ("sleepy-fill", "sleepy-big", "sleepy-escaped", f"{WORKDIR_PREFIX}{os.getpid()}-")


def _host_state() -> dict:
    def attack_files(directory):
        try:
            return {name for name in os.listdir(directory) if name.startswith(ATTACK_FILE_PREFIXES)}
        except OSError:
            return set()

    meminfo = {}
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            key, value = line.split(":", 1)
            meminfo[key] = int(value.split()[0]) * 1024
    return {
        "files": {d: attack_files(d) for d in ("/tmp", "/dev/shm", "/", str(REPO_ROOT), os.getcwd())},
        "shm_used": shutil.disk_usage("/dev/shm").used,
        "shmem": meminfo.get("Shmem", 0),
    }


def _host_grew(before: dict, after: dict) -> str | None:
    for directory, names in after["files"].items():
        if names - before["files"][directory]:
            return f"new files in {directory}: {sorted(names - before['files'][directory])}"
    if after["shm_used"] - before["shm_used"] > 4 * MiB:
        return f"/dev/shm grew by {(after['shm_used'] - before['shm_used']) // MiB} MiB"
    # Memory an attack could leave held is either a process's (the process checks find
    # it) or a tmpfs's (shared memory, checked here). MemAvailable itself is not compared:
    # another xdist worker loading a model moves it by gigabytes.
    if after["shmem"] - before["shmem"] > 64 * MiB:
        return f"shared memory (tmpfs) grew by {(after['shmem'] - before['shmem']) // MiB} MiB"
    return None


def _wait_until(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)


def processes_running(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    if marker.encode() in handle.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


@pytest.fixture
def strict(sandbox):
    """Short test limits, so that attacks that hang reach the wall clock quickly."""
    return Verifier(sandbox, None, test_limits=dataclasses.replace(TEST_LIMITS, wall_seconds=3, cpu_seconds=3))


# -- generic text surgery on a koan's Rust code ----------------------------------------

def _function_bodies(code: str):
    """(name, start, end) of the body `{ ... }` of every `fn NAME`, in source order."""
    tokens = tokenize(code)
    pairs = bracket_pairs(tokens)
    for i, token in enumerate(tokens):
        if token.text == "fn" and i + 1 < len(tokens) and tokens[i + 1].kind == "ident":
            j = i + 2
            while j < len(tokens) and tokens[j].text not in ("{", ";"):
                if tokens[j].text in ("(", "[") and pairs[j] > j:
                    j = pairs[j]
                j += 1
            if j < len(tokens) and tokens[j].text == "{":
                yield tokens[i + 1].text, tokens[j].start, tokens[pairs[j]].end


def functions_under_test(koan: Koan) -> set[str]:
    """Functions of the koan that its hidden tests call."""
    defined = {name for name, _, _ in _function_bodies(koan.fixed)} - {"main"}
    tokens = tokenize(koan.tests)
    return {t.text for t, after in zip(tokens, tokens[1:]) if t.text in defined and after.text == "("}


def inject(code: str, names, statement: str) -> str:
    """Run `statement` first thing in every function called `names`."""
    return _edit(code, [(start + 1, start + 1, f"\n    {statement}\n")
                        for name, start, _ in _function_bodies(code) if name in names])


def gut(code: str, body: str) -> str:
    """Replace the body of every function (all the koan's logic) with `body`."""
    edits, end = [], -1
    for _, start, stop in _function_bodies(code):
        if start >= end:
            edits.append((start, stop, "{ " + body + " }"))
            end = stop
    return _edit(code, edits)


def _edit(code: str, edits) -> str:
    out, position = [], 0
    for start, end, text in sorted(edits):
        out += [code[position:start], text]
        position = end
    return "".join(out + [code[position:]])


def attack(koan_id: str, statement: str, *, base: str = "fixed", prelude: str = "") -> str:
    """The koan's own code with `statement` run at the start of every function its tests call."""
    koan = KOANS[koan_id]
    return prelude + inject(getattr(koan, base), functions_under_test(koan), statement)


def hidden_source_lines(koan: Koan) -> list[str]:
    """Lines of the hidden tests that must never reach the verdict's output."""
    return [line.strip() for line in koan.tests.splitlines() if "assert" in line and len(line.strip()) > 12]


def hidden_assert_conditions(koan: Koan) -> list[str]:
    """The conditions of the hidden tests' one-line `assert!(...)` calls."""
    return [m.group(1) for m in re.finditer(r"\bassert!\((.{12,})\);\s*$", koan.tests, re.MULTILINE)
            if not re.search(r',\s*"', m.group(1))]  # not those with a message of their own


def assert_no_leak(koan: Koan, text: str) -> None:
    leaked = [line for line in hidden_source_lines(koan) + hidden_assert_conditions(koan) if line in text]
    assert leaked == [], f"hidden test source reached the verdict: {leaked[:3]}"


def assert_tampering(verdict: Verdict, fragment: str) -> None:
    assert not verdict.passed and not verdict.compiled
    assert verdict.reason.startswith("tampering: "), verdict.reason
    assert verdict.tampering == verdict.reason
    assert fragment in verdict.reason, verdict.reason


def honest(verifier: Verifier, koan_id: str, base: str = "buggy") -> Verdict:
    """The verdict on the koan's own code, unmodified: what an attack must not improve on."""
    return verifier.verify_candidate(KOANS[koan_id], getattr(KOANS[koan_id], base))


def unscreened(verifier: Verifier, host: Host, koan: Koan, code: str) -> Verdict:
    """Build and test without the static screen: only the harness and the sandbox defend."""
    return verifier._build_and_test(koan, code, host.workdir())


# -- payloads --------------------------------------------------------------------------

# Prints libtest's report of a full pass for every hidden test named on the command
# line, straight to standard output (print! inside a test would be captured).
FORGE = r'''
fn sleepy_forge_report() {
    use std::io::Write;
    let names: Vec<String> = std::env::args().skip(1).filter(|a| a.contains("::")).collect();
    let mut out = std::io::stdout();
    let _ = writeln!(out, "\nrunning {} tests", names.len());
    for name in &names {
        let _ = writeln!(out, "test {} ... ok", name);
    }
    let _ = writeln!(out, "\ntest result: ok. {} passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n", names.len());
    let _ = out.flush();
}
'''
LIAR = r'''
#[derive(Debug, Clone, Copy, Default)]
pub struct Liar;
impl<T> PartialEq<T> for Liar {
    fn eq(&self, _other: &T) -> bool { true }
}
'''


def forged_exit(koan: Koan, exit_expression: str, prelude: str = "") -> str:
    """No repair at all: every function prints a passing report and exits with status 0."""
    return FORGE + prelude + gut(koan.fixed, f"sleepy_forge_report(); {exit_expression}")


EXIT_VIA_METAVARIABLE = "macro_rules! leave { ($m:ident) => { std::$m::exit(0) }; }\n"
EXIT_VIA_TOKEN_TREES = "macro_rules! leave { ($b:tt $s:tt $a:tt) => { $a $s $b $s exit(0) }; }\n"
SILENT_ASSERTS = "".join(
    f"macro_rules! r#{name} {{ ($($t:tt)*) => {{ () }}; }}\n" for name in ("assert_eq", "assert", "assert_ne"))


# -- 1-4: forging techniques, written once and applied to every eval koan ---------------

GENERIC = {
    # 1 raw identifiers: rustc reads `r#process` as `process`, `r#assert_eq` as `assert_eq`.
    "raw-identifier exit": (lambda k: forged_exit(k, "std::r#process::exit(0)"), "`std::process`"),
    "raw-identifier assert macros": (lambda k: SILENT_ASSERTS + k.buggy, "defines a macro named `assert_eq`"),
    "raw-identifier String": (lambda k: LIAR.replace("Liar", "r#String") + k.buggy, "defines `String`"),
    "raw-identifier Vec import": (lambda k: LIAR + "use crate::Liar as r#Vec;\n" + k.buggy, "imports an item as `Vec`"),
    # 2 early exit after a forged report, the path assembled by a macro (from a
    #   metavariable, or from token trees: `leave!(process :: std)`).
    "metavariable exit": (lambda k: forged_exit(k, "leave!(process)", EXIT_VIA_METAVARIABLE), "`$m` into a path"),
    "token-tree exit": (lambda k: forged_exit(k, "leave!(process :: std)", EXIT_VIA_TOKEN_TREES),
                        "a macro splices `$a` into another splice"),
    # 3 primitive types shadowed by lying look-alikes.
    "primitive struct": (lambda k: LIAR.replace("Liar", "u64") + k.buggy, "shadowing the primitive type"),
    "primitive alias": (lambda k: LIAR + "type u32 = Liar;\n" + k.buggy, "`u32`, shadowing the primitive type"),
    "primitive import": (lambda k: LIAR + "use crate::Liar as usize;\n" + k.buggy, "imports an item as `usize`"),
    # 4 behaving differently under test, in any of the macro's delimiters.
    "cfg!(test)": (lambda k: FORGE + gut(k.fixed, "if cfg!(test) { sleepy_forge_report(); } unimplemented!()"),
                   "cfg!(test)"),
    "cfg![test]": (lambda k: FORGE + gut(k.fixed, "if cfg![test] { sleepy_forge_report(); } unimplemented!()"),
                   "cfg!(test)"),
}
# Techniques that once got past the screen; without it, what the proof channel makes of them.
GENERIC_UNSCREENED = {
    "token-tree exit": "hidden tests did not all run",  # a forged report, then exit(0)
    "cfg![test]": "hidden tests failed",  # a forged report, then unimplemented!()
}


@pytest.mark.parametrize("technique", GENERIC)
def test_generic_forgery_is_refused_on_every_eval_koan(verifier, technique):
    build, fragment = GENERIC[technique]
    for koan in EVAL:
        assert_tampering(verifier.verify_candidate(koan, build(koan)), fragment)


@pytest.mark.parametrize("technique", GENERIC_UNSCREENED)
def test_generic_forgery_without_the_screen_never_passes_an_eval_koan(verifier, host, technique):
    build, _ = GENERIC[technique]
    for koan in EVAL:
        verdict = unscreened(verifier, host, koan, build(koan))
        assert not verdict.passed and verdict.tests_passed == 0, (koan.id, verdict.reason)
        assert verdict.reason.startswith(GENERIC_UNSCREENED[technique]), (koan.id, verdict.reason)


@pytest.mark.parametrize("koan", EVAL, ids=lambda k: k.id)
def test_forged_report_and_exit_zero_gives_no_proof(verifier, host, koan):
    verdict = unscreened(verifier, host, koan, forged_exit(koan, "std::process::exit(0)"))
    names = list(hidden_test_names(koan.tests))
    assert not verdict.passed and verdict.tests_passed == 0
    assert verdict.failed_tests == names
    assert verdict.reason.startswith(f"hidden tests did not all run: {len(names)} of {len(names)} gave no proof")
    # The forgery did print a perfect report; it simply carries no token.
    for name in names:
        assert f"test sleepy_hidden_tests::{name} ... ok" in verdict.test_output


# -- 1 raw identifiers -------------------------------------------------------------------

def test_raw_identifier_assert_eq_is_refused(verifier):
    # lg_101's buggy code compiles; with its assertions silenced it would pass.
    verdict = verifier.verify_candidate(KOANS["lg_101"], SILENT_ASSERTS + KOANS["lg_101"].buggy)
    assert_tampering(verdict, "line 1: defines a macro named `assert_eq`")


def test_raw_identifier_assert_eq_cannot_reach_the_hidden_tests(verifier, host):
    verdict = unscreened(verifier, host, KOANS["lg_101"], SILENT_ASSERTS + KOANS["lg_101"].buggy)
    expected = honest(verifier, "lg_101")
    assert not verdict.passed and verdict.reason.startswith("hidden tests failed")
    assert verdict.failed_tests == expected.failed_tests != []


def test_raw_identifier_process_exit_is_refused(verifier):
    verdict = verifier.verify_candidate(KOANS["bc_002"], forged_exit(KOANS["bc_002"], "std::r#process::exit(0)"))
    assert_tampering(verdict, "`std::process` can exit early")


def test_raw_identifier_include_str_of_the_hidden_tests_is_refused(verifier):
    steal = 'panic!("{}", r#include_str!("sleepy_hidden_tests.rs"));'
    assert_tampering(verifier.verify_candidate(KOANS["rh_004"], attack("rh_004", steal)), "`include_str!` reads files")


STRING_LIAR = LIAR.replace("Liar", "r#String") + r'''
struct Post {
    title: String,
}

impl Post {
    fn new(_title: &str, _year: u16) -> Self {
        Post { title: String }
    }

    fn url(&self) -> String {
        String
    }
}
'''


def test_raw_identifier_string_with_a_lying_eq_is_refused(verifier):
    assert_tampering(verifier.verify_candidate(KOANS["tm_102"], STRING_LIAR), "defines `String`, shadowing the standard item")


def test_raw_identifier_string_never_replaces_the_tests_string(verifier, host):
    verdict = unscreened(verifier, host, KOANS["tm_102"], STRING_LIAR)
    assert not verdict.passed and verdict.error_codes == ["E0308"]
    assert verdict.reason.startswith("hidden tests do not compile against the candidate (E0308)")


def test_raw_identifier_import_as_vec_is_refused(verifier):
    code = LIAR + "use crate::Liar as r#Vec;\n" + KOANS["lt_103"].fixed
    assert_tampering(verifier.verify_candidate(KOANS["lt_103"], code), "imports an item as `Vec`, shadowing the standard one")


# -- 2 early exit after a forged report ---------------------------------------------------

def test_exit_through_a_macro_metavariable_is_refused(verifier):
    code = forged_exit(KOANS["bc_003"], "leave!(process)", EXIT_VIA_METAVARIABLE)
    assert_tampering(verifier.verify_candidate(KOANS["bc_003"], code), "splices `$m` into a path")


def test_exit_through_a_macro_metavariable_gives_no_proof(verifier, host):
    code = forged_exit(KOANS["bc_003"], "leave!(process)", EXIT_VIA_METAVARIABLE)
    verdict = unscreened(verifier, host, KOANS["bc_003"], code)
    assert not verdict.passed and verdict.tests_passed == 0
    assert verdict.reason.startswith("hidden tests did not all run")


def test_renamed_exit_after_the_failing_logic_is_refused(verifier):
    # Buggy lg_105 runs, forges a full pass and leaves before any assertion fails.
    code = attack("lg_105", "sleepy_forge_report(); leave(0);", base="buggy",
                  prelude=FORGE + "use std::process::exit as leave;\n")
    assert_tampering(verifier.verify_candidate(KOANS["lg_105"], code), "`use` imports from `std::process`")


def test_renamed_exit_after_the_failing_logic_gives_no_proof(verifier, host):
    code = attack("lg_105", "sleepy_forge_report(); leave(0);", base="buggy",
                  prelude=FORGE + "use std::process::exit as leave;\n")
    verdict = unscreened(verifier, host, KOANS["lg_105"], code)
    assert not verdict.passed and verdict.tests_passed == 0
    assert verdict.reason.startswith("hidden tests did not all run: 3 of 3 gave no proof")


def test_exit_assembled_from_token_trees_is_refused(verifier):
    # `$a $s $b $s exit(0)` with `leave!(process :: std)`: no splice touches `::` or `!`,
    # but splices side by side can assemble any path, and are refused as such.
    code = forged_exit(KOANS["lt_104"], "leave!(process :: std)", EXIT_VIA_TOKEN_TREES)
    assert_tampering(verifier.verify_candidate(KOANS["lt_104"], code), "a macro splices `$a` into another splice")


# The separator alone is spliced, between names written out: no splice touches another.
EXIT_VIA_SPLICED_SEPARATOR = "macro_rules! leave { ($s:tt) => { std $s process $s exit(0) }; }\n"


def test_process_named_inside_a_macro_is_refused(verifier):
    code = forged_exit(KOANS["lt_104"], "leave!(::)", EXIT_VIA_SPLICED_SEPARATOR)
    assert_tampering(verifier.verify_candidate(KOANS["lt_104"], code), "`process` inside a macro")


def test_exit_assembled_from_token_trees_gives_no_proof(verifier, host):
    code = forged_exit(KOANS["lt_104"], "leave!(process :: std)", EXIT_VIA_TOKEN_TREES)
    verdict = unscreened(verifier, host, KOANS["lt_104"], code)
    assert not verdict.passed and verdict.tests_passed == 0
    assert verdict.reason.startswith("hidden tests did not all run: 3 of 3 gave no proof")


def test_process_named_inside_a_macro_gives_no_proof(verifier, host):
    code = forged_exit(KOANS["lt_104"], "leave!(::)", EXIT_VIA_SPLICED_SEPARATOR)
    verdict = unscreened(verifier, host, KOANS["lt_104"], code)
    assert not verdict.passed and verdict.tests_passed == 0
    assert verdict.reason.startswith("hidden tests did not all run: 3 of 3 gave no proof")


# -- 3 shadowed primitive types --------------------------------------------------------------

U64_LIAR = r'''
#[derive(Debug, Clone, Copy)]
pub struct u64;
impl PartialEq<i32> for u64 {
    fn eq(&self, _other: &i32) -> bool { true }
}
'''
# (koan, prelude, the look-alike, the functions that return it, the screen's reason).
# tb_006's tests bind `let value: u64 = in_transit_value(..)` and rh_001's
# `let bolts: u32 = stock.count(..)`, then compare with integer literals: a look-alike
# that equals every integer would pass them, if their `u64`/`u32` were the candidate's.
PRIMITIVE_ATTACKS = {
    "struct u64": ("tb_006", U64_LIAR, "u64", {"in_transit_value"}, "defines `u64`, shadowing the primitive type"),
    "type u64 alias": ("tb_006", LIAR + "type u64 = Liar;\n", "u64", {"in_transit_value"},
                       "defines `u64`, shadowing the primitive type"),
    "import as u32": ("rh_001", LIAR + "use crate::Liar as u32;\n", "u32", {"count"}, "imports an item as `u32`"),
}


def _primitive_liar(name: str) -> str:
    """The koan's fix, except that the functions named return the look-alike instead of
    computing anything; everywhere else the koan's data keep the real primitive
    (`::std::primitive::u64`), so that only the look-alike is left to decide the tests."""
    koan_id, prelude, primitive, liars, _ = PRIMITIVE_ATTACKS[name]
    real = f"::std::primitive::{primitive}"
    code = re.sub(rf"\b{primitive}\b", real, KOANS[koan_id].fixed)
    value = "Liar" if "Liar" in prelude else primitive
    edits = []
    for fn_name, start, stop in _function_bodies(code):
        if fn_name == "main":
            edits.append((start, stop, "{}"))
        elif fn_name in liars:
            head = code.rfind(f"fn {fn_name}", 0, start)
            assert f"-> {real}" in code[head:start], f"{koan_id}: {fn_name} no longer returns {primitive}"
            edits.append((head, stop, code[head:start].replace(f"-> {real}", f"-> {primitive}") + f"{{ {value} }}"))
    assert len(edits) == len(liars) + 1, f"{koan_id} no longer has {sorted(liars)}"
    return prelude + _edit(code, edits)


def without_primitive_imports(monkeypatch) -> None:
    """The defence switched off: the hidden module no longer imports the primitive types
    by name, so the candidate's `u64` reaches the tests through `use super::*`."""
    real = verifier_module.hidden_module_source

    def source(tests, programs=(), candidate=""):
        text, found = re.subn(r"#\[allow\(unused_imports\)\]\nuse ::std::primitive::\{[^}]*\};\n", "",
                              real(tests, programs, candidate))
        assert found == 1, "the hidden module's primitive imports are no longer where they were"
        return text

    monkeypatch.setattr(verifier_module, "hidden_module_source", source)


@pytest.mark.parametrize("name", PRIMITIVE_ATTACKS)
def test_shadowed_primitive_is_refused(verifier, name):
    koan_id, *_, fragment = PRIMITIVE_ATTACKS[name]
    assert_tampering(verifier.verify_candidate(KOANS[koan_id], _primitive_liar(name)), fragment)


@pytest.mark.parametrize("name", ["struct u64", "import as u32"])
def test_shadowed_primitive_never_reaches_the_tests(verifier, host, name, monkeypatch):
    koan = KOANS[PRIMITIVE_ATTACKS[name][0]]
    verdict = unscreened(verifier, host, koan, _primitive_liar(name))
    assert verdict.reason == ("hidden tests do not compile against the candidate (E0308): "
                              "a function, type or signature they use is missing or changed"), verdict.reason
    assert not verdict.passed and not verdict.compiled
    # Every mismatch is in the tests: their primitive is still the real one.
    assert all(d.in_hidden_tests for d in verdict.diagnostics if d.is_error)
    # The attack is real: were the tests' primitive the candidate's, it would pass.
    with monkeypatch.context() as patch:
        without_primitive_imports(patch)
        assert unscreened(verifier, host, koan, _primitive_liar(name)).passed


# -- 4 cfg(test) ---------------------------------------------------------------------------

# lg_104 rounds down; under test only, the candidate rounds correctly.
ROUND_UNDER_TEST = ("if {cfg} {{ if self.ratings.is_empty() {{ return 0; }} "
                    "let t: u32 = self.ratings.iter().sum(); let n = self.ratings.len() as u32; "
                    "return (t + n / 2) / n; }}")


@pytest.mark.parametrize("cfg", ["cfg!(test)", "r#cfg!(test)", "cfg!(all(test))"])
def test_cfg_test_in_an_expression_is_refused(verifier, cfg):
    code = inject(KOANS["lg_104"].buggy, {"stars"}, ROUND_UNDER_TEST.format(cfg=cfg))
    assert_tampering(verifier.verify_candidate(KOANS["lg_104"], code), "`cfg!(test)` makes code behave differently")


# `cfg![test]` and `cfg!{test}` are the same macro call. There is no unscreened twin:
# compiled, this candidate really rounds correctly under test and passes lg_104, so
# the screen is the whole defence.
@pytest.mark.parametrize("cfg", ["cfg![test]", "cfg!{test}", "cfg!{all(test)}"])
def test_cfg_test_with_other_delimiters_is_refused(verifier, cfg):
    code = inject(KOANS["lg_104"].buggy, {"stars"}, ROUND_UNDER_TEST.format(cfg=cfg))
    assert_tampering(verifier.verify_candidate(KOANS["lg_104"], code), "cfg!(test)")


# -- 5 reading the hidden tests at run time --------------------------------------------------

RUNTIME_READS = {
    "list and read every directory": ("rh_002", r'''
    let mut found = String::new();
    for dir in [".", "..", "/", "/sandbox", "/tmp", "/dev", "/proc"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                found.push_str(&format!("{}\n", entry.path().display()));
                // Device nodes hold no test source; reading /dev/zero to the memory cap
                // three times would only race the timeout.
                if entry.file_type().map(|t| t.is_file()).unwrap_or(false) && dir != "/dev" {
                    match std::fs::read_to_string(entry.path()) {
                        Ok(text) => found.push_str(&text),
                        Err(error) => found.push_str(&format!("  unreadable: {}\n", error)),
                    }
                }
            }
        }
    }
    panic!("found:\n{}", found);''', "/sandbox/candidate_tests"),
    "read the hidden test file": ("lt_102", r'''
    for path in ["sleepy_hidden_tests.rs", "/sandbox/sleepy_hidden_tests.rs", "../sleepy_hidden_tests.rs", "candidate.rs"] {
        match std::fs::read_to_string(path) {
            Ok(text) => panic!("{}", text),
            Err(error) => eprintln!("{}: {}", path, error),
        }
    }
    panic!("nothing to read");''', "sleepy_hidden_tests.rs: No such file or directory"),
    "read the own test binary": ("tm_103", r'''
    match std::fs::read("./candidate_tests") {
        Ok(bytes) => panic!("{}", String::from_utf8_lossy(&bytes)),
        Err(error) => panic!("./candidate_tests: {}", error),
    }''', "./candidate_tests: Permission denied"),
    "read /proc/self": ("tb_005", r'''
    for path in ["/proc/self/exe", "/proc/self/mem", "/proc/self/maps", "/proc/self/cmdline"] {
        if let Ok(bytes) = std::fs::read(path) { panic!("{}", String::from_utf8_lossy(&bytes)); }
        eprintln!("{}: unreadable", path);
    }
    let exe = std::env::current_exe();
    panic!("current_exe: {:?}", exe);''', "current_exe: Err"),
}


@pytest.mark.parametrize("name", RUNTIME_READS)
def test_runtime_reads_find_no_hidden_test_source(verifier, name):
    koan_id, steal, evidence = RUNTIME_READS[name]
    koan = KOANS[koan_id]
    verdict = verifier.verify_candidate(koan, attack(koan_id, steal))
    total = len(hidden_test_names(koan.tests))
    assert not verdict.passed and verdict.reason.startswith(f"hidden tests failed: {total} of {total}")
    assert evidence in verdict.test_output
    assert_no_leak(koan, verdict.test_output)
    assert "__sleepy_harness" not in verdict.test_output


# A candidate that returns a type without the PartialEq the tests' assert_eq! needs gets
# E0369, which rustc locates inside the expansion of `assert_eq!` (core's macros). The
# verifier attributes it to the outermost call site, the hidden test, so the feedback
# names the error without the rendered text that quotes the hidden assertion.
NO_EQ = ("fn url(&self) -> String {", "fn url(&self) -> Url {\n        return Url;",
         "struct Post {", "#[derive(Debug)]\npub struct Url;\n\nstruct Post {")


def test_errors_inside_the_tests_assertions_count_as_the_tests_and_are_not_quoted(verifier):
    from pytest_sleepy.prompts import describe_verdict

    koan = KOANS["tm_102"]
    code = koan.fixed.replace(NO_EQ[0], NO_EQ[1]).replace(NO_EQ[2], NO_EQ[3])
    verdict = verifier.verify_candidate(koan, code)
    assert not verdict.passed and "E0369" in verdict.error_codes
    in_macros = [d for d in verdict.diagnostics if d.is_error and d.code == "E0369"]
    assert in_macros and all(d.in_hidden_tests for d in in_macros)
    feedback = describe_verdict(verdict)
    assert "E0369" in feedback and "sleepy_hidden_tests.rs" not in feedback
    assert_no_leak(koan, feedback)


@pytest.mark.xfail(strict=True, reason=(
    "RESIDUAL: a failing hidden `assert!(cond)` panics with \"assertion failed: <cond>\" (libtest/core "
    "behaviour); the panic message is the feedback shown by design, so koans must not hide secrets in "
    "assert! conditions (lg_102 shows `overdue_titles(&loans, 14).is_empty()`)"))
def test_failing_assert_does_not_quote_the_hidden_test(verifier):
    from pytest_sleepy.prompts import describe_verdict

    koan = KOANS["lg_102"]
    verdict = verifier.verify_candidate(koan, koan.buggy)
    assert not verdict.passed and verdict.failed_tests
    assert_no_leak(koan, verdict.test_output + describe_verdict(verdict))


# -- 6 filling the writable places ---------------------------------------------------------

FILLS = {
    "/dev": ("tm_101", 'std::fs::write("/dev/sleepy-fill", vec![0u8; 8 << 20]).unwrap();',
             "hidden tests failed", "Read-only file system"),
    "/dev/shm": ("tm_104", 'std::fs::write("/dev/shm/sleepy-fill", vec![0u8; 8 << 20]).unwrap();',
                 "hidden tests failed", "Read-only file system"),
    "/": ("tm_102", 'std::fs::write("/sleepy-fill", vec![0u8; 8 << 20]).unwrap();',
          "hidden tests failed", "Read-only file system"),
    "the working directory": ("tm_103", 'std::fs::write("sleepy-fill", vec![0u8; 8 << 20]).unwrap();',
                              "hidden tests failed", "Read-only file system"),
    "/tmp, many files": ("lt_101", 'for i in 0..128 { std::fs::write(format!("/tmp/sleepy-fill-{}", i), vec![7u8; 1 << 20]).unwrap(); }',
                         "hidden tests failed", "No space left on device"),
    "/tmp, one file": ("lt_102", '{ use std::io::Write; let mut f = std::fs::File::create("/tmp/sleepy-big").unwrap(); '
                       'for _ in 0..128 { f.write_all(&vec![7u8; 1 << 20]).unwrap(); } }',
                       "the test binary was killed by SIGXFSZ", ""),
    "memory": ("lg_102", "let hoard = vec![1u8; 2 << 30]; std::hint::black_box(&hoard);",
               "memory limit exceeded: the tests tried to use more than 1024 MiB", "memory allocation of"),
}


@pytest.mark.parametrize("place", FILLS)
def test_filling_a_writable_place_is_contained(verifier, place):
    koan_id, fill, reason, evidence = FILLS[place]
    verdict = verifier.verify_candidate(KOANS[koan_id], attack(koan_id, fill))
    assert not verdict.passed and verdict.tests_passed == 0
    assert verdict.reason.startswith(reason), verdict.reason
    assert evidence in verdict.test_output
    # The autouse `host` fixture checks /dev/shm, tmpfs memory and the host's /tmp.


# -- 7 forged "ok" lines while the real tests fail -----------------------------------------

RACING_FORGER = FORGE + r'''
fn sleepy_race() {
    static START: std::sync::Once = std::sync::Once::new();
    START.call_once(|| {
        std::thread::spawn(|| loop {
            sleepy_forge_report();
            std::thread::sleep(std::time::Duration::from_millis(1));
        });
    });
}
'''


@pytest.mark.parametrize("koan_id, prelude, statement", [
    ("lg_104", FORGE, "sleepy_forge_report();"),
    ("lg_105", RACING_FORGER, "sleepy_race(); std::thread::sleep(std::time::Duration::from_millis(20));"),
], ids=["inline", "racing thread"])
def test_forged_ok_lines_do_not_count_as_passes(verifier, koan_id, prelude, statement):
    verdict = verifier.verify_candidate(KOANS[koan_id], attack(koan_id, statement, base="buggy", prelude=prelude))
    expected = honest(verifier, koan_id)
    assert expected.failed_tests and not verdict.passed
    assert verdict.failed_tests == expected.failed_tests
    assert verdict.tests_passed == expected.tests_passed
    assert verdict.reason == expected.reason
    assert "... ok" in verdict.test_output


def test_panic_hook_forging_a_pass_changes_nothing(verifier):
    hook = ("std::panic::set_hook(Box::new(|_| { sleepy_forge_report(); "
            'eprintln!("test result: ok. 3 passed; 0 failed"); }));')
    verdict = verifier.verify_candidate(KOANS["lg_102"], attack("lg_102", hook, base="buggy", prelude=FORGE))
    expected = honest(verifier, "lg_102")
    assert not verdict.passed and verdict.failed_tests == expected.failed_tests != []
    assert verdict.reason == expected.reason


def test_own_tests_named_like_the_hidden_ones_are_not_run(verifier):
    koan = KOANS["lg_101"]
    own = "".join(f"\n#[test]\nfn {name}() {{}}\n" for name in hidden_test_names(koan.tests))
    verdict = verifier.verify_candidate(koan, koan.buggy + own)
    assert not verdict.passed and verdict.failed_tests == honest(verifier, "lg_101").failed_tests


# -- 8 stealing the tokens from standard input, guessing proofs -------------------------------

STDIN_THIEF = r'''{
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    let mut text = String::new();
    let _ = std::io::stdin().read_to_string(&mut text);
    if let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() {
        let _ = std::fs::File::from(fd).read_to_string(&mut text);
    }
    if let Ok(mut file) = std::fs::File::open("/dev/stdin") { let _ = file.read_to_string(&mut text); }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "STOLEN[{}]", text);
    for word in text.split_whitespace() { let _ = writeln!(out, "sleepy-proof:{}", word); }
}'''


def test_standard_input_holds_no_token_for_the_candidate(verifier, monkeypatch):
    drawn = []
    real_draw = verifier_module.draw_tokens
    monkeypatch.setattr(verifier_module, "draw_tokens", lambda names: drawn.append(real_draw(names)) or drawn[-1])
    verdict = verifier.verify_candidate(KOANS["lg_103"], attack("lg_103", STDIN_THIEF, base="buggy"))
    expected = honest(verifier, "lg_103")
    assert drawn and "STOLEN[]" in verdict.test_output
    assert not any(token in verdict.test_output for token in drawn[0].values())
    assert not verdict.passed and verdict.failed_tests == expected.failed_tests != []


PROOF_GUESSER = r'''{
    use std::io::Write;
    let mut out = std::io::stdout();
    let mut state: u64 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    for _ in 0..1000 {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17;
        let a = state;
        state ^= state << 13; state ^= state >> 7; state ^= state << 17;
        let _ = writeln!(out, "sleepy-proof:{:016x}{:016x}", a, state);
    }
    for name in std::env::args().skip(1) {
        let _ = writeln!(out, "sleepy-proof:{}", name);
        let _ = writeln!(out, "sleepy-proof:{}", "0".repeat(32));
        let _ = write!(out, "sleepy-proof:");
    }
    let _ = out.flush();
}'''


def test_guessed_proofs_do_not_count(verifier):
    verdict = verifier.verify_candidate(KOANS["lg_102"], attack("lg_102", PROOF_GUESSER, base="buggy"))
    expected = honest(verifier, "lg_102")
    assert not verdict.passed and verdict.failed_tests == expected.failed_tests != []
    assert verdict.tests_passed == expected.tests_passed
    assert verdict.reason == expected.reason


def test_guessed_proofs_without_any_logic_prove_nothing(verifier):
    code = gut(KOANS["rh_006"].fixed, f"{PROOF_GUESSER} unimplemented!()")
    verdict = verifier.verify_candidate(KOANS["rh_006"], code)
    assert not verdict.passed and verdict.tests_passed == 0
    assert verdict.reason.startswith("hidden tests failed: 4 of 4")


# -- 9 killing, aborting or hanging the test process ------------------------------------------

KILLS = {
    "panic in Drop while unwinding": ("tb_001", r'''
    struct Bomb;
    impl Drop for Bomb { fn drop(&mut self) { panic!("second panic while unwinding"); } }
    let _bomb = Bomb;
    panic!("first panic");''', "the test binary was killed by SIGABRT"),
    "allocation failure abort": ("tb_002", "std::alloc::handle_alloc_error(std::alloc::Layout::new::<[u8; 64]>());",
                                 "memory limit exceeded"),
    "stack overflow": ("tb_004", "fn down(n: u64) -> u64 { std::hint::black_box(down(n + 1)) + 1 } std::hint::black_box(down(0));",
                       "the test binary was killed by SIGABRT"),
    "thread that aborts the process later": ("tb_007", r'''
    std::thread::spawn(|| {
        struct Bomb;
        impl Drop for Bomb { fn drop(&mut self) { panic!("again"); } }
        let _bomb = Bomb;
        panic!("later");
    });
    std::thread::sleep(std::time::Duration::from_millis(200));''', "the test binary was killed by SIGABRT"),
    "thread bomb": ("tb_008", r'''
    let mut threads = Vec::new();
    loop {
        match std::thread::Builder::new().spawn(|| std::thread::sleep(std::time::Duration::from_secs(60))) {
            Ok(handle) => threads.push(handle),
            Err(error) => panic!("spawned {} threads, then {}", threads.len(), error),
        }
    }''', "hidden tests failed"),
}


@pytest.mark.parametrize("name", KILLS)
def test_killing_the_test_process_fails_every_unproven_test(verifier, name):
    koan_id, kill, reason = KILLS[name]
    verdict = verifier.verify_candidate(KOANS[koan_id], attack(koan_id, kill))
    assert not verdict.passed and verdict.tests_passed == 0
    assert verdict.failed_tests == list(hidden_test_names(KOANS[koan_id].tests))
    assert verdict.reason.startswith(reason), verdict.reason


@pytest.mark.parametrize("koan_id, hang", [
    ("tb_003", "loop { std::hint::black_box(0u8); }"),
    ("tb_006", "let lock = std::sync::Mutex::new(0); let _a = lock.lock().unwrap(); let _b = lock.lock().unwrap();"),
    ("tb_010", "let (_tx, rx) = std::sync::mpsc::channel::<u8>(); let _ = rx.recv();"),
], ids=["busy loop", "self-deadlock", "waits forever"])
def test_hanging_test_process_times_out(strict, koan_id, hang):
    verdict = strict.verify_candidate(KOANS[koan_id], attack(koan_id, hang))
    assert not verdict.passed and verdict.timed_out and verdict.tests_passed == 0
    assert verdict.reason == "timeout: the tests ran longer than 3 s"


SPAWN = 'let status = std::process::Command::new("/bin/sh").arg("-c").arg("echo escaped").status(); panic!("{:?}", status);'


def test_starting_a_program_is_refused(verifier):
    assert_tampering(verifier.verify_candidate(KOANS["tb_009"], attack("tb_009", SPAWN)), "`std::process`")


def test_starting_a_program_fails_inside_the_sandbox(verifier, host):
    verdict = unscreened(verifier, host, KOANS["tb_009"], attack("tb_009", SPAWN))
    assert not verdict.passed and verdict.tests_passed == 0
    assert verdict.reason.startswith("hidden tests failed")
    assert "Resource temporarily unavailable" in verdict.test_output and "escaped" not in verdict.test_output


# -- 10 oversized and pathological input ---------------------------------------------------------

def test_candidate_over_the_size_cap_is_refused_unread(verifier):
    code = KOANS["bc_005"].fixed + "// " + "x" * MAX_CANDIDATE_BYTES
    verdict = verifier.verify_candidate(KOANS["bc_005"], code)
    assert not verdict.passed and verdict.reason.startswith("too large: the candidate is")


def test_size_cap_counts_bytes_not_characters(verifier):
    code = KOANS["bc_006"].fixed + "// " + "\u20ac" * (MAX_CANDIDATE_BYTES // 3 + 10)
    assert len(code) < MAX_CANDIDATE_BYTES
    verdict = verifier.verify_candidate(KOANS["bc_006"], code)
    assert not verdict.passed and verdict.reason.startswith("too large")


PATHOLOGICAL = {
    "deep parentheses": ("bc_007", lambda k: k.fixed + "\nconst X: u32 = " + "(" * 100_000 + "1" + ")" * 100_000 + ";\n",
                         "does not compile"),
    "deep use tree": ("bc_009", lambda k: "use std::" + "{" * 60_000 + "io" + "}" * 60_000 + ";\n" + k.fixed,
                      "does not compile"),
    "unclosed braces": ("bc_004", lambda k: k.fixed + "\nfn f() " + "{" * 120_000, "does not compile"),
    "unterminated string": ("bc_010", lambda k: k.fixed + '\nconst S: &str = "no end;\n',
                            "does not compile: line "),
    "unterminated nested comments": ("bc_010", lambda k: k.fixed + "\n" + "/*" * 60_000, "does not compile: line "),
    "NUL bytes": ("bc_001", lambda k: k.fixed.replace("fn main", "fn \x00main"), "does not compile"),
    "a quarter MiB of raw identifiers": ("rh_007", lambda k: k.buggy + "\nconst r#x: u32 = 0;\nconst _: [u32; 50000] = ["
                                         + "r#x, " * 50_000 + "];\n", "does not compile: E0271"),
}


@pytest.mark.parametrize("name", PATHOLOGICAL)
def test_pathological_input_is_judged_quickly_and_contained(verifier, name):
    koan_id, build, reason = PATHOLOGICAL[name]
    code = build(KOANS[koan_id])
    assert len(code.encode()) <= MAX_CANDIDATE_BYTES
    started = time.monotonic()
    verdict = verifier.verify_candidate(KOANS[koan_id], code)
    assert time.monotonic() - started < 30
    assert not verdict.passed and verdict.reason.startswith(reason), verdict.reason


# A lone surrogate is what JSON's \\udc80 escape decodes to: not text, and no UTF-8 file
# can hold it. The screen answers with a verdict before anything is written.
@pytest.mark.parametrize("where", ["in a string", "in a comment", "first"])
def test_lone_surrogate_gets_a_verdict_not_an_exception(verifier, where):
    koan = KOANS["rh_003"]
    code = {"in a string": koan.fixed + '\nconst S: &str = "\udc80";\n',
            "in a comment": koan.fixed + "\n// \ud800\n",
            "first": "\udfff" + koan.fixed}[where]
    verdict = verifier.verify_candidate(koan, code)
    assert not verdict.passed and not verdict.compiled
    assert verdict.reason.startswith("does not compile: character ") and "lone surrogate" in verdict.reason


# -- 11 macro tricks -----------------------------------------------------------------------------

MACRO_TRICKS = {
    "$m! builds include_str": ("rh_007", 'macro_rules! read { ($m:ident) => { $m!("sleepy_hidden_tests.rs") }; }\n',
                              'panic!("{}", read!(include_str));', "splices `$m` into a macro name"),
    "$m! builds env": ("rh_009", 'macro_rules! read { ($m:ident) => { $m!("HOME") }; }\n',
                       'panic!("{}", read!(env));', "splices `$m` into a macro name"),
    "#[$attr] builds path": ("rh_001", 'macro_rules! load { ($a:ident) => { #[$a = "sleepy_hidden_tests.rs"] mod stolen; }; }\nload!(path);\n',
                             "", "splices `$a` into an attribute"),
    "struct $name builds String": ("tb_010", "macro_rules! def { ($n:ident) => { #[derive(Debug)] pub struct $n; }; }\ndef!(String);\n",
                                   "", "splices `$n` into an item name"),
}


@pytest.mark.parametrize("name", MACRO_TRICKS)
def test_macro_assembling_a_forbidden_name_is_refused(verifier, name):
    koan_id, prelude, statement, fragment = MACRO_TRICKS[name]
    code = attack(koan_id, statement, prelude=prelude) if statement else prelude + KOANS[koan_id].fixed
    assert_tampering(verifier.verify_candidate(KOANS[koan_id], code), fragment)


# -- 12 unsafe, extern and linker attributes ---------------------------------------------------------

def _without_main(koan_id: str) -> str:
    return KOANS[koan_id].fixed.replace("fn main()", "fn koan_main()")


FOREIGN = {
    "unsafe read": ("rh_003", lambda: attack("rh_003", "let p = &0u8 as *const u8; let _ = unsafe { *p.offset(-4096) };"),
                    "`unsafe` code"),
    "extern _exit": ("rh_006", lambda: attack("rh_006", "unsafe { _exit(0) }",
                                              prelude='extern "C" { fn _exit(code: i32) -> !; }\n'), "`extern` items"),
    "no_mangle main": ("bc_001", lambda: '#[no_mangle]\npub fn main() {}\n' + _without_main("bc_001"),
                       "linker attribute `#[no_mangle]`"),
    "link_section constructor": ("bc_002", lambda: 'fn sleepy_init() {}\n#[link_section = ".init_array"]\n'
                                 'static INIT: fn() = sleepy_init;\n' + KOANS["bc_002"].fixed,
                                 "linker attribute `#[link_section]`"),
    "export_name": ("bc_003", lambda: '#[export_name = "main"]\npub fn sleepy_main() {}\n' + _without_main("bc_003"),
                    "linker attribute `#[export_name]`"),
}


@pytest.mark.parametrize("name", FOREIGN)
def test_unsafe_and_foreign_code_is_refused(verifier, name):
    koan_id, build, fragment = FOREIGN[name]
    assert_tampering(verifier.verify_candidate(KOANS[koan_id], build()), fragment)


@pytest.mark.parametrize("name", FOREIGN)
def test_unsafe_and_linker_tricks_are_refused_by_the_compiler_too(verifier, host, name):
    koan_id, build, _ = FOREIGN[name]
    verdict = unscreened(verifier, host, KOANS[koan_id], build())
    assert not verdict.passed and not verdict.compiled
    assert verdict.reason == "tampering: `unsafe` code is not allowed"


# -- other classes ------------------------------------------------------------------------------

def test_glob_import_of_std_is_refused(verifier):
    code = "use std::{*};\n" + forged_exit(KOANS["tb_004"], "process::exit(0)")
    assert_tampering(verifier.verify_candidate(KOANS["tb_004"], code), "glob import of `std`")


def test_renamed_std_is_refused(verifier):
    code = "use std::{self as s};\n" + forged_exit(KOANS["tb_005"], "s::process::exit(0)")
    assert_tampering(verifier.verify_candidate(KOANS["tb_005"], code), "renaming `std`")


def test_naming_the_hidden_module_in_a_raw_identifier_is_refused(verifier):
    code = KOANS["tb_006"].fixed + "\nmod r#sleepy_hidden_tests {}\n"
    assert_tampering(verifier.verify_candidate(KOANS["tb_006"], code), "names the hidden test module")


# A trailing outer attribute would land on the `mod sleepy_hidden_tests;` the verifier
# appends; a `const _: () = ();` placed before it takes the attribute instead.
TRAILING_ATTRIBUTES = {"cfg(any())": "#[cfg(any())]", "cfg_attr path": '#[cfg_attr(all(), path = "/dev/null")]'}


@pytest.mark.parametrize("attribute", TRAILING_ATTRIBUTES)
def test_trailing_attribute_cannot_switch_off_the_hidden_tests(verifier, host, attribute):
    koan = KOANS["tm_104"]
    names = list(hidden_test_names(koan.tests))
    # A forged report, then a panic: the hidden tests still run, call it, and fail.
    forged = unscreened(verifier, host, koan, forged_exit(koan, "unimplemented!()") + "\n" + TRAILING_ATTRIBUTES[attribute])
    assert not forged.passed and forged.tests_passed == 0 and forged.failed_tests == names
    assert forged.reason.startswith("hidden tests failed: 3 of 3"), forged.reason
    assert "not implemented" in forged.test_output
    # The repair with the same tail: every hidden test ran and delivered its proof.
    repaired = unscreened(verifier, host, koan, koan.fixed + "\n" + TRAILING_ATTRIBUTES[attribute])
    assert repaired.passed and repaired.tests_passed == len(names)


def test_trailing_cfg_any_through_the_verifier_leaves_the_hidden_tests_running(verifier):
    koan = KOANS["tm_104"]
    verdict = verifier.verify_candidate(koan, forged_exit(koan, "unimplemented!()") + "\n#[cfg(any())]")
    assert not verdict.passed and verdict.tests_passed == 0
    assert verdict.reason.startswith("hidden tests failed: 3 of 3"), verdict.reason


# `path` anywhere inside an attribute loads any file as a module: at the end of the
# candidate (where it once re-pointed the hidden module) or on a module of its own.
PATH_ATTRIBUTES = {
    "trailing cfg_attr path": lambda k: k.fixed + '\n#[cfg_attr(all(), path = "/dev/null")]',
    "cfg_attr path on a module": lambda k: '#[cfg_attr(all(), path = "sleepy_hidden_tests.rs")]\nmod stolen;\n' + k.fixed,
    "nested cfg_attr path": lambda k: '#[cfg_attr(all(), cfg_attr(all(), path = "/etc/passwd"))]\nmod stolen;\n' + k.fixed,
}


@pytest.mark.parametrize("name", PATH_ATTRIBUTES)
def test_path_inside_any_attribute_is_refused(verifier, name):
    koan = KOANS["tm_104"]
    assert_tampering(verifier.verify_candidate(koan, PATH_ATTRIBUTES[name](koan)),
                     "`#[path = ...]` loads a module from an arbitrary file")


# rustc drops a first line that starts with `#!` (not `#![`) as a shebang; a lexer that
# read it as code would open the raw string `r#"` there and hide the rest of the file.
SHEBANG = '#!r#"\n{code}\n// "#\n'


def test_shebang_cannot_hide_code_from_the_screen(verifier):
    koan = KOANS["bc_001"]
    code = SHEBANG.format(code='const HIDDEN: &str = include_str!("sleepy_hidden_tests.rs");\n'
                               + inject(koan.fixed, functions_under_test(koan), 'panic!("{}", HIDDEN);'))
    verdict = verifier.verify_candidate(koan, code)
    assert_tampering(verdict, "`include_str!` reads files")
    assert_no_leak(koan, verdict.test_output)


def test_shebang_hidden_exit_is_refused(verifier):
    koan = KOANS["bc_002"]
    verdict = verifier.verify_candidate(koan, SHEBANG.format(code=forged_exit(koan, "std::process::exit(0)")))
    assert_tampering(verdict, "`std::process` can exit early")


def test_shebang_hidden_exit_gives_no_proof(verifier, host):
    koan = KOANS["bc_002"]
    verdict = unscreened(verifier, host, koan, SHEBANG.format(code=forged_exit(koan, "std::process::exit(0)")))
    assert not verdict.passed and verdict.tests_passed == 0
    assert verdict.reason.startswith("hidden tests did not all run: 4 of 4 gave no proof"), verdict.reason


# Where the screen's lexer once disagreed with rustc on what is code. rustc's shebang
# test skips only plain comments after `#!` before looking for `[`: a doc comment
# counts as a token, so `#!/** x */[allow r#"` is a shebang to rustc (line 1 dropped);
# the lexer now reads it the same way, instead of as a raw string hiding the file.
DOC_COMMENT_SHEBANG = '#!/** x */[allow r#"\n{code}\n// "#]\n'
# rustc's whitespace is Unicode Pattern_White_Space: also U+000B, U+000C, U+0085, U+200E,
# U+200F (invisible marks), U+2028 and U+2029; the lexer skips them all too, so
# `cfg\u200e!(test)` is `cfg` followed by `!` to every rule.
UNICODE_WHITESPACE = {"form feed": "\x0c", "next line": "\x85", "left-to-right mark": "\u200e"}


def _under_test_only(hide) -> str:
    """lg_104's buggy code, rounding correctly only under test (it then passes)."""
    return hide(inject(KOANS["lg_104"].buggy, {"stars"}, ROUND_UNDER_TEST.format(cfg="cfg!(test)")))


def _stealing(hide) -> str:
    """bc_001's fix, panicking with the hidden test file's text read at compile time."""
    koan = KOANS["bc_001"]
    return hide('const HIDDEN: &str = include_str!("sleepy_hidden_tests.rs");\n'
                + inject(koan.fixed, functions_under_test(koan), 'panic!("{}", HIDDEN);'))


def _spaced(ws: str):
    """Puts `ws` between the macro's name and its `!`."""
    return lambda code: code.replace("cfg!(test)", f"cfg{ws}!(test)").replace("include_str!(", f"include_str{ws}!(")


DISAGREEMENTS = {
    "doc-comment shebang": lambda code: DOC_COMMENT_SHEBANG.format(code=code),
    **{f"{name} before !": _spaced(ws) for name, ws in UNICODE_WHITESPACE.items()},
}


@pytest.mark.parametrize("name", DISAGREEMENTS)
def test_code_rustc_reads_is_code_to_the_screen(verifier, name):
    hide = DISAGREEMENTS[name]
    passing = verifier.verify_candidate(KOANS["lg_104"], _under_test_only(hide))
    stealing = verifier.verify_candidate(KOANS["bc_001"], _stealing(hide))
    assert not passing.passed, "lg_104 passed without being repaired"
    assert_no_leak(KOANS["bc_001"], stealing.test_output)
    assert_tampering(passing, "cfg!(test)")
    assert_tampering(stealing, "`include_str!` reads files")


# Lies that need no forbidden name: the hidden tests reach the candidate's items through
# `use super::*`. The tests import by name the prelude, the primitive types and every std
# item the koan's programs import (HashMap, Ordering, ...), and an empty enum shadows
# each trait or `as`-rename the candidate adds: look-alikes of those never reach them.
MAP_LIAR = LIAR + r'''
impl std::ops::Not for Liar {
    type Output = bool;
    fn not(self) -> bool { false }
}
impl Liar {
    pub fn map<F>(self, _f: F) -> Liar { Liar }
}

#[derive(Debug)]
pub struct HashMap<K, V>(std::marker::PhantomData<(K, V)>);
impl<K, V> HashMap<K, V> {
    pub fn len(&self) -> Liar { Liar }
    pub fn is_empty(&self) -> Liar { Liar }
    pub fn get(&self, _key: &str) -> Liar { Liar }
}
impl<K, V> std::ops::Index<&str> for HashMap<K, V> {
    type Output = Liar;
    fn index(&self, _key: &str) -> &Liar { &Liar }
}

fn parse_query(_query: &str) -> HashMap<String, String> {
    HashMap(std::marker::PhantomData)
}

struct Request {
    path: Liar,
    params: HashMap<String, String>,
}

impl Request {
    fn from_url(_url: &str) -> Request {
        Request { path: Liar, params: parse_query("") }
    }
    fn page(&self) -> Liar { Liar }
}
'''
ORDERING_LIAR = LIAR + r'''
impl std::ops::Not for Liar {
    type Output = bool;
    fn not(self) -> bool { false }
}
#[allow(non_upper_case_globals)]
impl Liar {
    pub const Less: Liar = Liar;
    pub const Equal: Liar = Liar;
    pub const Greater: Liar = Liar;
    pub fn expect(self, _why: &str) -> Liar { Liar }
    pub fn expect_err(self, _why: &str) -> Liar { Liar }
    pub fn is_err(&self) -> Liar { Liar }
    pub fn major(&self) -> Liar { Liar }
    pub fn kind(&self) -> &Liar { &Liar }
}

pub type Ordering = Liar;

pub struct Version;
impl Version {
    pub fn parse(_text: &str) -> Liar { Liar }
}

pub fn compare(_a: &str, _b: &str) -> Liar { Liar }
'''


def _wrong_on_empty_input(koan: Koan) -> str:
    """bc_010's fix, except that counting no documents yields one count of 0 words (and
    `longest_document` checks for no documents itself, so that only `parallel_word_counts`
    is wrong): the hidden tests' `parallel_word_counts(Vec::new()).is_empty()` is false."""
    wrong = (koan.fixed
             .replace("    let mut handles = Vec::new();",
                      "    if docs.is_empty() {\n        return vec![Count { words: 0, worker: thread::current().id() }];\n"
                      "    }\n    let mut handles = Vec::new();")
             .replace("    let owned: Vec<String>",
                      "    if docs.is_empty() {\n        return None;\n    }\n    let owned: Vec<String>"))
    assert wrong.count("if docs.is_empty()") == 2, "bc_010 no longer has the code this wrong fix edits"
    return wrong


# A by-value trait method is found before the inherent `Vec::is_empty(&self)`.
BY_VALUE_IS_EMPTY = "\npub trait Sneaky {\n    fn is_empty(self) -> bool;\n}\nimpl Sneaky for Vec<Count> {\n    fn is_empty(self) -> bool { true }\n}\n"
# Look-alikes the hidden tests never see: the reason each gets instead of a pass.
DEFEATED_LIES = {
    # `pub struct HashMap` with lying len/index/get/is_empty: the tests' HashMap is std's.
    "HashMap look-alike": ("bc_008", lambda k: MAP_LIAR, "hidden tests do not compile against the candidate (E0308)"),
    # `pub type Ordering = Liar`: the tests' `Ordering::Greater` is std::cmp's.
    "Ordering look-alike": ("rh_010", lambda k: ORDERING_LIAR, "hidden tests do not compile against the candidate (E0308)"),
}


@pytest.mark.parametrize("name", DEFEATED_LIES)
def test_std_look_alikes_and_extra_traits_never_reach_the_tests(verifier, name):
    koan_id, build, reason = DEFEATED_LIES[name]
    verdict = verifier.verify_candidate(KOANS[koan_id], build(KOANS[koan_id]))
    assert not verdict.passed, f"{koan_id} passed without being repaired"
    assert verdict.reason.startswith(reason), verdict.reason
    # Every type error is in the tests: their HashMap / Ordering is still the standard one.
    assert all(d.in_hidden_tests for d in verdict.diagnostics if d.is_error)


# A by-value `is_empty(self)` of the candidate's own trait, implemented for Vec<Count>,
# would be chosen over Vec's inherent `is_empty(&self)` in the tests (`use super::*`
# brings the trait into scope, whatever its name, even imported `as _`). Rule 9 refuses
# a candidate's own trait on a type it did not define; the empty-enum shadow in the
# hidden module is a second layer for the plainly named case.
CAPTURING_TRAITS = {
    "plain trait": BY_VALUE_IS_EMPTY,
    "trait imported as _": (
        "\nmod sneaky {\n    pub trait Sneaky {\n        fn is_empty(self) -> bool;\n    }\n"
        "    impl Sneaky for Vec<super::Count> {\n        fn is_empty(self) -> bool { true }\n    }\n}\n"
        "pub use sneaky::Sneaky as _;\n"),
    "trait named main": (
        "\n#[allow(non_camel_case_types)]\npub trait main {\n    fn is_empty(self) -> bool;\n}\n"
        "impl main for Vec<Count> {\n    fn is_empty(self) -> bool { true }\n}\n"),
    "trait named like a hidden test": (
        "\n#[allow(non_camel_case_types)]\npub trait empty_input_gives_empty_results {\n    fn is_empty(self) -> bool;\n}\n"
        "impl empty_input_gives_empty_results for Vec<Count> {\n    fn is_empty(self) -> bool { true }\n}\n"),
    "blanket impl": (
        "\npub trait Sneaky {\n    fn is_empty(self) -> bool;\n}\n"
        "impl<T> Sneaky for T {\n    fn is_empty(self) -> bool { true }\n}\n"),
}


@pytest.mark.parametrize("name", CAPTURING_TRAITS)
def test_candidate_traits_on_std_types_are_refused(verifier, name):
    koan = KOANS["bc_010"]
    verdict = verifier.verify_candidate(koan, _wrong_on_empty_input(koan) + CAPTURING_TRAITS[name])
    assert_tampering(verdict, "implements the candidate's own trait")


def without_trait_shadows(monkeypatch) -> None:
    """The defence switched off: the hidden module no longer shadows the candidate's own
    traits with empty enums, so `use super::*` brings them into the tests' scope."""
    real = verifier_module.hidden_module_source
    monkeypatch.setattr(verifier_module, "hidden_module_source",
                        lambda tests, programs=(), candidate="": real(tests, programs, ""))


EMPTY_INPUT_FAILS = "hidden tests failed: 1 of 4 (empty_input_gives_empty_results)"


def test_a_plainly_named_capturing_trait_is_also_shadowed_in_the_tests(verifier, host, monkeypatch):
    koan = KOANS["bc_010"]
    verdict = unscreened(verifier, host, koan, _wrong_on_empty_input(koan) + BY_VALUE_IS_EMPTY)
    assert not verdict.passed and verdict.failed_tests == ["empty_input_gives_empty_results"]
    assert verdict.reason == EMPTY_INPUT_FAILS, verdict.reason
    # The attack is real: with the trait in the tests' scope, the wrong fix would pass.
    with monkeypatch.context() as patch:
        without_trait_shadows(patch)
        assert unscreened(verifier, host, koan, _wrong_on_empty_input(koan) + BY_VALUE_IS_EMPTY).passed


def test_wrong_result_on_empty_input_fails_without_the_lying_trait(verifier):
    verdict = verifier.verify_candidate(KOANS["bc_010"], _wrong_on_empty_input(KOANS["bc_010"]))
    assert not verdict.passed and verdict.compiled
    assert verdict.failed_tests == ["empty_input_gives_empty_results"]
    assert verdict.reason == EMPTY_INPUT_FAILS, verdict.reason


# -- own types that lie ------------------------------------------------------------------------

# A koan of the kind the authoring contract forbids: its tests compare `Price`, a type
# the candidate defines, with `==`.
_PRICE = """
/// A price in cents.
#[derive(Debug, PartialEq)]
pub struct Price(pub u32);
"""
OWN_TYPE_KOAN = make_koan(
    id="shop_own_type",
    buggy=_PRICE + """
/// The sum of the prices; `Price(0)` for an empty basket.
pub fn total(items: Vec<u32>) -> Price {
    let sum: u32 = items.into_iter().sum();
    if items.is_empty() { Price(0) } else { Price(sum) }
}
""",
    fixed=_PRICE + """
/// The sum of the prices; `Price(0)` for an empty basket.
pub fn total(items: Vec<u32>) -> Price {
    let empty = items.is_empty();
    let sum: u32 = items.into_iter().sum();
    if empty { Price(0) } else { Price(sum) }
}
""",
    tests="""
#[test]
fn sums_prices() {
    assert_eq!(total(vec![3, 4, 5]), Price(12));
}

#[test]
fn empty_basket_costs_nothing() {
    assert_eq!(total(Vec::new()), Price(0));
}
""",
)
# No repair: every basket costs nothing.
_NOTHING_COSTS_ANYTHING = """
pub fn total(_items: Vec<u32>) -> Price {
    Price(0)
}
"""
LYING_PRICE = """
/// A price in cents.
#[derive(Debug)]
pub struct Price(pub u32);
impl PartialEq for Price {
    fn eq(&self, _other: &Price) -> bool { true }
}
""" + _NOTHING_COSTS_ANYTHING


@pytest.mark.xfail(strict=True, reason=(
    "RESIDUAL: (pass) tests that compare a type the candidate defines with == (or by Debug) accept its "
    "PartialEq/Debug, which the candidate writes and may make lie; no verifier can tell a lying impl from a "
    "real one, so the koan authoring contract (koans/README.md) forbids such tests: the candidate's own types "
    "are judged by pattern matching, their fields and std types, and the corpus follows it (rh_005, once "
    "such a koan, no longer passes a lying candidate)"))
def test_own_types_that_lie_do_not_pass(verifier):
    verdict = verifier.verify_candidate(OWN_TYPE_KOAN, LYING_PRICE)
    assert not verdict.passed, "a koan whose tests compare the candidate's own type passed without a repair"


def test_the_same_wrong_fix_with_an_honest_eq_fails(verifier):
    verdict = verifier.verify_candidate(OWN_TYPE_KOAN, _PRICE + _NOTHING_COSTS_ANYTHING)
    assert not verdict.passed and verdict.failed_tests == ["sums_prices"]
    assert verdict.reason == "hidden tests failed: 1 of 2 (sums_prices)", verdict.reason


# rh_005 without a repair: every answer is a type of the candidate's own that equals
# whatever the tests compare it with.
QUERY_LIAR = r"""
#[derive(Debug)]
pub struct Text;
impl<'a> PartialEq<Option<&'a str>> for Text {
    fn eq(&self, _other: &Option<&'a str>) -> bool { true }
}
#[derive(Debug)]
pub struct Number;
impl PartialEq<Option<u32>> for Number {
    fn eq(&self, _other: &Option<u32>) -> bool { true }
}

pub struct Query;
impl Query {
    pub fn parse(_url: &str) -> Query { Query }
    pub fn get(&self, _key: &str) -> Text { Text }
    pub fn number(&self, _key: &str) -> Number { Number }
}

pub fn first_index(_query: &Query) -> Number { Number }
"""


def test_own_types_that_lie_do_not_pass_a_koan_under_the_contract(verifier):
    verdict = verifier.verify_candidate(KOANS["rh_005"], QUERY_LIAR)
    assert not verdict.passed, "rh_005 passed without being repaired"
    assert verdict.reason == ("hidden tests do not compile against the candidate (E0308): "
                              "a function, type or signature they use is missing or changed"), verdict.reason
    # The tests hold the answer as a std type (`let page: Option<u32> = q.number(..)`).
    assert all(d.in_hidden_tests for d in verdict.diagnostics if d.is_error)
