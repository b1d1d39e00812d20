"""The shipped corpus: its shape, and the same proof `sleepy koans validate` gives."""

import dataclasses
import hashlib
import os
from collections import Counter
from datetime import date

import pytest

from conftest import REPO_ROOT
from pytest_sleepy.koans import load_corpus
from pytest_sleepy.corpus.proofs import PROOFS_FILE, Proof, ProofLedger, rustc_release
from pytest_sleepy.corpus.validation import check_koan
from pytest_sleepy.verify.sandbox import Toolchain
from pytest_sleepy.verify.verifier import VerificationCache, Verifier

CORPUS = load_corpus(REPO_ROOT / "koans")
EVAL = [k for k in CORPUS if k.split == "eval"]
TRAIN = [k for k in CORPUS if k.split == "train"]


def test_corpus_has_at_least_sixty_koans_and_twenty_five_patterns():
    assert len(CORPUS) >= 60
    assert len({k.pattern for k in CORPUS}) >= 25


def test_train_split_adds_lifetimes_type_mismatch_and_logic_bugs():
    families = Counter(k.family for k in TRAIN)
    assert families["lifetimes"] >= 1 and families["type_mismatch"] >= 1
    assert sum(k.is_logic_bug for k in TRAIN) >= 4


def test_every_eval_pattern_has_training_koans():
    assert {k.pattern for k in EVAL} <= {k.pattern for k in TRAIN}


def test_no_train_koan_repeats_an_eval_program():
    eval_code = {k.buggy.strip() for k in EVAL} | {k.fixed.strip() for k in EVAL}
    assert not [k.id for k in TRAIN if k.buggy.strip() in eval_code or k.fixed.strip() in eval_code]


def test_every_eval_koan_has_a_difficulty():
    assert [k.id for k in EVAL if k.difficulty is None] == []


def test_koans_are_multi_line_programs():
    assert min(len(k.buggy.strip().splitlines()) for k in CORPUS) >= 10


@pytest.fixture(scope="module")
def corpus_verifier(sandbox, tmp_path_factory):
    return Verifier(sandbox, VerificationCache(tmp_path_factory.mktemp("corpus-cache")))


# Proving every koan takes most of an hour on two cores. koans/proofs.json keeps each
# proof with what it depends on (corpus/proofs.py): koans whose proof no longer holds
# (a changed file, verifier or rustc) are proven here, and so is a sample of the rest,
# rotating daily, which must reproduce its recorded proof exactly.
RUSTC = rustc_release(Toolchain.detect().version)
LEDGER = ProofLedger.read(REPO_ROOT / "koans" / PROOFS_FILE, RUSTC)
UNPROVEN = [k for k in CORPUS if LEDGER.current(k, RUSTC) is None]
SAMPLE_SIZE = 12
SAMPLE_SEED = os.environ.get("SLEEPY_PROOF_SAMPLE_SEED", date.today().isoformat())
SAMPLE = sorted((k for k in CORPUS if k not in UNPROVEN),
                key=lambda k: hashlib.sha256(f"{SAMPLE_SEED}:{k.id}".encode()).hexdigest())[:SAMPLE_SIZE]


@pytest.mark.parametrize("koan", UNPROVEN + SAMPLE, ids=[k.id for k in UNPROVEN + SAMPLE])
def test_koan_is_proven(koan, corpus_verifier):
    """buggy fails as declared, fixed and every alternative pass, every decoy fails, a
    stubbed fix fails the hidden tests, and the tests kill 90% of an eval koan's mutants;
    a recorded proof reproduces exactly."""
    check = check_koan(koan, corpus_verifier, mutants=True, jobs=2)
    assert check.ok, "\n".join(check.problems)
    recorded = LEDGER.current(koan, RUSTC)
    if recorded is not None:
        # A mutant whose effect depends on thread timing (concurrency koans) may be
        # killed one run and not the next: the count of kills may move, nothing else.
        proof = Proof.of(check)
        assert dataclasses.replace(proof, killed=recorded.killed) == recorded, f"{koan.id}: the ledger says {recorded}"


# The `hints` strategy recommends concrete repairs; each must be one the koan accepts
# (the koan contract: no hidden rules). advice fragment -> the routes it recommends, each
# as a pattern that at least one accepted fix (the reference or an alternative) must
# show. The `?`-conversion advice offers `From` or `map_err` by what the error must
# carry, so either one satisfies it.
HINT_ROUTES = {
    "Return the owned value": [r"->[^{;]*\bString\b"],  # any return type holding an owned String
    "Implement `From<SourceError>`": [r"impl(?:<[^>]*>)?\s+From<|\.map_err\("],
}


def test_every_route_the_hints_recommend_for_an_eval_koan_is_accepted(corpus_verifier):
    import re

    from pytest_sleepy.strategies import load_strategies

    hints_module = load_strategies(REPO_ROOT / "strategies")["hints"].__class__.__module__
    hints_for = __import__(hints_module, fromlist=["hints_for"]).hints_for
    missing = []
    for koan in EVAL:
        verdict = corpus_verifier.verify_candidate(koan, koan.buggy)
        advice = hints_for(verdict.diagnostics, not verdict.passed and verdict.compiled)
        accepted = [koan.fixed, *(a.code for a in koan.alternatives)]
        for fragment, routes in HINT_ROUTES.items():
            if not any(fragment in a for a in advice):
                continue
            missing += [f"{koan.id}: hint '{fragment}' names a route no accepted fix takes ({route})"
                        for route in routes if not any(re.search(route, code) for code in accepted)]
    assert missing == []
