"""Specification of the benchmark options: defaults, [tool.sleepy], command line, checks."""

from __future__ import annotations

import dataclasses
import json
import re
import textwrap
from pathlib import Path

import pytest

from pytest_sleepy.settings import OPTIONS, BenchmarkSettings, SettingsError, read_tool_table, resolve_settings

FLAG = {option.key: option.flag for option in OPTIONS}
DEST = {option.key: option.dest for option in OPTIONS}


@pytest.fixture(autouse=True)
def no_cache_dir_from_the_environment(monkeypatch):
    monkeypatch.delenv("SLEEPY_CACHE_DIR", raising=False)


@pytest.fixture
def root(tmp_path) -> Path:
    (tmp_path / "project").mkdir()
    return tmp_path / "project"


def pyproject(folder: Path, text: str) -> Path:
    path = folder / "pyproject.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def cli(**values) -> dict[str, object]:
    """Command-line values by pyproject key ('max_steps' for 'max-steps'), as Option.dest."""
    given = {DEST[key.replace("_", "-")]: value for key, value in values.items()}
    return {option.dest: given.get(option.dest) for option in OPTIONS}


# --- defaults ------------------------------------------------------------------------------


def test_defaults_apply_when_nothing_is_given(root):
    settings = resolve_settings({}, None, rootdir=root, cwd=root)
    assert settings == BenchmarkSettings(
        strategy=("baseline",), model="rustfix", max_steps=3, samples=1, seed=0, temperature=0.0,
        max_tokens=1024, split="eval", json=None, episodes=None, cache="rw", cache_dir=root / ".sleepy" / "cache",
        artifacts_dir=root / ".sleepy" / "artifacts")


def test_flags_given_as_none_count_as_not_given(root):
    assert resolve_settings(cli(), None, root, root) == resolve_settings({}, None, root, root)


def test_a_missing_pyproject_file_gives_the_defaults(root):
    assert resolve_settings({}, root / "pyproject.toml", root, root) == resolve_settings({}, None, root, root)


def test_a_pyproject_without_a_sleepy_table_gives_the_defaults(root):
    path = pyproject(root, '[project]\nname = "x"\n\n[tool.other]\nmax-steps = 9\n')
    assert resolve_settings({}, path, root, root) == resolve_settings({}, None, root, root)


def test_default_cache_dir_lies_under_the_rootdir_not_the_cwd(root, tmp_path):
    settings = resolve_settings({}, None, rootdir=root, cwd=tmp_path)
    assert settings.cache_dir == root / ".sleepy" / "cache"


def test_option_defaults_match_the_settings_defaults():
    defaults = BenchmarkSettings()
    for option in OPTIONS:
        if option.key != "cache-dir":  # computed: $SLEEPY_CACHE_DIR or .sleepy/cache
            assert getattr(defaults, option.key.replace("-", "_")) == option.default, option.key


def test_every_option_has_a_settings_field():
    fields = {f.name for f in dataclasses.fields(BenchmarkSettings)}
    # Besides the options: the [tool.sleepy.train] table and where it came from.
    assert {option.key.replace("-", "_") for option in OPTIONS} | {"train", "feedback", "pyproject"} == fields


def test_option_dest_is_the_key_prefixed_with_sleepy():
    assert DEST["max-steps"] == "sleepy_max_steps"
    assert DEST["strategy"] == "sleepy_strategy"
    assert DEST["cache-dir"] == "sleepy_cache_dir"


def test_option_flags_and_dests_are_unique():
    assert len({o.flag for o in OPTIONS}) == len({o.dest for o in OPTIONS}) == len(OPTIONS)


# --- [tool.sleepy] --------------------------------------------------------------------------


def test_read_tool_table_returns_the_sleepy_table(root):
    path = pyproject(root, '[tool.sleepy]\nmax-steps = 5\nmodel = "ollama:qwen"\n')
    assert read_tool_table(path) == {"max-steps": 5, "model": "ollama:qwen"}


def test_read_tool_table_without_a_file_is_empty(root):
    assert read_tool_table(None) == {}
    assert read_tool_table(root / "absent.toml") == {}


def test_table_values_are_used(root):
    path = pyproject(root, """
        [tool.sleepy]
        model = "ollama:qwen2.5-coder"
        max-steps = 5
        samples = 4
        seed = 7
        temperature = 0.8
        max-tokens = 2048
        split = "all"
        cache = "read"
    """)
    settings = resolve_settings({}, path, root, root)
    assert (settings.model, settings.max_steps, settings.samples, settings.seed, settings.temperature,
            settings.max_tokens, settings.split, settings.cache) == (
        "ollama:qwen2.5-coder", 5, 4, 7, 0.8, 2048, "all", "read")


def test_table_strategy_as_a_comma_separated_string(root):
    path = pyproject(root, '[tool.sleepy]\nstrategy = "baseline, hints"\n')
    assert resolve_settings({}, path, root, root).strategy == ("baseline", "hints")


