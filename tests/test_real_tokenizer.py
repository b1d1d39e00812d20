"""SFT records on the real Qwen2.5-Coder tokenizer and chat template, read from the GGUF.

Loss masking was built against the tiny test tokenizer; these tests prove it on the
tokenizer the seed documents evaluated: every train koan's record is aligned (the
prompt rendered for inference is a prefix of the rendered conversation), and the
masked part is exactly what inference renders.
"""

from __future__ import annotations

import pytest

from conftest import REPO_ROOT
from pytest_sleepy.koans import load_corpus
from pytest_sleepy.strategies import load_strategies
from pytest_sleepy.training.lora import IGNORE_INDEX, _encode
from pytest_sleepy.training.records import sft_record
from realmodel import RealModelUnavailable, qwen_gguf

pytestmark = pytest.mark.realmodel
TRAIN = [k for k in load_corpus(REPO_ROOT / "koans") if k.split == "train"]


@pytest.fixture(scope="module")
def qwen_tokenizer():
    from transformers import AutoTokenizer

    try:
        path = qwen_gguf()
    except RealModelUnavailable as error:
        pytest.skip(str(error))
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="module")
def train_records(qwen_tokenizer, sandbox, tmp_path_factory):
    from pytest_sleepy.verify import VerificationCache, Verifier

    verifier = Verifier(sandbox, VerificationCache(tmp_path_factory.mktemp("verdicts")))
    strategies = load_strategies(REPO_ROOT / "strategies")
    hints = strategies["hints"]
    hints.prepare(TRAIN, verifier.verify_candidate)
    records = []
    for koan in TRAIN:
        verdict = verifier.verify_candidate(koan, koan.buggy)
        for strategy in (strategies["baseline"], hints):
            records.append(sft_record(koan, verdict, strategy, source=koan.id, variant=None))
    return records


def test_the_gguf_carries_the_qwen_chat_template(qwen_tokenizer):
    assert qwen_tokenizer.eos_token == "<|im_end|>"
    assert "<|im_start|>assistant" in qwen_tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)


def test_every_train_koan_gives_an_aligned_sft_record(qwen_tokenizer, train_records):
    unaligned = [r["metadata"]["source_koan"] for r in train_records
                 if not _encode(qwen_tokenizer, r, max_length=8192).aligned]
    assert len(train_records) == 2 * len(TRAIN) and unaligned == []


def test_the_masked_prompt_is_exactly_what_inference_renders(qwen_tokenizer, train_records):
    for record in train_records:
        encoded = _encode(qwen_tokenizer, record, max_length=8192)
        masked = encoded.labels.index(next(label for label in encoded.labels if label != IGNORE_INDEX))
        prompt = record["messages"][:-1]
        inference_ids = qwen_tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, tokenize=True, return_dict=True, sanitize_control_tokens=True)["input_ids"]
        assert encoded.ids[:masked] == list(inference_ids), record["metadata"]["source_koan"]
        inference_text = qwen_tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        assert qwen_tokenizer.decode(encoded.ids[:masked]) == inference_text
        answer = qwen_tokenizer.decode(encoded.ids[masked:])
        assert answer == record["messages"][-1]["content"] + "<|im_end|>\n"
