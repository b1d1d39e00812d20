"""The `openai` backend: a model behind an OpenAI-compatible server (vLLM, llama.cpp's
servers, or any other that speaks the chat-completions API).

    openai:MODEL?base_url=http://HOST:PORT/v1[&api_key_env=NAME&timeout=SECONDS&retries=N
                                              &repetition_penalty=P]

MODEL is the id the server lists under `GET /v1/models`: vLLM's `--served-model-name`
(by default the name or path it was started with), llama-cpp-python's `--model` path
(or its `--model_alias`). `base_url` is required and is the API root, `/v1` included.

Settings:

- `api_key_env`: the environment variable holding the API key (default
  OPENAI_API_KEY). It is sent as `Authorization: Bearer KEY`; when the variable is
  unset the key is `EMPTY`, which servers started without a key (vLLM without
  `--api-key`, llama.cpp without `--api_key`) accept.
- `timeout`: seconds per request (default 300); `retries`: extra attempts on transient
  errors (default 3). Neither changes answers, so neither is part of the cache key, and
  nor are `base_url` and `api_key_env`: a recorded run replays (`--sleepy-cache=read`)
  against another address. A live run there asks again, since the identity names the
  server.
- `repetition_penalty`: sent to the server (as vLLM's `repetition_penalty` and
  llama.cpp's `repeat_penalty`) instead of leaving the server's own. Servers differ:
  vLLM applies the checkpoint's `generation_config` (Qwen2.5 instruct checkpoints set
  one above 1), as the hf backend does; llama-cpp-python's server defaults to 1.1,
  while llama.cpp in-process (the llamacpp backend) uses 1.0. The penalty changes
  which token greedy decoding picks, so `repetition_penalty=1.0` makes a
  llama-cpp-python server answer as `llamacpp:` does on the same GGUF. Hosted APIs
  that refuse unknown fields need it left out.

Requests go through the official `openai` client (its own retries switched off), as
`chat.completions.create(model, messages, temperature, seed, max_tokens)`, so the server
applies the model's chat template. Temperature 0, the default, is greedy decoding;
above 0 the request's seed is sent, which vLLM and llama.cpp honour. Token counts are
the response's `usage`; `Completion.extra` keeps the `finish_reason`.

Building the model contacts nothing: replaying recorded answers needs no server.
`preflight()` asks `GET /v1/models` with a short timeout: no server there, or one that
does not serve MODEL (the served ids are listed), stops the session with the fix.

Identity. `openai:{base_url}:{MODEL}@{digest}`, the digest being the first 16 hex digits
of a sha256 over the stable fields of MODEL's `/v1/models` entry (everything the server
reports but `created`, `permission(s)` and `status`, which change while it runs).
vLLM reports `root` (the weights' name or path) and `max_model_len`; llama-cpp-python
only `id`, `object`, `owned_by`; llama.cpp's own `llama-server` adds `meta` (parameter
count, file size, vocabulary, trained context). So the identity distinguishes: another
server (the base_url), another served model, and whatever the entry says (other weights
under the same served name in vLLM, a changed context length, on llama-server another
file size). It cannot distinguish what the server does not report: a GGUF replaced in
place at the same path on llama-cpp-python, a new commit of a hub repository behind
the same name on vLLM, another quantization or dtype, other engine settings. Restart
a server on changed weights under a new served name (or clear the cache) when that
matters. The same model on another host is another identity, since one server's name
says nothing about another's weights.

Retries and outages, as in the ollama backend. A request that fails transiently
(connection refused or reset, timeout, HTTP 5xx or 429) is tried again, up to
`retries` more times, waiting 1 s, 2 s, 4 s, ... between attempts. Anything else (a
bad request, an unknown model, a refused key) raises ModelError at once. When the
retries run out on a connection error and the server then takes no new connection,
it is gone: ModelUnavailable stops the session, and nothing is scored, instead of
failing every remaining koan. One that takes the connection but is too busy to answer
at once is still there, and the request is the koan's ModelError. Each process has its own client and no shared state,
so pytest-xdist workers (`-n N`) all talk to one server, which batches their requests.

Adapters (vLLM, served with LoRA). `register_adapter(identity, directory)` records a
peft adapter folder; the first request naming that adapter (in each process) makes
the server load it with `POST /v1/load_lora_adapter {"lora_name": identity,
"lora_path": directory}`, and the request then asks for `model=identity`. A 400 saying
the adapter "has already been loaded" (another xdist worker was first) counts as
loaded; if the server later answers 404 for it (it was restarted), it is loaded again
once. The folder must be readable at that path on the server's machine (a shared
filesystem, or the same paths). The endpoint exists only on vLLM started with
`--enable-lora` and the environment variable VLLM_ALLOW_RUNTIME_LORA_UPDATING=True;
any other server answers 404, which stops the session with that explanation. Raise
`--max-lora-rank` (vLLM's default is 16) for adapters of a higher rank, and
`--max-loras` for more adapters in one batch. Training strategies train their adapters
in-process with transformers from MODEL, so MODEL must then also be a hub name or a
local path of the base weights (no `--served-model-name` alias).

The whole benchmark on vLLM with several GPUs:

    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve Qwen/Qwen2.5-Coder-1.5B-Instruct \\
        --tensor-parallel-size 2 --enable-lora --max-loras 8 --max-model-len 8192 --port 8000
    pytest --model='openai:Qwen/Qwen2.5-Coder-1.5B-Instruct?base_url=http://gpu-box:8000/v1' -n 16

Many workers keep the server's batch full; for a small model, `--data-parallel-size N`
(one model copy per GPU) usually serves more requests per second than
`--tensor-parallel-size N`. Add `--api-key KEY` to the server and export OPENAI_API_KEY
(or name another variable with `api_key_env=`) when the port is reachable by others.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
import openai

from .base import Completion, CompletionRequest, ModelError, ModelSpec, ModelUnavailable, register_peft_adapter

__all__ = ["OpenAIModel", "entry_digest", "STABLE_EXCLUDED"]

DEFAULT_TIMEOUT = 300.0
DEFAULT_RETRIES = 3
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
NO_KEY = "EMPTY"  # what key-less servers are sent
PREFLIGHT_TIMEOUT = 5.0  # listing models is instant on a live server
# Fields of a /v1/models entry that change between calls on one server: vLLM's
# `created` is the time of the call, its `permission` entries carry a fresh id and time;
# llama-server's `status` (router mode) says whether the model is loaded right now.
STABLE_EXCLUDED = frozenset({"created", "permission", "permissions", "status"})
SETTINGS = {
    "base_url": "the server's API root, e.g. http://127.0.0.1:8000/v1 (required)",
    "repetition_penalty": "a number above 0 sent with every request (default: the server's own)",
    "api_key_env": f"the environment variable holding the API key (default {DEFAULT_KEY_ENV})",
    "timeout": f"seconds per request (default {DEFAULT_TIMEOUT:g})",
    "retries": f"extra attempts on transient errors (default {DEFAULT_RETRIES})",
}
LORA_SERVER = ("per-request adapters need vLLM started with --enable-lora and the environment variable "
               "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (e.g. `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve MODEL "
               "--enable-lora --max-loras 8`)")

T = TypeVar("T")


def entry_digest(entry: dict) -> str:
    """The digest of a /v1/models entry's stable fields (see the module docstring)."""
    stable = {key: value for key, value in entry.items() if key not in STABLE_EXCLUDED}
    text = json.dumps(stable, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _is_transient(error: Exception) -> bool:
    if isinstance(error, openai.APIStatusError):
        return error.status_code >= 500 or error.status_code == 429
    return isinstance(error, openai.APIConnectionError)  # refused, reset, cut, timed out


def _message(error: Exception) -> str:
    """The server's own words for an HTTP error (vLLM's and OpenAI's `error.message`)."""
    body = getattr(error, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return str(error)


def _has_message(error: Exception) -> bool:
    body = getattr(error, "body", None)
    return isinstance(body, dict) and "message" in body


def _attempts(count: int) -> str:
    return f"{count} attempt" + ("s" if count > 1 else "")


class OpenAIModel:
    def __init__(self, spec: ModelSpec):
        spec.check_options(SETTINGS)
        self.spec = spec
        self.name = spec.name  # the served model id (and the base name training starts from)
        self.local = False  # MODEL is a served id, not a local directory (training reads these two)
        self.answer_neutral_options = ("base_url", "api_key_env")  # the cache key leaves them out
        self.base_url = _base_url(spec)
        self.api_key_env = spec.option("api_key_env", DEFAULT_KEY_ENV)
        if not self.api_key_env:
            raise ValueError(f"--model={spec.text!r}: api_key_env is empty; name an environment variable, "
                             f"or leave it out for {DEFAULT_KEY_ENV}")
        self.timeout = spec.seconds("timeout", DEFAULT_TIMEOUT)
        self.retries = spec.whole("retries", DEFAULT_RETRIES)
        penalty = spec.positive("repetition_penalty", None)
        # Both spellings: vLLM reads the first, llama.cpp's servers the second; each
        # ignores the field it does not know.
        self.extra_body = {} if penalty is None else {"repetition_penalty": penalty, "repeat_penalty": penalty}
        self.backoff_seconds = 1.0  # the first wait between attempts; doubles after each
        self.probe_seconds = 2.0  # how long the is-it-still-there probe waits for an answer
        self._entry: dict | None = None
        self._adapters: dict[str, Path] = {}  # adapter identity -> peft adapter directory
        self._loaded: set[str] = set()  # adapters this process has had the server load

    @cached_property
    def _client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=self._api_key(), timeout=self.timeout, max_retries=0)

    def _api_key(self) -> str:
        return os.environ.get(self.api_key_env) or NO_KEY

    # -- identity and preflight ------------------------------------------------------

    @property
    def identity(self) -> str:
        if self._entry is None:
            self._entry = self._find_model()
        return f"openai:{self.base_url}:{self.spec.name}@{entry_digest(self._entry)}"

    def preflight(self) -> None:
        self._entry = self._find_model()

    def _find_model(self) -> dict:
        """MODEL's /v1/models entry, as the server sent it; ModelUnavailable with the fix otherwise.

        A dead host fails fast (the connection must be made within PREFLIGHT_TIMEOUT), but
        the answer may take the request timeout: asked mid-run (an xdist worker's first
        answer), the server may be busy, and llama-cpp-python answers /v1/models only
        between generations."""
        timeout = openai.Timeout(self.timeout, connect=PREFLIGHT_TIMEOUT)
        try:
            listing = self._client.with_options(timeout=timeout).models.list()
            entries = [entry.to_dict() for entry in listing.data]
        except openai.APITimeoutError as error:
            raise ModelUnavailable(f"the server at {self.base_url} did not list its models in time "
                                   f"({_message(error)}); check that the host is up and the server not stuck, "
                                   "or raise timeout= in --model") from None
        except openai.APIConnectionError as error:
            raise ModelUnavailable(
                f"no server answers at {self.base_url} ({_message(error)}); start it (e.g. `vllm serve {self.name}`, "
                f"or `python -m llama_cpp.server --model PATH.gguf`), or fix base_url in --model") from None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as error:
            state = "is set" if os.environ.get(self.api_key_env) else "is not set, so the key sent was EMPTY"
            raise ModelUnavailable(f"the server at {self.base_url} refused the API key ({error.status_code}: "
                                   f"{_message(error)}); {self.api_key_env} {state}: export the server's key "
                                   "in it, or name the variable that holds it with api_key_env=") from None
        except openai.APIStatusError as error:
            raise ModelUnavailable(f"GET {self.base_url}/models answered {error.status_code} ({_message(error)}); "
                                   "base_url must be the API root of an OpenAI-compatible server, "
                                   "e.g. http://HOST:8000/v1") from None
        except (openai.OpenAIError, ValueError, TypeError, AttributeError) as error:
            raise ModelUnavailable(f"GET {self.base_url}/models gave no model list ({type(error).__name__}: "
                                   f"{error}); is base_url an OpenAI-compatible API root?") from None
        for entry in entries:
            if entry.get("id") == self.spec.name:
                return entry
        served = ", ".join(repr(e.get("id")) for e in entries) or "nothing"
        raise ModelUnavailable(f"the server at {self.base_url} does not serve {self.spec.name!r}; it serves {served}. "
                               "Name one of those in --model=openai:MODEL?base_url=..., or restart the server "
                               "with this model")

    # -- adapters ---------------------------------------------------------------------

    def register_adapter(self, identity: str, directory: Path | str) -> None:
        """Make a peft LoRA adapter directory available under `identity`; the server is
        asked to load it on the first request that names it."""
        register_peft_adapter(self._adapters, identity, Path(directory).absolute())


    def _load_adapter(self, identity: str) -> None:
        if identity in self._loaded:
            return
        if identity not in self._adapters:
            raise ModelError(f"adapter {identity!r} is not registered with {self.spec.text}; "
                             "the strategy that names it must register it first")
        path = str(self._adapters[identity])
        body = {"lora_name": identity, "lora_path": path}
        try:
            self._retrying(f"loading adapter {identity!r}",
                           lambda: self._client.post("/load_lora_adapter", body=body, cast_to=str),
                           passthrough=(openai.APIStatusError,))
        except openai.APIStatusError as error:
            message = _message(error)
            if error.status_code == 400 and "already" in message.lower() and "loaded" in message.lower():
                pass  # another process (an xdist worker) loaded it first
            elif error.status_code in (404, 405) and not _has_message(error):
                # The route itself is missing (a framework's bare 404), not an error about the adapter.
                raise ModelUnavailable(f"the server at {self.base_url} cannot load adapters: POST "
                                       f"{self.base_url}/load_lora_adapter answered {error.status_code} "
                                       f"({message}); {LORA_SERVER}") from None
            else:
                raise ModelError(f"the server at {self.base_url} could not load adapter {identity!r} from {path} "
                                 f"({error.status_code}: {message}); the folder must be readable at that path on "
                                 f"the server's machine, and {LORA_SERVER}") from None
        self._loaded.add(identity)

    # -- requests ---------------------------------------------------------------------

    def complete(self, request: CompletionRequest) -> Completion:
        started = time.perf_counter()
        if request.adapter is None:
            response = self._chat(request, self.spec.name)
        else:
            self._load_adapter(request.adapter)
            try:
                response = self._chat(request, request.adapter, passthrough=(openai.NotFoundError,))
            except openai.NotFoundError:
                # The server no longer knows the adapter (it was restarted): load it again, once.
                self._loaded.discard(request.adapter)
                self._load_adapter(request.adapter)
                response = self._chat(request, request.adapter)
        choices = getattr(response, "choices", None)
        if not choices:
            raise ModelError(f"openai {self.spec.name} at {self.base_url}: the answer holds no choices "
                             f"({str(response)[:200]!r})")
        choice = choices[0]
        usage = getattr(response, "usage", None)
        return Completion(
            text=(choice.message.content if choice.message else None) or "",
            tokens_in=int(getattr(usage, "prompt_tokens", 0) or 0),
            tokens_out=int(getattr(usage, "completion_tokens", 0) or 0),
            seconds=time.perf_counter() - started,
            extra={"finish_reason": choice.finish_reason},
        )

    def _chat(self, request: CompletionRequest, model: str, passthrough: tuple[type[Exception], ...] = ()):
        settings = request.settings
        return self._retrying(
            f"openai {model} at {self.base_url}",
            lambda: self._client.chat.completions.create(
                model=model,
                messages=[{"role": m.role, "content": m.content} for m in request.messages],
                temperature=settings.temperature, seed=settings.seed, max_tokens=settings.max_tokens,
                extra_body=self.extra_body or None,
            ),
            passthrough=passthrough,
        )

    def _retrying(self, what: str, call: Callable[[], T], passthrough: tuple[type[Exception], ...] = ()) -> T:
        """`call()`, tried again on transient errors with doubling waits. Errors of the
        `passthrough` types that are not transient reach the caller unchanged."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return call()
            # ValueError: a reply that is not the JSON the client expects (e.g. from a proxy).
            except (openai.OpenAIError, ValueError) as error:
                transient = _is_transient(error)
                if not transient and isinstance(error, passthrough):
                    raise
                failure = f"{what}: {type(error).__name__}: {_message(error)}"
                if not transient:
                    raise ModelError(failure) from None
                if attempt > self.retries:
                    if isinstance(error, openai.APIConnectionError) and not self._server_answers():
                        # No server any more (refused now, or a connection cut as it died):
                        # every later koan would fail the same way, which is an outage, not
                        # the model's score.
                        raise ModelUnavailable(f"the server at {self.base_url} stopped answering "
                                               f"({_attempts(attempt)}); restart it") from None
                    raise ModelError(f"{failure}; gave up after {_attempts(attempt)}") from None
                time.sleep(self.backoff_seconds * 2 ** (attempt - 1))

    def _server_answers(self) -> bool:
        """Whether the server still takes a connection (after a request failed on one),
        on a fresh connection, not the client's pool, whose kept-alive one may be dead.

        A busy server (llama-cpp-python mid-generation) takes the connection and may not
        answer within `probe_seconds`: it is still there. So may one that is shutting
        down and has not closed its port yet, which refuses the next probe: a silent
        probe is asked again once before the server counts as alive."""
        for probe in range(2):
            try:
                httpx.get(f"{self.base_url}/models", timeout=self.probe_seconds)
                return True
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError):
                return False  # refused, unreachable, or closed without a word
            except httpx.HTTPError:  # took the connection, no answer in time
                if probe == 0:
                    time.sleep(self.backoff_seconds)
        return True


def _base_url(spec: ModelSpec) -> str:
    value = (spec.option("base_url") or "").strip().rstrip("/")
    if not value:
        raise ValueError(f"--model={spec.text!r}: openai needs base_url=, the server's API root, "
                         f"e.g. openai:{spec.name or 'MODEL'}?base_url=http://127.0.0.1:8000/v1")
    split = urlsplit(value)
    try:
        port_ok = split.port is None or split.port > 0
    except ValueError:  # a port that is not a number
        port_ok = False
    if split.scheme not in ("http", "https") or not split.hostname or not port_ok:
        raise ValueError(f"--model={spec.text!r}: base_url={value!r} is not an http(s) URL; "
                         "write it as http://HOST:PORT/v1")
    return value
