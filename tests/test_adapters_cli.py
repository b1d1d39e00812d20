"""`sleepy adapters list|show|delete|export` over a real artifact store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_sleepy.cli import main
from pytest_sleepy.training.artifacts import ArtifactStore

# peft 0.21 reads a property transformers 5 deprecated (in PeftModel.__init__).
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def material(seed: int = 0) -> dict:
    return {"base_model": "sha256:tiny?dtype=fp32", "base_name": "tiny-base", "records": "sha256:r:4",
            "hyperparameters": {"rank": 4}, "seed": seed, "version": "0.1.0"}


def fake_build(folder: Path) -> dict:
    (folder / "weights.bin").write_bytes(b"x" * 2048)
    return {"metrics": {"final_loss": 1.25}}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny Qwen2 without a tokenizer: enough for peft to save and load an adapter."""
    torch = pytest.importorskip("torch")
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=32)
    directory = tmp_path_factory.mktemp("tiny-base")
    Qwen2ForCausalLM(config).save_pretrained(directory)
    return directory


def peft_build(base: Path):
    def build(folder: Path) -> dict:
        import peft
        import torch
        from transformers import AutoModelForCausalLM

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(base)
        config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        peft.get_peft_model(model, config).save_pretrained(folder)
        (folder / "train_log.json").write_text("{}")
        return {"metrics": {"final_loss": 0.5}}
    return build


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def test_list_shows_key_kind_maker_base_creation_and_size(capsys, store):
    artifact = store.get_or_create("lora", material(), fake_build, made_by="lora-all")
    status, out, _ = run(capsys, "adapters", "list", "--artifacts", store.root)
    assert status == 0
    header, _, row, *_ = out.splitlines()
    assert header.split() == ["key", "kind", "made", "by", "base", "model", "created", "size"]
    assert row.split()[:4] == [artifact.key[:12], "lora", "lora-all", "tiny-base"]
    assert row.split()[4] == artifact.created and row.endswith("2.0 KB")
    assert f"1 artifact(s) in {store.root}" in out


def test_list_filters_by_kind(capsys, store):
    store.get_or_create("lora", material(0), fake_build)
    share = store.get_or_create("share", material(1), fake_build)
    status, out, _ = run(capsys, "adapters", "list", "--kind", "share", "--artifacts", store.root)
    assert status == 0 and share.key[:12] in out and "1 artifact(s)" in out


def test_list_of_an_empty_store_says_so(capsys, store):
    status, out, _ = run(capsys, "adapters", "list", "--artifacts", store.root)
    assert status == 0 and out.strip() == f"no artifacts in {store.root}"


def test_the_store_defaults_to_the_environment_variable(capsys, store, monkeypatch):
    artifact = store.get_or_create("lora", material(), fake_build)
    monkeypatch.setenv("SLEEPY_ARTIFACTS_DIR", str(store.root))
    status, out, _ = run(capsys, "adapters", "list")
    assert status == 0 and artifact.key[:12] in out


def test_show_prints_artifact_json(capsys, store):
    artifact = store.get_or_create("lora", material(), fake_build, made_by="lora-all")
    status, out, _ = run(capsys, "adapters", "show", artifact.key[:8], "--artifacts", store.root)
    assert status == 0
    assert json.loads(out) == json.loads((artifact.path / "artifact.json").read_text())


def test_show_of_an_unknown_key_is_a_usage_error(capsys, store):
    store.get_or_create("lora", material(), fake_build)
    missing = "g00d"  # not hexadecimal: no key starts with it
    status, out, err = run(capsys, "adapters", "show", missing, "--artifacts", store.root)
    assert status == 2 and out == ""
    assert f"no artifact whose key starts with '{missing}'" in err and "sleepy adapters list" in err


def test_delete_removes_the_artifact(capsys, store):
    artifact = store.get_or_create("lora", material(), fake_build)
    status, out, _ = run(capsys, "adapters", "delete", artifact.key[:12], "--artifacts", store.root)
    assert status == 0 and f"deleted lora artifact {artifact.key}" in out
    assert not artifact.path.exists() and store.list() == []


def test_export_writes_a_standalone_adapter_and_a_modelfile(capsys, store, tiny_base, tmp_path):
    artifact = store.get_or_create("lora", material(), peft_build(tiny_base), made_by="lora-all")
    status, out, _ = run(capsys, "adapters", "export", artifact.key[:12], "-o", tmp_path / "export",
                         "--name", "koan-fixer", "--artifacts", store.root)
    assert status == 0
    adapter = (tmp_path / "export" / "adapter").resolve()
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    modelfile = (tmp_path / "export" / "Modelfile").read_text().splitlines()
    assert "FROM tiny-base" in modelfile and f"ADAPTER {adapter}" in modelfile
    assert f"ollama create koan-fixer -f {adapter.parent / 'Modelfile'}" in out and "ollama run koan-fixer" in out
    assert "edit FROM" in out


def test_the_exported_adapter_loads_with_peft(capsys, store, tiny_base, tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    artifact = store.get_or_create("lora", material(), peft_build(tiny_base))
    assert run(capsys, "adapters", "export", artifact.key, "-o", tmp_path / "export", "--artifacts", store.root)[0] == 0
    model = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base),
                                           tmp_path / "export" / "adapter")
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_export_names_the_model_after_the_key_by_default(capsys, store, tiny_base, tmp_path):
    artifact = store.get_or_create("lora", material(), peft_build(tiny_base))
    _, out, _ = run(capsys, "adapters", "export", artifact.key[:6], "-o", tmp_path / "export",
                    "--artifacts", store.root)
    assert f"ollama run sleepy-{artifact.key[:12]}" in out


def test_export_of_an_artifact_that_is_no_peft_adapter_is_refused(capsys, store, tmp_path):
    artifact = store.get_or_create("lora", material(), fake_build)
    status, _, err = run(capsys, "adapters", "export", artifact.key[:12], "-o", tmp_path / "export",
                         "--artifacts", store.root)
    assert status == 2 and "holds no adapter_config.json" in err
    assert not (tmp_path / "export").exists()


def test_export_does_not_overwrite_an_earlier_export_without_force(capsys, store, tiny_base, tmp_path):
    artifact = store.get_or_create("lora", material(), peft_build(tiny_base))
    argv = ["adapters", "export", artifact.key[:12], "-o", tmp_path / "export", "--artifacts", store.root]
    assert run(capsys, *argv)[0] == 0
    status, _, err = run(capsys, *argv)
    assert status == 2 and "already holds an export" in err and "--force" in err
    assert run(capsys, *argv, "--force")[0] == 0
