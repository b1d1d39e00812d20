"""Adapter switching in the hf backend: one base model in memory, peft adapters
switched per request, the base weights never touched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from tiny_model import build_tiny_qwen2  # noqa: E402

from pytest_sleepy.models import CompletionRequest, GenerationSettings, Message, ModelError, load_model  # noqa: E402

CHAT = (Message("system", "You repair Rust programs."), Message("user", "fn main() { let v = vec![1]; }"))
GREEDY = GenerationSettings(max_tokens=16)


def ask(adapter=None) -> CompletionRequest:
    return CompletionRequest(messages=CHAT, settings=GREEDY, adapter=adapter)


def write_adapter(base: Path, out: Path, seed: int) -> Path:
    """A peft LoRA with random A and B (peft's default B = 0 would change nothing)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft.get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("adapters")
    base = build_tiny_qwen2(root / "base", seed=0)
    return {"base": base, "one": write_adapter(base, root / "one", 1), "two": write_adapter(base, root / "two", 2)}


def base_weights_digest(hf_model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(hf_model._model.state_dict().items()):
        if "lora_" not in name:
            digest.update(name.replace("base_model.model.", "").replace(".base_layer", "").encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_an_adapter_changes_the_answer(tiny):
    model = load_model(f"hf:{tiny['base']}")
    model.register_adapter("lora:one", tiny["one"])
    assert model.complete(ask("lora:one")).text != model.complete(ask()).text


def test_switching_adapters_leaves_the_base_weights_bit_identical(tiny):
    model = load_model(f"hf:{tiny['base']}")
    model.complete(ask())
    before = base_weights_digest(model)
    base_answer = model.complete(ask()).text
    model.register_adapter("lora:one", tiny["one"])
    model.register_adapter("lora:two", tiny["two"])
    for adapter in ("lora:one", "lora:two", None, "lora:one", None):
        model.complete(ask(adapter))
    assert base_weights_digest(model) == before
    assert model.complete(ask()).text == base_answer


def test_the_answer_with_an_adapter_equals_the_exported_adapter_loaded_alone(tiny):
    from transformers import AutoModelForCausalLM

    model = load_model(f"hf:{tiny['base']}")
    model.register_adapter("lora:one", tiny["one"])
    model.register_adapter("lora:two", tiny["two"])
    model.complete(ask("lora:two"))  # a second adapter loaded beside it must not interfere
    switched = model.complete(ask("lora:one"))

    alone = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny["base"]), tiny["one"]).eval()
    inputs = model.encode_prompt(CHAT)
    with torch.inference_mode():
        output = alone.generate(**inputs, max_new_tokens=16, do_sample=False,
                                pad_token_id=model._tokenizer.pad_token_id)
    expected = model._tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert switched.text == expected


def test_two_adapters_answer_differently(tiny):
    model = load_model(f"hf:{tiny['base']}")
    model.register_adapter("lora:one", tiny["one"])
    model.register_adapter("lora:two", tiny["two"])
    assert model.complete(ask("lora:one")).text != model.complete(ask("lora:two")).text


def test_registering_a_folder_that_is_not_an_adapter_is_refused(tiny, tmp_path):
    model = load_model(f"hf:{tiny['base']}")
    with pytest.raises(ValueError, match="holds no adapter_config.json"):
        model.register_adapter("lora:x", tmp_path)


def test_an_adapter_that_fails_to_load_is_a_model_error(tiny, tmp_path):
    (tmp_path / "adapter_config.json").write_text("{ not json")
    model = load_model(f"hf:{tiny['base']}")
    model.register_adapter("lora:broken", tmp_path)
    with pytest.raises(ModelError, match="cannot load adapter 'lora:broken'"):
        model.complete(ask("lora:broken"))
