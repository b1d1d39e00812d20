"""Record/replay of completions.

Every model call goes through `CompletionCache`. An entry is found by what decides the
answer: backend, model name, the settings that change answers, adapter identity,
messages, generation settings, and the code and diagnostics a non-neural backend
reads. What only says where or how fast a model runs is left out, so a recorded run
replays on another machine: the folder a local file sits in (its name stays), a
server's address and key variable, timeouts, retries, CPU threads (each backend lists
its own in `answer_neutral_options`). The seed is left out at temperature 0, where
greedy decoding never reads it.

An entry holds the model identity (a weights digest, not only a name) that answered,
and a live model only accepts entries recorded by the same identity, so new weights
behind an old name, or another file of the same name, are never served stale answers.
Replaying (`read`) needs no model at all, so there is no identity to compare: the
recorded one is reported instead. Entries are JSON files holding the model spec, the
request, the identity and the completion, written atomically, so concurrent
pytest-xdist workers share one cache and a person can read what the model was asked.
`rekey(directory)` (`sleepy cache rekey DIR`) moves the entries of an older key format
to today's keys.

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

__all__ = ["CompletionCache", "CacheMiss", "CACHE_MODES", "cached_complete", "rekey"]

CACHE_MODES = ("off", "read", "write", "rw")
FORMAT = "3"  # bump when the key material changes meaning; rekey() moves older entries
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
        neutral = set(TRANSPORT_OPTIONS) | set(getattr(model, "answer_neutral_options", ()))
        request_material = request.to_dict()
        if request.settings.temperature == 0:
            request_material["settings"]["seed"] = None
        material = {
            "format": FORMAT,
            "backend": model.spec.backend,
            "model": getattr(model, "cache_name", model.spec.name),
            "options": sorted((k, v) for k, v in model.spec.options if k not in neutral),
            "request": request_material,
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


def rekey(directory: Path | str, load=None) -> tuple[int, int]:
    """Move every entry under `directory` to the key today's code gives it, from the
    model spec and request the entry holds. Returns (moved, already right). An entry
    that cannot be read is left where it is and named in the ValueError raised after
    the rest are moved. `load` builds a model from its spec (default `load_model`);
    building one reads settings only, so no weights or server are needed."""
    if load is None:
        from . import load_model as load
    directory = Path(directory)
    moved = right = 0
    unreadable = []
    models: dict[str, Model] = {}
    for path in sorted(directory.glob("??/*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            model = models.get(record["model"]) or models.setdefault(record["model"], load(record["model"]))
            request = CompletionRequest.from_dict(record["request"])
        except (OSError, ValueError, TypeError, KeyError) as error:
            unreadable.append(f"{path.name} ({type(error).__name__}: {error})")
            continue
        key = CompletionCache.key(model, request)
        target = directory / key[:2] / f"{key}.json"
        if target == path:
            right += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)
        moved += 1
        if not any(path.parent.iterdir()):
            path.parent.rmdir()
    if unreadable:
        raise ValueError(f"{directory}: {len(unreadable)} entries could not be rekeyed and were left as they are: "
                         + "; ".join(unreadable[:5]))
    return moved, right


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
