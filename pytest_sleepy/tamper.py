"""Moved to `pytest_sleepy.verify.tamper`; this name is the same module, so that old
imports (every name, not only `__all__`) keep working."""

import sys

from .verify import tamper as _moved

sys.modules[__name__] = _moved
