"""A content-addressed store of training artifacts (LoRA adapters and the like).

    store = ArtifactStore()                       # .sleepy/artifacts, or $SLEEPY_ARTIFACTS_DIR
    material = training_material("lora", base_model=model.identity, base_name="Qwen/Qwen2.5-Coder-1.5B-Instruct",
                                 records=records, hyperparameters=config.to_dict(), seed=config.seed)
    artifact = store.get_or_create("lora", material, lambda out: train_lora(name, records, config, out).metrics(),
                                   made_by="lora-strategy")
    artifact.path                                 # <root>/<key>/: adapter_config.json, adapter_model.safetensors, ...

An artifact is named by the sha256 of everything that decides its contents (its
*material*), so asking twice for the same thing trains once, and changing anything
that matters (a record, a hyperparameter, the base weights, the package version)
trains anew instead of silently reusing a stale adapter.

The material (a JSON-able dict) must hold, under these keys:

    kind             what the artifact is ("lora", ...); `get_or_create` adds it
    base_model       the identity of the base weights, not just their name: the hf
                     backend's `identity` (a content hash of a local directory, or a
                     hub commit, and the precision)
    records          a digest of the training records (`records_digest`)
    hyperparameters  every setting of the training (`TrainConfig.to_dict()`)
    seed             the seed of the training
    version          the package version (the code that trains)

and may hold more (e.g. `base_name`, the name the base was given, which `sleepy
adapters` shows and exports). `training_material` fills it in.

Layout and concurrency: `<root>/<key>/artifact.json` marks a finished artifact.
`get_or_create` builds into a hidden temporary folder inside the root while holding
an exclusive lock (`fcntl.flock` on `<root>/<key>.lock`), then renames the folder
into place, so under pytest-xdist one process builds while the others wait and then
load its result, and nobody ever sees a half-written artifact. A failed build leaves
nothing behind and releases the lock. Lock files stay (removing them would race
with waiters); they are empty.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

__all__ = [
    "Artifact", "ArtifactError", "ArtifactStore", "REQUIRED_MATERIAL", "artifact_key", "default_artifacts_dir",
    "records_digest", "training_material",
]

REQUIRED_MATERIAL = ("kind", "base_model", "records", "hyperparameters", "seed", "version")
META = "artifact.json"
RESERVED = frozenset({"kind", "key", "material", "made_by", "created", "size", "files", "build"})


class ArtifactError(ValueError):
    """A missing or ambiguous artifact, or bad material; the message says which."""


def default_artifacts_dir(base: Path | None = None) -> Path:
    """$SLEEPY_ARTIFACTS_DIR, else `.sleepy/artifacts` under `base` (default: the cwd)."""
    if os.environ.get("SLEEPY_ARTIFACTS_DIR"):
        return Path(os.environ["SLEEPY_ARTIFACTS_DIR"])
    return (base or Path(".")) / ".sleepy" / "artifacts"


def _canonical(value) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ArtifactError(f"artifact material must be plain JSON (strings, numbers, lists, dicts): {error}") from None


def artifact_key(material: dict) -> str:
    """sha256 (hex) of the canonical JSON of `material` (sorted keys, no spaces). The
    keys of REQUIRED_MATERIAL must be present (a value may be null where it does not
    apply), so nothing that decides an artifact's contents is forgotten."""
    if not isinstance(material, dict):
        raise ArtifactError(f"artifact material must be a dict, got {type(material).__name__}")
    missing = [key for key in REQUIRED_MATERIAL if key not in material]
    if missing:
        raise ArtifactError(f"artifact material lacks {', '.join(missing)} (needs {', '.join(REQUIRED_MATERIAL)})")
    return hashlib.sha256(_canonical(material).encode("utf-8")).hexdigest()


def records_digest(records: Iterable[dict]) -> str:
    """sha256 of the records in order (each as canonical JSON), order included: the
    sampler's draws depend on it."""
    digest = hashlib.sha256()
    count = 0
    for record in records:
        digest.update(_canonical(record).encode("utf-8") + b"\n")
        count += 1
    return f"sha256:{digest.hexdigest()}:{count}"


def training_material(kind: str, *, base_model: str, records: Iterable[dict], hyperparameters: dict, seed: int,
                      base_name: str | None = None, **extra) -> dict:
    """The material of a trained artifact: `kind`, the base's identity (and its name),
    the records' digest, the hyperparameters, the seed and this package's version,
    plus `extra` (JSON values)."""
    from .. import __version__

    return {"kind": kind, "base_model": base_model, "base_name": base_name, "records": records_digest(records),
            "hyperparameters": hyperparameters, "seed": seed, "version": __version__, **extra}


@dataclass(frozen=True)
class Artifact:
    """A finished artifact: its folder and its `artifact.json`."""

    path: Path
    meta: dict

    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def kind(self) -> str:
        return self.meta.get("kind", "")

    @property
    def made_by(self) -> str:
        return self.meta.get("made_by", "")

    @property
    def created(self) -> str:
        return self.meta.get("created", "")

    @property
    def size(self) -> int:
        return int(self.meta.get("size", 0))

    @property
    def material(self) -> dict:
        return self.meta.get("material", {})

    @property
    def base_name(self) -> str:
        """The base model as a user would name it: the material's `base_name`, else the
        peft adapter's `base_model_name_or_path`, else the base's identity."""
        material = self.material
        if material.get("base_name"):
            return str(material["base_name"])
        try:
            config = json.loads((self.path / "adapter_config.json").read_text(encoding="utf-8"))
            if config.get("base_model_name_or_path"):
                return str(config["base_model_name_or_path"])
        except (OSError, ValueError):
            pass
        return str(material.get("base_model") or "")


