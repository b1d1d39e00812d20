"""Human feedback on model answers, and a `feedback` LoRA adapter trained from it in
the background.

    config = FeedbackConfig.from_table(tool_sleepy["feedback"], "pyproject.toml: [tool.sleepy.feedback]",
                                       base_dir=Path("."), default_model=tool_sleepy.get("model"))
    record = correction_record(episode, koan, weight_class="critical", verifier=verifier, guard=guard,
                               weights=config.weights)
    result = add_feedback(FeedbackBuffer(config.dir, config.buffer_size), record, config)
    result.started, result.pid                  # a training began in the background (never waits for it)
    latest_adapter(config.dir)                  # LatestAdapter(identity, path, ...) once one finished

A person marks an episode (one model answer of a run's `--sleepy-episodes` file) as
`critical` (10x), `medium` (3x) or `good` (1x). The mark becomes an SFT record (the
format of `training/records.py`): the prompt the model was given, answered with the
koan's reference fix or a fix the person wrote, which the sandboxed verifier must pass
first. Records of eval koans are refused unless asked for (`allow_eval`, then marked
`leaks = true`), and every other record passes the leakage guard.

Records gather in a ring buffer; once `threshold` records were added since the last
training started, one detached process (`python -m pytest_sleepy.feedback train DIR`)
trains a LoRA adapter of the base model on a snapshot of the buffer, drawing records
in proportion to their weight, into the artifact store (kind `feedback`).

State, all in the feedback directory (`[tool.sleepy.feedback] dir`, default
`.sleepy/feedback`):

    buffer.json    {"version": 1, "capacity": N, "total": added ever, "pending": added since
                    the last training took its snapshot, "records": [SFT record, ...] oldest first}
    buffer.lock    empty; every read-modify-write of buffer.json and training.json holds an
                   exclusive fcntl.flock on it
    training.json  the last training: {"run": n, "status": "starting" | "running" | "done" |
                   "failed", "pid", "proc_start", "started", "finished", "step", "steps",
                   "loss", "tokens_per_second", "eta_seconds", "records", "weights" (class ->
                   count), "config" (model, train config, artifacts dir, threshold),
                   "adapter": {"key", "path", "identity", "metrics"} | null, "error", "log"}
    latest.json    the newest finished adapter: {"identity", "path", "key", "created",
                   "base_model", "base_name", "records", "run"}
    train.log      the workers' output (appended)

Files are written whole (a temporary file, then os.replace), so a reader never sees a
half-written one. A "starting" or "running" training whose process is gone (its pid
dead, or reused by another process) is reported, and stored, as failed.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import math
import os
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType

from .jsonfiles import write_json_atomic
from .koans import Koan
from .progress import training_reporter
from .training.records import WEIGHT_CLASSES
from .training.lora import TrainConfig

__all__ = [
    "FeedbackConfig", "FeedbackError", "FeedbackBuffer", "AddResult", "BufferStatus",
    "LatestAdapter", "ListedEpisode", "episode_id", "find_episode", "correction_record", "add_feedback",
    "start_training", "training_state", "latest_adapter", "list_episodes", "run_worker", "DEFAULT_TRAIN",
    "BUFFER_FILE", "LOCK_FILE", "STATE_FILE", "LATEST_FILE", "LOG_FILE",
]

BUFFER_FILE, LOCK_FILE, STATE_FILE, LATEST_FILE, LOG_FILE = (
    "buffer.json", "buffer.lock", "training.json", "latest.json", "train.log")
ACTIVE = ("starting", "running")
DEFAULT_TRAIN = TrainConfig(steps=100, warmup=5, weighted=True)


class FeedbackError(ValueError):
    """Feedback that cannot be recorded or trained as asked; the message says why and what to do."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- configuration ---------------------------------------------------------------------

