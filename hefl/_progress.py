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
    """

    def __init__(
        self, total: int, label: str, stream: TextIO | None = None, enabled: bool | None = None
    ) -> None:
        self.total = max(1, total)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done = 0
        self.status = ""
        self._start = time.perf_counter()

    def update(self, done: int | None = None, status: str = "") -> None:
        """Set the number of finished steps (or add one) and the status text, then redraw."""
        self.done = self.done + 1 if done is None else done
        self.status = status
        if not self.enabled:
            return
        width = 24
        filled = round(width * min(self.done, self.total) / self.total)
        elapsed = time.perf_counter() - self._start
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


class TreeProgress:
    """``progress(trees_done, n_trees, seconds_of_last_tree)`` for VF2Boost, drawn as a bar.

    Picklable: with one process per party it travels to the active party's process and draws
    on that process's stderr (the same terminal). The bar is made on the first call.
    """

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self._bar: ProgressBar | None = None

    def __getstate__(self) -> dict[str, object]:
        return {"total": self.total, "enabled": self.enabled, "_bar": None}

    def __call__(self, done: int, total: int, seconds: float) -> None:
        if self._bar is None:
            self._bar = ProgressBar(total, "trees", enabled=self.enabled)
        remaining = (total - done) * seconds
        status = f"last tree {seconds:.1f}s, ~{remaining:.0f}s to go" if done < total else "done"
        self._bar.update(done, status)
        if done >= total:
            self._bar.close()


class RoundProgress:
    """``progress(round, test_accuracy)`` for BatchCrypt training, drawn as a bar (picklable)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self._bar: ProgressBar | None = None

    def __getstate__(self) -> dict[str, object]:
        return {"total": self.total, "enabled": self.enabled, "_bar": None}

    def __call__(self, round_index: int, accuracy: float) -> None:
        if self._bar is None:
            self._bar = ProgressBar(self.total, "rounds", enabled=self.enabled)
        self._bar.update(round_index + 1, f"test accuracy {accuracy:.4f}")
        if round_index + 1 >= self.total:
            self._bar.close()
