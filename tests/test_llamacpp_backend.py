"""The llamacpp backend's settings, files and identity (the live model: test_realmodel.py)."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from pytest_sleepy.models import ModelUnavailable, load_model
from pytest_sleepy.models.llamacpp import digest_cache_path, file_digest


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLEEPY_CACHE_DIR", str(tmp_path / "cache"))


def test_a_gguf_path_is_read_with_its_settings(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    model = load_model(f"llamacpp:{gguf}?n_ctx=2048&n_threads=1&n_gpu_layers=-1")
    assert (model.path, model.n_ctx, model.n_threads, model.n_gpu_layers) == (gguf, 2048, 1, -1)


def test_a_hub_file_is_owner_repo_and_file():
    model = load_model("llamacpp:Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
    assert (model.repo, model.filename) == ("Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")


@pytest.mark.parametrize("spec, message", [
    ("llamacpp:", "llamacpp needs a model name"),
    ("llamacpp:model.bin", "llamacpp needs a .gguf file"),
    ("llamacpp:x.gguf", "is no file here and not OWNER/REPO/FILE.gguf"),
    ("llamacpp:/m.gguf?n_ctx=lots", "n_ctx='lots'; use a whole number of at least 256"),
    ("llamacpp:/m.gguf?n_gpu_layers=-2", "n_gpu_layers='-2'"),
    ("llamacpp:/m.gguf?threads=2", "unknown setting 'threads' for llamacpp"),
])
def test_bad_specs_are_refused_by_name(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        load_model(spec)


def test_a_missing_file_is_a_preflight_error_naming_it(tmp_path):
    missing = tmp_path / "gone.gguf"
    with pytest.raises(ModelUnavailable, match=f"no GGUF file at '{missing}'"):
        load_model(f"llamacpp:{missing}").preflight()


def test_a_hub_file_missing_offline_says_how_to_download_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    model = load_model("llamacpp:someone/some-model-GGUF/model-q4.gguf")
    with pytest.raises(ModelUnavailable, match="`hf download someone/some-model-GGUF model-q4.gguf`"):
        model.preflight()


def test_the_identity_is_the_files_sha256_remembered_by_path_size_and_mtime(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"weights v1")
    assert load_model(f"llamacpp:{gguf}?n_ctx=1024").identity == (
        f"gguf-sha256:{hashlib.sha256(b'weights v1').hexdigest()}?n_ctx=1024")
    remembered = json.loads(digest_cache_path().read_text())
    assert list(remembered.values()) == [hashlib.sha256(b"weights v1").hexdigest()]
    # Same path, size and mtime: the remembered digest is used, the file is not read.
    key = next(iter(remembered))
    digest_cache_path().write_text(json.dumps({key: "remembered"}))
    assert file_digest(gguf) == "remembered"
    gguf.write_bytes(b"weights v2")  # another mtime (and content): hashed again
    os.utime(gguf, ns=(1, 2))
    assert file_digest(gguf) == hashlib.sha256(b"weights v2").hexdigest()


def test_an_adapter_request_is_refused(tmp_path):
    from pytest_sleepy.models import CompletionRequest, Message, ModelError

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ModelError, match="llamacpp takes no adapters"):
        load_model(f"llamacpp:{gguf}").complete(CompletionRequest((Message("user", "hi"),), adapter="lora:x"))


def test_a_missing_hub_file_also_says_how_to_name_a_relative_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelUnavailable, match=r"there is no file 'models/q4/model.gguf' here; write ./models/q4/model.gguf"):
        load_model("llamacpp:models/q4/model.gguf").preflight()
