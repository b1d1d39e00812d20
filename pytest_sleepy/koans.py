"""Koans: broken Rust programs with a reference fix and hidden tests, one TOML file each.

File format (`koans/<family>/<id>.toml`)::

    id = "bc_001"               # unique, stable: item ids and baselines refer to it
    family = "borrow_checker"   # coarse group for tables (built-in or from families.toml)
    pattern = "use_after_move"  # fine group, snake_case: the unit of routing and adapters
    title = "A String is moved and then printed"
    edition = "2021"            # 2015, 2018, 2021 or 2024
    split = "eval"              # "eval" (frozen benchmark) or "train" (may feed training)
    expect = ["E0382"]          # the exact error codes of the buggy code, or ["test"] for a
                                # logic bug: it compiles but the hidden tests fail
    hint = "..."                # optional advice for the pattern
    difficulty = 2              # optional, 1 (easy) to 3 (hard): the author's estimate,
                                # calibrated against the rustfix floor and a real model
    buggy = '''...'''           # what the model sees and edits
    fixed = '''...'''           # the reference fix, proven by `sleepy koans validate`
    tests = '''...'''           # hidden #[test] fns, compiled inside
                                # `mod sleepy_hidden_tests { use super::*; ... }`

    [dependencies]              # optional; koans with dependencies are built with cargo
    geometry = { path = "deps/geometry" }   # path crates only, relative to the koan file

    flagged = "..."             # optional: why this koan is not usable yet (set by importers
                                # for koans without tests); validation reports it as bad

    [[alternatives]]            # valid fixes in other styles (eval koans: at least 2); each
    why = "returns &str"        # must pass (`sleepy koans validate`)
    code = '''...'''

    [[decoys]]                  # plausible wrong fixes (eval koans: at least 2); each must
    why = "..."                 # compile and fail the hidden tests
    code = '''...'''

    [equivalent_mutants]        # mutants of `fixed` no test can kill, by id, with the reason
    "relational:12:17:< -> <=" = "the two values are never equal here"

Alternatives, decoys and equivalent mutants are never shown to a model and never become
training data (the leakage guard treats alternatives and decoys as the koan's own text);
koans/README.md is the authoring contract they serve.

A corpus may add families in `families.toml` at its root (`name = "description"`), and
declares its frozen eval suites in `suites.toml` (pytest_sleepy/corpus/suites.py).
Every problem found while loading is reported with the file, the field and what to do.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


__all__ = [
    "Koan",
    "KoanProgram",
    "KoanFileError",
    "CorpusError",
    "BUILTIN_FAMILIES",
    "load_koan",
    "load_corpus",
    "load_families",
    "is_koan_file",
]

BUILTIN_FAMILIES = {
    "borrow_checker": "ownership and borrowing errors (moves, aliasing, lifetimes of borrows)",
    "trait_bounds": "missing derives, trait implementations and generic bounds",
    "result_handling": "Result and Option plumbing: ?, conversions, error types",
    "lifetimes": "lifetime annotations on functions, structs and impls",
    "type_mismatch": "values of the wrong type: integer widths, String/&str, Option/T",
    "logic": "programs that compile but compute the wrong thing",
    "generics_trait_objects": "generic parameters and dyn Trait: object safety, Sized, missing methods",
    "closures_iterators": "closures that capture wrongly (FnMut/FnOnce, move) and iterator adaptors",
    "pattern_matching": "non-exhaustive matches and patterns of the wrong shape",
    "modules_privacy": "items, fields and methods used outside the module that hides them",
    "mutability": "writes through shared references and to immutable bindings",
    "concurrency": "Send/Sync, Mutex guards and threads that outlive their borrows",
}
EDITIONS = ("2015", "2018", "2021", "2024")
SPLITS = ("eval", "train")
REQUIRED = ("id", "family", "pattern", "title", "edition", "split", "expect", "buggy", "fixed", "tests")
OPTIONAL = ("hint", "difficulty", "dependencies", "flagged", "alternatives", "decoys", "equivalent_mutants")
DIFFICULTIES = (1, 2, 3)
# Files at the corpus root that describe the corpus rather than hold a koan.
CORPUS_FILES = ("families.toml", "suites.toml")
_ID = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
_ERROR_CODE = re.compile(r"^E[0-9]{4}$")
# A first look for hidden tests; the verifier reads them properly (and refuses a koan
# whose tests it cannot find, so this check can only be stricter, never looser).
_TEST_ATTRIBUTE = re.compile(r"#\s*\[\s*test\s*\]")


@dataclass(frozen=True)
class KoanProgram:
    """An alternative fix or a decoy: a whole program and why it is what it is."""

    why: str
    code: str


@dataclass(frozen=True)
class Koan:
    id: str
    family: str
    pattern: str
    title: str
    edition: str
    split: str
    expect: tuple[str, ...]
    buggy: str
    fixed: str
    tests: str
    hint: str | None = None
    difficulty: int | None = None
    dependencies: dict[str, Path] = field(default_factory=dict, hash=False, compare=False)
    flagged: str | None = None
    path: Path | None = field(default=None, compare=False)
    alternatives: tuple[KoanProgram, ...] = field(default=(), compare=False)
    decoys: tuple[KoanProgram, ...] = field(default=(), compare=False)
    equivalent_mutants: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def is_logic_bug(self) -> bool:
        return self.expect == ("test",)

    @property
    def test_names(self) -> tuple[str, ...]:
        # Reading test names needs the verifier's Rust lexer; importing it here, not at
        # the top, keeps this module at the bottom of the import graph.
        from .verify.harness import hidden_test_names

        return hidden_test_names(self.tests)

    @property
    def digest(self) -> str:
        """Hash of everything that decides the koan's outcome (not its title or path):
        run files record it so a changed koan is never compared as if unchanged."""
        material = [self.id, self.edition, list(self.expect), self.buggy, self.tests, sorted(self.dependencies)]
        return hashlib.sha256(json.dumps(material).encode("utf-8")).hexdigest()[:16]


class KoanFileError(ValueError):
    """One problem in one koan file."""

    def __init__(self, path: Path | str, field_name: str | None, problem: str):
        self.path, self.field, self.problem = Path(path), field_name, problem
        where = f"{path}: field '{field_name}'" if field_name else str(path)
        super().__init__(f"{where}: {problem}")


class CorpusError(ValueError):
    """Every problem found while loading a corpus, so they can be fixed in one pass."""

    def __init__(self, errors: list[KoanFileError]):
        self.errors = errors
        super().__init__(f"{len(errors)} problem(s) in the koan corpus:\n" + "\n".join(f"  {e}" for e in errors))


def load_families(corpus_root: Path) -> dict[str, str]:
    """Built-in families plus those the corpus declares in families.toml."""
    families = dict(BUILTIN_FAMILIES)
    extra = corpus_root / "families.toml"
    if extra.is_file():
        data = _read_toml(extra)
        for name, description in data.items():
            if not isinstance(description, str) or not _SNAKE.match(name):
                raise KoanFileError(extra, name, 'expected `snake_case_name = "description"`')
            families[name] = description
    return families


def is_koan_file(path: Path, root: Path) -> bool:
    """Whether `path`, somewhere under the corpus `root`, is a koan file."""
    if path.suffix != ".toml" or (path.parent == root and path.name in CORPUS_FILES):
        return False
    # Dependency crates and hidden folders are not koans.
    return not any(part.startswith(".") or part == "deps" for part in path.relative_to(root).parts[:-1])


def load_koan(path: Path | str, families: dict[str, str] | None = None) -> Koan:
    """Load and validate one koan file; raise KoanFileError naming the field at fault."""
    path = Path(path)
    data = _read_toml(path)
    families = BUILTIN_FAMILIES if families is None else families

    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise KoanFileError(path, unknown[0], f"unknown field; allowed fields are {', '.join(REQUIRED + OPTIONAL)}")
    for name in REQUIRED:
        if name not in data:
            advice = {
                "tests": "every koan needs hidden #[test] functions that check behaviour",
                "fixed": "every koan needs a reference fix that passes its tests",
            }.get(name, "add it (see the koan file format in pytest_sleepy/koans.py)")
            raise KoanFileError(path, name, f"missing; {advice}")
    for name in ("id", "family", "pattern", "title", "edition", "split", "buggy", "fixed", "tests", "hint", "flagged"):
        if name in data and not isinstance(data[name], str):
            raise KoanFileError(path, name, f"must be a string, not {type(data[name]).__name__}")

    if not _ID.match(data["id"]):
        raise KoanFileError(path, "id", f"{data['id']!r} must be lowercase letters, digits and underscores")
    if data["family"] not in families:
        raise KoanFileError(
            path, "family",
            f"unknown family {data['family']!r}; known families: {', '.join(sorted(families))} "
            "(declare new ones in families.toml at the corpus root)",
        )
    if not _SNAKE.match(data["pattern"]):
        raise KoanFileError(path, "pattern", f"{data['pattern']!r} must be snake_case")
    if data["edition"] not in EDITIONS:
        raise KoanFileError(path, "edition", f"{data['edition']!r} is not a Rust edition; use one of {', '.join(EDITIONS)}")
    if data["split"] not in SPLITS:
        raise KoanFileError(path, "split", f"{data['split']!r} must be 'eval' or 'train'")
    expect = data["expect"]
    if not (isinstance(expect, list) and expect and all(isinstance(e, str) for e in expect)):
        raise KoanFileError(path, "expect", 'must be a non-empty list of error codes such as ["E0382"], or ["test"]')
    if expect != ["test"]:
        bad = [e for e in expect if not _ERROR_CODE.match(e)]
        if bad:
            raise KoanFileError(path, "expect", f"{bad[0]!r} is not a rustc error code (EXXXX) and not \"test\"")
    difficulty = data.get("difficulty")
    if difficulty is not None and (type(difficulty) is not int or difficulty not in DIFFICULTIES):
        raise KoanFileError(path, "difficulty", f"{difficulty!r} must be 1 (easy), 2 or 3 (hard)")
    for name in ("buggy", "fixed"):
        if not data[name].strip():
            raise KoanFileError(path, name, "is empty")
    if data.get("flagged") is None and not _TEST_ATTRIBUTE.search(data["tests"]):
        raise KoanFileError(path, "tests", "contains no #[test] function; the hidden tests must check behaviour")

    return Koan(
        id=data["id"],
        family=data["family"],
        pattern=data["pattern"],
        title=data["title"],
        edition=data["edition"],
        split=data["split"],
        expect=tuple(sorted(expect)),
        buggy=data["buggy"],
        fixed=data["fixed"],
        tests=data["tests"],
        hint=data.get("hint"),
        difficulty=difficulty,
        dependencies=_dependencies(path, data.get("dependencies", {})),
        flagged=data.get("flagged"),
        path=path,
        alternatives=_programs(path, data, "alternatives"),
        decoys=_programs(path, data, "decoys"),
        equivalent_mutants=_equivalent_mutants(path, data.get("equivalent_mutants", {})),
    )


def load_corpus(root: Path | str = "koans") -> list[Koan]:
    """All koans under root (recursively), sorted by id; raise CorpusError listing every problem."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError([KoanFileError(root, None, "koan directory not found (pass --koans DIR)")])
    errors: list[KoanFileError] = []
    try:
        families = load_families(root)
    except KoanFileError as error:
        raise CorpusError([error]) from None
    koans: dict[str, Koan] = {}
    for path in sorted(root.rglob("*.toml")):
        if not is_koan_file(path, root):
            continue
        try:
            koan = load_koan(path, families)
        except KoanFileError as error:
            errors.append(error)
            continue
        if koan.id in koans:
            errors.append(KoanFileError(path, "id", f"duplicate id {koan.id!r} (also in {koans[koan.id].path})"))
            continue
        koans[koan.id] = koan
    if errors:
        raise CorpusError(errors)
    return sorted(koans.values(), key=lambda k: k.id)


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        # tomllib's message already carries "(at line N, column M)".
        raise KoanFileError(path, None, f"TOML syntax error: {error}") from None
    except UnicodeDecodeError as error:
        raise KoanFileError(path, None, f"is not UTF-8 (byte {error.start}); save the file as UTF-8") from None
    except OSError as error:
        raise KoanFileError(path, None, f"cannot read: {error.strerror}") from None


