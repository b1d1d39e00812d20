"""The verdict: whether a candidate really repairs a koan.

Threat model. The candidate is written by a model that may be rewarded for passing, so
it is assumed hostile: it knows how this verifier works (but not the hidden tests) and
tries to get `passed` without repairing anything, to read the hidden tests, or to harm
the host. It runs as ordinary safe Rust inside the test process.

- A pass is evidence it cannot forge: each hidden test must deliver a fresh 128-bit
  token that only the real wrapper, after the real test body returned, can write
  (harness.py). Output and exit status only corroborate.
- Nothing of the harness is in its reach: the tests' module is private and unnamable,
  standard macros and prelude names inside it are absolute, the test binary is
  unreadable, and the sources, /proc and the tokens are absent at run time.
- Static rules (tamper.py) see what rustc sees: raw identifiers normalised, macro
  splicing refused, standard and primitive names protected, `cfg(test)` refused.
- Every resource is bounded: candidate size, CPU, wall time, memory, output, files,
  the capped /tmp, no process creation, no network (sandbox.py, seccomp.py).
Residual risks (README, "What a verdict guarantees"): unsoundness bugs in rustc that
give safe code arbitrary memory access, and trait impls of the candidate's own types
that lie inside assertions, which only well-written hidden tests can rule out.
"""

from .cache import VerificationCache
from .diagnostics import Diagnostic, Edit, Span, Suggestion, apply_suggestions, error_codes, parse_rustc_json
from .harness import HIDDEN_TEST_MODULE, HIDDEN_TESTS_FILE, hidden_test_names, hidden_tests
from .rustlex import LexError, Token, tokenize
from .sandbox import (
    COMPILE_LIMITS, SANDBOX_ROOT, TEST_LIMITS, Limits, Sandbox, SandboxResult, SandboxUnavailable, Toolchain,
    ToolchainMissing,
)
from .tamper import find_tampering
from .verdict import Verdict
from .verifier import CANDIDATE_FILES, MAX_CANDIDATE_BYTES, VERSION, Verifier, verify_candidate

__all__ = [
    "VerificationCache", "Diagnostic", "Edit", "Span", "Suggestion", "apply_suggestions", "error_codes",
    "parse_rustc_json", "HIDDEN_TEST_MODULE", "HIDDEN_TESTS_FILE", "hidden_test_names", "hidden_tests",
    "LexError", "Token", "tokenize", "COMPILE_LIMITS", "SANDBOX_ROOT", "TEST_LIMITS", "Limits", "Sandbox",
    "SandboxResult", "SandboxUnavailable", "Toolchain", "ToolchainMissing", "find_tampering", "Verdict",
    "CANDIDATE_FILES", "MAX_CANDIDATE_BYTES", "VERSION", "Verifier", "verify_candidate",
]
