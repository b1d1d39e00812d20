"""Shared fixtures: the real toolchain, a real bubblewrap sandbox and a small koan."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pytest_sleepy.koans import Koan
from pytest_sleepy.sandbox import Sandbox, SandboxUnavailable, Toolchain
from pytest_sleepy.verifier import VerificationCache, Verifier

pytest_plugins = ["pytester"]

REPO_ROOT = Path(__file__).resolve().parents[1]


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
