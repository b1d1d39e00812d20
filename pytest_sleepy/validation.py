"""Moved to `pytest_sleepy.corpus.validation`; this name is the same module, so that old
imports (every name, not only `__all__`) keep working."""

import sys

from .corpus import validation as _moved

sys.modules[__name__] = _moved
