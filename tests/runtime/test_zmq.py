"""The ZeroMQ transport: same roles as inproc, CURVE, bad addresses, hostile frames."""

from __future__ import annotations

import asyncio
import socket
import time

import hefl_test_roles as R
import numpy as np
import pytest
import zmq
import zmq.asyncio

import hefl
from hefl._assembly import run_party_role
from hefl._options import RunOptions, RuntimeOptions
from hefl.transports.curve import generate_curve_keypair
from hefl.transports.zmq import ZmqTransport

pytestmark = pytest.mark.timeout(30, method="thread")


@pytest.mark.parametrize("curve", [False, True])
def test_same_roles_over_zmq(curve):
    assert hefl.run({"alice": R.alice, "bob": R.bob}, transport="zmq", curve=curve) == {
        "alice": 2,
        "bob": None,
    }
    out = hefl.run(
        {"hub": R.hub, "s1": R.spoke, "s22": R.spoke}, transport="zmq", executor="thread"
    )
    assert out["hub"] == 117


def test_stream_overlap_over_zmq_and_big_frames():
    out = hefl.run({"producer": R.producer, "consumer": R.consumer}, transport="zmq")
    assert out["consumer"]["values"] == list(range(20))
    assert out["consumer"]["stamps"][0] < out["producer"][-1] - 0.05

    big = np.arange(2_000_000, dtype=np.float64)

    async def a(party):
        await party.send("b", "arr", {"x": big, "raw": big.tobytes()})

    async def b(party):
        msg = await party.recv("a", "arr")
        return bool(np.array_equal(msg["x"], big)) and msg["raw"] == big.tobytes()

    out = hefl.run({"a": a, "b": b}, transport="zmq")
    assert out["b"] is True
    assert out.statistics["a"]["bytes_sent"] > 2 * big.nbytes


def test_raising_party_over_zmq_is_fast():
    t0 = time.monotonic()
    with pytest.raises(hefl.PeerFailed) as info:
        hefl.run({"raiser": R.raiser, "w": R.waiter, "s": R.sleeper}, transport="zmq")
    assert info.value.peer == "raiser"
    assert time.monotonic() - t0 < 5


def test_curve_refuses_unenrolled_key():
    alice_keys, bob_keys, mallory_keys = (generate_curve_keypair() for _ in range(3))
    # alice enrols mallory's key under bob's name: bob's real key must be refused
    alice = ZmqTransport("alice", curve=alice_keys, peer_keys={"bob": mallory_keys.public})
    bob = ZmqTransport("bob", curve=bob_keys, peer_keys={"alice": alice_keys.public})
    addrs = {"alice": alice.bind(), "bob": bob.bind()}
    alice.connect({"bob": addrs["bob"]})
    bob.connect({"alice": addrs["alice"]})
    with pytest.raises(hefl.PeerFailed) as info:
        hefl.run(
            {"alice": R.alice, "bob": R.bob},
            transport={"alice": alice, "bob": bob},
            connect_timeout=1.5,
        )
    assert "did not come up" in info.value.cause
    assert (
        bob_keys.public in info.value.cause
        or alice_keys.public in str(info.value)
        or ("refused" in info.value.cause)
    )


def test_address_in_use_is_a_clear_error():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    try:
        t = ZmqTransport("a", f"tcp://127.0.0.1:{port}")
        with pytest.raises(hefl.TransportBroken, match="already in use"):
            t.bind()
    finally:
        sock.close()


async def _run_alone(transport, role, connect_timeout):
    """Run party "a" (peer "b") over ``transport`` as every runner does, raising its error."""
    options = RunOptions(runtime=RuntimeOptions(connect_timeout=connect_timeout))
    outcome = await run_party_role("a", ["b"], transport, role, options, None)
    if outcome.error is not None:
        raise outcome.error
    return outcome.value


def test_peer_that_never_comes_up():
    a = ZmqTransport("a", "tcp://127.0.0.1:*")
    a.bind()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead_port = s.getsockname()[1]
    s.close()
    a.connect({"b": f"tcp://127.0.0.1:{dead_port}"})

    async def main():
        return await _run_alone(a, R.alice, connect_timeout=0.5)

    t0 = time.monotonic()
    with pytest.raises(hefl.PeerFailed) as info:
        asyncio.run(main())
    assert info.value.peer == "b" and "did not come up within 0.5 s" in info.value.cause
    assert time.monotonic() - t0 < 5


