"""pytest hooks: options, collection of koans, outcomes and the summary.

Only glue lives here; every decision is made by the plain modules it calls.
"""

from __future__ import annotations


def pytest_addoption(parser):
    group = parser.getgroup("sleepy", "pytest-sleepy koan benchmark")
    group.addoption(
        "--sleepy-unsafe-no-sandbox",
        action="store_true",
        default=False,
        help="verify candidates without bubblewrap: model-written code then runs with your rights",
    )
