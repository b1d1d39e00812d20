"""A seccomp filter that lets a test binary create threads but not processes, and
takes its random bytes from a file rather than the kernel.

Why: `RLIMIT_NPROC` is the classic fork-bomb guard, but the kernel never applies it
to root, and CI machines and containers often run as root. Hidden tests never need
to start a program, so while the test binary runs we refuse `fork`, `vfork`,
`clone` without `CLONE_THREAD`, and `clone3` (whose flags live in memory a filter
cannot read; it answers ENOSYS so that glibc falls back to `clone` for threads).
Compilation is not filtered: rustc must start the linker, and no candidate code runs
at compile time (no build scripts or procedural macros in a koan).

The filter also answers `getrandom` with ENOSYS. Rust's std then reads `/dev/urandom`
instead, which the sandbox replaces with `/dev/zero` (sandbox.py): every `HashMap` of a
test binary is keyed the same way on every run and every machine. A candidate whose
behaviour depends on hash order (a `Hash` that disagrees with its `Eq`, say) then gets
the same verdict each time, so a recorded run replays to the same prompts.

The filter is classic BPF handed to bubblewrap with `--seccomp FD`. It is built for
x86-64 and aarch64; elsewhere `test_binary_filter()` returns None and only the
rlimits apply.
"""

from __future__ import annotations

import errno
import functools
import platform
import struct

__all__ = ["test_binary_filter"]

# linux/filter.h and linux/seccomp.h
_LD_W_ABS = 0x20
_JEQ = 0x15
_JGE = 0x35
_JSET = 0x45
_RET = 0x06
_ALLOW = 0x7FFF0000
_KILL_PROCESS = 0x80000000
_ERRNO = 0x00050000
_CLONE_THREAD = 0x00010000
# Offsets into struct seccomp_data: int nr; u32 arch; u64 ip; u64 args[6].
_NR, _ARCH, _ARG0_LOW = 0, 4, 16

_ARCHITECTURES = {
    # machine: (AUDIT_ARCH, clone, clone3, getrandom, fork-like syscalls)
    "x86_64": (0xC000003E, 56, 435, 318, (57, 58)),
    "aarch64": (0xC00000B7, 220, 435, 278, ()),
}
# x86-64 also accepts x32 system calls (number | 0x40000000); nothing here needs them.
_X32_BIT = 0x40000000


def test_binary_filter(machine: str | None = None) -> bytes | None:
    """The BPF program as bytes for `bwrap --seccomp`, or None if the machine is unknown."""
    return _assembled_filter(machine or platform.machine())


@functools.cache
def _assembled_filter(machine: str) -> bytes | None:
    # Built once per process: every test run and every verdict's cache key ask for it.
    if machine not in _ARCHITECTURES:
        return None
    audit_arch, clone, clone3, getrandom, forks = _ARCHITECTURES[machine]
    deny = _ERRNO | errno.EAGAIN
    program = [
        ("ld", _ARCH),
        ("jeq", audit_arch, "nr", "kill"),
        ("nr", None),
        ("ld", _NR),
    ]
    if machine == "x86_64":
        program.append(("jge", _X32_BIT, "kill", "next"))
    for number in forks:
        program.append(("jeq", number, "deny", "next"))
    program += [
        ("jeq", getrandom, "nosys", "next"),
        ("jeq", clone3, "nosys", "next"),
        ("jeq", clone, "clone", "allow"),
        ("clone", None),
        ("ld", _ARG0_LOW),
        ("jset", _CLONE_THREAD, "allow", "deny"),
        ("allow", None),
        ("ret", _ALLOW),
        ("deny", None),
        ("ret", deny),
        ("nosys", None),
        ("ret", _ERRNO | errno.ENOSYS),
        ("kill", None),
        ("ret", _KILL_PROCESS),
    ]
    return _assemble(program)


def _assemble(program: list[tuple]) -> bytes:
    """Resolve labels (entries with a None operand) into BPF's relative jump offsets."""
    labels, instructions = {}, []
    for entry in program:
        if entry[1] is None:
            labels[entry[0]] = len(instructions)
        else:
            instructions.append(entry)
    out = bytearray()
    for index, (op, k, *targets) in enumerate(instructions):
        if op == "ld":
            out += struct.pack("<HBBI", _LD_W_ABS, 0, 0, k)
        elif op == "ret":
            out += struct.pack("<HBBI", _RET, 0, 0, k)
        else:
            code = {"jeq": _JEQ, "jge": _JGE, "jset": _JSET}[op]
            jt, jf = (0 if t == "next" else labels[t] - index - 1 for t in targets)
            out += struct.pack("<HBBI", code, jt, jf, k)
    return bytes(out)
