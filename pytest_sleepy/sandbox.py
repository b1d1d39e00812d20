"""Moved to `pytest_sleepy.verify.sandbox`; this name is the same module, so that old
imports (every name, not only `__all__`) keep working."""

import sys

from .verify import sandbox as _moved

sys.modules[__name__] = _moved
