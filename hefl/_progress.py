"""A small terminal progress bar for long runs (trees, rounds).

Written here rather than taken from a library because hefl needs only one bar with a status
line, and it must stay silent when output is not a terminal (``--json``, CI logs).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """A one-line progress bar: ``label [#####.....] 5/10 12.3s status``.

    Args:
        total: the number of steps.
        label: what is being counted (e.g. "trees").
        stream: where to draw; defaults to stderr.
        enabled: draw at all; defaults to whether ``stream`` is a terminal.
        started: the ``time.time()`` the elapsed time counts from (default: now).
    """

    def __init__(
        self,
        total: int,
        label: str,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        started: float | None = None,
    ) -> None:
        self.total = max(1, total)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done = 0
        self._start = time.time() if started is None else started

    def update(self, done: int | None = None, status: str = "") -> None:
        """Set the number of finished steps (or add one) and the status text, then redraw."""
        self.done = self.done + 1 if done is None else done
        if not self.enabled:
            return
        width = 24
        filled = round(width * min(self.done, self.total) / self.total)
        elapsed = time.time() - self._start
        line = (
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done}/{self.total} {elapsed:6.1f}s {status}"
        )
        self.stream.write(line[:160].ljust(100))
        self.stream.flush()

    def close(self) -> None:
        """Finish the line so later output starts on a fresh one."""
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


class _PartyProgress:
    """A progress callback that may travel to another party's process (it is picklable): it
    draws on that process's stderr, which is the same terminal, and keeps the elapsed time
    counting from when the run started here."""

    label = "steps"

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.started = time.time()
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
        """Draw the empty bar (before the parties start) with what is happening."""
        self.bar().update(0, status)


class TreeProgress(_PartyProgress):
    """``progress(trees_done, n_trees, seconds_of_last_tree)`` for VF2Boost."""

    label = "trees"

    def __call__(self, done: int, total: int, seconds: float) -> None:
        remaining = (total - done) * seconds
        status = f"last tree {seconds:.1f}s, ~{remaining:.0f}s to go" if done < total else "done"
        self.bar().update(done, status)
        if done >= total:
            self.bar().close()


class RoundProgress(_PartyProgress):
    """``progress(round, test_accuracy)`` for BatchCrypt training."""

    label = "rounds"

    def __call__(self, round_index: int, accuracy: float) -> None:
        self.bar().update(round_index + 1, f"test accuracy after round: {accuracy:.4f}")
        if round_index + 1 >= self.total:
            self.bar().close()
