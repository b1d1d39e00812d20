"""Verdicts on disk, keyed by everything that decides them (see Verifier.cache_key)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ..jsonfiles import write_json_atomic
from .verdict import Verdict

__all__ = ["VerificationCache"]


class VerificationCache:
    """Verdicts on disk, one JSON file per content key; safe for concurrent writers."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Verdict | None:
        try:
            with open(self._path(key), encoding="utf-8") as handle:
                return replace(Verdict.from_dict(json.load(handle)), cached=True)
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def put(self, key: str, verdict: Verdict) -> None:
        write_json_atomic(self._path(key), verdict.to_dict())