def _programs(path: Path, data: dict, name: str) -> tuple[KoanProgram, ...]:
    entries = data.get(name, [])
    if not isinstance(entries, list):
        raise KoanFileError(path, name, f'must be an array of tables: [[{name}]] with why = "..." and code = \'\'\'...\'\'\'')
    programs = []
    for index, entry in enumerate(entries):
        where = f"{name}[{index}]"
        if not isinstance(entry, dict) or set(entry) != {"why", "code"}:
            raise KoanFileError(path, where, "needs exactly two keys: why (one line) and code (the whole program)")
        if not all(isinstance(entry[k], str) and entry[k].strip() for k in ("why", "code")):
            raise KoanFileError(path, where, "why and code must be non-empty strings")
        programs.append(KoanProgram(entry["why"].strip(), entry["code"]))
    return tuple(programs)


def _equivalent_mutants(path: Path, table) -> dict[str, str]:
    if not isinstance(table, dict) or not all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                              for k, v in table.items()):
        raise KoanFileError(path, "equivalent_mutants",
                            'must be a table of `"mutant id" = "why no test can kill it"` (ids as '
                            "`sleepy koans validate --mutants` prints them)")
    return dict(table)


def _dependencies(path: Path, table) -> dict[str, Path]:
    if not isinstance(table, dict):
        raise KoanFileError(path, "dependencies", "must be a table of `name = { path = \"...\" }`")
    resolved = {}
    for name, spec in table.items():
        if not (isinstance(spec, dict) and set(spec) == {"path"} and isinstance(spec["path"], str)):
            raise KoanFileError(
                path, f"dependencies.{name}",
                'only path dependencies are supported (`name = { path = "dir" }`): '
                "verification runs offline",
            )
        directory = (path.parent / spec["path"]).resolve()
        if not (directory / "Cargo.toml").is_file():
            raise KoanFileError(path, f"dependencies.{name}", f"{directory} has no Cargo.toml")
        resolved[name] = directory
    return resolved