async def _hostile(address, routing_id, frames_list):
    ctx = zmq.asyncio.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.ROUTING_ID, routing_id)
    dealer.setsockopt(zmq.LINGER, 2000)
    dealer.connect(address)
    for frames in frames_list:
        await dealer.send_multipart(frames)
    dealer.close()
    await asyncio.to_thread(ctx.term)


@pytest.mark.parametrize(
    "frames",
    [
        [b"\xc1garbage"],
        [b"\x93\x00\xa1t"],  # truncated envelope
        [hefl.codec.dumps([0, "t", 1]), b"unreferenced frame"],
        [hefl.codec.dumps([42, "t", 1])],  # unknown message kind
        [hefl.codec.dumps({"not": "an envelope"})],
        [hefl.codec.dumps([0, "t", hefl.codec.dumps(1)])[:-1]],  # truncated body
    ],
)
def test_malformed_frames_stop_the_party_cleanly(frames):
    """A peer "b" (here a raw socket) says hello, then sends junk: "a" stops with PeerFailed
    naming "b" instead of hanging or crashing."""
    a = ZmqTransport("a")
    a_addr = a.bind()
    a.connect({"b": "tcp://127.0.0.1:1"})  # nobody listens: a's own sends are not needed
    hello = [hefl.codec.dumps([7, "", {"hefl": hefl.__version__}])]

    async def victim(party):
        await party.recv("b", "never")

    async def main():
        hostile = asyncio.create_task(_hostile(a_addr, b"b", [hello, frames]))
        try:
            return await _run_alone(a, victim, connect_timeout=5)
        finally:
            await hostile

    with pytest.raises(hefl.PeerFailed) as info:
        asyncio.run(main())
    assert info.value.peer == "b" and "malformed" in info.value.cause


def test_unknown_sender_is_refused_and_federation_continues():
    a = ZmqTransport("a")
    b = ZmqTransport("b")
    addrs = {"a": a.bind(), "b": b.bind()}
    a.connect({"b": addrs["b"]})
    b.connect({"a": addrs["a"]})

    async def alice(party):
        await _hostile(addrs["b"], b"eve", [[hefl.codec.dumps([0, "x", 1])]])
        await party.send("b", "hello", {"n": 1})
        return await party.recv("b", "reply")

    async def bob(party):
        msg = await party.recv("a", "hello")
        await party.send("a", "reply", msg["n"] + 1)

    out = hefl.run({"a": alice, "b": bob}, transport={"a": a, "b": b})
    assert out["a"] == 2
    assert out.statistics["b"]["rejected_messages"] == 1


def test_oversized_message_refused_by_receiver():
    async def a(party):
        await party.send("b", "big", b"x" * 5000)

    async def b(party):
        await party.recv("a", "big")

    # the sender's own limit refuses it first
    with pytest.raises(hefl.PeerFailed) as info:
        hefl.run({"a": a, "b": b}, transport="zmq", max_message_bytes=4096)
    assert "exceeds the limit" in info.value.cause


def test_ipc_addresses(tmp_path):
    a = ZmqTransport("alice", f"ipc://{tmp_path}/alice.sock")
    b = ZmqTransport("bob", f"ipc://{tmp_path}/bob.sock")
    addrs = {"alice": a.bind(), "bob": b.bind()}
    a.connect({"bob": addrs["bob"]})
    b.connect({"alice": addrs["alice"]})
    assert hefl.run({"alice": R.alice, "bob": R.bob}, transport={"alice": a, "bob": b}) == {
        "alice": 2,
        "bob": None,
    }


def test_oversized_frame_is_dropped_by_libzmq_before_buffering():
    a = ZmqTransport("a", max_message_bytes=4096)
    a_addr = a.bind()
    a.connect({"b": "tcp://127.0.0.1:1"})
    hello = [hefl.codec.dumps([7, "", {"hefl": hefl.__version__}])]
    huge = [hefl.codec.dumps([0, "big", b"x" * 100_000])]

    async def victim(party):
        await party.recv("b", "big", timeout=1.0)

    async def main():
        hostile = asyncio.create_task(_hostile(a_addr, b"b", [hello, huge]))
        try:
            return await _run_alone(a, victim, connect_timeout=5)
        finally:
            await hostile

    with pytest.raises(hefl.PeerFailed) as info:
        asyncio.run(main())
    assert "sent no message with tag 'big'" in info.value.cause
