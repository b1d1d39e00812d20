"""Training records (training/records.py): SFT from real diagnostics, preference pairs
from episodes, weight classes and the weighted sampler."""

from __future__ import annotations

import json
import math

import pytest

from pytest_sleepy.results import Outcome
from pytest_sleepy.strategies import StepView, load_strategies
from pytest_sleepy.training.records import (WEIGHT_CLASSES, RecordFileError, WeightedSampler, dpo_records,
                                            read_records, sft_record, weight_class_for, write_records)

from conftest import BUGGY_SHOP, FIXED_SHOP, REPO_ROOT

BASELINE = load_strategies(REPO_ROOT / "strategies")["baseline"]


def outcome(solved: bool, steps: int = 1) -> Outcome:
    return Outcome(koan="k", strategy="baseline", sample=0, seed=0, status="passed" if solved else "failed",
                   reason="", steps=steps)


def test_an_sft_record_is_the_inference_prompt_answered_with_the_reference_fix(shop_koan, verifier):
    verdict = verifier.verify_candidate(shop_koan, BUGGY_SHOP)
    record = sft_record(shop_koan, verdict, BASELINE, source="shop_001", variant="shop_001~ab12")
    roles = [m["role"] for m in record["messages"]]
    assert roles == ["system", "user", "assistant"]
    inference = BASELINE.messages(StepView(step=1, code=BUGGY_SHOP, verdict=verdict))
    assert [m["content"] for m in record["messages"][:2]] == [m.content for m in inference]
    assert record["messages"][2]["content"] == f"```rust\n{FIXED_SHOP.strip()}\n```"


def test_an_sft_prompt_carries_the_real_cleaned_rustc_diagnostics(shop_koan, verifier):
    record = sft_record(shop_koan, verifier.verify_candidate(shop_koan, BUGGY_SHOP), BASELINE, source="s", variant=None)
    user = record["messages"][1]["content"]
    assert "error[E0382]: borrow of moved value: `items`" in user and "--> candidate.rs:" in user
    assert record["metadata"]["error_codes"] == ["E0382"]


def test_an_sft_record_carries_its_metadata_and_weight(shop_koan, verifier):
    verdict = verifier.verify_candidate(shop_koan, BUGGY_SHOP)
    record = sft_record(shop_koan, verdict, BASELINE, source="shop_001", variant="v1", transformations=["reorder items"],
                        seed=7, weight_class="critical")
    expected = {"source_koan": "shop_001", "variant": "v1", "pattern": "use_after_move", "family": "borrow_checker",
                "split": "train", "seed": 7, "transformations": ["reorder items"], "weight_class": "critical",
                "weight": 10.0, "leaks": False}
    assert {key: record["metadata"][key] for key in expected} == expected


def test_buggy_code_that_passes_makes_no_record(shop_koan, verifier):
    with pytest.raises(ValueError, match="nothing to learn"):
        sft_record(shop_koan, verifier.verify_candidate(shop_koan, FIXED_SHOP), BASELINE, source="s", variant=None)


@pytest.mark.parametrize("outcomes, expected", [
    ([], "good"),
    ([outcome(True, steps=1)], "good"),
    ([outcome(True, steps=3)], "medium"),
    ([outcome(False, steps=3)], "critical"),
    ([outcome(True), outcome(False)], "critical"),
])
def test_the_default_weight_class_follows_how_the_model_did(outcomes, expected):
    assert weight_class_for(outcomes) == expected


def test_weight_classes_are_ten_three_and_one():
    assert WEIGHT_CLASSES == {"critical": 10.0, "medium": 3.0, "good": 1.0}


def episode(response, passed, *, prompt_hash="h1", koan="shop_001", code="x", step=1, model="m"):
    return {"prompt_hash": prompt_hash, "messages": [{"role": "user", "content": "fix"}], "response": response,
            "code": code, "verdict": {"passed": passed}, "koan": koan, "run_id": "r", "model": model,
            "strategy": "baseline", "sample": 0, "step": step}


