"""baseline: the plain repair prompt.

The program and rustc's cleaned diagnostics (or the failing hidden tests), with an
instruction to answer with the whole corrected program. Nothing else: this is the
reference every other strategy is compared against.
"""

from pytest_sleepy.strategies import Strategy


class Baseline(Strategy):
    name = "baseline"
    description = "plain instruction, the program and rustc's cleaned diagnostics"


STRATEGY = Baseline()
