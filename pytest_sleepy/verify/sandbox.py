"""Running rustc, cargo and model-written test binaries in isolation.

Each command runs under bubblewrap with:

- no network (`--unshare-all` creates empty network, PID, IPC and UTS namespaces);
- a read-only view of `/usr` (compilers, linker, libc) and of the Rust toolchain, and
  nothing else of the host: no home directory, no repository, no `/etc/passwd`;
- a read-only root, a read-only `/dev` (its device nodes still work) and a read-only
  working directory (`/sandbox`); the only writable places are a private `/tmp`,
  capped by `Limits.tmpfs_bytes`, and subdirectories the caller names, where at most
  `Limits.file_bytes` per file can land;
- no `/proc` for test binaries (so no `/proc/self/mem`, `/proc/self/exe` or peeking at
  other processes), and a test binary the sandbox can execute but not read;
- all capabilities dropped, a new session, and death when the caller dies;
- rlimits: CPU seconds, address space, file size, no core dumps, and a process count
  (with one malloc arena, so that the address space a program needs does not grow
  with the machine's cores);
- for test binaries, a seccomp filter that refuses process creation (see seccomp.py:
  the process-count rlimit does not apply to root) and `getrandom`, with `/dev/zero`
  standing in for `/dev/urandom` and `/dev/random`: a test binary's hash maps, and so
  any verdict that hangs on their order, are the same on every run;
- a wall-clock timeout that kills the whole process tree, and a cap on the bytes of
  output kept (a command that prints more is killed and reported).

Without bubblewrap the sandbox refuses to run, unless the user explicitly opts out
with `--sleepy-unsafe-no-sandbox` (then only the rlimits, timeout and output cap apply).
"""

from __future__ import annotations

import functools
import os
import resource
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .seccomp import test_binary_filter

__all__ = [
    "Limits",
    "COMPILE_LIMITS",
    "TEST_LIMITS",
    "SandboxResult",
    "Sandbox",
    "SandboxUnavailable",
    "Toolchain",
    "ToolchainMissing",
    "SANDBOX_ROOT",
]

MiB = 1024 * 1024
GiB = 1024 * MiB
SANDBOX_ROOT = "/sandbox"


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed command."""

    wall_seconds: float
    cpu_seconds: int
    memory_bytes: int  # RLIMIT_AS: address space, so allocations beyond it fail
    file_bytes: int  # RLIMIT_FSIZE: largest file the command may write
    output_bytes: int  # stdout + stderr kept; beyond it the command is killed
    allow_processes: bool  # False: seccomp refuses fork/clone (threads still work)
    tmpfs_bytes: int = 256 * 1024 * 1024  # size of the private /tmp (memory-backed)


# rustc reserves a lot of address space and must start the linker; tests must not.
# Compilation writes its intermediate files to the private /tmp and copies one binary out.
COMPILE_LIMITS = Limits(
    wall_seconds=60, cpu_seconds=60, memory_bytes=4 * GiB, file_bytes=256 * MiB,
    output_bytes=8 * MiB, allow_processes=True, tmpfs_bytes=512 * MiB,
)
TEST_LIMITS = Limits(
    wall_seconds=10, cpu_seconds=10, memory_bytes=1 * GiB, file_bytes=16 * MiB,
    output_bytes=1 * MiB, allow_processes=False, tmpfs_bytes=32 * MiB,
)
# Backstop for non-root users on top of their current process count; the seccomp
# filter is what actually stops a fork bomb while tests run.
PROCESS_HEADROOM = 512
OPT_OUT = "--sleepy-unsafe-no-sandbox (pytest) or --unsafe-no-sandbox (the sleepy command)"


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create namespaces on this machine."""


class ToolchainMissing(RuntimeError):
    """rustc (or cargo, for koans with dependencies) is not installed."""


@dataclass(frozen=True)
class SandboxResult:
    returncode: int | None  # None when killed by us (timeout or output cap)
    stdout: str
    stderr: str
    timed_out: bool
    output_exceeded: bool
    signal: int | None  # signal that ended the command, if any
    seconds: float


