"""Moved to `pytest_sleepy.results.heatmap`; this module keeps old imports working."""

from .results.heatmap import *  # noqa: F401,F403
from .results.heatmap import __all__  # noqa: F401
