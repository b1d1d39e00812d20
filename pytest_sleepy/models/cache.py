"""Record/replay of completions.

Every model call goes through `CompletionCache`. An entry is found by backend, model
name and the settings that change answers (not timeout or retries), adapter identity,
messages, generation settings, and the code and diagnostics a non-neural backend
reads; it holds the model identity (a weights digest, not only a name) that answered,
and a live model only accepts entries recorded by the same identity, so new weights behind an old name are never served stale answers. Replaying
(`read`) needs no model at all, so there is no identity to compare: the recorded one is
reported instead. Entries are JSON files holding the request, the identity and the
completion, written atomically, so concurrent pytest-xdist workers share one cache and
a person can read what the model was asked.

Modes (`--sleepy-cache`): `rw` reads and writes (default); `read` only replays and
treats a missing entry as an error (CI replaying a recorded run without the model);
`write` always calls the model and records; `off` neither reads nor writes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from ..jsonfiles import write_json_atomic
from .base import Completion, CompletionRequest, Model

__all__ = ["CompletionCache", "CacheMiss", "CACHE_MODES", "cached_complete"]

CACHE_MODES = ("off", "read", "write", "rw")
FORMAT = "2"  # bump when the key material changes meaning
TRANSPORT_OPTIONS = ("timeout", "retries")


class CacheMiss(Exception):
    """`read` mode and no recorded answer: the run cannot be replayed as asked."""


class CompletionCache:
    def __init__(self, directory: Path | str, mode: str = "rw"):
        if mode not in CACHE_MODES:
            raise ValueError(f"--sleepy-cache={mode!r}: use one of {', '.join(CACHE_MODES)}")
        self.directory = Path(directory)
        self.mode = mode

    @staticmethod
    def key(model: Model, request: CompletionRequest) -> str:
        material = {
            "format": FORMAT,
            "backend": model.spec.backend,
            "model": model.spec.name,
            # Settings that change answers (rustfix's applicability, hf's dtype, 4-bit,
            # revision) are part of the key; request plumbing (timeout, retries) is not.
            "options": sorted((k, v) for k, v in model.spec.options if k not in TRANSPORT_OPTIONS),
            "request": request.to_dict(),
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str, identity: str | None) -> Completion | None:
        """The recorded completion, if any and (when `identity` is given) recorded by it."""
        try:
            with open(self._path(key), encoding="utf-8") as handle:
                record = json.load(handle)
            if identity is not None and record["identity"] != identity:
                return None
            completion = Completion.from_dict(record["completion"])
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return replace(completion, cached=True, model_identity=record["identity"])

    def put(self, key: str, model: Model, request: CompletionRequest, completion: Completion) -> None:
        record = {"model": model.spec.text, "identity": completion.model_identity,
                  "request": request.to_dict(), "completion": completion.to_dict()}
        write_json_atomic(self._path(key), record, indent=1)


def cached_complete(model: Model, request: CompletionRequest, cache: CompletionCache | None) -> Completion:
    """Answer `request` from the cache when the mode allows, else from the model."""
    if cache is None or cache.mode == "off":
        return _live(model, request)
    key = cache.key(model, request)
    if cache.mode == "read":
        if (hit := cache.get(key, identity=None)) is not None:
            return hit
        raise CacheMiss(f"no recorded answer of {model.spec.text} for this request (cache key {key[:12]}) "
                        f"in {cache.directory}; record one with --sleepy-cache=rw and the model available")
    if cache.mode == "rw" and (hit := cache.get(key, identity=model.identity)) is not None:
        return hit
    completion = _live(model, request)
    cache.put(key, model, request, completion)
    return completion


def _live(model: Model, request: CompletionRequest) -> Completion:
    return replace(model.complete(request), model_identity=model.identity)
