"""Moved to `pytest_sleepy.corpus.validation`; this name stays importable for existing code."""

from .corpus.validation import *  # noqa: F401,F403
from .corpus.validation import __all__  # noqa: F401
