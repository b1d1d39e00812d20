"""A small real HTTP server speaking enough of Ollama's API for the real `ollama` client.

    with OllamaServer(models={"qwen2.5-coder:7b": "ab12..."}) as server:
        server.failures.append(Failure(status=503))   # the next chat request answers 503
        os.environ["OLLAMA_HOST"] = server.url
        ...
        server.chat_requests                          # what the client sent, as JSON

It answers `GET /api/tags` (the pulled models) and `POST /api/chat` (non-streaming),
with errors as Ollama sends them: `{"error": "..."}` and a status code. It binds
127.0.0.1 on a free port, so parallel test workers never clash.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler

from local_server import Failure, LocalServer, echo_reply, words

__all__ = ["Failure", "OllamaServer", "DIGEST", "echo_reply"]

DIGEST = "d7a1c3f0e2b4968574a3c2b1f0e9d8c7b6a5948372615049382716a5b4c3d2e1"


def _canonical(name: str) -> str:
    tagged = ":" in name.rpartition("/")[2]
    return (name if tagged else f"{name}:latest").casefold()


class OllamaServer(LocalServer):
    thread_name = "ollama-test-server"

    def __init__(self, models: dict[str, str] | None = None, reply: Callable[[dict], str] = echo_reply):
        self.models = {"qwen2.5-coder:7b": DIGEST} if models is None else dict(models)  # name -> digest
        self.tags_requests = 0
        super().__init__(reply)

    def _tags(self) -> dict:
        with self._lock:
            self.tags_requests += 1
            models = dict(self.models)
        return {"models": [
            {
                "name": name,
                "model": name,
                "modified_at": "2025-01-01T00:00:00.000000000Z",
                "size": 4_683_087_332,
                "digest": digest,
                "details": {"parent_model": "", "format": "gguf", "family": "qwen2", "families": ["qwen2"],
                            "parameter_size": "7.6B", "quantization_level": "Q4_K_M"},
            }
            for name, digest in models.items()
        ]}

    def _chat(self, request: dict) -> tuple[int, dict]:
        name = request.get("model", "")
        if not any(_canonical(name) == _canonical(pulled) for pulled in self.models):
            return 404, {"error": f'model "{name}" not found, try pulling it first'}
        content = self.reply(request)
        return 200, {
            "model": name,
            "created_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            "message": {"role": "assistant", "content": content},
            "done": True,
            "done_reason": "stop",
            "total_duration": 1_000_000,
            "prompt_eval_count": sum(words(m.get("content", "")) for m in request.get("messages", [])),
            "eval_count": words(content),
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the client expects

            def do_GET(self) -> None:
                if self.path == "/api/tags":
                    self._send(200, server._tags())
                else:
                    self._send(404, {"error": "404 page not found"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/api/chat":
                    self._send(404, {"error": "404 page not found"})
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
                        self._send(failure.status, {"error": failure.error})
                        return
                self._send(*server._chat(request))

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode("utf-8")
                closing = server.stopping.is_set()
                try:
                    self.send_response(status)
                    if closing:  # a stopped server must not keep serving kept-alive connections
                        self.send_header("Connection", "close")
                        self.close_connection = True
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout) before the answer came

            def log_message(self, format: str, *args) -> None:
                pass  # keep test output quiet

        return Handler
