"""Repository-level pytest defaults.

A bare `pytest` here runs the koan benchmark (testpaths = ["koans"]); the project's
own tests live in tests/ and are run with `pytest tests`. Benchmark scripts are
programs, not tests.
"""

collect_ignore = ["benchmarks"]
