"""Progress of long work (variants, validation, training): tqdm's bar on a terminal,
plain lines elsewhere.

A CI log or a redirected file gets one line per step, numbered ("[12/216] bc_101: ..."),
which reads well after the fact and never fills a log with redraws. A terminal gets
tqdm's bar, the latest line as its postfix.
"""

from __future__ import annotations

import sys
from typing import Callable, TextIO

from tqdm import tqdm

__all__ = ["ProgressReport", "training_reporter"]


class ProgressReport:
    """`total` steps of `description`; `step(line)` after each one. A context manager:
    the bar is closed on leaving it."""

    def __init__(self, total: int, description: str, *, unit: str = "step", stream: TextIO | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.done = total, 0
        isatty = getattr(self.stream, "isatty", None)
        self.bar = (tqdm(total=total, desc=description, unit=unit, file=self.stream, dynamic_ncols=True)
                    if isatty is not None and isatty() else None)

    @property
    def on_terminal(self) -> bool:
        return self.bar is not None

    def step(self, line: str = "", *, done: int | None = None) -> None:
        """One more step done (or `done` in all, for work that reports its own count)."""
        advance = 1 if done is None else done - self.done
        self.done += advance
        if self.bar is not None:
            if line:
                self.bar.set_postfix_str(line, refresh=False)
            self.bar.update(advance)
        elif line:
            print(f"[{self.done}/{self.total}] {line}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "ProgressReport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def training_reporter(label: str, say: Callable[[str], None], stream: TextIO | None = None):
    """A progress callback for training (`training.lora.Progress`: step, steps, loss,
    tokens per second, seconds left): tqdm's bar on a terminal; elsewhere `say` gets a
    line at the first step, every tenth of the way and at the last."""
    reports: list[ProgressReport] = []

    def report(step: int, steps: int, loss: float, tokens_per_second: float, eta: float) -> None:
        if not reports:
            reports.append(ProgressReport(steps, label, unit="step", stream=stream))
        progress = reports[0]
        if progress.on_terminal:
            progress.step(f"loss {loss:.4f}, {tokens_per_second:.0f} tok/s", done=step)
            if step == steps:
                progress.close()
        elif step == 1 or step == steps or step % max(1, steps // 10) == 0:
            say(f"{label}: step {step}/{steps} loss {loss:.4f} {tokens_per_second:.0f} tok/s ETA {eta:.0f} s")

    return report
