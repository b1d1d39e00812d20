"""Moved to `pytest_sleepy.verify.sandbox`; this name stays importable for existing code."""

from .verify.sandbox import *  # noqa: F401,F403
from .verify.sandbox import __all__  # noqa: F401
