"""The proof ledger: a recorded proof holds only for the same koan file, verifier and rustc."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from pytest_sleepy.cli import main
from pytest_sleepy.corpus.proofs import PROOFS_FILE, Proof, ProofLedger
from pytest_sleepy.corpus.validation import check_koan
from pytest_sleepy.koans import load_koan
from pytest_sleepy.verify.verifier import VERSION

from conftest import REPO_ROOT

RUSTC = "rustc 1.95.0 (test)"


@pytest.fixture(scope="module")
def proven(tmp_path_factory, sandbox):
    """tb_008 copied into a corpus of its own, and its full check."""
    from pytest_sleepy.verify.verifier import VerificationCache, Verifier

    corpus = tmp_path_factory.mktemp("corpus") / "koans"
    (corpus / "trait_bounds").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "koans" / "trait_bounds" / "tb_008.toml", corpus / "trait_bounds")
    koan = load_koan(corpus / "trait_bounds" / "tb_008.toml")
    verifier = Verifier(sandbox, VerificationCache(tmp_path_factory.mktemp("cache")))
    return corpus, check_koan(koan, verifier, mutants=True, jobs=2)


def recorded(corpus, check) -> ProofLedger:
    ledger = ProofLedger.read(corpus / PROOFS_FILE, RUSTC)
    ledger.record([check], RUSTC)
    ledger.write()
    return ProofLedger.read(corpus / PROOFS_FILE, RUSTC)


def test_a_recorded_proof_is_current_for_the_same_file_verifier_and_rustc(proven):
    corpus, check = proven
    ledger = recorded(corpus, check)
    proof = ledger.current(check.koan, RUSTC)
    assert proof == Proof.of(check) and proof.viable > 0 and proof.killed == proof.viable


def test_an_edited_koan_has_no_current_proof(proven, tmp_path):
    corpus, check = proven
    ledger = recorded(corpus, check)
    edited = tmp_path / "tb_008.toml"
    edited.write_text(check.koan.path.read_text().replace("#[test]", "#[test]\n", 1))
    assert ledger.current(load_koan(edited), RUSTC) is None


def test_a_comment_or_a_move_keeps_the_proof(proven, tmp_path):
    corpus, check = proven
    ledger = recorded(corpus, check)
    moved = tmp_path / "elsewhere" / "tb_008.toml"
    moved.parent.mkdir()
    moved.write_text("# reviewed\n" + check.koan.path.read_text())
    assert ledger.current(load_koan(moved), RUSTC) == Proof.of(check)


def test_another_rustc_or_verifier_version_voids_every_proof(proven):
    corpus, check = proven
    assert recorded(corpus, check).current(check.koan, "rustc 1.96.0 (later)") is None
    data = json.loads((corpus / PROOFS_FILE).read_text())
    (corpus / PROOFS_FILE).write_text(json.dumps(dict(data, verifier=VERSION + "-old")))
    assert ProofLedger.read(corpus / PROOFS_FILE, RUSTC).current(check.koan, RUSTC) is None


def test_a_koan_that_fails_its_check_loses_its_proof(proven):
    corpus, check = proven
    ledger = recorded(corpus, check)
    ledger.record([dataclasses.replace(check, problems=["fixed does not pass"])], RUSTC)
    assert ledger.current(check.koan, RUSTC) is None


def test_a_file_that_is_not_a_ledger_is_named_with_the_fix(tmp_path):
    (tmp_path / PROOFS_FILE).write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match=r"proofs.json: not a proof ledger .*sleepy koans validate --mutants --record"):
        ProofLedger.read(tmp_path / PROOFS_FILE, RUSTC)


def test_record_needs_mutants(capsys):
    assert main(["koans", "validate", "--record", "--koans", str(REPO_ROOT / "koans")]) == 2
    assert "--record keeps full proofs only: add --mutants" in capsys.readouterr().err


def test_validate_with_record_writes_the_ledger(proven, capsys):
    corpus, check = proven
    (corpus / PROOFS_FILE).unlink(missing_ok=True)
    assert main(["koans", "validate", "--mutants", "--record", "--koans", str(corpus), "-j", "2"]) == 0
    assert f"recorded 1 proof(s) in {corpus / PROOFS_FILE} (1 in all)" in capsys.readouterr().out
    ledger = json.loads((corpus / PROOFS_FILE).read_text())
    assert ledger["verifier"] == VERSION and list(ledger["koans"]) == ["tb_008"]
