"""The proof ledger: which koans `sleepy koans validate --mutants` proved, on what.

Proving a koan compiles its buggy code, its fix, every alternative, decoy, stub and
mutant: seconds each, most of an hour for a corpus of hundreds on two cores. The
ledger (`proofs.json` at the corpus root, written by `sleepy koans validate --mutants
--record`) keeps each proof with what it depends on, so the test suite proves again
only what changed, and re-proves a rotating sample of the rest to catch a ledger that
no longer tells the truth.

File format::

    {"format": "pytest-sleepy/proofs", "version": 1,
     "verifier": "5",                 # verify.verifier.VERSION the proofs were made with
     "rustc": "rustc 1.95.0 (...)",   # first line of `rustc -vV`
     "koans": {"bc_001": {"file": "<sha256 of the koan's content>", "split": "eval",
                          "alternatives": 2, "decoys": 2, "killed": 14, "viable": 14}}}

An entry is current when the koan's content (every field the proof reads, as loaded),
the verifier version and the rustc release all match. Only koans that validated ok (mutants included) are recorded.
"""

from __future__ import annotations

import hashlib
import os
import json
from dataclasses import dataclass
from pathlib import Path

from ..koans import Koan
from ..verify.verifier import VERSION
from .validation import KoanCheck

__all__ = ["PROOFS_FILE", "Proof", "ProofLedger", "rustc_release"]

PROOFS_FILE = "proofs.json"
FORMAT = "pytest-sleepy/proofs"


@dataclass(frozen=True)
class Proof:
    file: str  # sha256 of the koan's content (content_digest)
    split: str
    alternatives: int
    decoys: int
    killed: int
    viable: int

    @classmethod
    def of(cls, check: KoanCheck) -> "Proof":
        score = check.mutation
        return cls(file=content_digest(check.koan), split=check.koan.split, alternatives=check.alternatives_passed,
                   decoys=check.decoys_failed, killed=score.killed if score else 0,
                   viable=score.viable if score else 0)


def rustc_release(version: str) -> str:
    """The first line of `rustc -vV` (Toolchain.version): what a proof depends on."""
    return version.splitlines()[0] if version else ""


def content_digest(koan: Koan) -> str:
    """Everything a proof depends on, taken from the koan as it was loaded (so a file
    edited while validation runs cannot lend its proof to the new text)."""
    material = [koan.id, koan.split, koan.edition, list(koan.expect), koan.buggy, koan.fixed, koan.tests,
                [[p.why, p.code] for p in koan.alternatives], [[p.why, p.code] for p in koan.decoys],
                sorted(koan.equivalent_mutants.items()), sorted((k, os.path.relpath(v, koan.path.parent if koan.path else ".")) for k, v in koan.dependencies.items()),
                koan.flagged]
    return hashlib.sha256(json.dumps(material).encode("utf-8")).hexdigest()


@dataclass
class ProofLedger:
    path: Path
    verifier: str
    rustc: str
    proofs: dict[str, Proof]

    @classmethod
    def read(cls, path: Path, rustc: str) -> "ProofLedger":
        """The ledger at `path`; an empty one (for this verifier and rustc) if there is
        none. A file made for another verifier or rustc holds no current proof."""
        if not path.is_file():
            return cls(path, VERSION, rustc, {})
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, not {FORMAT!r}")
            proofs = {koan: Proof(**entry) for koan, entry in data["koans"].items()}
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a proof ledger ({error}); delete it and run "
                             "`sleepy koans validate --mutants --record`") from None
        return cls(path, str(data.get("verifier")), str(data.get("rustc")), proofs)

    def current(self, koan: Koan, rustc: str) -> Proof | None:
        """The koan's proof, if it still holds for this file, verifier and rustc."""
        proof = self.proofs.get(koan.id)
        if proof is None or self.verifier != VERSION or self.rustc != rustc or proof.file != content_digest(koan):
            return None
        return proof

    def record(self, checks: list[KoanCheck], rustc: str) -> None:
        """Keep the proofs of the checks that passed and drop those that did not. Proofs
        made for another verifier or rustc are dropped: they no longer hold."""
        if (self.verifier, self.rustc) != (VERSION, rustc):
            self.verifier, self.rustc, self.proofs = VERSION, rustc, {}
        for check in checks:
            if check.ok and (check.koan.split != "eval" or check.mutation is not None):
                self.proofs[check.koan.id] = Proof.of(check)
            else:
                self.proofs.pop(check.koan.id, None)

    def keep_only(self, koan_ids: set[str]) -> None:
        """Forget the proofs of koans that are gone."""
        self.proofs = {k: p for k, p in self.proofs.items() if k in koan_ids}

    def write(self) -> None:
        data = {"format": FORMAT, "version": 1, "verifier": self.verifier, "rustc": self.rustc,
                "koans": {koan: vars(proof) for koan, proof in sorted(self.proofs.items())}}
        self.path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