@dataclass(frozen=True)
class FeedbackConfig:
    """The keys of `[tool.sleepy.feedback]`:

    dir          .sleepy/feedback  the feedback directory (relative to pyproject.toml)
    buffer_size  100               records kept; older ones drop out
    threshold    10                records added since the last training that start the next one
    weights      {critical = 10, medium = 3, good = 1}  multipliers of the weight classes
    model        [tool.sleepy] model  the hf base the adapter is trained on (hf:NAME_OR_PATH)
    train        [tool.sleepy.train]-style table; defaults as TrainConfig but steps = 100,
                 warmup = 5, and weighted sampling always

    `artifacts_dir` (not a key: the CLI takes `[tool.sleepy] artifacts-dir`) is the
    artifact store the adapters go to; None means `default_artifacts_dir()` of the cwd."""

    dir: Path = Path(".sleepy/feedback")
    buffer_size: int = 100
    threshold: int = 10
    weights: Mapping[str, float] = field(default_factory=lambda: MappingProxyType(dict(WEIGHT_CLASSES)))
    model: str | None = None
    train: TrainConfig = DEFAULT_TRAIN
    artifacts_dir: Path | None = None

    def __post_init__(self):
        object.__setattr__(self, "dir", Path(self.dir))
        object.__setattr__(self, "weights", MappingProxyType({**WEIGHT_CLASSES, **dict(self.weights)}))
        if not self.train.weighted:
            object.__setattr__(self, "train", replace(self.train, weighted=True))

    @classmethod
    def from_table(cls, table: Mapping, where: str, *, base_dir: Path | None = None,
                   default_model: str | None = None, artifacts_dir: Path | None = None) -> FeedbackConfig:
        """A config from a `[tool.sleepy.feedback]` table; `dir` and a `./`-relative hf
        model path are relative to `base_dir` (the pyproject's folder). An unknown key
        or a bad value raises FeedbackError naming `where` and the key; keys may be
        spelled with '-' or '_'."""
        if not isinstance(table, Mapping):
            raise FeedbackError(f"{where}: must be a table, got {type(table).__name__}")
        base_dir = Path(base_dir) if base_dir is not None else Path(".")
        known = ("dir", "buffer_size", "threshold", "weights", "model", "train")
        values: dict = {}
        for key, raw in table.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise FeedbackError(f"{where}: unknown key {key!r}; known keys: "
                                    f"{', '.join(k.replace('_', '-') for k in known)}")
            if name in values:
                raise FeedbackError(f"{where}: {key!r} is given twice (as '-' and '_'); give it once")
            values[name] = _check(name, key, raw, where, base_dir)
        model = values.get("model", default_model)
        if model is not None:
            model = _check("model", "model", model, f"{where} (from [tool.sleepy] model)", base_dir)
        config = cls(dir=values.get("dir", base_dir / cls.dir), buffer_size=values.get("buffer_size", 100),
                     threshold=values.get("threshold", 10), weights=values.get("weights", {}), model=model,
                     train=values.get("train", DEFAULT_TRAIN), artifacts_dir=artifacts_dir)
        if config.threshold > config.buffer_size:
            raise FeedbackError(f"{where}: threshold ({config.threshold}) is larger than buffer-size "
                                f"({config.buffer_size}); training would never see all the records that start it")
        return config

    def weight(self, weight_class: str) -> float:
        if weight_class not in self.weights:
            raise FeedbackError(f"weight class {weight_class!r}: use one of {', '.join(self.weights)}")
        return float(self.weights[weight_class])

    def to_dict(self) -> dict:
        return {"dir": str(self.dir), "buffer_size": self.buffer_size, "threshold": self.threshold,
                "weights": dict(self.weights), "model": self.model, "train": self.train.to_dict(),
                "artifacts_dir": str(self.artifacts_dir) if self.artifacts_dir else None}


