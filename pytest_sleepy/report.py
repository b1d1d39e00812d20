"""Moved to `pytest_sleepy.results.report`; this module keeps old imports working."""

from .results.report import *  # noqa: F401,F403
from .results.report import __all__  # noqa: F401
