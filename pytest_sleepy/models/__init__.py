"""Model backends behind one protocol (`base.Model`), chosen by `--model`.

    rustfix[?applicability=machine-applicable|maybe-incorrect]   rustc's own suggestions (default)
    ollama:NAME                                                  a model served by Ollama
    hf:NAME_OR_PATH[?load_in_4bit=1&...]                         transformers, local or hub weights
    llamacpp:PATH.gguf | llamacpp:OWNER/REPO/FILE.gguf           llama.cpp in-process (GGUF)
    openai:MODEL?base_url=URL[&api_key_env=NAME&...]             an OpenAI-compatible server (vLLM, llama.cpp)

Backends are imported only when chosen, so `rustfix` needs neither torch nor a server.
"""

from __future__ import annotations

from .base import (
    BACKENDS,
    Completion,
    CompletionRequest,
    GenerationSettings,
    Message,
    Model,
    ModelError,
    ModelSpec,
    ModelUnavailable,
    parse_model_spec,
)
from .cache import CACHE_MODES, CacheMiss, CompletionCache, cached_complete

__all__ = [
    "CACHE_MODES", "CacheMiss", "Completion", "CompletionCache", "CompletionRequest", "GenerationSettings",
    "Message", "Model", "ModelError", "ModelSpec", "ModelUnavailable", "cached_complete", "load_model",
    "parse_model_spec", "DEFAULT_MODEL",
]

DEFAULT_MODEL = "rustfix"


def load_model(spec: str | ModelSpec, added: dict | None = None) -> Model:
    """Build the backend for `spec`. Bad settings raise ValueError naming them; a backend
    that cannot run here raises ModelUnavailable. Loading weights or contacting a server
    happens here or in `preflight()`, never silently per request. `added` maps the names
    of backends that hooks added (hookspec.py) to their factories."""
    added = added or {}
    taken = sorted(set(added) & set(BACKENDS))
    if taken:
        raise ValueError(f"a pytest_sleepy_add_backends hook added {', '.join(taken)}, a built-in backend's "
                         "name: give the backend a name of its own")
    if isinstance(spec, str):
        spec = parse_model_spec(spec, tuple(added))
    if spec.backend in added:
        model = added[spec.backend](spec)
        if not isinstance(model, Model):
            raise ValueError(f"--model={spec.text!r}: the {spec.backend} backend's factory returned "
                             f"{type(model).__name__}, not a pytest_sleepy.models.Model")
        return model
    if spec.backend == "rustfix":
        from .rustfix import RustfixModel

        return RustfixModel(spec)
    if spec.backend == "ollama":
        from .ollama import OllamaModel

        return OllamaModel(spec)
    if spec.backend == "llamacpp":
        from .llamacpp import LlamaCppModel

        return LlamaCppModel(spec)
    if spec.backend == "openai":
        from .openai import OpenAIModel

        return OpenAIModel(spec)
    from .hf import HFModel

    return HFModel(spec)
