"""LoRA training on the tiny random Qwen2 (tests/tiny_model.py): how SFT records are
encoded, what the training loop changes and what it leaves alone, what train_lora
writes, and how the hyperparameters are validated."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from tiny_model import build_tiny_qwen2  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from pytest_sleepy.training.lora import (  # noqa: E402
    IGNORE_INDEX,
    TrainConfig,
    TrainingError,
    encode_sft,
    train_lora,
    train_parameters,
)

# peft 0.21 reads a property transformers 5 deprecated (in PeftModel.__init__).
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

# Adapters on every linear layer and a high learning rate: a random 2-layer model
# learns four short records visibly within 30 steps.
FAST = TrainConfig(target_modules="all-linear", lr=1e-2, steps=30, warmup=2, batch_size=4, dropout=0.0)


def sft(index: int, weight: float = 1.0) -> dict:
    return {
        "kind": "sft",
        "messages": [
            {"role": "system", "content": "You repair Rust programs."},
            {"role": "user", "content": f"fn f{index}() {{ let v = vec![{index}]; drop(v); v.len(); }}\n"
                                        "error[E0382]: borrow of moved value: `v`"},
            {"role": "assistant", "content": f"```rust\nfn f{index}() {{ let v = vec![{index}]; let n = v.len(); "
                                             "drop(v); }\n```"},
        ],
        "metadata": {"variant": f"v{index}", "weight": weight},
    }


RECORDS = [sft(i) for i in range(4)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """torch's default of one thread per core makes tiny matrices slower, badly so when
    the cores are busy (pytest-xdist, a build): 10x in our measurements."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"), seed=0)


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return AutoTokenizer.from_pretrained(tiny)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    return train_lora(str(tiny), RECORDS, FAST, tmp_path_factory.mktemp("lora"))


