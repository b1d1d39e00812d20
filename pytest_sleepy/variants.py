"""Moved to `pytest_sleepy.corpus.variants`; this name stays importable for existing code."""

from .corpus.variants import *  # noqa: F401,F403
from .corpus.variants import __all__  # noqa: F401
