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

    def save_gantt(
        self,
        path: str | Path,
        title: str = "hefl federation",
        labels: Mapping[str, str] | None = None,
    ) -> Path:
        """Draw a Gantt chart PNG: one lane per party, a colour per span name, and a dashed
        line where each tree or round starts (the first span carrying that ``tree`` or
        ``round`` attribute).

        Args:
            path: the PNG file to write.
            title: the chart's title.
            labels: what each span name means, shown in the legend (``"decrypt"`` →
                ``"decrypt: receive and decrypt histograms"``).

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
        parties = self.parties
        t0 = min((s.start_us for s in self.spans), default=0.0)
        names = [*sorted({s.name for s in self.spans if s.name != "idle"}), "idle"]
        cmap = colormaps["tab20"]
        colours = {name: cmap(i % 20) for i, name in enumerate(names)}
        colours["idle"] = (0.85, 0.85, 0.85, 1.0)
        fig = Figure(figsize=(13, 2.2 + 0.7 * max(1, len(parties)) + 0.2 * len(names)))
        ax = fig.subplots()
        for lane, party in enumerate(parties):
            for s in self.spans:
                if s.party == party:
                    height = 0.3 if s.name == "idle" else 0.6
                    ax.broken_barh(
                        [((s.start_us - t0) / 1e6, s.dur_us / 1e6)],
                        (lane - height / 2, height),
                        facecolors=colours[s.name],
                    )
        for label, start_us in self.step_starts():
            x = (start_us - t0) / 1e6
            ax.axvline(x, color="black", linestyle="--", linewidth=0.8)
            ax.text(x, -0.55, f" {label}", fontsize="small", va="bottom")
        ax.set_yticks(range(len(parties)), labels=parties)
        ax.set_ylim(len(parties) - 0.4, -0.8)
        ax.set_xlabel("seconds")
        ax.set_title(title, loc="left")
        described = {"idle": "waiting for a peer's message", **(labels or {})}
        ax.legend(
            [Rectangle((0, 0), 1, 1, color=colours[n]) for n in names],
            [f"{n}: {described[n]}" if n in described else n for n in names],
            loc="upper left",
            bbox_to_anchor=(0.0, -0.25),
            fontsize="small",
            ncol=2,
            frameon=False,
        )
        fig.tight_layout()
        fig.savefig(path := Path(path), dpi=120)
        return path

    def step_starts(self) -> list[tuple[str, float]]:
        """Where each tree or round starts: ``("tree 1", start_us)`` for the earliest span of
        any party whose ``tree`` (or ``round``) attribute is 0, and so on."""
        firsts: dict[tuple[str, int], float] = {}
        for s in self.spans:
            for key in ("tree", "round"):
                step = s.attrs.get(key)
                if isinstance(step, int) and (key, step) not in firsts:
                    firsts[(key, step)] = s.start_us  # spans are sorted by start
        return [(f"{key} {step + 1}", us) for (key, step), us in sorted(firsts.items())]


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
