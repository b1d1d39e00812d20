"""Progress of long commands: a bar on a terminal, numbered plain lines elsewhere."""

from __future__ import annotations

import io

from pytest_sleepy.cli import main
from pytest_sleepy.progress import ProgressReport, training_reporter

from conftest import REPO_ROOT


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_one_numbered_line_per_step():
    log = io.StringIO()
    with ProgressReport(2, "variants", stream=log) as report:
        report.step("bc_101: kept 2")
        report.step("bc_102: kept 1")
    assert log.getvalue() == "[1/2] bc_101: kept 2\n[2/2] bc_102: kept 1\n"


def test_a_terminal_gets_a_bar_instead_of_lines():
    terminal = Terminal()
    with ProgressReport(2, "variants", unit="koan", stream=terminal) as report:
        report.step("bc_101: kept 2")
        report.step("bc_102: kept 1")
    shown = terminal.getvalue()
    assert "variants" in shown and "2/2" in shown and "koan" in shown
    assert "[1/2]" not in shown


def test_work_that_counts_itself_advances_to_its_count():
    log = io.StringIO()
    report = ProgressReport(100, "training", stream=log)
    report.step("loss 1.2", done=10)
    report.step("loss 0.8", done=50)
    assert log.getvalue().splitlines() == ["[10/100] loss 1.2", "[50/100] loss 0.8"]


def test_validate_reports_each_koan_as_it_is_checked(capsys):
    koan = REPO_ROOT / "koans" / "borrow_checker" / "bc_001.toml"
    assert main(["koans", "validate", "--koans", str(REPO_ROOT / "koans"), str(koan)]) == 0
    assert "[1/1] bc_001: ok" in capsys.readouterr().err


def test_training_on_a_log_says_a_line_at_the_start_every_tenth_and_the_end():
    said = []
    report = training_reporter("training lora", said.append, stream=io.StringIO())
    for step in range(1, 21):
        report(step, 20, 1.0 / step, 100.0, 20 - step)
    assert [line.split(":")[1].split()[1] for line in said] == ["1/20", "2/20", "4/20", "6/20", "8/20", "10/20",
                                                               "12/20", "14/20", "16/20", "18/20", "20/20"]


def test_training_on_a_terminal_draws_a_bar_and_says_nothing():
    said, terminal = [], Terminal()
    report = training_reporter("training lora", said.append, stream=terminal)
    for step in range(1, 6):
        report(step, 5, 0.5, 100.0, 5 - step)
    assert said == [] and "training lora" in terminal.getvalue() and "5/5" in terminal.getvalue()
