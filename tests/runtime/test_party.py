"""The runtime on the in-process transport: messaging, streams, failures, statistics."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import multiprocessing
import time

import hefl_test_roles as R
import numpy as np
import pytest

import hefl

pytestmark = pytest.mark.timeout(30, method="thread")


def test_contract_example():
    result = hefl.run({"alice": R.alice, "bob": R.bob})
    assert result == {"alice": 2, "bob": None}
    stats = result.statistics["alice"]
    assert stats["messages_sent"] == 1 and stats["messages_received"] == 1
    assert stats["bytes_sent"] > 0 and stats["wall_seconds"] >= stats["idle_seconds"] >= 0


async def test_run_async_early_messages_fifo_per_tag():
    async def a(party):
        for i in range(5):
            await party.send("b", "t1", i)
        await party.send("b", "t2", "x")
        big = 2**4000 + 7
        await party.send("b", "big", (big, -big, np.arange(3, dtype=np.int32)))

    async def b(party):
        await asyncio.sleep(0.05)  # everything arrives before anyone waits
        second_tag = await party.recv("a", "t2")
        first = [await party.recv("a", "t1") for _ in range(5)]
        big = await party.recv("a", "big")
        return second_tag, first, big

    out = await hefl.run_async({"a": a, "b": b})
    tag2, first, big = out["b"]
    assert tag2 == "x" and first == [0, 1, 2, 3, 4]
    assert big[0] == 2**4000 + 7 and big[1] == -(2**4000 + 7) and isinstance(big, tuple)
    assert big[2].dtype == np.int32 and big[2].tolist() == [0, 1, 2]


def test_broadcast_gather_offload_span():
    roles = {"hub": R.hub, "s1": R.spoke, "s22": R.spoke}
    out = hefl.run(roles, executor="thread")
    assert out["hub"] == (3 * 2) ** 2 + (3 * 3) ** 2
    assert out.statistics["s1"]["span_seconds"]["work"] >= 0
    names = {s.name for s in out.trace.spans}
    assert "work" in names


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"executor": "inline"}, 1),
        ({"executor": "thread", "max_workers": 3}, 3),
        ({"max_workers": 5}, 5),
        ({"executor": concurrent.futures.ThreadPoolExecutor(4)}, 4),
    ],
)
def test_capacity_is_what_the_executor_runs_at_once(options, expected):
    async def role(party):
        return party.capacity

    out = hefl.run({"a": role, "b": role}, **options)
    assert out["a"] == out["b"] == expected


def test_offload_default_process_pool():
    out = hefl.run({"hub": R.hub, "s1": R.spoke, "s22": R.spoke}, max_workers=1)
    assert out["hub"] == 117


def test_stream_overlaps_producer_and_consumer():
    out = hefl.run({"producer": R.producer, "consumer": R.consumer})
    sent = out["producer"]
    got = out["consumer"]
    assert got["values"] == list(range(20))
    # the consumer had the first chunk long before the producer sent the last one
    assert got["stamps"][0] < sent[-1] - 0.05


def test_stream_back_pressure_window():
    async def fast(party):
        stamps = []
        async with party.stream("slow", "s") as s:
            for i in range(12):
                await s.send(i)
                stamps.append(time.monotonic())
        return stamps

    async def slow(party):
        await asyncio.sleep(0.3)
        return [c async for c in party.stream_from("fast", "s")]

    out = hefl.run({"fast": fast, "slow": slow}, stream_window=4)
    assert out["slow"] == list(range(12))
    start = out["fast"][0]
    # the 5th chunk had to wait for credit from the (sleeping) consumer
    assert out["fast"][4] - start > 0.2


def test_raising_party_fails_everyone_fast():
    t0 = time.monotonic()
    with pytest.raises(hefl.PeerFailed) as info:
        hefl.run({"raiser": R.raiser, "w": R.waiter, "s": R.sleeper})
    assert info.value.peer == "raiser"
    assert "boom in raiser" in info.value.cause
    assert isinstance(info.value.__cause__, ValueError)
    assert time.monotonic() - t0 < 5


def test_others_see_peer_failed_naming_the_origin():
    seen = {}

    async def watcher(party):
        try:
            await party.recv("raiser", "never")
        except hefl.PeerFailed as exc:
            seen["peer"] = exc.peer
            raise

    with pytest.raises(hefl.PeerFailed):
        hefl.run({"raiser": R.raiser, "watcher": watcher, "other": R.sleeper})
    assert seen["peer"] == "raiser"


def test_stream_abort_propagates():
    async def prod(party):
        async with party.stream("cons", "s") as s:
            await s.send(1)
            raise RuntimeError("encrypt failed")

    got = []

    async def cons(party):
        async for chunk in party.stream_from("prod", "s"):
            got.append(chunk)

    with pytest.raises(hefl.PeerFailed) as info:
        hefl.run({"prod": prod, "cons": cons})
    assert info.value.peer == "prod" and "encrypt failed" in info.value.cause


def test_recv_timeout_names_silent_peer():
    async def quiet(party):
        await party.recv("impatient", "never-sent")

    async def impatient(party):
        await party.recv("quiet", "x", timeout=0.2)

    with pytest.raises(hefl.PeerFailed) as info:
        hefl.run({"quiet": quiet, "impatient": impatient})
    assert info.value.peer == "quiet" and "within 0.2 s" in info.value.cause


def test_peer_finishing_without_sending_is_a_protocol_error():
    async def done(party):
        return 1

    async def expects(party):
        await party.recv("done", "x")

    with pytest.raises(hefl.PeerFailed) as info:
        hefl.run({"done": done, "expects": expects})
    assert "ProtocolError" in info.value.cause


def test_bad_arguments():
    with pytest.raises(hefl.ConfigError):
        hefl.run({})
    with pytest.raises(hefl.ConfigError):
        hefl.run({"a": 3})
    with pytest.raises(hefl.ConfigError):
        hefl.run({"a": R.alice}, transport="carrier-pigeon")

    async def to_unknown(party):
        await party.send("nobody", "t", 1)

    with pytest.raises(hefl.PeerFailed) as info:
        hefl.run({"a": to_unknown, "b": R.sleeper})
    assert "ConfigError" in info.value.cause and "nobody" in info.value.cause


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"processes": True, "transport": "inproc"}, "processes=True runs every party over ZeroMQ"),
        ({"processes": True, "transport": {}}, "processes=True runs every party over ZeroMQ"),
        ({"curve": True}, "curve=True needs transport='zmq'"),
        ({"curve": True, "transport": "inproc"}, "curve=True needs transport='zmq'"),
        ({"curve": True, "transport": {"alice": None, "bob": None}}, "mapping of transports"),
        ({"stream_windw": 8}, r"unknown option\(s\) \['stream_windw'\]"),
        ({"timeout": -1}, "timeout must be a positive number"),
        ({"processes": True, "executor": concurrent.futures.ThreadPoolExecutor(1)}, "by name"),
        ({"executor": "inline", "max_workers": 2}, "max_workers sizes"),
    ],
)
def test_conflicting_or_unknown_options_are_refused_before_anything_starts(kwargs, match):
    """An option that would be silently ignored (a transport under processes=True, CURVE on
    queues or on transports the caller built) is a ConfigError, as is a misspelt one."""
    with pytest.raises(hefl.ConfigError, match=match):
        hefl.run({"alice": R.alice, "bob": R.bob}, **kwargs)
    assert not multiprocessing.active_children()


async def test_run_async_refuses_conflicting_options_too():
    with pytest.raises(hefl.ConfigError, match="processes=True"):
        await hefl.run_async({"alice": R.alice, "bob": R.bob}, processes=True, transport="inproc")


def test_unencodable_object_is_refused_at_the_sender():
    async def a(party):
        await party.send("b", "t", object())

    with pytest.raises(hefl.PeerFailed) as info:
        hefl.run({"a": a, "b": R.sleeper})
    assert "CodecError" in info.value.cause


def test_partial_roles_and_timeout():
    roles = {"producer": functools.partial(R.producer, n_chunks=3), "consumer": R.consumer}
    assert hefl.run(roles)["consumer"]["values"] == [0, 1, 2]
    with pytest.raises(hefl.ProtocolError):
        hefl.run({"a": R.sleeper, "b": R.sleeper}, timeout=0.3)


def test_slow_consumer_does_not_trip_recv_timeout_of_producer():
    async def fast(party):
        async with party.stream("slow", "s") as s:
            for i in range(6):
                await s.send(i)

    async def slow(party):
        out = []
        async for chunk in party.stream_from("fast", "s"):
            await asyncio.sleep(0.3)  # busy with each chunk, but alive
            out.append(chunk)
        return out

    out = hefl.run({"fast": fast, "slow": slow}, stream_window=2, recv_timeout=0.2)
    assert out["slow"] == list(range(6))
