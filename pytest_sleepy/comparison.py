"""Moved to `pytest_sleepy.results.comparison`; this name is the same module, so that old
imports (every name, not only `__all__`) keep working."""

import sys

from .results import comparison as _moved

sys.modules[__name__] = _moved
