"""The one protocol every model backend speaks, and the records it exchanges.

A backend turns a `CompletionRequest` (chat messages, generation settings, the adapter
to apply, and the code and diagnostics the messages were built from) into a
`Completion`. Backends that read chat messages (ollama, hf) ignore the context fields;
the rustfix backend, which is not a language model, reads only them.

Two kinds of failure, kept apart because they mean different things for the numbers:

- `ModelError`: this request failed (after the backend's own retries). The agent
  records it as the koan's failure reason and the session goes on.
- `ModelUnavailable`: the backend cannot serve at all (server down, model not pulled,
  4-bit asked for without CUDA). It stops the session once, with the fix in the
  message, and is never counted as a koan failure.
"""

from __future__ import annotations

from pathlib import Path

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qsl

from ..verify.diagnostics import Diagnostic

__all__ = [
    "Message",
    "GenerationSettings",
    "CompletionRequest",
    "Completion",
    "Model",
    "ModelSpec",
    "ModelError",
    "ModelUnavailable",
    "parse_model_spec",
    "BACKENDS",
]


@dataclass(frozen=True)
class Message:
    role: str  # "system", "user" or "assistant"
    content: str


@dataclass(frozen=True)
class GenerationSettings:
    temperature: float = 0.0  # 0 means greedy decoding
    seed: int = 0
    max_tokens: int = 1024  # new tokens per answer


