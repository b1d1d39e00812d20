"""Shared fixtures: the real toolchain, a real bubblewrap sandbox and a small koan."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest

from pytest_sleepy.koans import Koan, load_koan
from pytest_sleepy.verify.sandbox import Sandbox, SandboxUnavailable, Toolchain
from pytest_sleepy.verify.verifier import VerificationCache, Verifier

pytest_plugins = ["pytester"]

REPO_ROOT = Path(__file__).resolve().parents[1]



@pytest.fixture(autouse=True)
def no_github_step_summary(monkeypatch):
    """The sessions these tests start must not write to a real job's summary page."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)

@pytest.fixture(scope="session")
def toolchain() -> Toolchain:
    return Toolchain.detect()


@pytest.fixture(scope="session")
def sandbox(toolchain) -> Sandbox:
    try:
        return Sandbox(toolchain)
    except SandboxUnavailable as error:
        pytest.skip(f"bubblewrap sandbox unavailable: {error}")


@pytest.fixture
def verifier(sandbox, tmp_path) -> Verifier:
    """A sandboxed verifier with a private cache, so tests never see each other's verdicts."""
    return Verifier(sandbox, VerificationCache(tmp_path / "verify-cache"))


def make_koan(**fields) -> Koan:
    """A small std-only koan: `total` must sum the prices (the buggy one moves `items`)."""
    base = dict(
        id="shop_001",
        family="borrow_checker",
        pattern="use_after_move",
        title="A basket is moved and then counted",
        edition="2021",
        split="train",
        expect=("E0382",),
        buggy=BUGGY_SHOP,
        fixed=FIXED_SHOP,
        tests=SHOP_TESTS,
    )
    base.update(fields)
    return Koan(**base)


BUGGY_SHOP = textwrap.dedent(
    """
    pub fn total(items: Vec<u32>) -> u32 {
        let sum: u32 = items.into_iter().sum();
        if items.is_empty() { 0 } else { sum }
    }
    """
)
FIXED_SHOP = textwrap.dedent(
    """
    pub fn total(items: Vec<u32>) -> u32 {
        let empty = items.is_empty();
        let sum: u32 = items.into_iter().sum();
        if empty { 0 } else { sum }
    }
    """
)
SHOP_TESTS = textwrap.dedent(
    """
    #[test]
    fn sums_prices() {
        let t: u32 = total(vec![3, 4, 5]);
        assert_eq!(t, 12);
    }

    #[test]
    fn empty_basket_costs_nothing() {
        assert_eq!(total(Vec::new()), 0);
    }
    """
)


@pytest.fixture
def shop_koan() -> Koan:
    return make_koan()


# -- a benchmark project for pytester ---------------------------------------------------

# Real koans copied from the repository: rustfix repairs bc_001 and tb_008 but not
# bc_003 or rh_001; bc_101 is a train koan.
KOANS = {
    "bc_001": "borrow_checker", "bc_003": "borrow_checker", "tb_008": "trait_bounds",
    "rh_001": "result_handling", "bc_101": "borrow_checker",
}
EVAL = ["bc_001", "bc_003", "rh_001", "tb_008"]


# pytester gives each test a fresh HOME, where rustup's proxies would find no toolchain.
RUSTUP_HOME = os.environ.get("RUSTUP_HOME", str(Path.home() / ".rustup"))


@pytest.fixture
def bench(pytester, monkeypatch):
    """A pytester project whose `koans/` holds KOANS and whose strategies are the repository's."""
    monkeypatch.setenv("RUSTUP_HOME", RUSTUP_HOME)
    for koan, family in KOANS.items():
        target = pytester.path / "koans" / family
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / "koans" / family / f"{koan}.toml", target)
    pytester.makepyprojecttoml(f"""
        [tool.pytest.ini_options]
        testpaths = ["koans"]
        sleepy_strategies = "{REPO_ROOT / 'strategies'}"
    """)
    return pytester


def fixing_reply(request: dict) -> str:
    """Answers like a model that knows the reference fixes of the `bench` koans: the
    content of an Ollama or OpenAI chat request in, the assistant's answer out."""
    prompt = request["messages"][-1]["content"]
    for koan, family in KOANS.items():
        fixed = load_koan(REPO_ROOT / "koans" / family / f"{koan}.toml")
        if fixed.buggy.strip() in prompt:
            return f"Fixed:\n```rust\n{fixed.fixed.strip()}\n```"
    return "I cannot help."


def use_tiny_model(project, model: Path, tables: str) -> None:
    """Point a `bench` project at a tiny hf model: one step, short answers, plus the
    extra pyproject `tables` (training or feedback settings)."""
    path = project.path / "pyproject.toml"
    path.write_text(path.read_text() + f"""
[tool.sleepy]
model = "hf:{model}"
max-steps = 1
max-tokens = 8
{tables}""")
