"""Importing koans from other formats into koan TOML files.

- `seed-json`: the earlier system's JSON, a list of objects (or `{"koans": [...]}`)
  with `id, family, description, buggy_code, correct_code` and optional
  `expected_error`, `tests` and `pattern`. Koans without tests are written with a
  `flagged` field (and a warning) because a koan without hidden tests cannot tell a
  fix from a deletion.
- `rustlings`: a rustlings checkout (`exercises/<topic>/<name>.rs`,
  `solutions/<topic>/<name>.rs`, `rustlings-macros/info.toml`). Each exercise becomes
  a koan whose hidden tests are the exercise's own `#[cfg(test)] mod tests`.

`expect` is measured, not trusted: when the source does not state it, the buggy code
is compiled with the real verifier and its actual error codes are recorded (or
`["test"]` when it compiles).
"""

from __future__ import annotations

import json
import re
import textwrap
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from ..koans import Koan, load_families
from ..verify.rustlex import LexError, matching_bracket, tokenize
from ..verify.verifier import Verifier

__all__ = ["ImportReport", "import_seed_json", "import_rustlings", "koan_to_toml", "split_test_module"]


@dataclass
class ImportReport:
    written: list[Path]
    warnings: list[str]


def import_seed_json(source: Path, out: Path, verifier: Verifier, split: str = "eval") -> ImportReport:
    try:
        data = json.loads(Path(source).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{source}: cannot read seed JSON: {error}") from None
    records = data.get("koans") if isinstance(data, dict) else data
    if not isinstance(records, list):
        raise ValueError(f"{source}: expected a JSON list of koans or an object with a 'koans' list")
    koans, warnings = [], []
    for index, record in enumerate(records):
        where = f"{source}: koan #{index}"
        missing = [f for f in ("id", "family", "description", "buggy_code", "correct_code") if not record.get(f)]
        if missing:
            raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
        koan_id = _safe_id(record["id"])
        tests = split_test_module(record.get("tests") or "")
        flagged = None
        if not tests.strip():
            flagged = "imported from seed JSON without hidden tests: write #[test] functions that check behaviour"
            warnings.append(f"{koan_id}: no tests in the seed; imported and flagged (validation will report it)")
        expected = record.get("expected_error")
        koan = Koan(
            id=koan_id,
            family=_snake(record["family"]),
            pattern=_snake(record.get("pattern") or (f"error_{expected}" if expected else "unclassified")),
            title=record["description"].strip().splitlines()[0],
            edition="2021",
            split=split,
            expect=(expected,) if expected else (),
            buggy=record["buggy_code"],
            fixed=record["correct_code"],
            tests=tests,
            flagged=flagged,
        )
        koans.append(koan)
    return _write(koans, out, verifier, warnings, "imported from seed JSON")


def import_rustlings(checkout: Path, out: Path, verifier: Verifier, split: str = "train") -> ImportReport:
    checkout = Path(checkout)
    info_path = checkout / "rustlings-macros" / "info.toml"
    try:
        info = tomllib.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"{info_path}: cannot read the rustlings exercise list: {error}") from None
    koans, warnings = [], []
    for exercise in info.get("exercises", []):
        name, directory = exercise.get("name"), exercise.get("dir")
        if not name or not directory:
            warnings.append(f"{info_path}: an exercise without name or dir was skipped")
            continue
        exercise_file = checkout / "exercises" / directory / f"{name}.rs"
        solution_file = checkout / "solutions" / directory / f"{name}.rs"
        if not exercise_file.is_file() or not solution_file.is_file():
            warnings.append(f"{name}: exercise or solution file missing; skipped")
            continue
        buggy, tests = _without_test_module(exercise_file.read_text(encoding="utf-8"))
        fixed, _ = _without_test_module(solution_file.read_text(encoding="utf-8"))
        topic = _snake(re.sub(r"^\d+_", "", directory))
        flagged = None
        if not tests.strip():
            flagged = "rustlings exercise without tests: write #[test] functions that check behaviour"
            warnings.append(f"{name}: the exercise has no tests; imported and flagged")
        koans.append(Koan(
            id=_safe_id(f"rl_{name}"), family=f"rustlings_{topic}", pattern=topic,
            title=f"rustlings exercise {name} ({directory})", edition="2021", split=split, expect=(),
            buggy=buggy, fixed=fixed, tests=tests, hint=exercise.get("hint"), flagged=flagged,
        ))
    return _write(koans, out, verifier, warnings, "imported from rustlings")


