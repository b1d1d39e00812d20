"""The verdict on one candidate: the record every rate, episode and training example rests on."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .diagnostics import Diagnostic

__all__ = ["Verdict"]


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
