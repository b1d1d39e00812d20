"""A small real HTTP server speaking enough of the OpenAI API (as vLLM serves it) for the
real `openai` client.

    with OpenAIServer(models={"qwen": {"root": "Qwen/Qwen2.5-Coder-1.5B-Instruct"}}) as server:
        server.failures.append(Failure(status=503))   # the next chat request answers 503
        base_url = server.base_url                     # http://127.0.0.1:PORT/v1
        ...
        server.chat_requests                           # what the client sent, as JSON

It answers `GET /v1/models` (the served models, then the loaded adapters, each entry
shaped like vLLM's, with a `created` time and `permission` ids that change on every
call), `POST /v1/chat/completions` (non-streaming) and, unless `lora=False` (a server
without vLLM's runtime LoRA updating, which answers a bare 404 there),
`POST /v1/load_lora_adapter` as vLLM does: a plain-text success, and 400 when the
adapter is already loaded. Errors are `{"error": {"message", "type", "param", "code"}}`
with the status code. With `api_key` set, every request needs `Authorization: Bearer KEY`.
It binds 127.0.0.1 on a free port, so parallel test workers never clash.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

from local_server import Failure, LocalServer, echo_reply, words

__all__ = ["Failure", "OpenAIServer", "MODEL", "echo_reply"]

MODEL = "Qwen/Qwen2.5-Coder-1.5B-Instruct"


def _error(status: int, message: str, kind: str, param: str | None = None) -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": kind, "param": param, "code": status}}


class OpenAIServer(LocalServer):
    thread_name = "openai-test-server"
    port_closes_first = True

    def __init__(self, models: dict[str, dict] | None = None, reply: Callable[[dict], str] = echo_reply,
                 *, lora: bool = True, api_key: str | None = None):
        # served id -> the entry's fields besides id/object/created/owned_by/permission
        self.models = {MODEL: {"root": MODEL, "max_model_len": 32768}} if models is None else dict(models)
        self.lora = lora
        self.api_key = api_key
        self.lora_requests: list[dict] = []  # every load_lora_adapter request received
        self.adapters: dict[str, str] = {}  # loaded adapter name -> its path
        self.authorizations: list[str | None] = []  # the Authorization header of every request
        self.models_requests = 0
        self.models_delay = 0.0  # seconds before /v1/models answers (a server busy generating)
        super().__init__(reply)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def forget_adapters(self) -> None:
        """What a restart does to vLLM's runtime-loaded adapters."""
        with self._lock:
            self.adapters.clear()

    # -- routes ------------------------------------------------------------------------

    def _models(self) -> tuple[int, dict]:
        with self._lock:
            self.models_requests += 1  # on arrival, answered or not
            calls = self.models_requests
        if self.models_delay:
            self.stopping.wait(self.models_delay)
        now = int(time.time()) + calls  # a new `created` on every call, as the docstring says
        with self._lock:
            models = {name: dict(fields) for name, fields in self.models.items()}
            adapters = dict(self.adapters)
        base = next(iter(models), None)

        def card(name: str, fields: dict) -> dict:
            return {"id": name, "object": "model", "created": now, "owned_by": "vllm", "parent": None, **fields,
                    "permission": [{"id": f"modelperm-{uuid.uuid4().hex}", "object": "model_permission",
                                    "created": now, "allow_create_engine": False, "allow_sampling": True,
                                    "allow_logprobs": True, "allow_search_indices": False, "allow_view": True,
                                    "allow_fine_tuning": False, "organization": "*", "group": None,
                                    "is_blocking": False}]}

        data = [card(name, fields) for name, fields in models.items()]
        data += [card(name, {"root": path, "parent": base}) for name, path in adapters.items()]
        return 200, {"object": "list", "data": data}

    def _chat(self, request: dict) -> tuple[int, dict]:
        name = request.get("model", "")
        with self._lock:
            served = name in self.models or name in self.adapters
        if not served:
            return _error(404, f"The model `{name}` does not exist.", "NotFoundError", "model")
        if not isinstance(request.get("messages"), list) or not request["messages"]:
            return _error(400, "messages must be a non-empty list", "BadRequestError", "messages")
        content = self.reply(request)
        prompt_tokens = sum(words(m.get("content", "")) for m in request["messages"])
        return 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": words(content),
                      "total_tokens": prompt_tokens + words(content)},
        }

    def _load_lora(self, request: dict) -> tuple[int, dict | str]:
        name, path = request.get("lora_name"), request.get("lora_path")
        with self._lock:
            self.lora_requests.append(request)
            if not name or not path:
                return _error(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput")
            if name in self.adapters:
                return _error(400, f"The lora adapter '{name}' has already been loaded. If you want to load the "
                                   "adapter in place, set 'load_inplace' to True.", "InvalidUserInput")
            if not os.path.isfile(os.path.join(path, "adapter_config.json")):
                return _error(404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError")
            self.adapters[name] = path
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the client expects

            def _authorized(self) -> bool:
                header = self.headers.get("Authorization")
                with server._lock:
                    server.authorizations.append(header)
                if server.api_key is None or header == f"Bearer {server.api_key}":
                    return True
                self._send(*_error(401, "Incorrect API key provided.", "AuthenticationError"))
                return False

            def do_GET(self) -> None:
                if not self._authorized():
                    return
                if self.path == "/v1/models":
                    self._send(*server._models())
                else:
                    self._send(404, {"detail": "Not Found"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not self._authorized():
                    return
                if self.path == "/v1/load_lora_adapter" and server.lora:
                    self._send(*server._load_lora(json.loads(body)))
                    return
                if self.path != "/v1/chat/completions":
                    self._send(404, {"detail": "Not Found"})  # FastAPI's answer for an unknown route
                    return
                request = json.loads(body)
                failure = server._next_failure(request)
                if failure is not None:
                    if failure.delay:
                        server.stopping.wait(failure.delay)
                    if failure.disconnect:
                        self.close_connection = True
                        return
                    if failure.status:
                        kind = {400: "BadRequestError", 429: "RateLimitError"}.get(failure.status,
                                                                                   "InternalServerError")
                        self._send(*_error(failure.status, failure.error, kind))
                        return
                self._send(*server._chat(request))

            def _send(self, status: int, payload: dict | str) -> None:
                if isinstance(payload, str):
                    data, kind = payload.encode("utf-8"), "text/plain; charset=utf-8"
                else:
                    data, kind = json.dumps(payload).encode("utf-8"), "application/json"
                closing = server.stopping.is_set()
                try:
                    self.send_response(status)
                    if closing:  # a stopped server must not keep serving kept-alive connections
                        self.send_header("Connection", "close")
                        self.close_connection = True
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout) before the answer came

            def log_message(self, format: str, *args) -> None:
                pass  # keep test output quiet

        return Handler
