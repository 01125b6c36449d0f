"""Progress of long runs (trees, rounds) on stderr.

On a terminal it is one bar redrawn in place; anywhere else (a pipe, a log file, CI) it is one
line per finished step with the elapsed time and an estimate of what remains, so a piped run
is never silent for minutes. Written here rather than taken from tqdm or rich: hefl needs one
bar and one line format, the callback must pickle to reach a party's own process (where it
draws on the same stderr), and neither library would remove more code than it adds.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """Progress of ``total`` steps: a redrawn bar on a terminal, else a line per step.

    Args:
        total: the number of steps.
        label: what is being counted (e.g. "trees").
        stream: where to write; defaults to stderr.
        enabled: write at all (default True).
        started: the ``time.time()`` the elapsed time counts from (default: now).
    """

    def __init__(
        self,
        total: int,
        label: str,
        stream: TextIO | None = None,
        enabled: bool = True,
        started: float | None = None,
    ) -> None:
        self.total = max(1, total)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.redraw = enabled and self.stream.isatty()
        self.done = 0
        self._start = time.time() if started is None else started

    def update(self, done: int | None = None, status: str = "") -> None:
        """Set the number of finished steps (or add one) and the status text, then show it."""
        self.done = self.done + 1 if done is None else done
        if not self.enabled:
            return
        elapsed = time.time() - self._start
        count = f"{self.done}/{self.total}"
        if not self.redraw:
            self.stream.write(f"{self.label} {count} at {elapsed:.1f} s: {status}\n")
        else:
            width = 24
            filled = round(width * min(self.done, self.total) / self.total)
            bar = f"[{'#' * filled}{'.' * (width - filled)}]"
            line = f"\r{self.label} {bar} {count} {elapsed:6.1f}s {status}"
            self.stream.write(line[:160].ljust(100))
        self.stream.flush()

    def close(self) -> None:
        """Finish the bar's line so later output starts on a fresh one."""
        if self.redraw:
            self.stream.write("\n")
            self.stream.flush()


class _PartyProgress:
    """A progress callback that may travel to another party's process (it is picklable): it
    writes to that process's stderr, which is the same terminal or pipe, and keeps the elapsed
    time counting from when the run started here."""

    label = "steps"

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.started = time.time()
        self._last = self.started
        self._bar: ProgressBar | None = None

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_bar": None}

    def bar(self) -> ProgressBar:
        if self._bar is None:
            self._bar = ProgressBar(
                self.total, self.label, enabled=self.enabled, started=self.started
            )
        return self._bar

    def start(self, status: str) -> None:
        """Show the empty bar (before the parties start) with what is happening."""
        self.bar().update(0, status)

    def step(self, done: int, status: str, seconds: float | None = None) -> None:
        """Show ``done`` finished steps with the status and the time left, estimated from the
        last step's ``seconds`` (default: the time since the previous step was shown)."""
        now = time.time()
        last, self._last = self._last, now
        bar = self.bar()
        if done >= self.total:
            bar.update(done, f"{status}; done")
            bar.close()
            return
        left = (now - last if seconds is None else seconds) * (self.total - done)
        bar.update(done, f"{status}; ~{left:.0f} s to go")


class TreeProgress(_PartyProgress):
    """``progress(trees_done, n_trees, seconds_of_last_tree)`` for VF2Boost."""

    label = "trees"

    def __call__(self, done: int, total: int, seconds: float) -> None:
        self.total = total
        self.step(done, f"last tree {seconds:.1f} s", seconds)


class RoundProgress(_PartyProgress):
    """``progress(round, test_accuracy)`` for BatchCrypt training."""

    label = "rounds"

    def __call__(self, round_index: int, accuracy: float) -> None:
        self.step(round_index + 1, f"test accuracy {accuracy:.4f}")