@dataclass(frozen=True)
class Toolchain:
    """The Rust toolchain, called directly rather than through rustup's proxies:
    a proxy costs time on every call and needs ~/.rustup, which the sandbox hides."""

    rustc: str
    cargo: str | None
    sysroot: str
    version: str  # `rustc -vV`: part of every verification cache key

    @staticmethod
    @functools.cache
    def detect() -> "Toolchain":
        found = os.environ.get("RUSTC") or shutil.which("rustc")
        if not found:
            raise ToolchainMissing(
                "rustc was not found on PATH: install Rust (for example with rustup, "
                "https://rustup.rs) or set RUSTC to the compiler's path"
            )
        try:
            sysroot = _output([found, "--print", "sysroot"]).strip()
        except subprocess.CalledProcessError as error:
            # Typically a rustup proxy that cannot find its toolchains (HOME or
            # RUSTUP_HOME changed): say what rustc said.
            said = (error.stderr or "").strip().splitlines()
            raise ToolchainMissing(
                f"{found} --print sysroot failed: {said[-1] if said else f'exit status {error.returncode}'}; "
                "check that `rustc --version` works in this environment (with rustup: RUSTUP_HOME and HOME), "
                "or set RUSTC to the compiler's path"
            ) from None
        rustc = os.path.join(sysroot, "bin", "rustc")
        if not os.access(rustc, os.X_OK):
            rustc = found
        cargo = os.path.join(sysroot, "bin", "cargo")
        if not os.access(cargo, os.X_OK):
            cargo = shutil.which("cargo")
        return Toolchain(rustc=rustc, cargo=cargo, sysroot=sysroot, version=_output([rustc, "-vV"]))

    @property
    def std_library_dir(self) -> str:
        """Where std's shared library lives (`rustc --print target-libdir`)."""
        host = next((line.split(":", 1)[1].strip() for line in self.version.splitlines() if line.startswith("host:")), "")
        return os.path.join(self.sysroot, "lib", "rustlib", host, "lib")

    def require_cargo(self) -> str:
        if not self.cargo:
            raise ToolchainMissing("cargo was not found next to rustc or on PATH: koans with dependencies need it")
        return self.cargo


