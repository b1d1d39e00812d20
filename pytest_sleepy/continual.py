"""Moved to `pytest_sleepy.results.continual`; this module keeps old imports working."""

from .results.continual import *  # noqa: F401,F403
from .results.continual import __all__  # noqa: F401
