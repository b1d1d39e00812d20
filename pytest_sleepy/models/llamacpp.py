"""The `llamacpp` backend: a GGUF model run in-process with llama-cpp-python.

    llamacpp:PATH.gguf[?n_ctx=8192&n_threads=N&n_gpu_layers=0]
    llamacpp:OWNER/REPO/FILE.gguf[?...]        a file of a hub repository

Install it with `pip install 'pytest-sleepy[llamacpp]'` (llama-cpp-python builds from
source; `CMAKE_ARGS="-DLLAVA_BUILD=OFF"` skips its multimodal part, and pip caches the
wheel).

Choices, and why:

- A local path is loaded with `Llama(model_path=...)`; `OWNER/REPO/FILE.gguf` goes
  through `Llama.from_pretrained(repo_id, filename)`, which uses the Hugging Face
  cache. With `HF_HUB_OFFLINE=1` the cached file is loaded by its path, since
  `from_pretrained` lists the repository online first. Construction reads the settings only;
  the weights load on the first request, so replaying recorded answers needs neither
  the file nor llama-cpp-python.
- The chat template is the GGUF's own (`tokenizer.chat_template`), which
  llama-cpp-python applies when no `chat_format` is forced.
- Temperature 0 (the default) is greedy decoding, which is deterministic for a given
  build, file and context size. A temperature above 0 samples with the request's
  seed, so a (prompt, seed) pair still names one answer.
- The identity is the sha256 of the GGUF file. Hashing a gigabyte takes seconds, so it
  is remembered per (path, size, mtime) in `gguf-digests.json` under the cache folder
  ($SLEEPY_CACHE_DIR, else ~/.cache/pytest-sleepy): a changed file is hashed again.
  The context size is part of the identity; threads and GPU layers are not (they
  change the speed, not the tokens a greedy decode picks, on one build).
- The completion cache's key names the file by its file name, not its folder, and
  leaves `n_threads` out, so a recorded run replays on another machine and home
  folder (`--sleepy-cache=read` needs neither the file nor llama-cpp-python).
  `n_gpu_layers` stays in the key: offloading changes the arithmetic, so a run
  recorded on the CPU is not taken for a GPU run's answers.
- `n_threads` defaults to llama.cpp's choice. On a busy 2-core machine one thread for
  generation was measured twice as fast as two; set it when the machine is shared.
- Adapters are not supported: training strategies need the `hf` backend (or a server
  that loads adapters per request).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import time
from pathlib import Path

from ..jsonfiles import write_json_atomic
from .base import Completion, CompletionRequest, ModelError, ModelSpec, ModelUnavailable

__all__ = ["LlamaCppModel", "file_digest"]

SETTINGS = {
    "n_ctx": "context tokens (default 8192)",
    "n_threads": "CPU threads (default: llama.cpp's choice)",
    "n_gpu_layers": "layers offloaded to the GPU (default 0; -1 = all)",
}
INSTALL = "pip install 'pytest-sleepy[llamacpp]'"
CHUNK = 1 << 22


def digest_cache_path() -> Path:
    base = os.environ.get("SLEEPY_CACHE_DIR") or os.path.join(Path.home(), ".cache", "pytest-sleepy")
    return Path(base) / "gguf-digests.json"


def file_digest(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) across processes."""
    path = path.resolve()
    stat = path.stat()
    key = f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}"
    cache = digest_cache_path()
    known = _read_digests(cache)
    if key in known:
        return known[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent xdist workers: read, add, write whole
        known = _read_digests(cache)
        known[key] = digest.hexdigest()
        write_json_atomic(cache, known)
    return known[key]


def _read_digests(cache: Path) -> dict[str, str]:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class LlamaCppModel:
    def __init__(self, spec: ModelSpec):
        spec.check_options(SETTINGS)
        self.spec = spec
        self.name = spec.name
        self.n_ctx = spec.whole("n_ctx", 8192, minimum=256)
        self.n_threads = spec.whole("n_threads", None, minimum=1)
        self.n_gpu_layers = spec.whole("n_gpu_layers", 0, minimum=-1)
        if not self.name.endswith(".gguf"):
            raise ValueError(f"--model={spec.text!r}: llamacpp needs a .gguf file: a path, or OWNER/REPO/FILE.gguf "
                             "for a file of a hub repository")
        local = Path(self.name).expanduser()
        self.path: Path | None = local.resolve() if local.exists() or self.name.startswith(("/", ".", "~")) else None
        self.repo, self.filename = (None, None) if self.path else self._hub_parts()
        # The cache key names the file by its name alone, whether or not it is here, so
        # a recorded run replays from another folder (another user's home); answers are
        # stored per identity, a digest of the file, so another file of the same name
        # neither reuses nor overwrites them.
        self.cache_name = Path(self.name).name
        self.answer_neutral_options = ("n_threads",)
        self._llama = None
        self._identity: str | None = None

    def _hub_parts(self) -> tuple[str, str]:
        parts = self.name.split("/")
        if len(parts) < 3:
            raise ValueError(f"--model={self.spec.text!r}: {self.name!r} is no file here and not OWNER/REPO/FILE.gguf; "
                             "give the path of a GGUF file, or a hub repository and the file in it")
        return "/".join(parts[:2]), "/".join(parts[2:])

    # -- protocol --------------------------------------------------------------------

    def preflight(self) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ModelUnavailable(f"{self.spec.text} needs llama-cpp-python: {INSTALL}")
        self._local_file()

    def _local_file(self) -> Path:
        """The GGUF on disk: the given path, or the hub file from the local cache
        (downloaded first when the hub is reachable and HF_HUB_OFFLINE is not set)."""
        if self.path is not None:
            if not self.path.is_file():
                raise ModelUnavailable(f"{self.spec.text}: no GGUF file at {str(self.path)!r}; check the path")
            return self.path
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(self.repo, self.filename))
        except Exception as error:  # offline cache miss, unknown repo or file, no network
            raise ModelUnavailable(
                f"{self.spec.text}: cannot get {self.filename!r} of hub repository {self.repo!r} ({type(error).__name__}). "
                f"Download it where there is network access with `hf download {self.repo} {self.filename}`, or "
                f"set HF_HOME to a cache that holds it, or give the path of a local GGUF file (there is no file "
                f"{self.name!r} here; write ./{self.name} for a relative path)") from None

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = f"gguf-sha256:{file_digest(self._local_file())}?n_ctx={self.n_ctx}"
        return self._identity

    def _load(self):
        if self._llama is None:
            self.preflight()
            from huggingface_hub import constants
            from llama_cpp import Llama

            options = {"n_ctx": self.n_ctx, "n_gpu_layers": self.n_gpu_layers, "verbose": False}
            if self.n_threads is not None:
                options["n_threads"] = self.n_threads
            try:
                if self.path is not None:
                    self._llama = Llama(model_path=str(self.path), **options)
                elif constants.HF_HUB_OFFLINE:  # as hf_hub_download reads it
                    # from_pretrained lists the repository online before it looks in the
                    # cache, so offline it fails even on a cached file: load that file.
                    self._llama = Llama(model_path=str(self._local_file()), **options)
                else:
                    self._llama = Llama.from_pretrained(repo_id=self.repo, filename=self.filename, **options)
            except Exception as error:
                raise ModelUnavailable(f"{self.spec.text}: llama.cpp cannot load the model ({type(error).__name__}: "
                                       f"{str(error).strip()[:300]})") from None
        return self._llama

    def complete(self, request: CompletionRequest) -> Completion:
        if request.adapter is not None:
            raise ModelError(f"{self.spec.text}: llamacpp takes no adapters (asked for {request.adapter!r}); "
                             "use an hf: model for training strategies")
        llama = self._load()
        settings = request.settings
        started = time.perf_counter()
        try:
            response = llama.create_chat_completion(
                messages=[{"role": m.role, "content": m.content} for m in request.messages],
                temperature=settings.temperature, seed=settings.seed, max_tokens=settings.max_tokens,
            )
        except ValueError as error:  # e.g. the prompt does not fit n_ctx
            raise ModelError(f"{self.spec.text}: {error}") from None
        choice = response["choices"][0]
        usage = response.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            tokens_in=int(usage.get("prompt_tokens", 0)),
            tokens_out=int(usage.get("completion_tokens", 0)),
            seconds=time.perf_counter() - started,
            extra={"finish_reason": choice.get("finish_reason")},
        )
