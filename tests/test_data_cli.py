"""`sleepy variants` and `sleepy data sft|dpo|audit` end to end: real koans, the real
verifier, the leakage guard."""

from __future__ import annotations

import json
import re

import pytest

from pytest_sleepy.cli import main
from pytest_sleepy.training.records import read_records

from conftest import REPO_ROOT

KOANS = str(REPO_ROOT / "koans")


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def variants_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "variants.jsonl"
    assert main(["variants", "--koans", KOANS, "--koan", "bc_101", "--koan", "lg_101", "--per-koan", "3",
                 "--seed", "1", "-j", "2", "-o", str(path)]) == 0
    return path


def test_variants_writes_verified_variants_with_provenance(variants_file):
    records = read_records(variants_file, kinds=("variant",))
    assert len(records) == 6
    assert {r["source"] for r in records} == {"bc_101", "lg_101"}
    for record in records:
        assert record["split"] == "train" and record["leaks"] is False and record["seed"] == 1
        assert record["transformations"] and record["id"].startswith(record["source"] + "~")
        assert record["verified_by"]["rustc"].startswith("rustc ")


def test_variants_prints_drawn_kept_and_discarded_per_koan(capsys, tmp_path):
    status, out, _ = run(capsys, "variants", "--koans", KOANS, "--koan", "bc_101", "--per-koan", "2",
                         "-o", tmp_path / "v.jsonl")
    assert status == 0
    assert out.splitlines()[0].split()[:6] == ["koan", "drawn", "kept", "duplicates", "discarded", "refused"]
    assert "2 variants of 1 koans written to" in out


def test_variants_of_eval_koans_are_refused_unless_the_user_knows_it_leaks(capsys, tmp_path):
    status, _, err = run(capsys, "variants", "--koans", KOANS, "--split", "eval", "-o", tmp_path / "v.jsonl")
    assert status == 2 and "--i-know-this-leaks" in err
    assert not (tmp_path / "v.jsonl").exists()


def test_variants_made_from_eval_koans_on_purpose_are_marked(capsys, tmp_path):
    status, _, _ = run(capsys, "variants", "--koans", KOANS, "--split", "eval", "--i-know-this-leaks",
                       "--koan", "bc_001", "--per-koan", "1", "-o", tmp_path / "v.jsonl")
    assert status == 0
    [record] = read_records(tmp_path / "v.jsonl", kinds=("variant",))
    assert record["leaks"] is True and record["split"] == "eval"


def test_sft_records_come_from_the_variants_with_real_diagnostics(capsys, variants_file, tmp_path):
    status, out, _ = run(capsys, "data", "sft", variants_file, "--koans", KOANS, "-o", tmp_path / "sft.jsonl")
    assert status == 0 and "6 records written" in out
    records = read_records(tmp_path / "sft.jsonl")
    bc = next(r for r in records if r["metadata"]["source_koan"] == "bc_101")
    assert "error[E0" in bc["messages"][1]["content"] and bc["messages"][2]["role"] == "assistant"
    logic = next(r for r in records if r["metadata"]["source_koan"] == "lg_101")
    assert "hidden tests fail" in logic["messages"][1]["content"]


def test_sft_refuses_records_marked_as_leaks(capsys, tmp_path):
    run(capsys, "variants", "--koans", KOANS, "--split", "eval", "--i-know-this-leaks", "--koan", "bc_001",
        "--per-koan", "1", "-o", tmp_path / "v.jsonl")
    status, out, _ = run(capsys, "data", "sft", tmp_path / "v.jsonl", "--koans", KOANS, "-o", tmp_path / "sft.jsonl")
    assert status == 1 and "made from eval koans" in out and "0 records written" in out


def test_sft_weights_follow_a_run_file(capsys, variants_file, tmp_path):
    from pytest_sleepy.results import Outcome, RunFile, write_run_file

    failed = Outcome(koan="bc_101", strategy="baseline", sample=0, seed=0, status="failed", reason="x", steps=3)
    write_run_file(tmp_path / "run.json", RunFile("r", {}, [failed], {}))
    run(capsys, "data", "sft", variants_file, "--koans", KOANS, "--run", tmp_path / "run.json", "-o", tmp_path / "s.jsonl")
    classes = {(r["metadata"]["source_koan"], r["metadata"]["weight_class"]) for r in read_records(tmp_path / "s.jsonl")}
    assert classes == {("bc_101", "critical"), ("lg_101", "good")}


def test_audit_reports_no_leak_for_train_variants_and_the_coverage(capsys, variants_file, tmp_path):
    run(capsys, "data", "sft", variants_file, "--koans", KOANS, "-o", tmp_path / "sft.jsonl")
    status, out, _ = run(capsys, "data", "audit", tmp_path / "sft.jsonl", "--koans", KOANS)
    assert status == 0
    assert "over threshold               0" in out
    assert re.search(r"\buse_after_move +3\b", out)
    assert "Uncovered eval patterns" in out


def test_audit_flags_a_leaked_record_and_exits_1(capsys, tmp_path):
    import tomllib

    eval_koan = tomllib.loads((REPO_ROOT / "koans" / "borrow_checker" / "bc_001.toml").read_text())
    record = {"kind": "sft", "messages": [], "code": {"buggy": eval_koan["buggy"], "fixed": eval_koan["fixed"]},
              "metadata": {"weight_class": "good", "pattern": "use_after_move", "source_koan": "smuggled"}}
    (tmp_path / "r.jsonl").write_text(json.dumps(record) + "\n")
    status, out, _ = run(capsys, "data", "audit", tmp_path / "r.jsonl", "--koans", KOANS)
    assert status == 1 and "bc_001" in out and "over threshold               1" in out


def test_dpo_pairs_answers_from_episodes_of_train_koans(capsys, tmp_path, shop_koan):
    from pytest_sleepy.corpus.importers import koan_to_toml

    corpus = tmp_path / "koans" / "borrow_checker"
    corpus.mkdir(parents=True)
    (corpus / "shop_001.toml").write_text(koan_to_toml(shop_koan))
    base = {"prompt_hash": "h", "messages": [{"role": "user", "content": "fix"}], "koan": "shop_001", "run_id": "r",
            "strategy": "baseline", "sample": 0, "step": 1}
    episodes = [base | {"response": "```rust\nfn good() {}\n```", "code": "fn good() {}", "verdict": {"passed": True},
                        "model": "a"},
                base | {"response": "no idea", "code": None, "verdict": None, "model": "b"}]
    (tmp_path / "ep.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    status, out, _ = run(capsys, "data", "dpo", tmp_path / "ep.jsonl", "--koans", tmp_path / "koans",
                         "-o", tmp_path / "dpo.jsonl")
    assert status == 0 and "1 records written" in out
    [record] = read_records(tmp_path / "dpo.jsonl")
    assert (record["chosen"], record["rejected"]) == ("```rust\nfn good() {}\n```", "no idea")


def test_dpo_refuses_pairs_from_eval_koans(capsys, tmp_path):
    base = {"prompt_hash": "h", "messages": [{"role": "user", "content": "fix"}], "koan": "bc_001", "run_id": "r",
            "strategy": "baseline", "sample": 0, "step": 1}
    episodes = [base | {"response": "a", "code": "a", "verdict": {"passed": True}, "model": "a"},
                base | {"response": "b", "code": "b", "verdict": {"passed": False}, "model": "b"}]
    (tmp_path / "ep.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    status, out, _ = run(capsys, "data", "dpo", tmp_path / "ep.jsonl", "--koans", KOANS, "-o", tmp_path / "dpo.jsonl")
    assert status == 1 and "koan bc_001 is in the eval split" in out