def split_test_module(code: str) -> str:
    """Test functions only: unwrap `#[cfg(test)] mod tests { use super::*; ... }` if present."""
    _, tests = _without_test_module(code)
    return tests if tests.strip() else (code if "#[test]" in code else "")


def _without_test_module(code: str) -> tuple[str, str]:
    """(code without its `#[cfg(test)] mod ... { }`, the module's inner items)."""
    try:
        tokens = tokenize(code)
    except LexError:
        return code, ""
    texts = [t.text for t in tokens]
    for i in range(len(tokens) - 6):
        if texts[i : i + 6] == ["#", "[", "cfg", "(", "test", ")"] and "mod" in texts[i + 7 : i + 9]:
            open_index = texts.index("{", i)
            close = matching_bracket(tokens, open_index)
            if close is None:
                continue
            inner = code[tokens[open_index].end : tokens[close].start]
            inner = re.sub(r"^\s*use super::\*;\s*$", "", inner, flags=re.MULTILINE)
            rest = code[: tokens[i].start].rstrip() + "\n" + code[tokens[close].end :].lstrip()
            return rest.rstrip() + "\n", textwrap.dedent(inner).strip() + "\n"
    return code, ""


def _write(koans: list[Koan], out: Path, verifier: Verifier, warnings: list[str], origin: str) -> ImportReport:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    families = load_families(out)
    new_families = sorted({k.family for k in koans} - set(families))
    if new_families:
        with open(out / "families.toml", "a", encoding="utf-8") as handle:
            for family in new_families:
                handle.write(f'{family} = "{origin}"\n')
    written = []
    for koan in koans:
        if not koan.expect:
            koan = _with_measured_expect(koan, verifier, warnings)
        path = out / koan.family / f"{koan.id}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(koan_to_toml(koan), encoding="utf-8")
        written.append(path)
    return ImportReport(written=written, warnings=warnings)


def _with_measured_expect(koan: Koan, verifier: Verifier, warnings: list[str]) -> Koan:
    verdict = verifier.verify_candidate(koan, koan.buggy)
    if verdict.compiled:
        expect = ("test",)
    elif verdict.error_codes and all(c.startswith("E") for c in verdict.error_codes):
        expect = tuple(verdict.error_codes)
    else:
        expect = ("test",)
        warnings.append(f"{koan.id}: the buggy code fails without error codes ({verdict.reason}); check `expect` by hand")
    return replace(koan, expect=expect)


def koan_to_toml(koan: Koan) -> str:
    """Render a koan in the canonical file layout (literal strings for code)."""
    lines = [
        f"id = {_string(koan.id)}",
        f"family = {_string(koan.family)}",
        f"pattern = {_string(koan.pattern)}",
        f"title = {_string(koan.title)}",
        f"edition = {_string(koan.edition)}",
        f"split = {_string(koan.split)}",
        f"expect = [{', '.join(_string(e) for e in koan.expect)}]",
    ]
    if koan.hint:
        lines.append(f"hint = {_string(koan.hint)}")
    if koan.flagged:
        lines.append(f"flagged = {_string(koan.flagged)}")
    for name in ("buggy", "fixed", "tests"):
        lines.append("")
        lines.append(f"{name} = {_code(getattr(koan, name))}")
    for name in ("alternatives", "decoys"):
        for program in getattr(koan, name):
            lines += ["", f"[[{name}]]", f"why = {_string(program.why)}", f"code = {_code(program.code)}"]
    if koan.equivalent_mutants:
        lines += ["", "[equivalent_mutants]"]
        lines += [f"{_string(mutant)} = {_string(reason)}" for mutant, reason in koan.equivalent_mutants.items()]
    return "\n".join(lines) + "\n"


def _string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def _code(value: str) -> str:
    if "'''" not in value:
        return "'''\n" + value.strip("\n") + "\n'''"
    escaped = value.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    return '"""\n' + escaped.strip("\n") + '\n"""'


def _snake(text: str) -> str:
    snake = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return snake if snake and snake[0].isalpha() else f"k_{snake}"


def _safe_id(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", str(text).lower()).strip("_") or "koan"
