"""Moved to `pytest_sleepy.verify.rustlex`; this name is the same module, so that old
imports (every name, not only `__all__`) keep working."""

import sys

from .verify import rustlex as _moved

sys.modules[__name__] = _moved