@dataclass(frozen=True)
class CompletionRequest:
    messages: tuple[Message, ...]
    settings: GenerationSettings = GenerationSettings()
    adapter: str | None = None  # identity of the adapter to apply; None = the base model
    code: str = ""  # the program the messages ask to repair
    diagnostics: tuple[Diagnostic, ...] = ()  # rustc's diagnostics for `code`

    def to_dict(self) -> dict:
        return {
            "messages": [asdict(m) for m in self.messages],
            "settings": asdict(self.settings),
            "adapter": self.adapter,
            "code": self.code,
            "diagnostics": [d.to_dict() for d in self.diagnostics],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "CompletionRequest":
        return cls(messages=tuple(Message(**m) for m in data["messages"]),
                   settings=GenerationSettings(**data["settings"]), adapter=data["adapter"], code=data["code"],
                   diagnostics=tuple(Diagnostic.from_dict(d) for d in data["diagnostics"]))

    def digest(self) -> str:
        """A stable hash of the prompt alone (messages), recorded in episodes."""
        text = json.dumps([asdict(m) for m in self.messages], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Completion:
    text: str
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0  # time the model spent producing it; a replayed answer keeps the recorded time
    cached: bool = False
    model_identity: str = ""  # filled in by the cache layer: who answered (live or recorded)
    extra: dict = field(default_factory=dict)  # backend details worth keeping (e.g. done_reason)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Completion":
        return cls(**data)


class ModelError(Exception):
    """One request failed after the backend's retries; recorded as the koan's reason."""


class ModelUnavailable(Exception):
    """The backend cannot serve at all; the message says what to run to fix it."""


@runtime_checkable
class Model(Protocol):
    """Two optional attributes shape the completion cache's key (cache.py):
    `cache_name`, the model's name there (default `spec.name`; a local file or folder
    is named without its location), and `answer_neutral_options`, the settings that
    never change an answer (a server's address, CPU threads), left out of it."""

    spec: "ModelSpec"

    @property
    def identity(self) -> str:
        """What distinguishes this model's answers from another's: a digest or commit
        hash of the weights, not only a name that can point at new weights tomorrow."""

    def preflight(self) -> None:
        """Raise ModelUnavailable, with the command that fixes it, if requests would fail."""

    def complete(self, request: CompletionRequest) -> Completion:
        ...


@dataclass(frozen=True)
class ModelSpec:
    """A parsed `--model` value: `BACKEND[:NAME][?key=value&...]`.

    Examples: `rustfix`, `rustfix?applicability=maybe-incorrect`,
    `ollama:qwen2.5-coder:7b`, `hf:Qwen/Qwen2.5-Coder-1.5B-Instruct`,
    `hf:/models/my-model?load_in_4bit=1`,
    `openai:Qwen/Qwen2.5-Coder-1.5B-Instruct?base_url=http://gpu-box:8000/v1`.
    """

    text: str
    backend: str
    name: str
    options: tuple[tuple[str, str], ...] = ()

    def option(self, key: str, default: str | None = None) -> str | None:
        return dict(self.options).get(key, default)

    def seconds(self, key: str, default: float) -> float:
        """A positive, finite number of seconds; a ValueError names the setting."""
        return self.positive(key, default, "a number of seconds")

    def positive(self, key: str, default, what: str = "a number"):
        """A positive, finite number (`default` when unset); a ValueError names the setting."""
        text = self.option(key)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            value = 0.0
        if not value > 0 or value == float("inf"):
            raise ValueError(f"--model={self.text!r}: {key}={text!r}; use {what} above 0")
        return value

    def whole(self, key: str, default, *, minimum: int = 0):
        """A whole number of at least `minimum`; a ValueError names the setting."""
        text = self.option(key)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise ValueError(f"--model={self.text!r}: {key}={text!r}; use a whole number of at least {minimum}")
        return value

    def check_options(self, known: dict[str, str]) -> None:
        """Refuse settings the backend does not know: a typo must not silently run
        another configuration. `known` maps each setting to what it accepts."""
        for key, _ in self.options:
            if key not in known:
                accepted = "; ".join(f"{k}={v}" for k, v in known.items()) or "none"
                raise ValueError(f"--model={self.text!r}: unknown setting {key!r} for {self.backend}; accepted: {accepted}")


def register_peft_adapter(adapters: dict[str, Path], identity: str, directory: Path) -> None:
    """Record a peft adapter folder under `identity` in a backend's `adapters` table:
    the one check every adapter-taking backend makes before anything loads."""
    if not (directory / "adapter_config.json").is_file():
        raise ValueError(f"adapter {identity!r}: {directory} holds no adapter_config.json (not a peft adapter)")
    known = adapters.get(identity)
    if known is not None and known != directory:
        raise ValueError(f"adapter {identity!r} is already registered for {known}")
    adapters[identity] = directory


BACKENDS = ("rustfix", "ollama", "hf", "llamacpp", "openai")


def parse_model_spec(text: str, added: tuple[str, ...] = ()) -> ModelSpec:
    """Parse `--model`; a ValueError names the option and lists what is accepted.
    `added` names the backends that hooks added (hookspec.py)."""
    base, _, query = text.strip().partition("?")
    backend, _, name = base.partition(":")
    if backend not in BACKENDS and backend not in added:
        raise ValueError(
            f"--model={text!r}: unknown backend {backend!r}; use one of "
            "rustfix, ollama:NAME (e.g. ollama:qwen2.5-coder:7b), hf:NAME_OR_PATH, llamacpp:PATH.gguf, "
            "openai:MODEL?base_url=URL" + "".join(f", {extra}:NAME" for extra in added)
        )
    examples = {"ollama": "qwen2.5-coder:7b", "hf": "Qwen/Qwen2.5-Coder-1.5B-Instruct",
                "llamacpp": "models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                "openai": "Qwen/Qwen2.5-Coder-1.5B-Instruct?base_url=http://127.0.0.1:8000/v1"}
    if backend in examples and not name:
        raise ValueError(f"--model={text!r}: {backend} needs a model name, e.g. {backend}:{examples[backend]}")
    if backend == "rustfix" and name:
        raise ValueError(f"--model={text!r}: rustfix takes no name; settings go after '?', "
                         "e.g. rustfix?applicability=maybe-incorrect")
    try:
        options = tuple(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise ValueError(f"--model={text!r}: cannot read the settings after '?'; write key=value pairs joined by '&'") from None
    return ModelSpec(text=text.strip(), backend=backend, name=name, options=options)
