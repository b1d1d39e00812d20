"""Moved to `pytest_sleepy.corpus.variants`; this name is the same module, so that old
imports (every name, not only `__all__`) keep working."""

import sys

from .corpus import variants as _moved

sys.modules[__name__] = _moved
