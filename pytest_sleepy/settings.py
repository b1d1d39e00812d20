"""The benchmark's options: one table that defines them, their defaults and checks.

Each option can be given on the command line (`--strategy=baseline,hints`) or as a
default in the `[tool.sleepy]` table of pyproject.toml (`strategy = "baseline,hints"`
or a list); the command line wins. Paths in pyproject.toml are relative to that file.

| key (pyproject)  | flag                   | default   | meaning |
| strategy         | --strategy             | baseline  | comma-separated strategy names (files in strategies/) |
| model            | --model                | rustfix   | BACKEND[:NAME][?key=value]: rustfix, ollama:NAME, hf:NAME_OR_PATH |
| max-steps        | --max-steps            | 3         | model calls per koan |
| samples          | --sleepy-samples       | 1         | repeats of each koan, seeds seed, seed+1, ... |
| seed             | --sleepy-seed          | 0         | seed of the first sample |
| temperature      | --sleepy-temperature   | 0         | 0 = greedy decoding |
| max-tokens       | --sleepy-max-tokens    | 1024      | new tokens per answer |
| split            | --sleepy-split         | eval      | eval, train or all |
| suite            | --sleepy-suite         | newest    | the frozen eval suite (koans/suites.toml): eval-v1, eval-v2, ... |
| json             | --sleepy-json          | (none)    | write the run file here |
| episodes         | --sleepy-episodes      | (none)    | append one JSON line per attempt here |
| html             | --sleepy-html          | (none)    | write the run's HTML view here (results/view.py) |
| cache            | --sleepy-cache         | rw        | record/replay of completions: off, read, write, rw |
| cache-dir        | --sleepy-cache-dir     | $SLEEPY_CACHE_DIR or .sleepy/cache under the rootdir |
| baseline         | --sleepy-baseline      | (none)    | compare with this run file; the exit status becomes the gate |
| save-baseline    | --sleepy-save-baseline | (none)    | also write the run file here, to serve as a baseline |
| gate             | --sleepy-gate          | any       | any: fail on any regression; significant: only on a significant one |
| alpha            | --sleepy-alpha         | 0.05      | significance level of the gate and of per-koan changes |
| fail-under       | --sleepy-fail-under    | (none)    | fail when a strategy's pass rate is below RATE (0.7 or 70%) |
| matrix           | --sleepy-matrix        | changed   | forgetting matrix rows in the summary: full, changed or off |
| artifacts-dir    | --sleepy-artifacts-dir | $SLEEPY_ARTIFACTS_DIR or .sleepy/artifacts under the rootdir |
| retrain          | --sleepy-retrain       | false     | train every artifact again, ignoring the artifact cache |
| max-candidate-kib | --sleepy-max-candidate-kib | 256  | refuse larger candidates before any work (verdict "too large") |
| history          | --sleepy-history       | none      | earlier steps in the prompt as chat turns: none, last or full (prompts.HISTORY_MODES) |

`[tool.sleepy.train]` holds the training hyperparameters (pytest_sleepy/training/lora.py
TrainConfig: rank, alpha, dropout, target_modules, steps, lr, batch_size, warmup,
schedule, seed, max_length, weighted, load_in_4bit, dtype) and three data settings:
`variants` (a `sleepy variants` file whose records join the train koans), `baseline`
(a run file naming the patterns the baseline fails, when --sleepy-baseline is not
given) and `replay_ratio` (default 0.5).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .models.cache import CACHE_MODES
from .prompts import DEFAULT_HISTORY, HISTORY_MODES
from .verify.verifier import MAX_CANDIDATE_BYTES

__all__ = ["BenchmarkSettings", "Option", "OPTIONS", "SettingsError", "resolve_settings", "read_tool_table",
           "default_cache_dir", "verdict_cache_dir", "completion_cache_dir"]

SPLITS = ("eval", "train", "all")


class SettingsError(ValueError):
    """A bad option value; the message names the flag or the pyproject key."""


def default_cache_dir(base: Path | None = None) -> Path:
    """$SLEEPY_CACHE_DIR, else `.sleepy/cache` under `base` (the rootdir; cwd for the CLI)."""
    if os.environ.get("SLEEPY_CACHE_DIR"):
        return Path(os.environ["SLEEPY_CACHE_DIR"])
    return (base or Path(".")) / ".sleepy" / "cache"


def verdict_cache_dir(cache_dir: Path) -> Path:
    return cache_dir / "verdicts"


def completion_cache_dir(cache_dir: Path) -> Path:
    return cache_dir / "completions"


def _names(value) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    names = tuple(str(item).strip() for item in items if str(item).strip())
    if not names:
        raise ValueError("give at least one strategy name")
    if len(set(names)) != len(names):
        raise ValueError("a strategy is named twice")
    return names


def _integer(minimum: int) -> Callable[[object], int]:
    def parse(value) -> int:
        if isinstance(value, bool) or not str(value).strip().lstrip("-").isdigit():
            raise ValueError(f"expected a whole number, got {value!r}")
        number = int(value)
        if number < minimum:
            raise ValueError(f"must be at least {minimum}, got {number}")
        return number
    return parse


def _temperature(value) -> float:
    if isinstance(value, bool):  # TOML `temperature = true` would otherwise read as 1.0
        raise ValueError(f"expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None
    if not 0 <= number <= 5:
        raise ValueError(f"must lie between 0 and 5, got {number}")
    return number


def _choice(choices: tuple[str, ...]) -> Callable[[object], str]:
    def parse(value) -> str:
        if value not in choices:
            raise ValueError(f"use one of {', '.join(choices)}, got {value!r}")
        return str(value)
    return parse


def _fraction(value) -> float:
    text = str(value).strip()
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"expected a rate such as 0.7 or 70%, got {value!r}") from None
    if isinstance(value, bool) or not 0 <= number <= 1:
        raise ValueError(f"must lie between 0 and 1 (or 0% and 100%), got {value!r}")
    return number


def _alpha(value) -> float:
    number = _fraction(value)
    if not 0 < number < 1:
        raise ValueError(f"must lie strictly between 0 and 1, got {value!r}")
    return number


def _flag(value) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected true or false, got {value!r}")


def _text(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value.strip()


@dataclass(frozen=True)
class Option:
    key: str  # [tool.sleepy] key; the BenchmarkSettings field is the key with '_' for '-'
    flag: str
    default: object
    parse: Callable[[object], object]
    help: str
    is_path: bool = False
    is_switch: bool = False  # a command-line switch without a value

    @property
    def dest(self) -> str:
        return "sleepy_" + self.key.replace("-", "_")


OPTIONS = (
    Option("strategy", "--strategy", ("baseline",), _names, "comma-separated strategies to run (see `sleepy strategies`)"),
    Option("model", "--model", "rustfix", _text, "model: rustfix[?applicability=maybe-incorrect], ollama:NAME, hf:NAME_OR_PATH[?load_in_4bit=1], "
           "llamacpp:PATH.gguf[?n_threads=N], openai:MODEL?base_url=URL"),
    Option("max-steps", "--max-steps", 3, _integer(1), "model calls per koan"),
    Option("samples", "--sleepy-samples", 1, _integer(1), "repeat each koan N times with seeds seed..seed+N-1"),
    Option("seed", "--sleepy-seed", 0, _integer(0), "seed of the first sample"),
    Option("temperature", "--sleepy-temperature", 0.0, _temperature, "sampling temperature; 0 = greedy"),
    Option("max-tokens", "--sleepy-max-tokens", 1024, _integer(1), "new tokens per model answer"),
    Option("split", "--sleepy-split", "eval", _choice(SPLITS), "koans to collect: eval, train or all"),
    Option("suite", "--sleepy-suite", None, _text, "the eval suite to run (koans/suites.toml; default: the newest)"),
    Option("json", "--sleepy-json", None, _text, "write the run file (JSON) to PATH", is_path=True),
    Option("episodes", "--sleepy-episodes", None, _text, "append one JSON line per attempt to PATH", is_path=True),
    Option("html", "--sleepy-html", None, _text, "write the run's HTML view (one self-contained file) to PATH", is_path=True),
    Option("cache", "--sleepy-cache", "rw", _choice(CACHE_MODES), "completion record/replay: off, read (replay only), write, rw"),
    Option("cache-dir", "--sleepy-cache-dir", None, _text, "cache folder (default $SLEEPY_CACHE_DIR or .sleepy/cache)", is_path=True),
    Option("baseline", "--sleepy-baseline", None, _text, "compare with this run file; the exit status becomes the regression gate", is_path=True),
    Option("save-baseline", "--sleepy-save-baseline", None, _text, "also write the run file to PATH as a baseline", is_path=True),
    Option("gate", "--sleepy-gate", "any", _choice(("any", "significant")), "any: fail on any regression; significant: only when significant (exact McNemar)"),
    Option("alpha", "--sleepy-alpha", 0.05, _alpha, "significance level of the gate and of per-koan changes with samples"),
    Option("fail-under", "--sleepy-fail-under", None, _fraction, "fail when a strategy's pass rate is below RATE (0.7 or 70%)"),
    Option("matrix", "--sleepy-matrix", "changed", _choice(("full", "changed", "off")), "forgetting-matrix rows in the summary: full, changed or off"),
    Option("artifacts-dir", "--sleepy-artifacts-dir", None, _text, "trained adapters (default $SLEEPY_ARTIFACTS_DIR or .sleepy/artifacts)", is_path=True),
    Option("retrain", "--sleepy-retrain", False, _flag, "train every artifact again, ignoring the artifact cache", is_switch=True),
    Option("history", "--sleepy-history", DEFAULT_HISTORY, _choice(HISTORY_MODES),
           "earlier steps in the prompt as chat turns: none, last (the previous answer) or full"),
    Option("max-candidate-kib", "--sleepy-max-candidate-kib", MAX_CANDIDATE_BYTES // 1024, _integer(1), "refuse candidates larger than N KiB before any work"),
)


@dataclass(frozen=True)
class BenchmarkSettings:
    strategy: tuple[str, ...] = ("baseline",)
    model: str = "rustfix"
    max_steps: int = 3
    samples: int = 1
    seed: int = 0
    temperature: float = 0.0
    max_tokens: int = 1024
    split: str = "eval"
    suite: str | None = None
    json: Path | None = None
    episodes: Path | None = None
    html: Path | None = None
    cache: str = "rw"
    cache_dir: Path = field(default_factory=default_cache_dir)
    baseline: Path | None = None
    save_baseline: Path | None = None
    gate: str = "any"
    alpha: float = 0.05
    fail_under: float | None = None
    matrix: str = "changed"
    artifacts_dir: Path | None = None
    retrain: bool = False
    max_candidate_kib: int = MAX_CANDIDATE_BYTES // 1024
    history: str = DEFAULT_HISTORY
    train: dict = field(default_factory=dict)  # [tool.sleepy.train], checked where it is used
    feedback: dict = field(default_factory=dict)  # [tool.sleepy.feedback], checked where it is used
    pyproject: Path | None = None  # where [tool.sleepy] came from, for messages and relative paths

    def to_dict(self) -> dict:
        data = {o.key: _plain(getattr(self, o.key.replace("-", "_"))) for o in OPTIONS}
        if self.train:
            data["train"] = self.train
        if self.feedback:
            data["feedback"] = self.feedback
        return data


def _plain(value):
    return str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value


def read_tool_table(pyproject: Path | None) -> dict:
    if pyproject is None or not pyproject.is_file():
        return {}
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{pyproject}: not valid TOML: {error}") from None
    table = data.get("tool", {}).get("sleepy", {})
    if not isinstance(table, dict):
        raise SettingsError(f"{pyproject}: [tool.sleepy] must be a table")
    return table


def resolve_settings(cli: dict[str, object], pyproject: Path | None, rootdir: Path, cwd: Path) -> BenchmarkSettings:
    """Settings from `cli` (flag values by Option.dest, None when not given), then
    `[tool.sleepy]` in `pyproject`, then the defaults."""
    table = dict(read_tool_table(pyproject))
    train = table.pop("train", {})
    feedback = table.pop("feedback", {})
    for name, value in (("train", train), ("feedback", feedback)):
        if not isinstance(value, dict):
            raise SettingsError(f"{pyproject}: [tool.sleepy.{name}] must be a table")
    known = {o.key for o in OPTIONS}
    for key in table:
        if key not in known:
            raise SettingsError(f"{pyproject}: [tool.sleepy] has unknown key {key!r}; known keys: {', '.join(sorted(known))}")
    values = {}
    for option in OPTIONS:
        raw, base, where = cli.get(option.dest), cwd, option.flag
        if raw is None and option.key in table:
            raw, base, where = table[option.key], pyproject.parent, f"{pyproject}: [tool.sleepy] {option.key}"
        if raw is None:
            if option.default is not None:
                values[option.key.replace("-", "_")] = option.default
            continue
        try:
            value = option.parse(raw)
        except ValueError as error:
            raise SettingsError(f"{where}: {error}") from None
        values[option.key.replace("-", "_")] = (base / value) if option.is_path else value
    if "cache_dir" not in values:
        values["cache_dir"] = default_cache_dir(rootdir)
    if values.get("artifacts_dir") is None:
        from .training.artifacts import default_artifacts_dir

        values["artifacts_dir"] = default_artifacts_dir(rootdir)
    return BenchmarkSettings(**values, train=train, feedback=feedback,
                             pyproject=pyproject if (train or feedback) else None)
