"""Adversarial candidates: each is contained, reported with the right reason, and
leaves nothing behind outside the sandbox.

Most attacks go through verify_candidate like any model answer. Where the anti-tamper
rules would stop an attack before it runs (process spawning, compile-time reads), a
second test runs it against the sandbox alone, to prove the isolation holds even if
the static rules missed it.
"""

import dataclasses
import os
import socket
import subprocess
import uuid

import pytest

from conftest import REPO_ROOT, make_koan
from pytest_sleepy.verify.sandbox import COMPILE_LIMITS, TEST_LIMITS
from pytest_sleepy.prompts import describe_verdict
from pytest_sleepy.verify.verifier import Verifier

SIGNATURE = "pub fn total(items: Vec<u32>) -> u32"


def candidate(body: str, prelude: str = "") -> str:
    return f"{prelude}\n{SIGNATURE} {{\n{body}\n}}\n"


@pytest.fixture
def strict(sandbox):
    """Short limits so that attacks that hit a limit do so quickly."""
    return Verifier(sandbox, None, test_limits=dataclasses.replace(TEST_LIMITS, wall_seconds=3, cpu_seconds=3))


@pytest.fixture
def koan():
    return make_koan()


def processes_running(marker: str) -> list[int]:
    """Processes whose command line contains marker (unique per test, so that other
    pytest-xdist workers' sandboxes never count)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and marker in _cmdline(int(pid)):
            found.append(int(pid))
    return found


def test_infinite_loop_times_out_and_leaves_no_process(strict):
    marker = f"spins_{uuid.uuid4().hex}"
    koan = make_koan(tests=f"#[test]\nfn {marker}() {{ assert_eq!(total(vec![1]), 1); }}")
    verdict = strict.verify_candidate(koan, candidate("loop { std::hint::black_box(0); }"))
    assert verdict.timed_out and not verdict.passed
    assert verdict.reason == "timeout: the tests ran longer than 3 s"
    assert processes_running(marker) == []


def test_fork_bomb_is_refused_as_tampering(strict, koan):
    bomb = 'loop { let _ = std::process::Command::new("/bin/sh").arg("-c").arg(":(){ :|:& };:").spawn(); }'
    verdict = strict.verify_candidate(koan, candidate(bomb))
    assert verdict.tampering == verdict.reason
    assert verdict.reason.startswith("tampering: line 3: `std::process`")


def test_fork_bomb_cannot_create_processes_inside_the_test_sandbox(sandbox, tmp_path):
    marker = f"bomb_{uuid.uuid4().hex}"
    result = sandbox.run(
        ["/bin/sh", "-c", f"{marker}() {{ {marker} | {marker} & }}; {marker}"],
        workdir=tmp_path, limits=dataclasses.replace(TEST_LIMITS, wall_seconds=5),
    )
    # The very first fork is refused, so the bomb never gets going.
    assert not result.timed_out and result.returncode != 0
    assert "Cannot fork" in result.stderr
    assert processes_running(marker) == []


def test_threads_still_work_inside_the_test_sandbox(verifier, koan):
    threaded = candidate("std::thread::spawn(move || items.iter().sum()).join().unwrap()")
    assert verifier.verify_candidate(koan, threaded).passed


def test_eight_gib_allocation_hits_the_memory_limit(strict, koan):
    verdict = strict.verify_candidate(koan, candidate("let big = vec![1u8; 8 << 30];\nbig.len() as u32 + items.iter().sum::<u32>()"))
    assert not verdict.passed and verdict.compiled
    assert verdict.reason == "memory limit exceeded: the tests tried to use more than 1024 MiB"


def test_writing_to_the_repository_is_impossible(strict, koan):
    target = REPO_ROOT / f"escaped-{uuid.uuid4().hex}"
    write = f'std::fs::write("{target}", "pwned").unwrap();\nitems.iter().sum()'
    verdict = strict.verify_candidate(koan, candidate(write))
    assert not verdict.passed and verdict.reason.startswith("hidden tests failed: 2 of 2")
    assert "No such file or directory" in verdict.test_output
    assert not target.exists()


def test_writing_to_the_hosts_tmp_is_impossible(strict, koan):
    target = f"/tmp/escaped-{uuid.uuid4().hex}"
    write = f'std::fs::write("{target}", "pwned").unwrap();\nitems.iter().sum()'
    verdict = strict.verify_candidate(koan, candidate(write))
    # The write lands in the sandbox's private /tmp and disappears with it.
    assert verdict.passed
    assert not os.path.exists(target)


def test_secrets_are_unreadable_at_run_time(strict, koan, tmp_path):
    secret = tmp_path / "home" / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_text("PRIVATE KEY MATERIAL")
    for path in (secret, "/etc/passwd", os.path.expanduser("~/.ssh/id_rsa")):
        steal = f'let stolen = std::fs::read_to_string("{path}").unwrap();\nstolen.len() as u32 * 0 + items.iter().sum::<u32>()'
        verdict = strict.verify_candidate(koan, candidate(steal))
        assert not verdict.passed and "No such file or directory" in verdict.test_output, path
        assert "PRIVATE KEY" not in verdict.test_output and "root:x:0" not in verdict.test_output


def test_compile_time_reads_are_refused_as_tampering(strict, koan):
    verdict = strict.verify_candidate(koan, candidate("items.iter().sum()", 'const P: &str = include_str!("/etc/passwd");'))
    assert verdict.reason.startswith("tampering: line 1: `include_str!` reads files")


def test_compile_time_reads_cannot_reach_host_files_inside_the_sandbox(sandbox, toolchain, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("PRIVATE KEY MATERIAL")
    work = tmp_path / "work"
    work.mkdir()
    (work / "steal.rs").write_text(f'const S: &str = include_str!("{secret}");\nfn main() {{ println!("{{S}}"); }}\n')
    (work / "passwd.rs").write_text('const S: &str = include_str!("/etc/passwd");\nfn main() { println!("{S}"); }\n')
    for source in ("steal.rs", "passwd.rs"):
        result = sandbox.run([toolchain.rustc, "--error-format=json", source], workdir=work, limits=COMPILE_LIMITS)
        assert result.returncode != 0
        assert "couldn't read" in result.stderr
        assert "PRIVATE KEY" not in result.stderr and "root:x:0" not in result.stderr


def test_network_connections_fail(strict, koan):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        connect = f'std::net::TcpStream::connect("127.0.0.1:{port}").unwrap();\nitems.iter().sum()'
        verdict = strict.verify_candidate(koan, candidate(connect))
        assert not verdict.passed and verdict.reason.startswith("hidden tests failed")
        assert "Connection refused" in verdict.test_output or "unreachable" in verdict.test_output
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()


def test_hundred_megabytes_of_output_is_cut_off(strict, koan):
    flood = "use std::io::Write;\nlet chunk = [b'x'; 1 << 20];\nfor _ in 0..100 { std::io::stdout().write_all(&chunk).unwrap(); }\nitems.iter().sum()"
    verdict = strict.verify_candidate(koan, candidate(flood))
    assert not verdict.passed
    assert verdict.reason == "output limit exceeded: the tests printed more than 1024 KiB"
    assert len(verdict.test_output) <= 8000


def test_exit_zero_from_a_test_is_refused_as_tampering(strict, koan):
    verdict = strict.verify_candidate(koan, candidate("std::process::exit(0)"))
    assert verdict.reason.startswith("tampering: line 3: `std::process`")


def test_redefining_the_hidden_tests_is_refused(strict, koan):
    fake = candidate("0", "mod sleepy_hidden_tests {\n    #[test]\n    fn sums_prices() {}\n}")
    verdict = strict.verify_candidate(koan, fake)
    assert verdict.reason == "tampering: line 1: the candidate names the hidden test module `sleepy_hidden_tests`"


def test_shadowing_assert_eq_is_refused(strict, koan):
    fake = candidate("0", "macro_rules! assert_eq { ($($t:tt)*) => {}; }")
    assert "shadowing the standard one" in strict.verify_candidate(koan, fake).reason


def test_deleting_the_function_under_test_fails(strict, koan):
    verdict = strict.verify_candidate(koan, "// nothing to see here\n")
    assert not verdict.passed and verdict.error_codes == ["E0425"]
    assert verdict.reason.startswith("hidden tests do not compile against the candidate")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_a_verdict_that_hangs_on_hash_order_is_the_same_on_every_run(sandbox, koan):
    # The failing assertion prints a hash of the host's random keys, unless the sandbox
    # fixes them: with random keys, two runs agree with probability 2^-64.
    hashed = candidate("use std::hash::BuildHasher;\n"
                       "std::collections::hash_map::RandomState::new().hash_one(&items) as u32",)
    verdicts = [Verifier(sandbox, None).verify_candidate(koan, hashed) for _ in range(2)]
    assert verdicts[0].compiled and not verdicts[0].passed
    # What the model is told of the failures (the test run's timing aside).
    assert describe_verdict(verdicts[0]) == describe_verdict(verdicts[1])
    assert "left: " in describe_verdict(verdicts[0])


def test_two_hundred_threads_alive_at_once_start_on_every_run(sandbox, koan):
    # Each thread allocates while all are alive: with glibc's default of up to 8 malloc
    # arenas per core (64 MiB of address space each), they hit the 1 GiB limit and
    # spawning failed on most runs.
    crowd = candidate(
        "let gate = std::sync::Arc::new(std::sync::Barrier::new(200));\n"
        "let threads: Vec<_> = (0..200).map(|_| { let gate = gate.clone(); "
        "std::thread::spawn(move || { let block = vec![1u8; 4096]; gate.wait(); block.len() }) }).collect();\n"
        "for thread in threads { thread.join().unwrap(); }\n"
        "items.iter().sum()")
    verdicts = [Verifier(sandbox, None).verify_candidate(koan, crowd) for _ in range(3)]
    assert [v.reason for v in verdicts] == ["", "", ""]
