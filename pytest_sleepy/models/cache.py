"""Record/replay of completions.

Every model call goes through `CompletionCache`. An entry is found by what decides the
answer: backend, model name, the settings that change answers, adapter identity,
messages, generation settings, and the code and diagnostics a non-neural backend
reads. What only says where or how fast a model runs is left out, so a recorded run
replays on another machine: the folder a local file sits in (its name stays), a
server's address and key variable, timeouts, retries, CPU threads (each backend lists
its own in `answer_neutral_options`).

Under one key each model identity (a weights digest, not only a name) that answered
has an entry of its own, and a live model only reads its own, so new weights behind an
old name, or another file of the same name, are never served stale answers and never
overwrite another model's. Replaying (`read`) needs no model at all, so there is no
identity to compare: the one recorded answer is replayed, its identity reported, and a
key that several models answered is a CacheMiss naming them. Entries are JSON files holding the model spec, the
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
FORMAT = "4"  # bump when the key material or layout changes; rekey() moves older entries
TRANSPORT_OPTIONS = ("timeout", "retries")


class CacheMiss(Exception):
    """`read` mode and no recorded answer: the run cannot be replayed as asked."""


def identity_digest(identity: str) -> str:
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]


class CompletionCache:
    """Entries live at `KEY[:2]/KEY/IDENTITY.json`: one per model identity that answered
    the request, so two models that share a cache name (two `model.gguf` files, two
    `checkpoint-500` folders) never overwrite each other's answers."""

    def __init__(self, directory: Path | str, mode: str = "rw"):
        if mode not in CACHE_MODES:
            raise ValueError(f"--sleepy-cache={mode!r}: use one of {', '.join(CACHE_MODES)}")
        self.directory = Path(directory)
        self.mode = mode

    @staticmethod
    def key(model: Model, request: CompletionRequest) -> str:
        neutral = set(TRANSPORT_OPTIONS) | set(getattr(model, "answer_neutral_options", ()))
        material = {
            "format": FORMAT,
            "backend": model.spec.backend,
            "model": getattr(model, "cache_name", model.spec.name),
            "options": sorted((k, v) for k, v in model.spec.options if k not in neutral),
            "request": request.to_dict(),
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()

    def path(self, key: str, identity: str) -> Path:
        return self.directory / key[:2] / key / f"{identity_digest(identity)}.json"

    def get(self, key: str, identity: str | None) -> Completion | None:
        """The completion `identity` recorded for `key`. With no identity (replaying
        with no model), the one recorded; answers of several models under one key
        cannot be told apart then, and raise CacheMiss naming them."""
        if identity is not None:
            return _read(self.path(key, identity))
        recorded = sorted((self.directory / key[:2] / key).glob("*.json"))
        if len(recorded) > 1:
            identities = sorted(hit.model_identity for hit in map(_read, recorded) if hit is not None)
            raise CacheMiss(f"{len(recorded)} models answered this request (cache key {key[:12]}) in {self.directory}: "
                            f"{', '.join(identities)}; replay with the model available (--sleepy-cache=rw), "
                            "or keep each model's answers in a cache folder of its own")
        return _read(recorded[0]) if recorded else None

    def put(self, key: str, model: Model, request: CompletionRequest, completion: Completion) -> None:
        record = {"model": model.spec.text, "identity": completion.model_identity,
                  "request": request.to_dict(), "completion": completion.to_dict()}
        write_json_atomic(self.path(key, completion.model_identity), record, indent=1)


def _read(path: Path) -> Completion | None:
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
        completion = Completion.from_dict(record["completion"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return replace(completion, cached=True, model_identity=record["identity"])


def rekey(directory: Path | str, load=None) -> tuple[int, int, int]:
    """Move every entry under `directory` to the place today's code gives it, from the
    model spec, identity and request the entry holds. Returns (moved, already right,
    left because another answer of the same model to the same request is already
    there). An entry that cannot be read is left where it is and named in the
    ValueError raised after the rest are moved. `load` builds a model from its spec
    (default `load_model`); building one reads settings only, so no weights or server
    are needed."""
    if load is None:
        from . import load_model as load
    directory = Path(directory)
    cache = CompletionCache(directory)
    moved = right = kept = 0
    unreadable = []
    models: dict[str, Model] = {}
    for path in sorted([*directory.glob("??/*.json"), *directory.glob("??/*/*.json")]):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if record["model"] not in models:
                models[record["model"]] = load(record["model"])
            model = models[record["model"]]
            request = CompletionRequest.from_dict(record["request"])
            target = cache.path(CompletionCache.key(model, request), record["identity"])
        except (OSError, ValueError, TypeError, KeyError) as error:
            unreadable.append(f"{path.relative_to(directory)} ({type(error).__name__}: {error})")
            continue
        if target == path:
            right += 1
            continue
        if target.exists():
            kept += 1  # never overwrite an answer; the older layout's copy stays where it was
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)
        moved += 1
        for folder in (path.parent, path.parent.parent):
            if folder != directory and not any(folder.iterdir()):
                folder.rmdir()
    if unreadable:
        raise ValueError(f"{directory}: {len(unreadable)} entries could not be rekeyed and were left as they are: "
                         + "; ".join(unreadable[:5]))
    return moved, right, kept


def cached_complete(model: Model, request: CompletionRequest, cache: CompletionCache | None) -> Completion:
    """Answer `request` from the cache when the mode allows, else from the model."""
    if cache is None or cache.mode == "off":
        return _live(model, request)
    key = cache.key(model, request)
    if cache.mode == "read":
        if (hit := cache.get(key, identity=None)) is not None:
            return hit
        raise CacheMiss(f"no recorded answer of {model.spec.text} for this request (cache key {key[:12]}) "
                        f"in {cache.directory}; record one with --sleepy-cache=rw and the model available, or, "
                        "for a cache an earlier release recorded, run `sleepy cache rekey DIR` first")
    if cache.mode == "rw" and (hit := cache.get(key, identity=model.identity)) is not None:
        return hit
    completion = _live(model, request)
    cache.put(key, model, request, completion)
    return completion


def _live(model: Model, request: CompletionRequest) -> Completion:
    return replace(model.complete(request), model_identity=model.identity)
