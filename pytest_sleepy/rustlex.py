"""Moved to `pytest_sleepy.verify.rustlex`; this name stays importable for existing code."""

from .verify.rustlex import *  # noqa: F401,F403
from .verify.rustlex import __all__  # noqa: F401
