"""rustc's JSON diagnostics as records.

rustc (and cargo, which forwards rustc's messages) prints one JSON object per
diagnostic when run with `--error-format=json`. We keep what the rest of the
system needs: the error code (routing and expectations key on it), the primary span
(where), the rendered text (what a person or a model reads), and the machine
suggestions with their byte ranges (what the `rustfix` backend applies).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from .harness import HIDDEN_TESTS_FILE

__all__ = ["Span", "Edit", "Suggestion", "Diagnostic", "parse_rustc_json", "error_codes", "apply_suggestions"]


@dataclass(frozen=True)
class Span:
    file: str
    line_start: int
    column_start: int
    line_end: int
    column_end: int
    label: str | None = None


@dataclass(frozen=True)
class Edit:
    """Replace bytes [byte_start, byte_end) of `file` with `replacement`."""

    file: str
    byte_start: int
    byte_end: int
    replacement: str


@dataclass(frozen=True)
class Suggestion:
    """One way rustc proposes to fix a diagnostic: all its edits belong together, and
    two suggestions of one diagnostic are alternatives, never to be mixed."""

    message: str
    applicability: str  # MachineApplicable, MaybeIncorrect, HasPlaceholders, Unspecified
    edits: tuple[Edit, ...]


@dataclass(frozen=True)
class Diagnostic:
    level: str  # "error", "warning", ...
    code: str | None  # "E0382", a lint name such as "unused_variables", or None
    message: str
    rendered: str
    primary_span: Span | None = None
    notes: tuple[str, ...] = ()  # child messages: "note: ...", "help: ..."
    suggestions: tuple[Suggestion, ...] = field(default=())

    @property
    def in_hidden_tests(self) -> bool:
        """True when rustc points into the hidden tests rather than the candidate."""
        return self.primary_span is not None and os.path.basename(self.primary_span.file) == HIDDEN_TESTS_FILE

    @property
    def is_error(self) -> bool:
        return self.level in ("error", "error: internal compiler error")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Diagnostic":
        span = data.get("primary_span")
        return cls(
            level=data["level"],
            code=data.get("code"),
            message=data["message"],
            rendered=data.get("rendered", ""),
            primary_span=Span(**span) if span else None,
            notes=tuple(data.get("notes", ())),
            suggestions=tuple(
                Suggestion(s["message"], s["applicability"], tuple(Edit(**e) for e in s["edits"]))
                for s in data.get("suggestions", ())
            ),
        )


def parse_rustc_json(output: str) -> list[Diagnostic]:
    """Diagnostics from rustc's JSON lines (or cargo's `compiler-message` records).

    Lines that are not JSON diagnostics (cargo progress, linker noise) are skipped, as
    are rustc's closing summaries ("aborting due to 2 previous errors", "Some errors
    have detailed explanations"), which carry no information of their own.
    """
    diagnostics = []
    for line in output.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("reason") == "compiler-message":
            record = record.get("message", {})
        if record.get("$message_type", "diagnostic") != "diagnostic" or "level" not in record:
            continue
        if _is_summary(record):
            continue
        diagnostics.append(_diagnostic(record))
    return diagnostics


def error_codes(diagnostics: list[Diagnostic]) -> list[str]:
    """Sorted distinct codes of the errors; errors without a code count as "<no code>"."""
    return sorted({d.code or "<no code>" for d in diagnostics if d.is_error})


def _is_summary(record: dict) -> bool:
    message = record.get("message", "")
    return record.get("level") in ("error", "failure-note", "warning") and not record.get("spans") and (
        message.startswith("aborting due to")
        or message.startswith("Some errors have detailed explanations")
        or message.startswith("For more information about")
        or (record["level"] == "warning" and message.endswith("emitted"))
    )


def _diagnostic(record: dict) -> Diagnostic:
    spans = record.get("spans") or []
    primary = next((s for s in spans if s.get("is_primary")), spans[0] if spans else None)
    suggestions = [*_suggestions(record["message"], spans)]
    notes = []
    for child in record.get("children") or []:
        notes.append(f"{child['level']}: {child['message']}")
        suggestions.extend(_suggestions(child["message"], child.get("spans") or []))
    code = record.get("code")
    return Diagnostic(
        level=record["level"],
        code=code.get("code") if isinstance(code, dict) else None,
        message=record["message"],
        rendered=record.get("rendered") or record["message"],
        primary_span=_span(primary) if primary else None,
        notes=tuple(notes),
        suggestions=tuple(suggestions),
    )


def _span(span: dict) -> Span:
    """Where the user wrote it: a span inside a macro's expansion (an error rustc places
    in core's `assert_eq!`) is reported at the outermost call site, so that an error the
    hidden tests' macros raise counts as theirs."""
    while isinstance(span.get("expansion"), dict) and isinstance(span["expansion"].get("span"), dict):
        span = span["expansion"]["span"]
    return Span(
        file=span["file_name"],
        line_start=span["line_start"],
        column_start=span["column_start"],
        line_end=span["line_end"],
        column_end=span["column_end"],
        label=span.get("label"),
    )


def _suggestions(message: str, spans: list[dict]):
    edits = [
        Edit(span["file_name"], span["byte_start"], span["byte_end"], span["suggested_replacement"])
        for span in spans
        if span.get("suggested_replacement") is not None
    ]
    if edits:
        applicabilities = {span.get("suggestion_applicability") or "Unspecified" for span in spans
                           if span.get("suggested_replacement") is not None}
        # A suggestion is only as applicable as its least certain edit.
        for level in ("Unspecified", "HasPlaceholders", "MaybeIncorrect", "MachineApplicable"):
            if level in applicabilities:
                break
        yield Suggestion(message=message, applicability=level, edits=tuple(edits))


def apply_suggestions(
    code: str,
    diagnostics: list[Diagnostic],
    file: str,
    applicabilities: tuple[str, ...] = ("MachineApplicable",),
) -> str | None:
    """Apply, to `code` (the contents of `file`), the first acceptable suggestion of each
    error; None when there is none. Suggestions that touch other files, or overlap an
    edit already taken, are skipped: applying them could not give a coherent program.
    """
    data = code.encode("utf-8")
    taken: list[Edit] = []
    for diagnostic in diagnostics:
        if not diagnostic.is_error:
            continue
        for suggestion in diagnostic.suggestions:
            if suggestion.applicability not in applicabilities:
                continue
            edits = suggestion.edits
            if any(e.file != file or e.byte_end > len(data) or e.byte_start > e.byte_end for e in edits):
                continue
            if any(e.byte_start < t.byte_end and t.byte_start < e.byte_end for e in edits for t in taken):
                continue
            if any(e.byte_start == e.byte_end == t.byte_start == t.byte_end for e in edits for t in taken):
                continue  # two insertions at one point: their order would be a guess
            taken.extend(edits)
            break
    if not taken:
        return None
    for edit in sorted(taken, key=lambda e: e.byte_start, reverse=True):
        data = data[: edit.byte_start] + edit.replacement.encode("utf-8") + data[edit.byte_end :]
    return data.decode("utf-8")
