"""Moved to `pytest_sleepy.results.comparison`; this module keeps old imports working."""

from .results.comparison import *  # noqa: F401,F403
from .results.comparison import __all__  # noqa: F401
