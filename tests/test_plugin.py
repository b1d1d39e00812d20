"""The pytest plugin, loaded through its `pytest11` entry point."""


def test_plugin_registers_the_sandbox_opt_out(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*pytest-sleepy koan benchmark*", "*--sleepy-unsafe-no-sandbox*"])
