"""Moved to `pytest_sleepy.verify.verifier`; this name is the same module, so that old
imports (every name, not only `__all__`) keep working."""

import sys

from .verify import verifier as _moved

sys.modules[__name__] = _moved
