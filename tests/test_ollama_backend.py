"""The ollama backend, driven through the real `ollama` client against a real HTTP
server (tests/ollama_server.py) that answers the way Ollama does."""

from __future__ import annotations

import socket
import time

import pytest
from ollama_server import DIGEST, Failure, OllamaServer

from pytest_sleepy.models import (
    CompletionRequest,
    GenerationSettings,
    Message,
    ModelError,
    ModelSpec,
    ModelUnavailable,
    load_model,
    parse_model_spec,
)
from pytest_sleepy.models.ollama import OllamaModel, ollama_host

MODEL = "qwen2.5-coder:7b"
REQUEST = CompletionRequest(
    messages=(Message("system", "You repair Rust programs."), Message("user", "fix this borrow")),
    settings=GenerationSettings(temperature=0.2, seed=7, max_tokens=256),
)


@pytest.fixture
def server(monkeypatch):
    with OllamaServer(models={MODEL: DIGEST}) as running:
        monkeypatch.setenv("OLLAMA_HOST", running.url)
        yield running


@pytest.fixture
def no_server(monkeypatch) -> str:
    """OLLAMA_HOST pointing at a port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{port}")
    return f"http://127.0.0.1:{port}"


def model(text: str = MODEL) -> OllamaModel:
    built = OllamaModel(parse(text))
    built.backoff_seconds = 0.01
    return built


def parse(text: str) -> ModelSpec:
    return parse_model_spec(f"ollama:{text}")


def test_a_chat_sends_the_messages_and_settings_and_returns_the_text_and_token_counts(server):
    completion = model().complete(REQUEST)

    (sent,) = server.chat_requests
    assert sent["model"] == MODEL
    assert sent["messages"] == [{"role": "system", "content": "You repair Rust programs."},
                                {"role": "user", "content": "fix this borrow"}]
    assert sent["options"] == {"temperature": 0.2, "seed": 7, "num_predict": 256}
    assert sent["stream"] is False
    assert completion.text == "you said: fix this borrow"
    assert (completion.tokens_in, completion.tokens_out) == (7, 5)
    assert completion.extra == {"done_reason": "stop"}
    assert completion.seconds > 0


def test_load_model_builds_the_ollama_backend_with_its_settings(server):
    loaded = load_model(f"ollama:{MODEL}?timeout=12.5&retries=1")

    assert isinstance(loaded, OllamaModel)
    assert (loaded.timeout, loaded.retries) == (12.5, 1)
    assert loaded.complete(REQUEST).text == "you said: fix this borrow"


def test_preflight_passes_when_the_model_is_pulled(server):
    model().preflight()


def test_a_name_without_a_tag_is_the_latest_tag(monkeypatch):
    with OllamaServer(models={"codellama:latest": DIGEST}) as running:
        monkeypatch.setenv("OLLAMA_HOST", running.url)
        model("codellama").preflight()


def test_preflight_without_a_server_names_the_host_and_ollama_serve_and_fails_fast(no_server):
    started = time.perf_counter()
    with pytest.raises(ModelUnavailable) as raised:
        model().preflight()

    assert time.perf_counter() - started < 2
    assert "ollama serve" in str(raised.value)
    assert no_server in str(raised.value)
    assert "OLLAMA_HOST" in str(raised.value)


def test_preflight_when_the_model_is_not_pulled_says_to_pull_it(monkeypatch):
    with OllamaServer(models={"llama3.2:latest": DIGEST}) as running:
        monkeypatch.setenv("OLLAMA_HOST", running.url)
        with pytest.raises(ModelUnavailable, match=f"`ollama pull {MODEL}`"):
            model().preflight()


def test_the_identity_is_the_name_and_the_weights_digest(server):
    built = model()

    assert built.identity == f"ollama:{MODEL}@{DIGEST}"
    assert built.identity == f"ollama:{MODEL}@{DIGEST}"
    assert server.tags_requests == 1  # asked once, then remembered


def test_the_identity_without_a_server_is_unavailable_with_the_fix(no_server):
    with pytest.raises(ModelUnavailable, match="ollama serve"):
        model().identity


def test_transient_503s_are_retried_until_one_succeeds(server):
    server.failures.extend([Failure(status=503), Failure(status=503)])

    completion = model().complete(REQUEST)

    assert completion.text == "you said: fix this borrow"
    assert len(server.chat_requests) == 3


def test_a_dropped_connection_is_retried(server):
    server.failures.append(Failure(disconnect=True))

    assert model().complete(REQUEST).text == "you said: fix this borrow"
    assert len(server.chat_requests) == 2


def test_when_the_retries_run_out_the_error_says_how_many_attempts_were_made(server):
    server.failures.extend([Failure(status=500, error="out of memory")] * 3)

    with pytest.raises(ModelError, match="gave up after 3 attempts") as raised:
        model(f"{MODEL}?retries=2").complete(REQUEST)

    assert "out of memory" in str(raised.value)
    assert len(server.chat_requests) == 3


def test_an_unknown_model_is_not_retried(monkeypatch):
    with OllamaServer(models={}) as running:
        monkeypatch.setenv("OLLAMA_HOST", running.url)
        with pytest.raises(ModelError, match="not found"):
            model().complete(REQUEST)

        assert len(running.chat_requests) == 1


def test_a_request_slower_than_the_timeout_is_retried_then_fails(server):
    server.failures.extend([Failure(delay=1.5)] * 2)

    started = time.perf_counter()
    with pytest.raises(ModelError, match="Timeout.*gave up after 2 attempts"):
        model(f"{MODEL}?timeout=0.5&retries=1").complete(REQUEST)

    assert time.perf_counter() - started < 2.5  # 2 x 0.5 s, not 2 x 1.5 s
    assert len(server.chat_requests) == 2


def test_a_server_gone_mid_run_is_an_outage_after_the_retries_not_a_koan_failure(no_server):
    with pytest.raises(ModelUnavailable, match=f"{no_server} stopped answering \\(2 attempts\\); restart it with `ollama serve`"):
        model(f"{MODEL}?retries=1").complete(REQUEST)


def test_a_connection_cut_by_a_live_server_is_the_koans_model_error(server):
    server.failures.append(Failure(disconnect=True))

    with pytest.raises(ModelError, match="gave up after 1 attempt"):
        model(f"{MODEL}?retries=0").complete(REQUEST)


def test_a_connection_cut_as_the_server_dies_is_an_outage(monkeypatch):
    import threading

    running = OllamaServer().start()
    monkeypatch.setenv("OLLAMA_HOST", running.url)
    running.failures.append(Failure(delay=30, disconnect=True))  # cut short when the server stops
    threading.Timer(0.3, running.stop).start()

    with pytest.raises(ModelUnavailable, match="stopped answering \\(1 attempt\\)"):
        model(f"{MODEL}?retries=0").complete(REQUEST)


@pytest.mark.parametrize("setting", ["temperature=0", "timeout=0", "timeout=soon", "retries=-1", "retries=1.5"])
def test_a_bad_setting_is_refused_by_name(setting):
    key = setting.partition("=")[0]
    with pytest.raises(ValueError, match=key):
        OllamaModel(parse(f"{MODEL}?{setting}"))


def test_an_adapter_cannot_be_applied(server):
    request = CompletionRequest(messages=REQUEST.messages, adapter="lora-abc123")

    with pytest.raises(ModelError, match="cannot apply adapter"):
        model().complete(request)
    assert server.chat_requests == []


def test_building_the_model_contacts_no_server(server):
    load_model(f"ollama:{MODEL}")

    assert (server.tags_requests, server.chat_requests) == (0, [])


def test_a_model_can_be_built_with_no_server_running(no_server):
    assert OllamaModel(parse(MODEL)).host == no_server


@pytest.mark.parametrize(("value", "url"), [
    (None, "http://127.0.0.1:11434"),
    ("", "http://127.0.0.1:11434"),
    ("0.0.0.0", "http://0.0.0.0:11434"),
    ("gpu-box:8080", "http://gpu-box:8080"),
    ("http://gpu-box", "http://gpu-box:80"),
    ("https://gpu-box/ollama/", "https://gpu-box:443/ollama"),
    ("[::1]:9000", "http://[::1]:9000"),
])
def test_ollama_host_is_read_the_way_ollama_reads_it(value, url):
    assert ollama_host(value) == url
