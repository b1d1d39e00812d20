"""The strategies, installed with pytest-sleepy as the package `pytest_sleepy_strategies`.

No code: this file makes the folder a package, so that a wheel carries the strategy
files. Strategies are still loaded one file each (pytest_sleepy.strategies.load_strategies);
a project's own `strategies/` folder is used instead whenever it exists.
"""
