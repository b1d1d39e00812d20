"""Moved to `pytest_sleepy.verify.diagnostics`; this name stays importable for existing code."""

from .verify.diagnostics import *  # noqa: F401,F403
from .verify.diagnostics import __all__  # noqa: F401
