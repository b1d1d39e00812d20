"""pytest-sleepy: a benchmark of coding-model repair strategies on broken Rust programs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pytest-sleepy")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