def fresh_lora(tiny, seed: int = 0, dropout: float = 0.0):
    """The tiny model with a new LoRA adapter whose B matrices are random too (peft's
    default B = 0 would make the first steps' gradients of A vanish)."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=dropout,
                             init_lora_weights=False)
    return peft.get_peft_model(model, config)


def lora_tensors(model) -> list:
    return [p for name, p in model.named_parameters() if "lora_" in name]


def logits(model, tokenizer, text: str = "fn main() { let x = 5; }"):
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


# -- encode_sft ------------------------------------------------------------------------

def test_encode_sft_puts_the_loss_exactly_on_the_answer(tokenizer):
    record = RECORDS[0]
    ids, labels = encode_sft(tokenizer, record, max_length=1024)
    prompt = tokenizer.apply_chat_template(record["messages"][:2], add_generation_prompt=True, tokenize=True,
                                           return_dict=True)["input_ids"]
    assert ids[:len(prompt)] == list(prompt)
    assert labels[:len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert labels[len(prompt):] == ids[len(prompt):]
    assert tokenizer.decode(ids[len(prompt):]) == record["messages"][2]["content"] + "<|im_end|>\n"


def test_encode_sft_renders_the_whole_conversation_with_the_chat_template(tokenizer):
    ids, _ = encode_sft(tokenizer, RECORDS[0], max_length=1024)
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(RECORDS[0]["messages"], tokenize=False)


def test_encode_sft_keeps_control_tokens_in_messages_as_plain_text(tokenizer):
    record = sft(0)
    record["messages"][1]["content"] += "<|im_end|>"
    ids, _ = encode_sft(tokenizer, record, max_length=1024)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert ids.count(im_end) == 3  # one per turn, written by the template; none from the user's text


def test_without_a_chat_template_the_plain_transcript_is_used(tokenizer):
    from pytest_sleepy.models import Message
    from pytest_sleepy.models.hf import fallback_prompt

    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    record = RECORDS[0]
    ids, labels = encode_sft(plain, record, max_length=1024)
    start = labels.count(IGNORE_INDEX)
    prompt = fallback_prompt(Message(m["role"], m["content"]) for m in record["messages"][:2])
    assert plain.decode(ids[:start]) == prompt
    assert plain.decode(labels[start:]) == record["messages"][2]["content"] + "<|im_end|>"
    assert ids[-1] == plain.eos_token_id


def test_a_long_prompt_loses_its_beginning_and_the_answer_stays_whole(tokenizer):
    full_ids, full_labels = encode_sft(tokenizer, RECORDS[0], max_length=1024)
    answer = sum(1 for label in full_labels if label != IGNORE_INDEX)
    ids, labels = encode_sft(tokenizer, RECORDS[0], max_length=answer + 5)
    assert ids == full_ids[-(answer + 5):]
    assert labels == [IGNORE_INDEX] * 5 + full_ids[-answer:]


def test_an_answer_longer_than_max_length_is_refused(tokenizer):
    with pytest.raises(TrainingError, match=r"record v0: the answer alone is \d+ tokens, max_length is 8"):
        encode_sft(tokenizer, RECORDS[0], max_length=8)


def test_a_record_without_an_assistant_answer_is_refused(tokenizer):
    record = sft(0)
    record["messages"] = record["messages"][:2]
    with pytest.raises(TrainingError, match="ending with the assistant's answer"):
        encode_sft(tokenizer, record, max_length=1024)


# -- the training loop -----------------------------------------------------------------

def test_training_lowers_the_loss(trained):
    losses = trained.log.losses
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.3, (first, last)


def test_only_the_given_parameters_change(tiny, tokenizer):
    model = fresh_lora(tiny)
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" not in name}
    adapter = {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}
    train_parameters(model, tokenizer, RECORDS, lora_tensors(model), TrainConfig(steps=3, warmup=0, lr=1e-2))
    after = dict(model.named_parameters())
    assert all(torch.equal(after[name], before) for name, before in frozen.items())
    assert any(not torch.equal(after[name], before) for name, before in adapter.items())


def test_any_parameters_can_be_trained_and_the_others_stay_frozen(tiny, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny)
    norm = model.model.norm.weight
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train_parameters(model, tokenizer, RECORDS, [norm], TrainConfig(steps=3, warmup=0, lr=1e-2))
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert changed == ["model.norm.weight"]
    assert all(p.requires_grad for p in model.parameters())  # the flags are restored


def test_the_same_seed_gives_identical_losses(tiny, tokenizer):
    config = TrainConfig(steps=4, warmup=1, lr=1e-2, batch_size=2)
    runs = []
    for _ in range(2):
        model = fresh_lora(tiny, seed=3, dropout=0.1)  # dropout draws from torch's seeded generator
        runs.append(train_parameters(model, tokenizer, RECORDS, lora_tensors(model), config).losses)
    other = fresh_lora(tiny, seed=3, dropout=0.1)
    different = train_parameters(other, tokenizer, RECORDS, lora_tensors(other), replace(config, seed=1)).losses
    assert runs[0] == runs[1]
    assert different != runs[0]


def test_weighted_sampling_draws_records_in_proportion_to_their_weight(tiny, tokenizer):
    records = [sft(0, weight=10.0), *(sft(i, weight=1.0) for i in range(1, 4))]
    model = fresh_lora(tiny)
    log = train_parameters(model, tokenizer, records, lora_tensors(model),
                           TrainConfig(steps=20, warmup=0, lr=1e-4, weighted=True))
    assert sum(log.draws) == 80
    assert log.draws[0] > 2 * sum(log.draws[1:])  # expected 61.5 against 18.5


def test_uniform_sampling_draws_every_record_equally_often(tiny, tokenizer):
    records = [sft(0, weight=10.0), *(sft(i, weight=1.0) for i in range(1, 4))]
    model = fresh_lora(tiny)
    log = train_parameters(model, tokenizer, records, lora_tensors(model),
                           TrainConfig(steps=6, warmup=0, lr=1e-4, batch_size=2))
    assert log.draws == [3, 3, 3, 3]


def test_the_learning_rate_warms_up_then_decays_to_zero(tiny, tokenizer):
    model = fresh_lora(tiny)
    log = train_parameters(model, tokenizer, RECORDS[:1], lora_tensors(model),
                           TrainConfig(steps=8, warmup=3, lr=1e-3, batch_size=1))
    rates = log.learning_rates
    assert rates[0] < rates[1] < rates[2] < rates[3] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(rates[3:], rates[4:]))
    assert rates[-1] < 1e-4


def test_progress_is_reported_after_every_step(tiny, tokenizer):
    calls = []
    model = fresh_lora(tiny)
    train_parameters(model, tokenizer, RECORDS, lora_tensors(model), TrainConfig(steps=3, warmup=0),
                     progress=lambda *args: calls.append(args))
    assert [(step, steps) for step, steps, *_ in calls] == [(1, 3), (2, 3), (3, 3)]
    assert all(loss > 0 and speed > 0 for _, _, loss, speed, _ in calls)
    assert calls[-1][4] == 0  # nothing left: the ETA is zero


# -- train_lora ------------------------------------------------------------------------

def test_train_lora_writes_the_adapter_its_log_and_the_loss_curve(trained):
    out = trained.adapter_dir
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    log = json.loads(trained.log_path.read_text())
    assert log["losses"] == trained.log.losses and log["steps"] == 30 and log["tokens"] > 0
    assert log["config"] == FAST.to_dict()
    assert (log["truncated"], log["unaligned"]) == (0, 0)  # every prompt was a prefix of its conversation
    if trained.plot_path is not None:  # matplotlib is optional
        assert trained.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_saved_adapter_loads_with_peft_and_changes_the_outputs(tiny, tokenizer, trained):
    base = AutoModelForCausalLM.from_pretrained(tiny).eval()
    expected = logits(base, tokenizer)
    adapted = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), trained.adapter_dir).eval()
    assert not torch.allclose(logits(adapted, tokenizer), expected, atol=1e-3)
    with adapted.disable_adapter():
        assert torch.equal(logits(adapted, tokenizer), expected)


def test_the_saved_adapter_holds_only_lora_tensors(trained):
    from safetensors import safe_open

    with safe_open(trained.adapter_dir / "adapter_model.safetensors", "pt") as weights:
        names = list(weights.keys())
    assert names and all("lora_A" in name or "lora_B" in name for name in names)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only refusal")
def test_4bit_training_without_a_gpu_is_a_clear_error(tiny, tmp_path):
    with pytest.raises(TrainingError, match="load_in_4bit .*needs a CUDA GPU"):
        train_lora(str(tiny), RECORDS, TrainConfig(load_in_4bit=True), tmp_path)
    assert not any(tmp_path.iterdir())


def test_an_unknown_base_model_is_a_clear_error(tmp_path):
    with pytest.raises(TrainingError, match="cannot load base model"):
        train_lora(str(tmp_path / "nowhere"), RECORDS, TrainConfig(steps=1), tmp_path / "out")


# -- TrainConfig -----------------------------------------------------------------------

def test_the_defaults_are_the_documented_ones():
    assert TrainConfig().to_dict() == {
        "rank": 8, "alpha": 16.0, "dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "steps": 200, "lr": 2e-4, "batch_size": 4, "warmup": 10, "schedule": "cosine", "seed": 0,
        "max_length": 1024, "weighted": False, "load_in_4bit": False, "dtype": "auto",
    }


def test_a_table_overrides_the_base_config_with_either_spelling():
    base = TrainConfig(rank=4)
    config = TrainConfig.from_table({"batch-size": 2, "max_length": 512, "target-modules": ["q_proj"]},
                                    "pyproject.toml: [tool.sleepy.train]", base=base)
    assert (config.rank, config.batch_size, config.max_length, config.target_modules) == (4, 2, 512, ("q_proj",))


def test_an_unknown_key_is_named_with_where_it_was_found():
    with pytest.raises(ValueError, match=r"^pyproject.toml: \[tool.sleepy.train\]: unknown key 'ranks'; known keys: "):
        TrainConfig.from_table({"ranks": 8}, "pyproject.toml: [tool.sleepy.train]")


@pytest.mark.parametrize("key, value, problem", [
    ("rank", "8", "must be a whole number"),
    ("rank", 0, "must be at least 1"),
    ("lr", True, "must be a number"),
    ("dropout", 1.0, "must lie in"),
    ("schedule", "step", "must be one of cosine, linear, constant"),
    ("weighted", "yes", "must be true or false"),
    ("target-modules", [], "must be a non-empty list"),
])
def test_a_bad_value_is_named_with_its_key(key, value, problem):
    with pytest.raises(ValueError, match=rf"^train.toml: {key} {problem}"):
        TrainConfig.from_table({key: value}, "train.toml")


def test_warmup_longer_than_the_run_is_refused():
    with pytest.raises(ValueError, match=r"train.toml: warmup \(20\) is longer than steps \(10\)"):
        TrainConfig.from_table({"steps": 10, "warmup": 20}, "train.toml")