class Sandbox:
    """Runs commands in a working directory under bubblewrap (or, if the user opted
    out, directly with rlimits only)."""

    def __init__(self, toolchain: Toolchain, *, unsafe_no_sandbox: bool = False):
        self.toolchain = toolchain
        self.isolated = not unsafe_no_sandbox
        self._bwrap = None
        self._tmpfs_size_supported = False
        if self.isolated:
            self._bwrap = shutil.which("bwrap")
            if self._bwrap is None:
                raise SandboxUnavailable(
                    "bubblewrap (bwrap) is not installed, and model-written code must not run "
                    "with your rights: install it (Debian/Ubuntu: `apt-get install bubblewrap`, "
                    "Fedora: `dnf install bubblewrap`), or run without isolation with "
                    f"{OPT_OUT}"
                )
            self._tmpfs_size_supported = "--size" in _output([self._bwrap, "--help"])
            self._probe()
        self._process_limit = _current_process_count() + PROCESS_HEADROOM

    @property
    def mode(self) -> str:
        return "bubblewrap" if self.isolated else "unsafe-no-sandbox"

    @property
    def randomness(self) -> str:
        """Where a test binary's random bytes come from: `zeros` in the sandbox (hash
        maps are keyed alike on every run), `host` without it, or where the machine has
        no seccomp filter."""
        return "zeros" if self.isolated and test_binary_filter() is not None else "host"

    def scratch(self, workdir: Path) -> str:
        """The private temporary directory as the command sees it."""
        if self.isolated:
            return "/tmp"
        path = workdir / ".scratch"
        path.mkdir(exist_ok=True)
        return str(path)

    def root(self, workdir: Path) -> str:
        """The working directory as the command sees it."""
        return SANDBOX_ROOT if self.isolated else str(workdir)

    def run(
        self,
        argv: list[str],
        *,
        workdir: Path,
        limits: Limits,
        env: dict[str, str] | None = None,
        read_only: dict[str, str] | None = None,
        writable: tuple[str, ...] = (),
        stdin: bytes | None = None,
        proc: bool = True,
    ) -> SandboxResult:
        """Run argv with workdir (read-only, `/sandbox` inside) as the current directory.

        read_only maps host paths to paths inside the sandbox (dependencies of a koan);
        writable names subdirectories of workdir the command may write to; stdin is
        written to the command's standard input, which is then closed; proc=False
        leaves `/proc` out (test binaries need none).
        """
        # One malloc arena: glibc reserves 64 MiB of address space per arena and makes up
        # to 8 per core, so under the address-space limit a test that starts a hundred
        # threads failed to spawn them (EAGAIN) on some runs, and on more cores would fail
        # on every run. A verdict must not depend on the machine's core count or load.
        environment = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "RUST_BACKTRACE": "0", "MALLOC_ARENA_MAX": "1",
                       **(env or {})}
        if not self.isolated:
            environment["HOME"] = str(workdir)
            environment["TMPDIR"] = self.scratch(workdir)
            return self._execute(argv, cwd=workdir, env=environment, limits=limits, seccomp=None, stdin=stdin)
        seccomp = None if limits.allow_processes else test_binary_filter()
        environment.update(HOME=SANDBOX_ROOT, TMPDIR="/tmp")
        command = self._bwrap_prefix(environment, read_only or {}, limits, proc=proc,
                                     zero_randomness=seccomp is not None)
        command += ["--ro-bind", str(workdir), SANDBOX_ROOT]
        for name in writable:
            command += ["--bind", str(workdir / name), f"{SANDBOX_ROOT}/{name}"]
        # Last: everything is mounted, so the root itself can become read-only.
        command += ["--chdir", SANDBOX_ROOT, "--remount-ro", "/"]
        return self._execute(command, argv=argv, cwd=workdir, env=None, limits=limits, seccomp=seccomp, stdin=stdin)

    def _bwrap_prefix(self, environment: dict[str, str], read_only: dict[str, str], limits: Limits,
                      *, proc: bool = True, zero_randomness: bool = False) -> list[str]:
        command = [
            self._bwrap, "--unshare-all", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", "--clearenv",
        ]
        for key, value in environment.items():
            command += ["--setenv", key, value]
        command += ["--ro-bind", "/usr", "/usr"]
        for top in ("/bin", "/lib", "/lib32", "/lib64", "/sbin"):
            if os.path.islink(top):
                command += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                command += ["--ro-bind", top, top]
        # The C compiler driver is reached through Debian's alternatives; the dynamic
        # loader wants its cache. Neither reveals anything about the user.
        command += ["--ro-bind-try", "/etc/alternatives", "/etc/alternatives"]
        command += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
        if not self.toolchain.sysroot.startswith("/usr/"):
            command += ["--ro-bind", self.toolchain.sysroot, self.toolchain.sysroot]
        for host_path, inside in read_only.items():
            command += ["--ro-bind", host_path, inside]
        if proc:
            command += ["--proc", "/proc"]
        command += ["--dev", "/dev"]
        if zero_randomness:
            # Only read once getrandom is refused (seccomp.py).
            for device in ("/dev/urandom", "/dev/random"):
                command += ["--dev-bind", "/dev/zero", device]
        # bubblewrap's /dev is a writable tmpfs with no size limit: freeze it.
        command += ["--remount-ro", "/dev"]
        if self._tmpfs_size_supported:
            command += ["--size", str(limits.tmpfs_bytes)]
        command += ["--tmpfs", "/tmp"]
        return command

    def _probe(self) -> None:
        result = subprocess.run(
            [*self._bwrap_prefix({"PATH": "/usr/bin:/bin"}, {}, TEST_LIMITS), "--remount-ro", "/", "--", "true"],
            capture_output=True, text=True, timeout=30,
        )
        if result.returncode != 0:
            raise SandboxUnavailable(
                "bubblewrap is installed but cannot create a sandbox here "
                f"({result.stderr.strip() or 'exit status ' + str(result.returncode)}). "
                "Unprivileged user namespaces may be disabled: try "
                "`sysctl -w kernel.unprivileged_userns_clone=1` or, on Ubuntu 24.04+, "
                "`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`; or run without "
                f"isolation with {OPT_OUT}"
            )

    def _execute(self, command, *, argv=None, cwd, env, limits: Limits, seccomp: bytes | None,
                 stdin: bytes | None = None) -> SandboxResult:
        pass_fds: tuple[int, ...] = ()
        filter_read = None
        if seccomp is not None:
            filter_read, filter_write = os.pipe()
            os.write(filter_write, seccomp)  # a few hundred bytes: fits the pipe buffer
            os.close(filter_write)
            command = [*command, "--seccomp", str(filter_read)]
            pass_fds = (filter_read,)
        if argv is not None:
            command = [*command, "--", *argv]
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                pass_fds=pass_fds,
                preexec_fn=functools.partial(_apply_rlimits, limits, self._process_limit),
            )
        finally:
            if filter_read is not None:
                os.close(filter_read)
        if stdin is not None:
            try:
                # A few bytes per hidden test: far below the pipe's buffer, so this never blocks.
                process.stdin.write(stdin)
            except BrokenPipeError:
                pass  # the command ended without reading it
            finally:
                process.stdin.close()
        stdout, stderr, timed_out, exceeded = _collect(process, limits, started)
        returncode = process.wait()
        seconds = time.monotonic() - started
        killed = timed_out or exceeded
        return SandboxResult(
            returncode=None if killed else returncode,
            stdout=stdout.decode("utf-8", "replace"),
            stderr=stderr.decode("utf-8", "replace"),
            timed_out=timed_out,
            output_exceeded=exceeded,
            signal=None if killed else _terminating_signal(returncode, self.isolated),
            seconds=seconds,
        )


