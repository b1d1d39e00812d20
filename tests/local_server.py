"""What the test servers of model APIs share (ollama_server.py, openai_server.py): a real
threaded HTTP server on a free 127.0.0.1 port, so parallel test workers never clash; a
queue of failures, one per chat request; and a record of every chat request received.

A subclass builds its request handler in `_handler()` and answers chat requests after
`_next_failure(request)` says whether this one misbehaves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Failure", "LocalServer", "echo_reply", "words"]


@dataclass(frozen=True)
class Failure:
    """How one chat request misbehaves; a server's `failures` holds one per request."""

    status: int = 0  # answer with this HTTP status and the API's error body
    delay: float = 0.0  # wait this long first (to outlast a client's timeout)
    disconnect: bool = False  # close the connection without answering
    error: str = "server busy, please try again"


def words(text: str) -> int:
    return len(text.split())


def echo_reply(request: dict) -> str:
    """The default answer: the last message, quoted back."""
    return f"you said: {request['messages'][-1]['content']}"


class LocalServer:
    thread_name = "test-server"
    # True: stop as uvicorn does (vLLM's, llama-cpp-python's server), the port closing
    # before the requests in flight end; False: wake sleeping handlers first.
    port_closes_first = False

    def __init__(self, reply: Callable[[dict], str]):
        self.reply = reply  # chat request JSON -> the assistant's content
        self.failures: list[Failure] = []  # consumed in order, one per chat request
        self.chat_requests: list[dict] = []  # every chat request received, on arrival
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        # A short poll keeps shutdown (and so every test's teardown) quick.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=self.thread_name, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        if not self.port_closes_first:
            self.stopping.set()  # wakes handlers sleeping out a `delay`
        self._httpd.shutdown()
        self._httpd.server_close()
        self.stopping.set()
        self._thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _next_failure(self, request: dict) -> Failure | None:
        with self._lock:
            self.chat_requests.append(request)
            return self.failures.pop(0) if self.failures else None
