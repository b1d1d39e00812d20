"""The `ollama` backend: a model served by a local (or remote) Ollama server.

`ollama:NAME[?timeout=SECONDS&retries=N]`, e.g. `ollama:qwen2.5-coder:7b?timeout=600`.
The server is the one `OLLAMA_HOST` names, read the way Ollama reads it (`host:port`
without a scheme means http; the default is http://127.0.0.1:11434).

Requests go through the chat API, so the server applies the model's own chat template.
Building the model contacts nothing: a run replaying the completion cache needs no
server. `preflight()` is where a missing server (`ollama serve`) or an unpulled model
(`ollama pull NAME`) stops the session, with a short timeout so a dead host fails fast.
The identity is the name plus the weights digest the server reports, so answers
recorded from other weights behind the same name are never replayed as this model's.

A request that fails transiently (connection refused or reset, timeout, HTTP 5xx or
429) is tried again, up to `retries` more times with doubling waits, since a server
still loading a model or briefly overloaded usually answers a moment later. Anything
else (an unknown model, a bad request) fails at once: asking again would not help.
A server that still refuses connections after the retries, or whose connection was cut
and which then takes no new one, is gone: that raises ModelUnavailable, which stops
the session instead of failing every remaining koan.
"""

from __future__ import annotations

import os
import time
from functools import cached_property
from urllib.parse import urlsplit

import httpx
import ollama

from .base import Completion, CompletionRequest, ModelError, ModelSpec, ModelUnavailable

__all__ = ["OllamaModel", "ollama_host"]

DEFAULT_HOST = "http://127.0.0.1:11434"
DEFAULT_TIMEOUT = 300.0
DEFAULT_RETRIES = 3
PREFLIGHT_TIMEOUT = 5.0  # listing models is instant on a live server

# The client turns a refused connection into the builtin ConnectionError and lets
# httpx's other transport errors (timeouts, a dropped connection) through unchanged.
TRANSIENT_ERRORS = (ConnectionError, httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def ollama_host(value: str | None) -> str:
    """The server URL for an `OLLAMA_HOST` value, by Ollama's own rules: no scheme means
    http on port 11434; an explicit http or https scheme defaults to port 80 or 443."""
    value = (value or "").strip()
    if not value:
        return DEFAULT_HOST
    scheme, separator, rest = value.partition("://")
    if separator:
        default_port = {"http": 80, "https": 443}.get(scheme, 11434)
    else:
        scheme, rest, default_port = "http", value, 11434
    split = urlsplit(f"{scheme}://{rest}")
    try:
        port = split.port or default_port
    except ValueError:
        raise ValueError(f"OLLAMA_HOST={value!r}: not a host[:port] or URL") from None
    hostname = split.hostname or "127.0.0.1"
    if ":" in hostname:  # urlsplit drops the brackets of an IPv6 address
        hostname = f"[{hostname}]"
    path = split.path.strip("/")
    return f"{scheme}://{hostname}:{port}" + (f"/{path}" if path else "")


def _canonical(name: str) -> str:
    """Ollama's equality of model names: a name without a tag means `:latest`, and case
    does not matter."""
    tagged = ":" in name.rpartition("/")[2]
    return (name if tagged else f"{name}:latest").casefold()


def _is_transient(error: Exception) -> bool:
    if isinstance(error, ollama.ResponseError):
        return error.status_code >= 500 or error.status_code == 429
    return isinstance(error, TRANSIENT_ERRORS)


class OllamaModel:
    def __init__(self, spec: ModelSpec):
        spec.check_options({
            "timeout": f"seconds per request (default {DEFAULT_TIMEOUT:g})",
            "retries": f"extra attempts on transient errors (default {DEFAULT_RETRIES})",
        })
        self.spec = spec
        self.timeout = spec.seconds("timeout", DEFAULT_TIMEOUT)
        self.retries = spec.whole("retries", DEFAULT_RETRIES)
        self.backoff_seconds = 1.0  # the first wait between attempts; doubles after each
        self.host = ollama_host(os.environ.get("OLLAMA_HOST"))
        self._digest: str | None = None

    @cached_property
    def _client(self) -> ollama.Client:
        return ollama.Client(host=self.host, timeout=self.timeout)

    @property
    def identity(self) -> str:
        if self._digest is None:
            self._digest = self._find_model()
        return f"ollama:{self.spec.name}@{self._digest}"

    def preflight(self) -> None:
        self._digest = self._find_model()

    def _find_model(self) -> str:
        """The digest of the pulled model; ModelUnavailable with the fix otherwise."""
        try:
            with ollama.Client(host=self.host, timeout=PREFLIGHT_TIMEOUT) as client:
                listing = client.list()
        except (ollama.ResponseError, httpx.HTTPError, ConnectionError, ValueError) as error:
            raise ModelUnavailable(
                f"no Ollama server answers at {self.host} ({error}); start one with `ollama serve`, "
                "or point OLLAMA_HOST at a running one"
            ) from None
        wanted = _canonical(self.spec.name)
        for entry in listing.models:
            if entry.model and _canonical(entry.model) == wanted:
                return entry.digest or ""
        raise ModelUnavailable(f"the Ollama server at {self.host} has no model {self.spec.name!r}; "
                               f"fetch it with `ollama pull {self.spec.name}`")

    def complete(self, request: CompletionRequest) -> Completion:
        if request.adapter is not None:
            raise ModelError(f"the ollama backend cannot apply adapter {request.adapter!r}; use an hf: model")
        started = time.perf_counter()
        response = self._chat(request)
        return Completion(
            text=response.message.content or "",
            tokens_in=response.prompt_eval_count or 0,
            tokens_out=response.eval_count or 0,
            seconds=time.perf_counter() - started,
            extra={"done_reason": response.done_reason},
        )

    def _chat(self, request: CompletionRequest) -> ollama.ChatResponse:
        settings = request.settings
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._client.chat(
                    model=self.spec.name,
                    messages=[{"role": m.role, "content": m.content} for m in request.messages],
                    options={"temperature": settings.temperature, "seed": settings.seed,
                             "num_predict": settings.max_tokens},
                    stream=False,
                )
            # ValueError: a reply that is not the JSON the client expects (e.g. from a proxy).
            except (ollama.ResponseError, httpx.HTTPError, ConnectionError, ValueError) as error:
                failure = f"ollama {self.spec.name} at {self.host}: {type(error).__name__}: {error}"
                if not _is_transient(error):
                    raise ModelError(failure) from None
                if attempt > self.retries:
                    attempts = f"{attempt} attempt" + ("s" if attempt > 1 else "")
                    if isinstance(error, (ConnectionError, httpx.ConnectError)) or (
                            isinstance(error, httpx.TransportError) and not self._server_answers()):
                        # No server any more (refused now, or a connection cut as it died):
                        # every later koan would fail the same way, which is an outage, not
                        # the model's score.
                        raise ModelUnavailable(f"the Ollama server at {self.host} stopped answering "
                                               f"({attempts}); restart it with `ollama serve`") from None
                    raise ModelError(f"{failure}; gave up after {attempts}") from None
                time.sleep(self.backoff_seconds * 2 ** (attempt - 1))


    def _server_answers(self) -> bool:
        """Whether the server still takes a connection (after a request was cut off)."""
        try:
            httpx.get(f"{self.host}/api/version", timeout=2.0)
        except httpx.HTTPError:
            return False
        return True
