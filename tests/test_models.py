"""Model specs, the record/replay cache and the rustfix backend."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from pytest_sleepy.models import (CacheMiss, Completion, CompletionCache, CompletionRequest, GenerationSettings,
                                  Message, ModelSpec, cached_complete, load_model, parse_model_spec)
from pytest_sleepy.models.rustfix import NO_SUGGESTION

from conftest import BUGGY_SHOP


@dataclass
class CountingModel:
    """Answers with a counter so that tests can tell fresh answers from replays."""

    identity: str = "counting@1"
    spec: ModelSpec = ModelSpec(text="counting", backend="counting", name="counting")
    calls: list = field(default_factory=list)

    def preflight(self):
        return None

    def complete(self, request):
        self.calls.append(request)
        return Completion(text=f"answer {len(self.calls)}", tokens_in=3, tokens_out=2, seconds=0.5)


def request(text="fix it", **settings) -> CompletionRequest:
    return CompletionRequest(messages=(Message("user", text),), settings=GenerationSettings(**settings))


# -- specs --------------------------------------------------------------------------


def test_a_spec_splits_backend_name_and_settings():
    spec = parse_model_spec("hf:Qwen/Qwen2.5-Coder-1.5B-Instruct?load_in_4bit=1")
    assert (spec.backend, spec.name, spec.option("load_in_4bit")) == ("hf", "Qwen/Qwen2.5-Coder-1.5B-Instruct", "1")


def test_an_ollama_name_keeps_its_tag():
    assert parse_model_spec("ollama:qwen2.5-coder:7b").name == "qwen2.5-coder:7b"


@pytest.mark.parametrize("text, complaint", [
    ("gpt4", "unknown backend 'gpt4'"),
    ("ollama", "ollama needs a model name"),
    ("hf:", "hf needs a model name"),
    ("rustfix:fast", "rustfix takes no name"),
])
def test_a_bad_spec_names_the_option_and_what_to_write(text, complaint):
    with pytest.raises(ValueError, match=f"--model={text!r}: {complaint}"):
        parse_model_spec(text)


def test_an_unknown_backend_setting_is_refused():
    with pytest.raises(ValueError, match="unknown setting 'aplicability' for rustfix; accepted: applicability="):
        load_model("rustfix?aplicability=maybe-incorrect")


# -- record / replay ------------------------------------------------------------------


def test_rw_records_then_replays_without_calling_the_model(tmp_path):
    model, cache = CountingModel(), CompletionCache(tmp_path, "rw")
    first = cached_complete(model, request(), cache)
    again = cached_complete(model, request(), cache)
    assert len(model.calls) == 1
    assert again.text == first.text == "answer 1" and again.cached and not first.cached
    assert again.model_identity == "counting@1"


@pytest.mark.parametrize("change", [
    dict(text="fix it differently"),
    dict(temperature=0.7),
    dict(seed=1),
    dict(max_tokens=10),
])
def test_any_change_of_messages_or_settings_is_a_new_entry(tmp_path, change):
    model, cache = CountingModel(), CompletionCache(tmp_path, "rw")
    cached_complete(model, request(), cache)
    cached_complete(model, request(**change), cache)
    assert len(model.calls) == 2


def test_the_adapter_is_part_of_the_key(tmp_path):
    model, cache = CountingModel(), CompletionCache(tmp_path, "rw")
    cached_complete(model, request(), cache)
    with_adapter = CompletionRequest(messages=request().messages, adapter="lora@abc")
    cached_complete(model, with_adapter, cache)
    assert len(model.calls) == 2


def test_new_weights_behind_the_same_name_are_not_served_old_answers(tmp_path):
    cache = CompletionCache(tmp_path, "rw")
    cached_complete(CountingModel(identity="counting@1"), request(), cache)
    retrained = CountingModel(identity="counting@2")
    answer = cached_complete(retrained, request(), cache)
    assert len(retrained.calls) == 1 and not answer.cached


def test_read_replays_without_asking_the_model_for_its_identity(tmp_path):
    cached_complete(CountingModel(), request(), CompletionCache(tmp_path, "rw"))

    class Unreachable:
        spec = CountingModel.spec

        @property
        def identity(self):
            raise AssertionError("replay must not contact the model")

        def complete(self, request):
            raise AssertionError("replay must not contact the model")

    answer = cached_complete(Unreachable(), request(), CompletionCache(tmp_path, "read"))
    assert answer.text == "answer 1" and answer.model_identity == "counting@1"


def test_read_with_no_recording_is_an_error_that_says_how_to_record(tmp_path):
    with pytest.raises(CacheMiss, match="record one with --sleepy-cache=rw"):
        cached_complete(CountingModel(), request(), CompletionCache(tmp_path, "read"))


def test_write_always_asks_the_model_and_overwrites(tmp_path):
    model = CountingModel()
    cached_complete(model, request(), CompletionCache(tmp_path, "rw"))
    cached_complete(model, request(), CompletionCache(tmp_path, "write"))
    replay = cached_complete(model, request(), CompletionCache(tmp_path, "read"))
    assert len(model.calls) == 2 and replay.text == "answer 2"


def test_off_neither_reads_nor_writes(tmp_path):
    model = CountingModel()
    cached_complete(model, request(), CompletionCache(tmp_path, "off"))
    cached_complete(model, request(), CompletionCache(tmp_path, "off"))
    assert len(model.calls) == 2 and not list(tmp_path.rglob("*.json"))


def test_an_entry_records_what_the_model_was_asked_in_readable_json(tmp_path):
    cached_complete(CountingModel(), request("please repair"), CompletionCache(tmp_path, "rw"))
    [entry] = tmp_path.rglob("*.json")
    record = json.loads(entry.read_text())
    assert record["request"]["messages"] == [{"role": "user", "content": "please repair"}]
    assert record["identity"] == "counting@1" and record["completion"]["text"] == "answer 1"


def test_a_corrupt_entry_is_treated_as_missing(tmp_path):
    model, cache = CountingModel(), CompletionCache(tmp_path, "rw")
    cached_complete(model, request(), cache)
    [entry] = tmp_path.rglob("*.json")
    entry.write_text("{ torn")
    assert cached_complete(model, request(), cache).text == "answer 2"


def test_an_unknown_cache_mode_lists_the_modes(tmp_path):
    with pytest.raises(ValueError, match="--sleepy-cache='sometimes': use one of off, read, write, rw"):
        CompletionCache(tmp_path, "sometimes")


# -- rustfix --------------------------------------------------------------------------


def rustfix_request(code, verdict):
    return CompletionRequest(messages=(Message("user", "fix"),), code=code, diagnostics=tuple(verdict.diagnostics))


def test_rustfix_answers_with_the_suggested_program_in_a_fence(verifier, shop_koan):
    code = "pub fn total(items: Vec<u32>) -> u32 {\n    let sum = 0;\n    for x in items { sum += x; }\n    sum\n}\n"
    verdict = verifier.verify_candidate(shop_koan, code)
    answer = load_model("rustfix").complete(rustfix_request(code, verdict))
    assert answer.text.startswith("```rust\n") and "let mut sum = 0;" in answer.text


def test_rustfix_applies_maybe_incorrect_suggestions_only_when_asked(verifier, shop_koan):
    verdict = verifier.verify_candidate(shop_koan, BUGGY_SHOP)  # E0382: "consider cloning" is MaybeIncorrect
    plain = load_model("rustfix").complete(rustfix_request(BUGGY_SHOP, verdict))
    bolder = load_model("rustfix?applicability=maybe-incorrect").complete(rustfix_request(BUGGY_SHOP, verdict))
    assert plain.text == NO_SUGGESTION
    assert "items.clone().into_iter()" in bolder.text


def test_rustfix_identity_says_which_suggestions_it_applies():
    assert load_model("rustfix").identity == "rustfix/MachineApplicable"
    assert load_model("rustfix?applicability=maybe-incorrect").identity == "rustfix/MachineApplicable+MaybeIncorrect"


def _hammer(directory: str, worker: int) -> list[str]:
    """Write and read the same few entries from another process; return what was read."""
    model, cache = CountingModel(identity="counting@1"), CompletionCache(directory, "rw")
    seen = []
    for round_ in range(40):
        req = request(f"prompt {round_ % 4}")
        key = cache.key(model, req)
        cache.put(key, model, req, Completion(text=f"{'x' * 50_000} from {worker}", model_identity="counting@1"))
        hit = cache.get(key, "counting@1")
        seen.append("missing" if hit is None else hit.text[-7:])
    return seen


def test_concurrent_workers_never_read_a_torn_entry(tmp_path):
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(_hammer, [(str(tmp_path), n) for n in range(4)])
    assert {text for seen in results for text in seen} <= {f" from {n}" for n in range(4)}
    assert not list(tmp_path.rglob(".tmp-*"))


def test_model_settings_that_change_answers_are_part_of_the_key():
    plain, bolder = load_model("rustfix"), load_model("rustfix?applicability=maybe-incorrect")
    assert CompletionCache.key(plain, request()) != CompletionCache.key(bolder, request())


def test_transport_settings_are_not_part_of_the_key():
    fast, patient = load_model("ollama:q?timeout=5"), load_model("ollama:q?timeout=600&retries=9")
    assert CompletionCache.key(fast, request()) == CompletionCache.key(patient, request())


def test_a_local_gguf_is_keyed_by_its_file_name_not_its_folder_nor_thread_count():
    mine = load_model("llamacpp:/root/.cache/models/qwen.gguf?n_ctx=8192&n_threads=2")
    theirs = load_model("llamacpp:/home/ada/models/qwen.gguf?n_threads=16&n_ctx=8192")
    assert CompletionCache.key(mine, request()) == CompletionCache.key(theirs, request())


@pytest.mark.parametrize("other", ["llamacpp:/root/.cache/models/other.gguf?n_ctx=8192",
                                   "llamacpp:/root/.cache/models/qwen.gguf?n_ctx=4096",
                                   "llamacpp:/root/.cache/models/qwen.gguf?n_ctx=8192&n_gpu_layers=-1"])
def test_another_gguf_context_size_or_offload_is_another_key(other):
    mine = load_model("llamacpp:/root/.cache/models/qwen.gguf?n_ctx=8192")
    assert CompletionCache.key(mine, request()) != CompletionCache.key(load_model(other), request())


def test_a_relative_gguf_path_has_one_key_whether_or_not_the_file_is_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    absent = CompletionCache.key(load_model("llamacpp:models/q4/model.gguf"), request())
    (tmp_path / "models" / "q4").mkdir(parents=True)
    (tmp_path / "models" / "q4" / "model.gguf").write_bytes(b"GGUF")
    assert CompletionCache.key(load_model("llamacpp:models/q4/model.gguf"), request()) == absent


def test_two_models_of_one_name_keep_their_own_answers(tmp_path):
    cache = CompletionCache(tmp_path, "rw")
    first = CountingModel(identity="gguf-sha256:aaaa")
    second = CountingModel(identity="gguf-sha256:bbbb", calls=["earlier"])
    assert cached_complete(first, request(), cache).text == "answer 1"
    assert cached_complete(second, request(), cache).text == "answer 2"
    again = cached_complete(first, request(), cache)
    assert (again.text, again.cached, again.model_identity) == ("answer 1", True, "gguf-sha256:aaaa")


def test_replaying_a_request_two_models_answered_names_both_instead_of_guessing(tmp_path):
    cache = CompletionCache(tmp_path, "rw")
    cached_complete(CountingModel(identity="gguf-sha256:aaaa"), request(), cache)
    cached_complete(CountingModel(identity="gguf-sha256:bbbb"), request(), cache)
    with pytest.raises(CacheMiss, match="2 models answered this request.*gguf-sha256:aaaa, gguf-sha256:bbbb"):
        cached_complete(CountingModel(), request(), CompletionCache(tmp_path, "read"))


def test_a_local_hf_directory_is_keyed_by_its_name_not_where_it_sits(tmp_path):
    (tmp_path / "a" / "ckpt").mkdir(parents=True)
    (tmp_path / "b" / "ckpt").mkdir(parents=True)
    here, there = load_model(f"hf:{tmp_path}/a/ckpt"), load_model(f"hf:{tmp_path}/b/ckpt")
    assert CompletionCache.key(here, request()) == CompletionCache.key(there, request())


def test_a_servers_address_and_key_variable_are_not_part_of_the_key():
    here = load_model("openai:m?base_url=http://127.0.0.1:8000/v1")
    there = load_model("openai:m?base_url=http://gpu-box:9000/v1&api_key_env=MY_KEY")
    assert CompletionCache.key(here, request()) == CompletionCache.key(there, request())


def test_a_recorded_answer_replays_for_the_same_file_in_another_folder(tmp_path):
    cache = CompletionCache(tmp_path, mode="read")
    recorder = CountingModel(spec=parse_model_spec("llamacpp:/root/m/qwen.gguf?n_threads=2"))
    CompletionCache(tmp_path).put(CompletionCache.key(load_model(recorder.spec.text), request()),
                                  recorder, request(), Completion(text="recorded", seconds=3.0, model_identity="q@1"))
    hit = cached_complete(load_model("llamacpp:/home/ada/qwen.gguf"), request(), cache)
    assert (hit.text, hit.cached) == ("recorded", True)


def _old_format_entry(directory, model_text: str, req: CompletionRequest, text: str):
    """An entry as an older release stored it: under a key this release does not give."""
    path = directory / "00" / f"00{text.encode().hex():0>62}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": model_text, "identity": "q@1", "request": req.to_dict(),
                                "completion": Completion(text=text).to_dict()}))
    return path


def test_rekey_moves_old_entries_to_the_keys_that_find_them(tmp_path):
    from pytest_sleepy.models.cache import rekey

    old = _old_format_entry(tmp_path, "ollama:q", request("a"), "answer a")
    assert rekey(tmp_path) == (1, 0, 0)
    assert not old.exists()
    replayed = cached_complete(load_model("ollama:q"), request("a"), CompletionCache(tmp_path, mode="read"))
    assert replayed.text == "answer a"


def test_rekey_twice_moves_nothing_the_second_time(tmp_path):
    from pytest_sleepy.models.cache import rekey

    _old_format_entry(tmp_path, "ollama:q", request("a"), "answer a")
    rekey(tmp_path)
    assert rekey(tmp_path) == (0, 1, 0)


def test_rekey_never_overwrites_an_answer_already_in_place(tmp_path):
    from pytest_sleepy.models.cache import rekey

    first = _old_format_entry(tmp_path, "llamacpp:/a/model.gguf?n_threads=1", request("a"), "answer a")
    second = _old_format_entry(tmp_path, "llamacpp:/b/model.gguf?n_threads=2", request("a"), "answer b")
    assert rekey(tmp_path) == (1, 0, 1)
    assert first.exists() != second.exists()  # the one left behind is still there, not lost


def test_rekey_leaves_an_unreadable_entry_and_names_it_after_moving_the_rest(tmp_path):
    from pytest_sleepy.models.cache import rekey

    _old_format_entry(tmp_path, "ollama:q", request("a"), "answer a")
    broken = tmp_path / "ff" / "ffbroken.json"
    broken.parent.mkdir()
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="1 entries could not be rekeyed.*ffbroken.json"):
        rekey(tmp_path)
    assert broken.exists()
    assert cached_complete(load_model("ollama:q"), request("a"), CompletionCache(tmp_path, mode="read")).text == "answer a"
