"""The openai backend, driven through the real `openai` client against a real HTTP
server (tests/openai_server.py) that answers the way vLLM does; the live llama.cpp
server with the real model is in test_realmodel.py."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time

import pytest
from openai_server import MODEL, Failure, OpenAIServer

from conftest import fixing_reply
from pytest_sleepy.models import (
    CompletionRequest,
    GenerationSettings,
    Message,
    ModelError,
    ModelUnavailable,
    load_model,
    parse_model_spec,
)
from pytest_sleepy.models.openai import OpenAIModel, entry_digest
from pytest_sleepy.results import read_run_file

REQUEST = CompletionRequest(
    messages=(Message("system", "You repair Rust programs."), Message("user", "fix this borrow")),
    settings=GenerationSettings(temperature=0.2, seed=7, max_tokens=256),
)


@pytest.fixture(autouse=True)
def no_key(monkeypatch):
    """No API key from the machine leaks into a test."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.fixture
def server():
    with OpenAIServer() as running:
        yield running


@pytest.fixture
def no_server() -> str:
    """The base URL of a port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def model(base_url: str, settings: str = "", name: str = MODEL) -> OpenAIModel:
    built = OpenAIModel(parse_model_spec(f"openai:{name}?base_url={base_url}{settings}"))
    built.backoff_seconds = 0.01
    return built


def adapter_folder(path):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16, "peft_type": "LORA"}))
    return path


def adapter_request(identity: str | None) -> CompletionRequest:
    return CompletionRequest(messages=REQUEST.messages, settings=REQUEST.settings, adapter=identity)


# -- requests ---------------------------------------------------------------------------


def test_a_chat_sends_the_messages_and_settings_and_returns_the_text_and_token_counts(server):
    completion = model(server.base_url).complete(REQUEST)

    (sent,) = server.chat_requests
    assert sent["model"] == MODEL
    assert sent["messages"] == [{"role": "system", "content": "You repair Rust programs."},
                                {"role": "user", "content": "fix this borrow"}]
    assert (sent["temperature"], sent["seed"], sent["max_tokens"]) == (0.2, 7, 256)
    assert not sent.get("stream")
    assert completion.text == "you said: fix this borrow"
    assert (completion.tokens_in, completion.tokens_out) == (7, 5)
    assert completion.extra == {"finish_reason": "stop"}
    assert completion.seconds > 0


def test_greedy_is_temperature_zero(server):
    model(server.base_url).complete(CompletionRequest(messages=REQUEST.messages))

    (sent,) = server.chat_requests
    assert (sent["temperature"], sent["seed"], sent["max_tokens"]) == (0.0, 0, 1024)


def test_without_a_repetition_penalty_the_servers_own_applies(server):
    model(server.base_url).complete(REQUEST)

    (sent,) = server.chat_requests
    assert "repetition_penalty" not in sent and "repeat_penalty" not in sent


def test_a_repetition_penalty_is_sent_in_vllms_and_llamacpps_spelling(server):
    load_model(f"openai:{MODEL}?base_url={server.base_url}&repetition_penalty=1.0").complete(REQUEST)

    (sent,) = server.chat_requests
    assert (sent["repetition_penalty"], sent["repeat_penalty"]) == (1.0, 1.0)


def test_the_repetition_penalty_is_part_of_the_cache_key(server):
    from pytest_sleepy.models import CompletionCache

    servers_own = load_model(f"openai:{MODEL}?base_url={server.base_url}")
    neutral = load_model(f"openai:{MODEL}?base_url={server.base_url}&repetition_penalty=1.0")
    assert CompletionCache.key(servers_own, REQUEST) != CompletionCache.key(neutral, REQUEST)


def test_load_model_builds_the_openai_backend_with_its_settings(server, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-mine")
    loaded = load_model(f"openai:{MODEL}?base_url={server.base_url}/&timeout=12.5&retries=1&api_key_env=MY_KEY")

    assert isinstance(loaded, OpenAIModel)
    assert (loaded.base_url, loaded.timeout, loaded.retries, loaded.api_key_env) == (
        server.base_url, 12.5, 1, "MY_KEY")
    assert loaded.complete(REQUEST).text == "you said: fix this borrow"


def test_building_the_model_contacts_no_server(server):
    load_model(f"openai:{MODEL}?base_url={server.base_url}")

    assert (server.models_requests, server.chat_requests, server.authorizations) == (0, [], [])


def test_a_model_can_be_built_with_no_server_running(no_server):
    assert OpenAIModel(parse_model_spec(f"openai:{MODEL}?base_url={no_server}")).base_url == no_server


# -- preflight --------------------------------------------------------------------------


def test_preflight_passes_when_the_model_is_served(server):
    model(server.base_url).preflight()

    assert server.models_requests == 1


def test_preflight_without_a_server_names_the_url_and_how_to_start_one_and_fails_fast(no_server):
    started = time.perf_counter()
    with pytest.raises(ModelUnavailable) as raised:
        model(no_server).preflight()

    assert time.perf_counter() - started < 2
    message = str(raised.value)
    assert f"no server answers at {no_server}" in message
    assert f"vllm serve {MODEL}" in message and "llama_cpp.server" in message and "base_url" in message


def test_preflight_when_the_model_is_not_served_lists_the_served_ids():
    with OpenAIServer(models={"codellama": {}, "qwen-small": {}}) as running:
        with pytest.raises(ModelUnavailable) as raised:
            model(running.base_url).preflight()

    assert f"does not serve {MODEL!r}; it serves 'codellama', 'qwen-small'" in str(raised.value)


def test_preflight_against_a_url_that_is_no_api_root_says_what_base_url_must_be(server):
    with pytest.raises(ModelUnavailable, match=f"GET {server.url}/models answered 404.*API root"):
        model(server.url).preflight()  # /v1 left out


# -- identity ---------------------------------------------------------------------------


def test_the_identity_is_the_url_the_id_and_a_digest_of_the_entrys_stable_fields(server):
    built = model(server.base_url)

    stable = {"id": MODEL, "object": "model", "owned_by": "vllm", "parent": None, "root": MODEL,
              "max_model_len": 32768}
    digest = hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]
    assert built.identity == f"openai:{server.base_url}:{MODEL}@{digest}"
    assert built.identity == f"openai:{server.base_url}:{MODEL}@{digest}"
    assert server.models_requests == 1  # asked once, then remembered


def test_the_identity_is_stable_although_the_entry_has_a_new_time_and_permission_id_on_every_call(server):
    first = model(server.base_url).identity

    assert model(server.base_url).identity == first
    assert server.models_requests == 2


@pytest.mark.parametrize("change", [{"root": "/models/other-weights"}, {"max_model_len": 4096},
                                    {"owned_by": "someone-else"}])
def test_the_identity_changes_when_the_servers_model_entry_changes(server, change):
    before = model(server.base_url).identity
    server.models[MODEL] = {**server.models[MODEL], **change}

    after = model(server.base_url).identity
    assert after != before and after.startswith(f"openai:{server.base_url}:{MODEL}@")


def test_the_same_model_on_another_server_is_another_identity(server):
    with OpenAIServer() as other:
        assert model(other.base_url).identity != model(server.base_url).identity


def test_entry_digest_ignores_only_the_volatile_fields():
    entry = {"id": "m", "object": "model", "root": "/w", "meta": {"size": 1}}
    assert entry_digest({**entry, "created": 1, "permission": [{"id": "a"}]}) == entry_digest(entry)
    assert entry_digest({**entry, "meta": {"size": 2}}) != entry_digest(entry)


def test_a_server_slow_to_list_its_models_mid_run_still_gives_the_identity(server, monkeypatch):
    # llama-cpp-python answers /v1/models only between generations: the connection must
    # come fast, the answer may take the request timeout.
    monkeypatch.setattr("pytest_sleepy.models.openai.PREFLIGHT_TIMEOUT", 0.2)
    server.models_delay = 0.6

    assert model(server.base_url).identity.startswith(f"openai:{server.base_url}:{MODEL}@")


def test_a_server_slower_to_list_its_models_than_the_timeout_is_unavailable_saying_so(server):
    server.models_delay = 1.0

    with pytest.raises(ModelUnavailable, match="did not list its models in time.*raise timeout="):
        model(server.base_url, "&timeout=0.3").preflight()


def test_the_identity_without_a_server_is_unavailable_with_the_fix(no_server):
    with pytest.raises(ModelUnavailable, match="no server answers"):
        model(no_server).identity


# -- retries and outages ----------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_errors_are_retried_until_one_succeeds(server, status):
    server.failures.extend([Failure(status=status), Failure(status=status)])

    completion = model(server.base_url).complete(REQUEST)

    assert completion.text == "you said: fix this borrow"
    assert len(server.chat_requests) == 3


def test_the_waits_between_attempts_double(server):
    server.failures.extend([Failure(status=503)] * 3)
    built = model(server.base_url)
    built.backoff_seconds = 0.1

    started = time.perf_counter()
    built.complete(REQUEST)

    assert time.perf_counter() - started >= 0.1 + 0.2 + 0.4
    assert len(server.chat_requests) == 4


def test_a_dropped_connection_is_retried(server):
    server.failures.append(Failure(disconnect=True))

    assert model(server.base_url).complete(REQUEST).text == "you said: fix this borrow"
    assert len(server.chat_requests) == 2


def test_when_the_retries_run_out_the_error_says_how_many_attempts_were_made(server):
    server.failures.extend([Failure(status=500, error="out of memory")] * 3)

    with pytest.raises(ModelError, match="gave up after 3 attempts") as raised:
        model(server.base_url, "&retries=2").complete(REQUEST)

    assert "out of memory" in str(raised.value) and "InternalServerError" in str(raised.value)
    assert len(server.chat_requests) == 3


def test_a_bad_request_is_not_retried(server):
    server.failures.append(Failure(status=400, error="max_tokens is too large"))

    with pytest.raises(ModelError, match="BadRequestError: max_tokens is too large") as raised:
        model(server.base_url).complete(REQUEST)

    assert "gave up" not in str(raised.value)
    assert len(server.chat_requests) == 1


def test_an_unknown_model_is_not_retried():
    with OpenAIServer(models={"other": {}}) as running:
        with pytest.raises(ModelError, match=f"The model `{MODEL}` does not exist"):
            model(running.base_url).complete(REQUEST)

        assert len(running.chat_requests) == 1


def test_a_request_slower_than_the_timeout_is_retried_then_fails(server):
    server.failures.extend([Failure(delay=1.5)] * 2)

    started = time.perf_counter()
    with pytest.raises(ModelError, match="Timeout.*gave up after 2 attempts"):
        model(server.base_url, "&timeout=0.5&retries=1").complete(REQUEST)

    assert time.perf_counter() - started < 2.5  # 2 x 0.5 s, not 2 x 1.5 s
    assert len(server.chat_requests) == 2


def test_a_timeout_on_a_server_too_busy_to_answer_the_probe_is_the_koans_model_error(server):
    server.failures.append(Failure(delay=1.5))
    server.models_delay = 3.0  # the probe takes the connection, then hears nothing, twice
    built = model(server.base_url, "&timeout=0.5&retries=0")
    built.probe_seconds = 0.3

    with pytest.raises(ModelError, match="Timeout.*gave up after 1 attempt"):
        built.complete(REQUEST)
    assert server.models_requests == 2


def test_a_server_gone_mid_run_is_an_outage_after_the_retries_not_a_koan_failure(no_server):
    with pytest.raises(ModelUnavailable, match=f"{no_server} stopped answering \\(2 attempts\\); restart it"):
        model(no_server, "&retries=1").complete(REQUEST)


def test_a_connection_cut_by_a_live_server_is_the_koans_model_error(server):
    server.failures.append(Failure(disconnect=True))

    with pytest.raises(ModelError, match="gave up after 1 attempt"):
        model(server.base_url, "&retries=0").complete(REQUEST)


def test_a_connection_cut_as_the_server_dies_is_an_outage():
    running = OpenAIServer().start()
    running.failures.append(Failure(delay=30, disconnect=True))  # cut short when the server stops
    threading.Timer(0.3, running.stop).start()

    with pytest.raises(ModelUnavailable, match="stopped answering \\(1 attempt\\)"):
        model(running.base_url, "&retries=0").complete(REQUEST)


def test_a_server_that_takes_the_probe_silently_and_then_closes_its_port_is_an_outage():
    running = OpenAIServer().start()
    running.failures.append(Failure(disconnect=True))
    running.models_delay = 30  # the first probe's connection is taken, and nothing answers it
    built = model(running.base_url, "&retries=0")
    built.probe_seconds, built.backoff_seconds = 0.3, 1.0
    # The port closes between the two probes: counted from the first probe's arrival (not
    # from the start, which a slow machine delays), after it gave up (0.3 s) and well
    # before the second one (1 s later).
    def stop_after_the_first_probe():
        deadline = time.monotonic() + 20
        while running.models_requests < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.8)
        running.stop()

    threading.Thread(target=stop_after_the_first_probe, daemon=True).start()

    with pytest.raises(ModelUnavailable, match="stopped answering \\(1 attempt\\)"):
        built.complete(REQUEST)
    assert running.models_requests == 1


# -- the API key ------------------------------------------------------------------------


def test_the_api_key_is_read_from_the_named_variable_and_sent_as_a_bearer_token(monkeypatch):
    monkeypatch.setenv("GPU_BOX_KEY", "sk-gpu-box")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-this-one")
    with OpenAIServer(api_key="sk-gpu-box") as running:
        built = model(running.base_url, "&api_key_env=GPU_BOX_KEY")
        built.preflight()
        built.complete(REQUEST)

    assert running.authorizations == ["Bearer sk-gpu-box"] * 2


def test_the_api_key_defaults_to_openai_api_key(monkeypatch, server):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-default")
    model(server.base_url).complete(REQUEST)

    assert server.authorizations == ["Bearer sk-default"]


def test_without_a_key_the_key_is_empty_which_keyless_servers_accept(server):
    model(server.base_url).complete(REQUEST)

    assert server.authorizations == ["Bearer EMPTY"]


def test_a_refused_key_stops_the_session_naming_the_variable(monkeypatch):
    with OpenAIServer(api_key="sk-right") as running:
        with pytest.raises(ModelUnavailable, match="refused the API key.*GPU_BOX_KEY is not set"):
            model(running.base_url, "&api_key_env=GPU_BOX_KEY").preflight()
        monkeypatch.setenv("GPU_BOX_KEY", "sk-wrong")
        with pytest.raises(ModelUnavailable, match="refused the API key.*GPU_BOX_KEY is set"):
            model(running.base_url, "&api_key_env=GPU_BOX_KEY").preflight()


# -- adapters ---------------------------------------------------------------------------


def test_an_adapter_is_loaded_once_then_requests_name_it(server, tmp_path):
    built = model(server.base_url)
    first, second = adapter_folder(tmp_path / "a"), adapter_folder(tmp_path / "b")
    built.register_adapter("lora:aaaa.1", first)
    built.register_adapter("lora:bbbb.1", second)

    for adapter in ["lora:aaaa.1", "lora:aaaa.1", "lora:bbbb.1", None, "lora:aaaa.1"]:
        assert built.complete(adapter_request(adapter)).text == "you said: fix this borrow"

    assert server.lora_requests == [{"lora_name": "lora:aaaa.1", "lora_path": str(first)},
                                    {"lora_name": "lora:bbbb.1", "lora_path": str(second)}]
    assert [r["model"] for r in server.chat_requests] == ["lora:aaaa.1", "lora:aaaa.1", "lora:bbbb.1", MODEL,
                                                          "lora:aaaa.1"]


def test_an_adapter_another_process_loaded_first_counts_as_loaded(server, tmp_path):
    folder = adapter_folder(tmp_path / "a")
    other_worker, built = model(server.base_url), model(server.base_url)
    for each in (other_worker, built):
        each.register_adapter("lora:aaaa.1", folder)
    other_worker.complete(adapter_request("lora:aaaa.1"))

    assert built.complete(adapter_request("lora:aaaa.1")).text == "you said: fix this borrow"
    built.complete(adapter_request("lora:aaaa.1"))

    assert len(server.lora_requests) == 2  # once per process; the second got "already loaded"
    assert [r["model"] for r in server.chat_requests] == ["lora:aaaa.1"] * 3


def test_a_server_without_the_endpoint_stops_the_session_saying_it_needs_vllm_with_lora(tmp_path):
    with OpenAIServer(lora=False) as running:
        built = model(running.base_url)
        built.register_adapter("lora:aaaa.1", adapter_folder(tmp_path / "a"))
        with pytest.raises(ModelUnavailable) as raised:
            built.complete(adapter_request("lora:aaaa.1"))

        assert running.chat_requests == []
    message = str(raised.value)
    assert f"POST {running.base_url}/load_lora_adapter answered 404" in message
    assert "--enable-lora" in message and "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in message


def test_an_adapter_the_server_cannot_read_is_the_koans_model_error_naming_the_folder(server, tmp_path):
    built = model(server.base_url)
    folder = adapter_folder(tmp_path / "a")
    built.register_adapter("lora:aaaa.1", folder)
    (folder / "adapter_config.json").unlink()  # as if the server saw another filesystem

    with pytest.raises(ModelError, match=f"could not load adapter 'lora:aaaa.1' from {folder} \\(404: "
                                         ".*readable at that path on the server's machine"):
        built.complete(adapter_request("lora:aaaa.1"))
    assert server.chat_requests == []


def test_an_adapter_forgotten_by_a_restarted_server_is_loaded_again(server, tmp_path):
    built = model(server.base_url)
    built.register_adapter("lora:aaaa.1", adapter_folder(tmp_path / "a"))
    built.complete(adapter_request("lora:aaaa.1"))
    server.forget_adapters()

    assert built.complete(adapter_request("lora:aaaa.1")).text == "you said: fix this borrow"
    assert len(server.lora_requests) == 2
    assert len(server.chat_requests) == 3  # the 404, then the answer


def test_an_unregistered_adapter_is_refused_without_a_request(server):
    with pytest.raises(ModelError, match="adapter 'lora:nope' is not registered"):
        model(server.base_url).complete(adapter_request("lora:nope"))

    assert (server.lora_requests, server.chat_requests) == ([], [])


def test_only_peft_adapter_folders_can_be_registered(server, tmp_path):
    built = model(server.base_url)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no adapter_config.json"):
        built.register_adapter("lora:x", tmp_path / "empty")
    built.register_adapter("lora:x", adapter_folder(tmp_path / "x"))
    with pytest.raises(ValueError, match="already registered"):
        built.register_adapter("lora:x", adapter_folder(tmp_path / "y"))


# -- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "message"), [
    (f"openai:{MODEL}", "openai needs base_url="),
    (f"openai:{MODEL}?base_url=", "openai needs base_url="),
    (f"openai:{MODEL}?base_url=gpu-box:8000/v1", "is not an http\\(s\\) URL"),
    (f"openai:{MODEL}?base_url=http://gpu-box:port/v1", "is not an http\\(s\\) URL"),
    (f"openai:{MODEL}?base_url=http://h/v1&timeout=0", "timeout"),
    (f"openai:{MODEL}?base_url=http://h/v1&timeout=soon", "timeout"),
    (f"openai:{MODEL}?base_url=http://h/v1&retries=-1", "retries"),
    (f"openai:{MODEL}?base_url=http://h/v1&retries=1.5", "retries"),
    (f"openai:{MODEL}?base_url=http://h/v1&api_key_env=", "api_key_env is empty"),
    (f"openai:{MODEL}?base_url=http://h/v1&repetition_penalty=none", "repetition_penalty='none'; use a number above 0"),
    (f"openai:{MODEL}?base_url=http://h/v1&temperature=0", "unknown setting 'temperature' for openai"),
    ("openai:?base_url=http://h/v1", "openai needs a model name"),
])
def test_a_bad_spec_is_refused_by_name(spec, message):
    with pytest.raises(ValueError, match=message):
        load_model(spec)


# -- the benchmark end to end -----------------------------------------------------------




def test_the_benchmark_runs_under_xdist_against_one_server_and_records_its_identity(bench, monkeypatch):
    monkeypatch.setenv("BENCH_KEY", "sk-bench")
    with OpenAIServer(reply=fixing_reply, api_key="sk-bench") as running:
        spec = f"openai:{MODEL}?base_url={running.base_url}&api_key_env=BENCH_KEY"
        result = bench.runpytest_subprocess(f"--model={spec}", "-n", "2", "--sleepy-json=run.json",
                                            "--sleepy-episodes=episodes.jsonl", "--sleepy-cache=off")
        identity = load_model(spec).identity
        asked = [r["model"] for r in running.chat_requests]
    result.assert_outcomes(passed=4)
    assert asked == [MODEL] * 4
    assert set(running.authorizations) == {"Bearer sk-bench"}
    run = read_run_file(bench.path / "run.json")
    assert run.provenance["model"]["identities"] == [identity]
    assert identity.startswith(f"openai:{running.base_url}:{MODEL}@")
    episodes = [json.loads(line) for line in (bench.path / "episodes.jsonl").read_text().splitlines()]
    assert len(episodes) == 4 and all(e["model_identity"] == identity and e["tokens_out"] > 0 for e in episodes)


def test_a_model_the_server_does_not_serve_stops_the_session_once_listing_what_it_serves(bench):
    with OpenAIServer(models={"codellama": {}}) as running:
        result = bench.runpytest_subprocess(f"--model=openai:{MODEL}?base_url={running.base_url}", "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    assert output.count("it serves 'codellama'") == 1
    assert running.chat_requests == []
