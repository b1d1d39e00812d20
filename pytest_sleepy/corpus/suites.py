"""Eval suites: frozen, named sets of eval koans, each with a content digest.

A pass rate means something only next to the koans it was measured on. A suite names
that set (`eval-v1`, `eval-v2`), pins every member's content, and gives the whole a
digest that run files record, so runs of different suites are never compared.

File format (`suites.toml` at the corpus root, oldest suite first)::

    [eval-v1]
    description = "the first 30 eval koans: borrow checker, Result handling, trait bounds"

    [eval-v1.koans]             # every member: id = the koan's digest when frozen
    bc_001 = "00f1250baff94bba"

The newest suite (the last table) is the default; `--sleepy-suite NAME` picks another.
`sleepy koans freeze NAME` appends a suite made of every eval koan as it stands. A
frozen member that has changed since (its digest differs) or is gone is an error that
names the koan: edit a copy with a new id, or freeze a new suite.

Eval koans that no suite holds yet (a suite being written) are not collected under the
eval split, except by the suite `draft`: every eval koan as it stands, which is what
`sleepy koans freeze` would freeze next (`pytest --sleepy-suite=draft --model=rustfix`
measures a suite before it is frozen). A corpus without `suites.toml` has one
unversioned suite, `eval`, made of all its eval koans, with a digest like any other.
`eval` and `draft` change with the corpus, so two runs of either are compared koan by
koan (changed koans apart) rather than refused.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..koans import Koan

__all__ = ["Suite", "SuiteError", "SUITES_FILE", "UNVERSIONED", "DRAFT", "load_suites", "select_suite", "frozen_table"]

SUITES_FILE = "suites.toml"
UNVERSIONED = "eval"
DRAFT = "draft"
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


class SuiteError(ValueError):
    """A suites.toml problem, or a suite whose frozen koans changed; the message names
    the file, the suite and the koan."""


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    koans: dict[str, str] = field(hash=False)  # id -> the koan's digest when frozen

    @property
    def digest(self) -> str:
        material = sorted(self.koans.items())
        return hashlib.sha256(json.dumps(material).encode("utf-8")).hexdigest()[:16]

    def record(self) -> dict:
        """What a run file keeps of the suite it ran."""
        return {"name": self.name, "digest": self.digest, "koans": len(self.koans)}

    def members(self, corpus: list[Koan]) -> list[Koan]:
        return [k for k in corpus if k.id in self.koans]

    def problems(self, corpus: list[Koan]) -> list[str]:
        """Every frozen member that is missing, changed or no longer an eval koan."""
        by_id = {k.id: k for k in corpus}
        found = []
        for koan_id, digest in sorted(self.koans.items()):
            koan = by_id.get(koan_id)
            if koan is None:
                found.append(f"koan {koan_id} is missing")
            elif koan.split != "eval":
                found.append(f"koan {koan_id} is now split {koan.split!r}")
            elif koan.digest != digest:
                found.append(f"koan {koan_id} changed since the suite was frozen "
                             f"(digest {digest}, now {koan.digest}; {koan.path})")
        return found


def load_suites(corpus_root: Path, corpus: list[Koan]) -> list[Suite]:
    """The corpus's suites, oldest first; the unversioned `eval` suite when it has no
    suites.toml."""
    path = corpus_root / SUITES_FILE
    if not path.is_file():
        eval_koans = {k.id: k.digest for k in corpus if k.split == "eval"}
        return [Suite(UNVERSIONED, "every eval koan of the corpus (no suites.toml)", eval_koans)]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SuiteError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise SuiteError(f"{path}: {error}") from None
    suites = []
    for name, table in data.items():
        where = f"{path}: suite {name!r}"
        if problem := _name_problem(name):
            raise SuiteError(f"{where}: {problem}")
        if not isinstance(table, dict) or not isinstance(table.get("koans"), dict) or not table["koans"]:
            raise SuiteError(f"{where}: needs a `koans` table of id = digest (write it with `sleepy koans freeze`)")
        if not all(isinstance(d, str) for d in table["koans"].values()):
            raise SuiteError(f"{where}: every koan's value is its digest, a string")
        unknown = sorted(set(table) - {"description", "koans"})
        if unknown:
            raise SuiteError(f"{where}: unknown field {unknown[0]!r}; the fields are description and koans")
        suites.append(Suite(name, str(table.get("description", "")), dict(table["koans"])))
    if not suites:
        raise SuiteError(f"{path}: declares no suite; delete it or freeze one with `sleepy koans freeze`")
    return suites


def _name_problem(name: str) -> str | None:
    if name == DRAFT:
        return f"'{DRAFT}' means the eval koans in no suite yet; pick another name"
    if not _NAME.match(name):
        return "a suite name is lowercase letters, digits, '-' and '_' (eval-v2)"
    return None


def select_suite(corpus_root: Path, corpus: list[Koan], name: str | None) -> Suite:
    """The suite called `name` (default: the newest), with every frozen member intact."""
    if name == DRAFT:
        return Suite(DRAFT, "every eval koan as it stands (not frozen)",
                     {k.id: k.digest for k in corpus if k.split == "eval"})
    suites = load_suites(corpus_root, corpus)
    if name is None:
        suite = suites[-1]
    else:
        suite = next((s for s in suites if s.name == name), None)
        if suite is None:
            raise SuiteError(f"unknown suite {name!r}; {corpus_root / SUITES_FILE} has "
                             f"{', '.join(s.name for s in suites)}")
    problems = suite.problems(corpus)
    if problems:
        raise SuiteError(f"suite {suite.name} ({corpus_root / SUITES_FILE}): " + "; ".join(problems)
                         + ". A frozen koan never changes: restore it, or give the new version a new id "
                         "and freeze a new suite with `sleepy koans freeze`")
    return suite


def frozen_table(name: str, description: str, koans: list[Koan]) -> str:
    """The suites.toml table that freezes `koans` (the eval ones) as suite `name`."""
    members = sorted((k for k in koans if k.split == "eval"), key=lambda k: k.id)
    if problem := _name_problem(name):
        raise SuiteError(f"suite name {name!r}: {problem}")
    if not members:
        raise SuiteError("no eval koans to freeze")
    lines = [f"[{name}]", f"description = {json.dumps(description)}", "", f"[{name}.koans]"]
    lines += [f'{k.id} = "{k.digest}"' for k in members]
    return "\n".join(lines) + "\n"