def test_table_strategy_as_a_list(root):
    path = pyproject(root, '[tool.sleepy]\nstrategy = ["baseline", "hints"]\n')
    assert resolve_settings({}, path, root, root).strategy == ("baseline", "hints")


def test_table_paths_are_relative_to_the_pyproject_folder(root, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    path = pyproject(root, """
        [tool.sleepy]
        json = "out/run.json"
        episodes = "out/episodes.jsonl"
        cache-dir = "cache"
    """)
    settings = resolve_settings({}, path, rootdir=tmp_path, cwd=elsewhere)
    assert (settings.json, settings.episodes, settings.cache_dir) == (
        root / "out" / "run.json", root / "out" / "episodes.jsonl", root / "cache")


def test_table_absolute_paths_are_kept(root, tmp_path):
    path = pyproject(root, f'[tool.sleepy]\njson = "{tmp_path / "abs.json"}"\n')
    assert resolve_settings({}, path, root, root).json == tmp_path / "abs.json"


# --- command line -----------------------------------------------------------------------------


def test_command_line_values_are_parsed(root):
    settings = resolve_settings(
        cli(strategy="a,b", max_steps="5", samples="2", seed="3", temperature="0.7", max_tokens="64",
            split="train", cache="off", model="hf:tiny"), None, root, root)
    assert (settings.strategy, settings.max_steps, settings.samples, settings.seed, settings.temperature,
            settings.max_tokens, settings.split, settings.cache, settings.model) == (
        ("a", "b"), 5, 2, 3, 0.7, 64, "train", "off", "hf:tiny")


def test_command_line_paths_are_relative_to_the_cwd(root, tmp_path):
    cwd = tmp_path / "cwd"
    settings = resolve_settings(cli(json="run.json", episodes="ep.jsonl", cache_dir="c"), None, root, cwd)
    assert (settings.json, settings.episodes, settings.cache_dir) == (cwd / "run.json", cwd / "ep.jsonl", cwd / "c")


def test_command_line_wins_over_the_table(root, tmp_path):
    path = pyproject(root, """
        [tool.sleepy]
        strategy = ["x", "y"]
        max-steps = 5
        json = "table.json"
    """)
    cwd = tmp_path / "cwd"
    settings = resolve_settings(cli(strategy="baseline", max_steps="2", json="cli.json"), path, root, cwd)
    assert (settings.strategy, settings.max_steps, settings.json) == (("baseline",), 2, cwd / "cli.json")


def test_table_fills_in_what_the_command_line_leaves_out(root):
    path = pyproject(root, '[tool.sleepy]\nmax-steps = 5\nseed = 9\n')
    settings = resolve_settings(cli(max_steps="2"), path, root, root)
    assert (settings.max_steps, settings.seed) == (2, 9)


# --- bad values ---------------------------------------------------------------------------------


BAD_COMMAND_LINE = [
    ("strategy", ""), ("strategy", " , "),
    ("model", ""), ("model", "   "),
    ("max_steps", "0"), ("max_steps", "three"), ("max_steps", "2.5"), ("max_steps", ""),
    ("samples", "0"), ("samples", "-2"),
    ("seed", "-1"),
    ("temperature", "hot"), ("temperature", "-0.1"), ("temperature", "5.5"), ("temperature", "nan"),
    ("max_tokens", "0"),
    ("split", "test"),
    ("cache", "sometimes"),
    ("json", ""), ("episodes", " "), ("cache_dir", ""),
]


@pytest.mark.parametrize("key, value", BAD_COMMAND_LINE, ids=[f"{k}={v!r}" for k, v in BAD_COMMAND_LINE])
def test_bad_command_line_value_names_the_flag(root, key, value):
    flag = FLAG[key.replace("_", "-")]
    with pytest.raises(SettingsError, match=f"^{re.escape(flag)}: "):
        resolve_settings(cli(**{key: value}), None, root, root)


BAD_TABLE = [
    ("strategy", "[]"), ("strategy", '""'),
    ("model", "3"), ("model", '""'),
    ("max-steps", "0"), ("max-steps", "true"), ("max-steps", "2.5"), ("max-steps", '"many"'),
    ("samples", "0"),
    ("seed", "-1"),
    ("temperature", '"hot"'), ("temperature", "9"), ("temperature", "true"),
    ("max-tokens", "0"),
    ("split", '"test"'), ("split", '["eval"]'),
    ("cache", '"sometimes"'),
    ("json", "5"), ("episodes", '""'), ("cache-dir", "[]"),
]


@pytest.mark.parametrize("key, toml_value", BAD_TABLE, ids=[f"{k}={v}" for k, v in BAD_TABLE])
def test_bad_table_value_names_the_file_and_the_key(root, key, toml_value):
    path = pyproject(root, f"[tool.sleepy]\n{key} = {toml_value}\n")
    with pytest.raises(SettingsError, match=f"^{re.escape(str(path))}: \\[tool.sleepy\\] {re.escape(key)}: "):
        resolve_settings({}, path, root, root)


def test_bad_table_value_is_not_reported_when_the_command_line_overrides_it(root):
    path = pyproject(root, '[tool.sleepy]\nmax-steps = 0\n')
    assert resolve_settings(cli(max_steps="4"), path, root, root).max_steps == 4


def test_settings_error_is_a_value_error():
    assert issubclass(SettingsError, ValueError)


def test_unknown_table_key_is_named_with_the_known_keys(root):
    path = pyproject(root, '[tool.sleepy]\nmax_steps = 4\n')
    with pytest.raises(SettingsError) as error:
        resolve_settings({}, path, root, root)
    message = str(error.value)
    assert str(path) in message
    assert "'max_steps'" in message
    assert "known keys: " + ", ".join(sorted(FLAG)) in message


def test_invalid_toml_names_the_file(root):
    path = pyproject(root, "[tool.sleepy\nmax-steps = \n")
    with pytest.raises(SettingsError, match="not valid TOML") as error:
        read_tool_table(path)
    assert str(path) in str(error.value)


def test_sleepy_entry_that_is_not_a_table_is_rejected(root):
    path = pyproject(root, "[tool]\nsleepy = 3\n")
    with pytest.raises(SettingsError, match=r"\[tool.sleepy\] must be a table"):
        read_tool_table(path)


def test_duplicate_strategy_names_on_the_command_line_are_rejected(root):
    with pytest.raises(SettingsError, match="^--strategy: .*named twice"):
        resolve_settings(cli(strategy="a,b, a"), None, root, root)


def test_duplicate_strategy_names_in_the_table_are_rejected(root):
    path = pyproject(root, '[tool.sleepy]\nstrategy = ["a", "a"]\n')
    with pytest.raises(SettingsError, match=r"\[tool.sleepy\] strategy: .*named twice"):
        resolve_settings({}, path, root, root)


# --- SLEEPY_CACHE_DIR -------------------------------------------------------------------------------


def test_cache_dir_comes_from_the_environment_variable(root, tmp_path, monkeypatch):
    monkeypatch.setenv("SLEEPY_CACHE_DIR", str(tmp_path / "shared-cache"))
    assert resolve_settings({}, None, root, root).cache_dir == tmp_path / "shared-cache"


def test_empty_environment_variable_is_ignored(root, monkeypatch):
    monkeypatch.setenv("SLEEPY_CACHE_DIR", "")
    assert resolve_settings({}, None, root, root).cache_dir == root / ".sleepy" / "cache"


def test_cache_dir_flag_wins_over_the_environment_variable(root, tmp_path, monkeypatch):
    monkeypatch.setenv("SLEEPY_CACHE_DIR", str(tmp_path / "shared-cache"))
    assert resolve_settings(cli(cache_dir="mine"), None, root, root).cache_dir == root / "mine"


def test_cache_dir_table_entry_wins_over_the_environment_variable(root, tmp_path, monkeypatch):
    monkeypatch.setenv("SLEEPY_CACHE_DIR", str(tmp_path / "shared-cache"))
    path = pyproject(root, '[tool.sleepy]\ncache-dir = "mine"\n')
    assert resolve_settings({}, path, root, root).cache_dir == root / "mine"


def test_settings_default_cache_dir_respects_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("SLEEPY_CACHE_DIR", str(tmp_path / "shared-cache"))
    assert BenchmarkSettings().cache_dir == tmp_path / "shared-cache"


# --- to_dict ------------------------------------------------------------------------------------------


@pytest.fixture
def full_settings(root) -> BenchmarkSettings:
    return resolve_settings(
        cli(strategy="a,b", max_steps="4", temperature="0.5", json="run.json", episodes="ep.jsonl", cache_dir="c"),
        None, root, root)


def test_to_dict_is_keyed_by_pyproject_key(full_settings):
    assert list(full_settings.to_dict()) == [option.key for option in OPTIONS]


def test_to_dict_holds_plain_json_values(full_settings, root):
    data = full_settings.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["strategy"] == ["a", "b"]
    assert data["json"] == str(root / "run.json")
    assert data["cache-dir"] == str(root / "c")


def test_to_dict_keeps_unset_paths_as_none(root):
    data = resolve_settings({}, None, root, root).to_dict()
    assert (data["json"], data["episodes"]) == (None, None)


def test_to_dict_values_resolve_back_to_the_same_settings(full_settings, root, tmp_path):
    data = json.loads(json.dumps(full_settings.to_dict()))
    again = resolve_settings({o.dest: data[o.key] for o in OPTIONS}, None, rootdir=root, cwd=tmp_path / "other")
    assert again == full_settings


def test_the_candidate_size_cap_is_an_option_in_kib(root):
    assert resolve_settings({}, None, root, root).max_candidate_kib == 256
    assert resolve_settings({"sleepy_max_candidate_kib": "64"}, None, root, root).max_candidate_kib == 64
    with pytest.raises(SettingsError, match="--sleepy-max-candidate-kib: must be at least 1"):
        resolve_settings({"sleepy_max_candidate_kib": "0"}, None, root, root)
