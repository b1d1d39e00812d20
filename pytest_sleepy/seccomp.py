"""Moved to `pytest_sleepy.verify.seccomp`; this name stays importable for existing code."""

from .verify.seccomp import *  # noqa: F401,F403
from .verify.seccomp import __all__  # noqa: F401
