"""Spans and statistics of one party, and their export (Chrome trace JSON, Gantt PNG).

Timestamps are wall-clock microseconds (anchored once per process and advanced with the
monotonic clock) so traces of parties in different processes — or hosts with synced clocks —
line up in one picture.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hefl.errors import ConfigError

_WALL0 = time.time()
_PERF0 = time.perf_counter()


def now_us() -> float:
    """Wall-clock time in microseconds, monotonic within a process."""
    return (_WALL0 + (time.perf_counter() - _PERF0)) * 1e6


@dataclass(slots=True)
class Span:
    """One timed interval of a party's work.

    Attributes:
        party: the party's name.
        name: what was done (e.g. "encrypt", or "idle" for time spent waiting for peers).
        start_us: wall-clock start in microseconds.
        dur_us: duration in microseconds.
        attrs: extra attributes (numbers, strings).
    """

    party: str
    name: str
    start_us: float
    dur_us: float
    attrs: dict[str, Any] = field(default_factory=dict)


class Tracer:
    """Records the spans of one party.

    Args:
        party_name: the name of the party whose spans it records.
        max_spans: stop recording (and count drops) beyond this many spans.

    Attributes:
        party: the party's name (stamped on every span).
    """

    def __init__(self, party_name: str, max_spans: int = 200_000) -> None:
        self.party = party_name
        self.spans: list[Span] = []
        self.max_spans = max_spans
        self.dropped = 0

    def add(self, name: str, start_us: float, dur_us: float, attrs: dict | None = None) -> None:
        """Record a finished span."""
        if len(self.spans) >= self.max_spans:
            self.dropped += 1
            return
        self.spans.append(Span(self.party, name, start_us, dur_us, attrs or {}))

    @contextmanager
    def span(self, name: str, **attrs: Any) -> Iterator[dict[str, Any]]:
        """Time the body as a span; yields the attrs dict so the body can add results."""
        start = now_us()
        try:
            yield attrs
        finally:
            self.add(name, start, now_us() - start, attrs)


class Trace:
    """The spans of every party of a run, with exporters.

    Args:
        spans: the spans of all parties.
    """

    def __init__(self, spans: list[Span]) -> None:
        self.spans = sorted(spans, key=lambda s: s.start_us)

    @property
    def parties(self) -> list[str]:
        """Party names in order of first appearance."""
        return list(dict.fromkeys(s.party for s in self.spans))

    def to_chrome(self) -> dict[str, Any]:
        """Return the trace in Chrome trace-event format (opens in Perfetto / chrome://tracing).

        Each party is one process lane; idle (waiting) spans go to a second thread lane.
        """
        events: list[dict[str, Any]] = []
        for pid, party in enumerate(self.parties, start=1):
            events.append({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": party}})
            events.append(
                {"name": "thread_name", "ph": "M", "pid": pid, "tid": 1, "args": {"name": "work"}}
            )
            events.append(
                {"name": "thread_name", "ph": "M", "pid": pid, "tid": 2, "args": {"name": "wait"}}
            )
        pids = {party: i for i, party in enumerate(self.parties, start=1)}
        for s in self.spans:
            events.append(
                {
                    "name": s.name,
                    "ph": "X",
                    "ts": round(s.start_us, 3),
                    "dur": round(s.dur_us, 3),
                    "pid": pids[s.party],
                    "tid": 2 if s.name == "idle" else 1,
                    "args": {k: _jsonable(v) for k, v in s.attrs.items()},
                }
            )
        return {"traceEvents": events, "displayTimeUnit": "ms"}

    def save_chrome(self, path: str | Path) -> Path:
        """Write the Chrome trace JSON to ``path`` and return it."""
        path = Path(path)
        path.write_text(json.dumps(self.to_chrome()))
        return path

    def save_gantt(self, path: str | Path, title: str = "hefl federation") -> Path:
        """Draw a Gantt chart PNG: one lane per party, a colour per span name.

        Raises:
            ConfigError: if matplotlib (the ``plot`` extra) is not installed.
        """
        try:
            # A bare Figure draws with the Agg renderer without touching pyplot's global
            # backend, so saving a chart never changes a notebook's plotting.
            from matplotlib import colormaps
            from matplotlib.figure import Figure
            from matplotlib.patches import Rectangle
        except ImportError as exc:
            raise ConfigError("save_gantt needs matplotlib: pip install 'hefl[plot]'") from exc
        path = Path(path)
        parties = self.parties
        t0 = min((s.start_us for s in self.spans), default=0.0)
        names = sorted({s.name for s in self.spans if s.name != "idle"})
        cmap = colormaps["tab20"]
        colours = {name: cmap(i % 20) for i, name in enumerate(names)}
        colours["idle"] = (0.85, 0.85, 0.85, 1.0)
        fig = Figure(figsize=(12, 1 + 0.7 * max(1, len(parties))))
        ax = fig.subplots()
        for lane, party in enumerate(parties):
            for s in self.spans:
                if s.party != party:
                    continue
                height = 0.3 if s.name == "idle" else 0.6
                ax.broken_barh(
                    [((s.start_us - t0) / 1e6, s.dur_us / 1e6)],
                    (lane - height / 2, height),
                    facecolors=colours[s.name],
                )
        ax.set_yticks(range(len(parties)), labels=parties)
        ax.set_xlabel("seconds")
        ax.set_title(title, loc="left")
        handles = [Rectangle((0, 0), 1, 1, color=colours[n]) for n in [*names, "idle"]]
        ax.legend(
            handles,
            [*names, "idle"],
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            fontsize="small",
            ncol=min(8, len(names) + 1),
            frameon=False,
        )
        ax.invert_yaxis()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def merge_statistics(stats: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Sum the counters of several parties' statistics (for a one-line summary)."""
    total: dict[str, Any] = {}
    for party_stats in stats.values():
        for key, value in party_stats.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    return total


__all__ = ["Span", "Trace", "Tracer", "merge_statistics", "now_us"]
