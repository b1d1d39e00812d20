"""Moved to `pytest_sleepy.verify.tamper`; this name stays importable for existing code."""

from .verify.tamper import *  # noqa: F401,F403
from .verify.tamper import __all__  # noqa: F401
