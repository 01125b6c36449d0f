"""Observability: statistics, Chrome trace JSON and the Gantt chart."""

from __future__ import annotations

import asyncio
import json

import pytest

import hefl

pytestmark = pytest.mark.timeout(60, method="thread")


async def worker(party):
    for i in range(3):
        with party.span("encrypt", chunk=i):
            await asyncio.sleep(0.02)
        await party.send("boss", "chunk", b"x" * 100)


async def boss(party):
    got = [await party.recv("worker", "chunk") for _ in range(3)]
    with party.span("sum"):
        await asyncio.sleep(0.01)
    return len(got)


def test_statistics_and_chrome_trace(tmp_path):
    out = hefl.run({"worker": worker, "boss": boss})
    w, b = out.statistics["worker"], out.statistics["boss"]
    assert w["messages_sent"] == 3 == b["messages_received"]
    assert w["bytes_sent"] == b["bytes_received"] >= 300
    assert w["span_seconds"]["encrypt"] >= 0.05
    # the boss mostly waited for the worker
    assert b["idle_seconds"] >= 0.04 and b["idle_seconds"] <= b["wall_seconds"]
    assert abs(b["busy_seconds"] + b["idle_seconds"] - b["wall_seconds"]) < 1e-6
    path = out.trace.save_chrome(tmp_path / "trace.json")
    events = json.loads(path.read_text())["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert {e["name"] for e in spans} >= {"encrypt", "sum", "idle"}
    names = {e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert names == {"worker", "boss"}
    enc = [e for e in spans if e["name"] == "encrypt"]
    assert [e["args"]["chunk"] for e in enc] == [0, 1, 2]
    assert all(e["dur"] >= 15_000 for e in enc)  # microseconds


def test_gantt_png(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    backend = matplotlib.get_backend()
    out = hefl.run({"worker": worker, "boss": boss})
    path = out.trace.save_gantt(tmp_path / "gantt.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000
    assert matplotlib.get_backend() == backend  # a notebook's plotting is left alone


def test_gantt_marks_each_tree_and_explains_span_names(tmp_path):
    from hefl._tracing import Span, Trace

    spans = [
        Span("a", "encrypt", 0.0, 5.0, {"tree": 0}),
        Span("b", "idle", 1.0, 3.0),
        Span("b", "histograms", 6.0, 2.0, {"tree": 0, "layer": 0}),
        Span("a", "encrypt", 10.0, 4.0, {"tree": 1}),
        Span("b", "histograms", 9.0, 2.0, {"tree": 1, "layer": 0}),
    ]
    trace = Trace(spans)
    assert trace.step_starts() == [("tree 1", 0.0), ("tree 2", 9.0)]
    path = trace.save_gantt(tmp_path / "g.png", labels={"encrypt": "encrypt g and h"})
    assert path.read_bytes()[:4] == b"\x89PNG"
