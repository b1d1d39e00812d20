"""Moved to `pytest_sleepy.verify.seccomp`; this name is the same module, so that old
imports (every name, not only `__all__`) keep working."""

import sys

from .verify import seccomp as _moved

sys.modules[__name__] = _moved
