"""The koan corpus, installed with pytest-sleepy as the package `pytest_sleepy_koans`.

No code: this file makes the folder a package, so that a wheel carries the koans and
`pytest --pyargs pytest_sleepy_koans` finds them in any directory. A project's own
`koans/` folder (the `sleepy_koans` ini option) is used instead whenever it exists.
"""
