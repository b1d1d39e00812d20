"""JSON files that readers never see half-written.

Caches, run files and the feedback buffer are read while other processes (xdist
workers, a background trainer) write them. Each write goes to a private temporary file
in the same folder and is renamed over the target, so a reader sees the old file, no
file, or the whole new one; with concurrent writers the last rename wins.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["write_json_atomic"]


def write_json_atomic(path: Path | str, data, *, indent: int | None = None, durable: bool = False) -> None:
    """Write `data` to `path` as JSON (UTF-8, non-ASCII kept). `durable` also flushes it
    to disk before the rename: for state that must survive a crash (the feedback
    buffer), not for caches that can be recomputed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix or ".json")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out, ensure_ascii=False, indent=indent)
            out.write("\n")
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