def _check(name: str, key: str, raw, where: str, base_dir: Path):
    def whole(value) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FeedbackError(f"{where}: {key} must be a whole number of at least 1, got {value!r}")
        return value

    if name == "dir":
        if not isinstance(raw, str) or not raw.strip():
            raise FeedbackError(f"{where}: {key} must be a path (a string), got {raw!r}")
        return base_dir / Path(raw).expanduser()
    if name in ("buffer_size", "threshold"):
        return whole(raw)
    if name == "weights":
        if not isinstance(raw, Mapping):
            raise FeedbackError(f"{where}: {key} must be a table like {{critical = 10, medium = 3, good = 1}}, "
                                f"got {raw!r}")
        weights = {}
        for cls_name, value in raw.items():
            if cls_name not in WEIGHT_CLASSES:
                raise FeedbackError(f"{where}: {key}.{cls_name}: unknown weight class; "
                                    f"use {', '.join(WEIGHT_CLASSES)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise FeedbackError(f"{where}: {key}.{cls_name} must be a positive number, got {value!r}")
            weights[cls_name] = float(value)
        return weights
    if name == "model":
        from .models.base import parse_model_spec

        if not isinstance(raw, str) or not raw.strip():
            raise FeedbackError(f"{where}: {key} must be a model spec like 'hf:Qwen/Qwen2.5-Coder-1.5B-Instruct', "
                                f"got {raw!r}")
        try:
            spec = parse_model_spec(raw)
        except ValueError as error:
            raise FeedbackError(f"{where}: {key}: {error}") from None
        if spec.backend == "hf" and spec.name.startswith(("./", "../")):
            query = raw.strip().partition("?")[2]
            return f"hf:{(base_dir / spec.name).resolve()}" + (f"?{query}" if query else "")
        return spec.text
    # train
    if not isinstance(raw, Mapping):
        raise FeedbackError(f"{where}: {key} must be a table of training settings, got {raw!r}")
    if raw.get("weighted", True) is not True:
        raise FeedbackError(f"{where}: {key}.weighted: feedback training always samples by weight; "
                            "drop the key (the weight classes are what feedback is)")
    try:
        return TrainConfig.from_table(dict(raw), f"{where} {key}", base=DEFAULT_TRAIN)
    except ValueError as error:
        raise FeedbackError(str(error)) from None


# -- episodes --------------------------------------------------------------------------

def episode_id(episode: Mapping) -> str:
    """A short stable id of an episode: 12 hex digits of the sha256 of its run id, koan,
    strategy, variant, sample and step."""
    key = [episode.get(name) for name in ("run_id", "koan", "strategy", "variant", "sample", "step")]
    return hashlib.sha256(json.dumps(key, separators=(",", ":")).encode("utf-8")).hexdigest()[:12]


def find_episode(episodes: Iterable[dict], wanted: str) -> dict:
    """The one episode whose id starts with `wanted`."""
    wanted = wanted.strip().lower()
    if not wanted:
        raise FeedbackError("give an episode id (see `sleepy feedback list`)")
    matches = [e for e in episodes if episode_id(e).startswith(wanted)]
    if not matches:
        raise FeedbackError(f"no episode with id {wanted!r} (see `sleepy feedback list EPISODES.jsonl`)")
    if len({episode_id(e) for e in matches}) > 1:
        raise FeedbackError(f"episode id {wanted!r} is ambiguous ({len(matches)} episodes start with it); "
                            "give more of it")
    return matches[0]


@dataclass(frozen=True)
class ListedEpisode:
    """An episode worth feedback: a failed attempt (no passing verdict, or a model
    error) and/or a slow one."""

    id: str
    episode: dict
    failed: bool
    slow: bool

    @property
    def reason(self) -> str:
        episode = self.episode
        if episode.get("model_error"):
            return f"model error: {episode['model_error']}"
        verdict = episode.get("verdict")
        if verdict is None:
            return "no code in the answer" if self.failed else ""
        return "passed" if verdict.get("passed") else str(verdict.get("reason") or "failed")


def list_episodes(episodes: Iterable[dict], *, slow_seconds: float | None = None) -> list[ListedEpisode]:
    """Failed attempts (verdict missing or not passed, or a model error) and, with
    `slow_seconds`, attempts whose model took longer than that, in file order."""
    found = []
    for episode in episodes:
        verdict = episode.get("verdict")
        failed = bool(episode.get("model_error")) or not (isinstance(verdict, dict) and verdict.get("passed"))
        seconds = episode.get("model_seconds") or 0.0
        slow = slow_seconds is not None and isinstance(seconds, (int, float)) and seconds > slow_seconds
        if failed or slow:
            found.append(ListedEpisode(episode_id(episode), episode, failed, slow))
    return found


# -- correction records ----------------------------------------------------------------

def correction_record(episode: Mapping, koan: Koan, *, weight_class: str, fix_code: str | None = None,
                      note: str = "", verifier=None, guard=None, allow_eval: bool = False,
                      weights: Mapping[str, float] | None = None) -> dict:
    """An SFT record teaching the answer the episode should have given: the episode's
    prompt (a trailing assistant turn dropped) answered with the fix in a ```rust
    fence. The fix is `fix_code`, which `verifier` must pass first (refused with the
    verdict's reason otherwise), or the koan's reference fix. Eval koans are refused
    unless `allow_eval` (the record is then marked leaks = true and not guarded);
    every other record must pass `guard` (a LeakageGuard over the eval koans).
    `weights` maps weight classes to multipliers (default 10/3/1)."""
    weights = {**WEIGHT_CLASSES, **dict(weights or {})}
    if weight_class not in weights:
        raise FeedbackError(f"weight class {weight_class!r}: use one of {', '.join(weights)}")
    ident = episode_id(episode)
    if episode.get("koan") != koan.id:
        raise FeedbackError(f"episode {ident} is about koan {episode.get('koan')!r}, not {koan.id!r}")
    if episode.get("koan_digest") and episode["koan_digest"] != koan.digest:
        raise FeedbackError(f"episode {ident}: koan {koan.id} changed since the run (its digest differs), so the "
                            "episode's prompt no longer matches the koan; rerun it and mark the new episode")
    if koan.split == "eval" and not allow_eval:
        raise FeedbackError(f"episode {ident}: {koan.id} is an eval koan; training on it would leak the benchmark "
                            "into the adapter. Mark episodes of train koans, or pass --allow-eval (the record is "
                            "then marked leaks=true)")
    messages = [{"role": m["role"], "content": m["content"]} for m in episode.get("messages") or []
                if isinstance(m, Mapping) and "role" in m and "content" in m]
    while messages and messages[-1]["role"] == "assistant":
        messages.pop()
    if not messages:
        raise FeedbackError(f"episode {ident} holds no prompt messages to train on")
    if fix_code is not None:
        if not fix_code.strip():
            raise FeedbackError(f"episode {ident}: the fix is empty")
        if verifier is None:
            raise FeedbackError("a fix of your own must be verified first, and no verifier was given")
        verdict = verifier.verify_candidate(koan, fix_code)
        if not verdict.passed:
            raise FeedbackError(f"episode {ident}: your fix does not pass {koan.id}: {verdict.reason}")
        fixed, source = fix_code, "person"
    else:
        fixed, source = koan.fixed, "reference"
    record = {
        "kind": "sft",
        "messages": [*messages, {"role": "assistant", "content": f"```rust\n{fixed.strip()}\n```"}],
        "code": {"buggy": episode.get("code") or koan.buggy, "fixed": fixed},
        "metadata": {
            "source_koan": koan.id, "variant": episode.get("variant") or None, "pattern": koan.pattern,
            "family": koan.family, "split": koan.split, "transformations": [], "seed": episode.get("seed"),
            "strategy": episode.get("strategy"), "episode": ident, "run_id": episode.get("run_id"),
            "step": episode.get("step"), "model": episode.get("model"), "fix": source, "note": note,
            "weight_class": weight_class, "weight": float(weights[weight_class]), "leaks": False,
        },
    }
    leaks = koan.split == "eval"
    if guard is not None:
        from .training.leakage import LeakageError

        try:
            guard.check_record(record, label=f"feedback on episode {ident} ({koan.id})")
        except LeakageError as error:
            if not allow_eval:
                raise FeedbackError(f"refused by the leakage guard: {error}; pass --allow-eval to keep it anyway "
                                    "(the record is then marked leaks=true)") from None
            leaks = True
    record["metadata"]["leaks"] = leaks
    return record


# -- the buffer ------------------------------------------------------------------------

def _write_json(path: Path, data) -> None:
    # Durable: the buffer and training state must survive a crash of the writer.
    write_json_atomic(path, data, indent=1, durable=True)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise FeedbackError(f"{path}: cannot read ({error})") from None
    if not isinstance(data, dict):
        raise FeedbackError(f"{path}: expected a JSON object")
    return data


@dataclass(frozen=True)
class AddResult:
    size: int  # records in the buffer now
    pending: int  # records added since the last training started (0 when one just started)
    crossed: bool  # this addition brought pending to the threshold
    started: bool = False  # and a training was started in the background
    pid: int | None = None  # its process
    capacity: int = 0
    total: int = 0  # records ever added
    why_not: str = ""  # crossed but not started: why (one running, no trainable model, ...)


@dataclass(frozen=True)
class BufferStatus:
    size: int
    capacity: int
    total: int
    pending: int
    weight: float  # sum of the records' weights
    classes: dict  # weight class -> records


class FeedbackBuffer:
    """A persistent ring buffer of weighted SFT records in `directory/buffer.json`;
    every read-modify-write holds an exclusive flock on `directory/buffer.lock`, so
    several processes may add at once."""

    def __init__(self, directory: Path | str, capacity: int = 100):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise FeedbackError(f"buffer capacity must be at least 1, got {capacity!r}")
        self.directory = Path(directory)
        self.capacity = capacity

    @property
    def path(self) -> Path:
        return self.directory / BUFFER_FILE

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's lock (blocks while another process holds it)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / LOCK_FILE, "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _load(self) -> dict:
        data = _read_json(self.path) or {"version": 1, "capacity": self.capacity, "total": 0, "pending": 0,
                                           "records": []}
        if not isinstance(data.get("records"), list):
            raise FeedbackError(f"{self.path}: field 'records' must be a list")
        return data

    def _save(self, data: dict) -> None:
        data["capacity"] = self.capacity
        data["records"] = data["records"][-self.capacity:]
        _write_json(self.path, data)

    def _add(self, record: dict) -> dict:
        """Add under the lock (the caller holds it); returns the new data."""
        _check_record(record)
        data = self._load()
        data["records"].append(record)
        data["records"] = data["records"][-self.capacity:]  # the oldest drop out
        data["total"] = int(data.get("total", 0)) + 1
        data["pending"] = int(data.get("pending", 0)) + 1
        return data

    def add(self, record: dict) -> AddResult:
        """Add a record (the oldest drops out beyond capacity); trains nothing."""
        with self.locked():
            data = self._add(record)
            self._save(data)
        return AddResult(size=len(data["records"]), pending=data["pending"], crossed=False,
                         capacity=self.capacity, total=data["total"])

    def records(self) -> list[dict]:
        """The records, oldest first (at most `capacity`)."""
        with self.locked():
            return self._load()["records"][-self.capacity:]

    def status(self) -> BufferStatus:
        with self.locked():
            data = self._load()
        records = data["records"][-self.capacity:]
        return BufferStatus(size=len(records), capacity=self.capacity, total=int(data.get("total", 0)),
                            pending=int(data.get("pending", 0)),
                            weight=sum(float(r["metadata"]["weight"]) for r in records),
                            classes=dict(Counter(r["metadata"]["weight_class"] for r in records)))


def _check_record(record: dict) -> None:
    if not isinstance(record, dict) or record.get("kind") != "sft" or not isinstance(record.get("messages"), list):
        raise FeedbackError("a feedback record must be an SFT record (kind 'sft' with messages)")
    metadata = record.get("metadata")
    try:
        weight = float(metadata["weight"])
        metadata["weight_class"]
    except (KeyError, TypeError, ValueError):
        raise FeedbackError("a feedback record needs metadata.weight_class and a numeric metadata.weight") from None
    if not weight > 0:
        raise FeedbackError(f"a feedback record's weight must be positive, got {weight}")


# -- training state --------------------------------------------------------------------

def _proc_start(pid: int) -> str | None:
    """The start time of process `pid` (Linux /proc), None when there is no such
    process or it is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if not Path("/proc/self/stat").exists():  # no /proc: ask the kernel
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                return "?"
            return "?"
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _alive(state: dict) -> bool:
    pid = state.get("pid")
    if not isinstance(pid, int):
        # The starter writes the pid before it lets go of the lock; a starter that died
        # in between left no process behind.
        try:
            age = (datetime.now(timezone.utc) - datetime.fromisoformat(state.get("started"))).total_seconds()
        except (TypeError, ValueError):
            return False
        return state.get("status") == "starting" and age < 60
    start = _proc_start(pid)
    return start is not None and (state.get("proc_start") in (None, "?") or start == "?"
                                  or start == state.get("proc_start"))


def _read_state(directory: Path) -> dict | None:
    """training.json, with a dead "starting"/"running" training turned into a failed
    one (written back). The caller holds the lock."""
    state = _read_json(directory / STATE_FILE)
    if state and state.get("status") in ACTIVE and not _alive(state):
        state.update(status="failed", finished=_now(),
                     error=f"the training process (pid {state.get('pid')}) ended without finishing; "
                           f"see {directory / LOG_FILE}")
        _write_json(directory / STATE_FILE, state)
    return state


def training_state(directory: Path | str) -> dict | None:
    """The last training's state (training.json; a dead active training reads as
    failed), None when none ever started."""
    buffer = FeedbackBuffer(directory)
    with buffer.locked():
        return _read_state(buffer.directory)


def _trainable_model(config: FeedbackConfig) -> str:
    """The hf model spec training uses, or FeedbackError saying why there is none."""
    if not config.model:
        raise FeedbackError("no base model to train on: set [tool.sleepy.feedback] model (or [tool.sleepy] model) "
                            "to hf:NAME_OR_PATH")
    if not config.model.startswith("hf:"):
        raise FeedbackError(f"model {config.model!r}: a feedback adapter is trained on transformers weights; "
                            "set [tool.sleepy.feedback] model to hf:NAME_OR_PATH")
    return config.model


def _worker_command(directory: Path) -> list[str]:
    return [sys.executable, "-m", "pytest_sleepy.feedback", "train", str(directory)]


def _start_locked(buffer: FeedbackBuffer, data: dict, state: dict | None, config: FeedbackConfig) -> int:
    """Mark a training as starting, reset pending and spawn its worker; the caller holds
    the lock and has checked that none is running. Returns the worker's pid."""
    from .training.artifacts import default_artifacts_dir

    model = _trainable_model(config)
    directory = buffer.directory.resolve()
    records = data["records"][-buffer.capacity:]
    if not records:
        raise FeedbackError("the feedback buffer is empty: there is nothing to train on")
    artifacts = (config.artifacts_dir or default_artifacts_dir()).resolve()
    run = int((state or {}).get("run", 0)) + 1
    new = {"run": run, "status": "starting", "pid": None, "proc_start": None, "started": _now(), "finished": None,
           "step": 0, "steps": config.train.steps, "loss": None, "tokens_per_second": None, "eta_seconds": None,
           "records": len(records), "total_at_start": int(data.get("total", 0)),
           "weights": dict(Counter(r["metadata"]["weight_class"] for r in records)),
           "config": {"model": model, "train": config.train.to_dict(), "artifacts_dir": str(artifacts),
                      "threshold": config.threshold, "capacity": buffer.capacity},
           "adapter": None, "error": None, "log": str(directory / LOG_FILE)}
    _write_json(directory / STATE_FILE, new)
    try:
        with open(directory / LOG_FILE, "ab") as log:
            process = subprocess.Popen(_worker_command(directory), stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    except OSError as error:
        new.update(status="failed", finished=_now(), error=f"cannot start the training process: {error}")
        _write_json(directory / STATE_FILE, new)
        raise FeedbackError(new["error"]) from None
    new.update(pid=process.pid, proc_start=_proc_start(process.pid))
    _write_json(directory / STATE_FILE, new)
    data["pending"] = 0
    buffer._save(data)
    return process.pid


def add_feedback(buffer: FeedbackBuffer, record: dict, config: FeedbackConfig, *, start: bool = True) -> AddResult:
    """Add `record`; when that brings the records added since the last training to
    `config.threshold` and no training is running, start one in the background (in the
    same locked section, so of several processes adding at once exactly one starts it)
    and return at once. `start=False` only records."""
    with buffer.locked():
        data = buffer._add(record)
        crossed = data["pending"] >= config.threshold
        started, pid, why_not = False, None, ""
        if crossed and start:
            state = _read_state(buffer.directory)
            if state and state.get("status") in ACTIVE:
                why_not = f"a training is already running (pid {state.get('pid')}); the next one starts after it"
            else:
                try:
                    _trainable_model(config)
                except FeedbackError as error:
                    why_not = str(error)
                else:
                    buffer._save(data)  # the record is kept even if starting fails
                    try:
                        pid = _start_locked(buffer, data, state, config)
                        started = True
                    except FeedbackError as error:
                        why_not = str(error)
        elif crossed:
            why_not = "training was not asked for (--no-train)"
        buffer._save(data)
    return AddResult(size=len(data["records"]), pending=data["pending"], crossed=crossed, started=started, pid=pid,
                     capacity=buffer.capacity, total=data["total"], why_not=why_not)


def start_training(buffer: FeedbackBuffer, config: FeedbackConfig) -> int:
    """Start a training on the buffer now, whatever the threshold; returns the worker's
    pid. Refused while one is running."""
    with buffer.locked():
        state = _read_state(buffer.directory)
        if state and state.get("status") in ACTIVE:
            raise FeedbackError(f"a training is already running (pid {state.get('pid')}); "
                                "see `sleepy feedback status`")
        return _start_locked(buffer, buffer._load(), state, config)


@dataclass(frozen=True)
class LatestAdapter:
    identity: str  # "feedback:<key16>.<build8>", the adapter name for model.register_adapter
    path: Path  # the peft adapter directory (adapter_config.json, adapter_model.safetensors)
    created: str
    key: str = ""
    base_model: str = ""  # the identity of the base weights it was trained on
    base_name: str = ""
    records: int = 0


def latest_adapter(directory: Path | str) -> LatestAdapter | None:
    """The newest finished feedback adapter of the feedback directory, None when none
    was trained yet (or its artifact was deleted since)."""
    try:
        data = _read_json(Path(directory) / LATEST_FILE)
    except FeedbackError:
        return None
    if not data or not data.get("identity") or not data.get("path"):
        return None
    path = Path(data["path"])
    if not (path / "adapter_config.json").is_file():
        return None
    return LatestAdapter(identity=data["identity"], path=path, created=data.get("created", ""),
                         key=data.get("key", ""), base_model=data.get("base_model", ""),
                         base_name=data.get("base_name", ""), records=int(data.get("records", 0)))


# -- the worker ------------------------------------------------------------------------

def _update_state(buffer: FeedbackBuffer, run: int, **changes) -> dict | None:
    """Merge `changes` into training.json if it still describes training `run`."""
    with buffer.locked():
        state = _read_json(buffer.directory / STATE_FILE)
        if not state or state.get("run") != run:
            return None
        state.update(changes)
        _write_json(buffer.directory / STATE_FILE, state)
        return state


def run_worker(directory: Path | str) -> int:
    """The background training (`python -m pytest_sleepy.feedback train DIR`): train on
    a snapshot of the buffer, report progress into training.json, and at the end record
    the adapter (or the error). Never modifies the buffer's records."""
    directory = Path(directory).resolve()
    print(f"[{_now()}] feedback worker pid {os.getpid()} in {directory}", flush=True)
    with FeedbackBuffer(directory).locked():
        state = _read_json(directory / STATE_FILE)
        if not state or state.get("status") != "starting":
            print(f"no training is starting in {directory} (status {state and state.get('status')}); nothing to do",
                  flush=True)
            return 2
        capacity = int(state["config"]["capacity"])
        buffer = FeedbackBuffer(directory, capacity)
        snapshot = buffer._load()
        records = snapshot["records"][-capacity:]
        if snapshot.get("pending"):  # records added since the start are in this snapshot: none is pending
            snapshot["pending"] = 0
            buffer._save(snapshot)
        run = state["run"]
        state.update(status="running", pid=os.getpid(), proc_start=_proc_start(os.getpid()), records=len(records))
        _write_json(directory / STATE_FILE, state)
    print(f"training run {run}: {len(records)} records, {state['steps']} steps on {state['config']['model']}",
          flush=True)
    try:
        adapter = _train(buffer, state, records)
    except BaseException as error:
        traceback.print_exc()
        sys.stdout.flush()
        message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        _update_state(buffer, run, status="failed", finished=_now(), error=message)
        return 1
    with buffer.locked():
        latest = {"identity": adapter["identity"], "path": adapter["path"], "key": adapter["key"],
                  "created": _now(), "base_model": adapter["base_model"], "base_name": adapter["base_name"],
                  "records": len(records), "run": run}
        _write_json(directory / LATEST_FILE, latest)
        current = _read_json(directory / STATE_FILE) or {}
        if current.get("run") == run:
            current.update(status="done", finished=_now(), adapter=adapter,
                           loss=adapter["metrics"].get("final_loss"), eta_seconds=0.0, error=None)
            _write_json(directory / STATE_FILE, current)
        # Feedback that gathered while this one trained starts the next training.
        data = buffer._load()
        if data.get("pending", 0) >= int(state["config"]["threshold"]):
            config = FeedbackConfig(dir=directory, buffer_size=capacity, threshold=int(state["config"]["threshold"]),
                                    model=state["config"]["model"],
                                    train=TrainConfig.from_table(state["config"]["train"], "training.json config"),
                                    artifacts_dir=Path(state["config"]["artifacts_dir"]))
            pending = data["pending"]
            try:
                pid = _start_locked(buffer, data, current, config)
                print(f"{pending} records pending: started the next training (pid {pid})", flush=True)
            except FeedbackError as error:
                print(f"could not start the next training: {error}", flush=True)
    print(f"done: adapter {adapter['identity']} at {adapter['path']}", flush=True)
    return 0


def _train(buffer: FeedbackBuffer, state: dict, records: list[dict]) -> dict:
    from .models import load_model
    from .training.artifacts import ArtifactStore, training_material
    from .training.lora import train_lora

    config = state["config"]
    run = state["run"]
    train = TrainConfig.from_table(config["train"], "training.json config")
    model = load_model(config["model"])
    model.preflight()
    identity = model.identity
    base_name = str(model.path) if getattr(model, "local", False) else model.name
    material = training_material("feedback", base_model=identity, base_name=base_name, records=records,
                                 hyperparameters=train.to_dict(), seed=train.seed)
    last = [0.0]
    # The worker's output is its log file: plain lines there (a bar on a terminal).
    lines = training_reporter("feedback training", lambda line: print(line, flush=True))

    def progress(step: int, steps: int, loss: float, tokens_per_second: float, eta: float) -> None:
        lines(step, steps, loss, tokens_per_second, eta)
        now = time.monotonic()
        if step == steps or step == 1 or now - last[0] >= 1.0:
            last[0] = now
            _update_state(buffer, run, step=step, steps=steps, loss=loss, tokens_per_second=tokens_per_second,
                          eta_seconds=eta)

    def build(folder: Path) -> dict:
        return {**train_lora(base_name, records, train, folder, progress).metrics(),
                "leaks": sum(1 for r in records if r["metadata"].get("leaks"))}

    artifact = ArtifactStore(config["artifacts_dir"]).get_or_create("feedback", material, build, made_by="feedback")
    metrics = {k: artifact.meta.get(k) for k in ("steps", "first_loss", "final_loss", "tokens", "seconds",
                                                 "device", "leaks") if k in artifact.meta}
    return {"key": artifact.key, "path": str(artifact.path),
            "identity": f"feedback:{artifact.key[:16]}.{str(artifact.meta.get('build', ''))[:8]}",
            "base_model": identity, "base_name": base_name, "metrics": metrics}


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_sleepy.feedback",
                                     description="the background training of feedback adapters")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train on the buffer of DIR (started by add_feedback)")
    train.add_argument("directory", type=Path, metavar="DIR")
    args = parser.parse_args(argv)
    return run_worker(args.directory)


if __name__ == "__main__":
    sys.exit(_main())