def test_preference_pairs_join_a_verified_and_a_failed_answer_to_the_same_prompt(shop_koan):
    records = dpo_records([episode("good", True), episode("bad", False, model="other"), episode("alone", True, prompt_hash="h2")],
                          {"shop_001": shop_koan})
    assert len(records) == 1
    [record] = records
    assert (record["chosen"], record["rejected"]) == ("good", "bad")
    assert record["metadata"]["weight_class"] == "critical" and record["metadata"]["pattern"] == "use_after_move"
    assert record["metadata"]["rejected_from"]["model"] == "other"


def test_identical_answers_make_one_pair_and_pairs_per_prompt_are_capped(shop_koan):
    episodes = [episode("good", True), episode("good", True)] + [episode(f"bad {i}", False) for i in range(9)]
    records = dpo_records(episodes, {"shop_001": shop_koan}, max_pairs_per_prompt=4)
    assert len(records) == 4 and {r["chosen"] for r in records} == {"good"}


def test_the_sampler_draws_in_proportion_to_weight():
    records = [{"metadata": {"weight": w, "name": n}} for n, w in (("critical", 10.0), ("medium", 3.0), ("good", 1.0))]
    draws = 28_000
    counts = {n: 0 for n in ("critical", "medium", "good")}
    for record in WeightedSampler(records, seed=1).draw(draws):
        counts[record["metadata"]["name"]] += 1
    for name, weight in (("critical", 10), ("medium", 3), ("good", 1)):
        p = weight / 14
        # Binomial count: within 5 standard deviations (a false alarm ~ 1 in 1.7 million).
        assert abs(counts[name] - draws * p) < 5 * math.sqrt(draws * p * (1 - p)), counts


def test_the_sampler_is_reproducible_for_a_seed():
    records = [{"metadata": {"weight": w}, "i": i} for i, w in enumerate((1.0, 3.0, 10.0))]
    assert WeightedSampler(records, 5).draw(50) == WeightedSampler(records, 5).draw(50)


def test_the_sampler_refuses_nothing_or_weightless_records():
    with pytest.raises(ValueError, match="empty"):
        WeightedSampler([])
    with pytest.raises(ValueError, match="positive"):
        WeightedSampler([{"metadata": {"weight": 0}}])


def test_records_round_trip_through_a_file(tmp_path):
    record = {"kind": "sft", "messages": [], "code": {}, "metadata": {"weight_class": "medium", "weight": 3.0}}
    assert write_records(tmp_path / "r.jsonl", [record]) == 1
    assert read_records(tmp_path / "r.jsonl") == [record]


def test_a_record_may_override_its_class_and_the_weight_follows_it(tmp_path):
    line = {"kind": "sft", "messages": [], "code": {}, "metadata": {"weight_class": "critical", "weight": 1.0}}
    (tmp_path / "r.jsonl").write_text(json.dumps(line) + "\n")
    assert read_records(tmp_path / "r.jsonl")[0]["metadata"]["weight"] == 10.0


def test_a_refused_record_stops_the_write_before_anything_is_written(tmp_path):
    def refuse(record, label):
        raise ValueError(f"{label}: leaks")

    record = {"kind": "sft", "messages": [], "code": {}, "metadata": {"weight_class": "good", "source_koan": "bc_001"}}
    with pytest.raises(ValueError, match=r"record 1 \(bc_001\): leaks"):
        write_records(tmp_path / "r.jsonl", [record], check=refuse)
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.parametrize("line, complaint", [
    ("{ torn", "line 1: not JSON"),
    ('{"kind": "poem"}', "line 1: field 'kind' must be one of sft, dpo, variant"),
    ('{"kind": "sft", "metadata": {"weight_class": "huge"}}', "line 1: field 'metadata.weight_class'"),
])
def test_a_malformed_record_file_names_the_line_and_field(tmp_path, line, complaint):
    (tmp_path / "r.jsonl").write_text(line + "\n")
    with pytest.raises(RecordFileError, match=complaint):
        read_records(tmp_path / "r.jsonl")