def _load(path: Path) -> Artifact:
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except OSError as error:
        raise ArtifactError(f"{path / META}: cannot read ({error.strerror})") from None
    except ValueError as error:
        raise ArtifactError(f"{path / META}: not JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("key") != path.name:
        raise ArtifactError(f"{path / META}: not the metadata of artifact {path.name}")
    return Artifact(path, meta)


class ArtifactStore:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else default_artifacts_dir()

    # -- building --------------------------------------------------------------------

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{key}.lock", "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # blocks while another process builds
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _finished(self, key: str) -> Artifact | None:
        path = self.root / key
        return _load(path) if (path / META).is_file() else None

    def get_or_create(self, kind: str, material: dict, build: Callable[[Path], dict | None], *, made_by: str = "",
                      retrain: bool = False) -> Artifact:
        """The artifact of `material` (with `kind` added): loaded when it exists,
        otherwise built by `build(folder)`, which writes its files into `folder` and
        may return a dict of extra metadata (metrics) for artifact.json.

        artifact.json holds `kind`, `key`, `made_by` (the strategy), `created` (ISO 8601,
        UTC), `size` (bytes of the files), `files` (relative names), `build` (a random id
        of this build), `material`, and the keys `build` returned.

        `retrain=True` builds anew and replaces the existing artifact, unless another
        process replaced it while this one waited for the lock (then that fresh one
        is used: two workers asked to retrain train once)."""
        if material.get("kind", kind) != kind:
            raise ArtifactError(f"material says kind {material['kind']!r}, get_or_create was asked for {kind!r}")
        material = {**material, "kind": kind}
        key = artifact_key(material)
        seen = self._finished(key)
        if seen is not None and not retrain:
            return seen
        with self._locked(key):
            current = self._finished(key)
            rebuilt = current is not None and (seen is None or current.meta.get("build") != seen.meta.get("build"))
            if current is not None and (not retrain or rebuilt):
                return current  # built (or rebuilt) by another process while this one waited
            self._sweep(key)
            return self._build(kind, key, material, build, made_by)

    def _sweep(self, key: str) -> None:
        """Leftovers of builds of `key` killed before they could clean up (the lock is held)."""
        for stale in self.root.glob(f".build-{key[:16]}-*"):
            shutil.rmtree(stale, ignore_errors=True)

    def _build(self, kind: str, key: str, material: dict, build: Callable[[Path], dict | None],
               made_by: str) -> Artifact:
        folder = Path(tempfile.mkdtemp(prefix=f".build-{key[:16]}-", dir=self.root))
        try:
            extra = build(folder)
            if extra is None:
                extra = {}
            if not isinstance(extra, dict):
                raise ArtifactError(f"the build of a {kind} artifact returned {type(extra).__name__}, not a dict")
            reserved = sorted(set(extra) & RESERVED)
            if reserved:
                raise ArtifactError(f"the build of a {kind} artifact returned {', '.join(reserved)}, "
                                    "which the store sets itself")
            files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
            if META in files:
                raise ArtifactError(f"the build of a {kind} artifact wrote {META}, which the store writes")
            meta = {
                "kind": kind, "key": key, "made_by": made_by,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "size": sum((folder / name).stat().st_size for name in files), "files": files,
                "build": uuid.uuid4().hex, "material": material,
                **extra,
            }
            (folder / META).write_text(_canonical_pretty(meta), encoding="utf-8")
            final = self.root / key
            if final.exists():  # retrain: move the old one aside, then swap in the new one
                old = self.root / f".build-{key[:16]}-old-{uuid.uuid4().hex[:8]}"
                final.rename(old)
                folder.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                folder.rename(final)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return Artifact(final, meta)

    # -- looking up ------------------------------------------------------------------

    def list(self) -> list[Artifact]:
        """Every finished artifact, oldest first."""
        if not self.root.is_dir():
            return []
        found = [_load(path) for path in self.root.iterdir()
                 if not path.name.startswith(".") and path.is_dir() and (path / META).is_file()]
        return sorted(found, key=lambda a: (a.created, a.key))

    def get(self, key_prefix: str) -> Artifact:
        """The one artifact whose key starts with `key_prefix`."""
        prefix = key_prefix.strip().lower()
        if not prefix:
            raise ArtifactError("give an artifact key (or the start of one)")
        if not self.root.is_dir():
            raise ArtifactError(f"no artifact {key_prefix!r}: {self.root} does not exist")
        matches = sorted(path for path in self.root.iterdir()
                         if path.name.startswith(prefix) and not path.name.startswith(".")
                         and path.is_dir() and (path / META).is_file())
        if not matches:
            raise ArtifactError(f"no artifact whose key starts with {key_prefix!r} in {self.root} "
                                "(see `sleepy adapters list`)")
        if len(matches) > 1:
            shown = ", ".join(path.name[:max(12, len(prefix) + 4)] for path in matches[:5])
            more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
            raise ArtifactError(f"artifact key {key_prefix!r} is ambiguous: {len(matches)} artifacts start with it "
                                f"({shown}{more}); give more of the key")
        return _load(matches[0])

    def delete(self, key_prefix: str) -> Artifact:
        """Remove the artifact whose key starts with `key_prefix`; returns what it was."""
        artifact = self.get(key_prefix)
        with self._locked(artifact.key):
            if artifact.path.exists():
                doomed = self.root / f".build-{artifact.key[:16]}-deleted-{uuid.uuid4().hex[:8]}"
                artifact.path.rename(doomed)  # gone at once for readers, then removed
                shutil.rmtree(doomed, ignore_errors=True)
        return artifact


def _canonical_pretty(meta: dict) -> str:
    try:
        return json.dumps(meta, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    except (TypeError, ValueError) as error:
        raise ArtifactError(f"the artifact's metadata (what the build returned) must be plain JSON: {error}") from None
