"""Moved to `pytest_sleepy.corpus.importers`; this name stays importable for existing code."""

from .corpus.importers import *  # noqa: F401,F403
from .corpus.importers import __all__  # noqa: F401