def _collect(process: subprocess.Popen, limits: Limits, started: float):
    """Read stdout and stderr until exit, the deadline, or the output cap."""
    chunks = {process.stdout: bytearray(), process.stderr: bytearray()}
    selector = selectors.DefaultSelector()
    for stream in chunks:
        selector.register(stream, selectors.EVENT_READ)
    deadline = started + limits.wall_seconds
    timed_out = exceeded = False
    open_streams = 2
    while open_streams:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        for key, _ in selector.select(timeout=remaining):
            data = os.read(key.fd, 65536)
            if not data:
                selector.unregister(key.fileobj)
                open_streams -= 1
                continue
            chunks[key.fileobj] += data
        if sum(len(c) for c in chunks.values()) > limits.output_bytes:
            exceeded = True
            break
    selector.close()
    if timed_out or exceeded:
        _kill_tree(process)
    else:
        # Pipes are closed; the process may still be exiting.
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_tree(process)
    for stream in chunks:
        stream.close()
    cap = limits.output_bytes
    return bytes(chunks[process.stdout][:cap]), bytes(chunks[process.stderr][:cap]), timed_out, exceeded


def _kill_tree(process: subprocess.Popen) -> None:
    """Kill from the inside out, so that every process is reaped by its own parent.

    Killing bubblewrap's child (PID 1 of the sandbox's PID namespace) makes the kernel
    kill everything in the namespace, and bubblewrap, still alive, reaps it and exits.
    Killing bubblewrap first would orphan its child, and in a container whose init
    does not reap orphans it would stay a zombie. The process-group kill catches
    whatever is left, and is all there is without bubblewrap.
    """
    for child in _children(process.pid):
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=1)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []


def _apply_rlimits(limits: Limits, process_limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (process_limit, process_limit))


def _terminating_signal(returncode: int, isolated: bool) -> int | None:
    if returncode < 0:
        return -returncode
    # bubblewrap reports a child killed by signal N as exit status 128 + N.
    if isolated and returncode > 128:
        return returncode - 128
    return None


def _current_process_count() -> int:
    uid = os.getuid()
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                count += entry.stat().st_uid == uid
            except OSError:
                pass
    return count


def _output(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout
