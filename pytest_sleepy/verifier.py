"""Moved to `pytest_sleepy.verify.verifier`; this name stays importable for existing code."""

from .verify.verifier import *  # noqa: F401,F403
from .verify.verifier import __all__  # noqa: F401
