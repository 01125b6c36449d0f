"""Module-level roles shared by the runtime tests (picklable for processes=True)."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np


async def alice(party):
    await party.send("bob", "hello", {"n": 1})
    return await party.recv("bob", "reply")


async def bob(party):
    msg = await party.recv("alice", "hello")
    await party.send("alice", "reply", msg["n"] + 1)


def square_sum(values):
    """CPU work for offload tests (module level so a process pool can pickle it)."""
    return int(sum(int(v) * int(v) for v in values))


async def producer(party, n_chunks=20, delay=0.01):
    """Stream chunks with a pause between them; returns the send timestamps."""
    sent = []
    async with party.stream("consumer", "data") as s:
        for i in range(n_chunks):
            await asyncio.sleep(delay)
            await s.send(np.full(4, i, dtype=np.int64))
            sent.append(time.monotonic())
    return sent


async def consumer(party):
    """Consume the stream; returns the receive timestamps and the chunk values."""
    got, stamps = [], []
    async for chunk in party.stream_from("producer", "data"):
        got.append(int(chunk[0]))
        stamps.append(time.monotonic())
    return {"values": got, "stamps": stamps}


async def hub(party):
    """Broadcast a value, gather answers, offload a sum."""
    await party.broadcast("x", 3)
    answers = await party.gather("answer")
    total = await party.offload(square_sum, list(answers.values()))
    return total


async def spoke(party):
    x = await party.recv("hub", "x")
    with party.span("work", x=x):
        await party.send("hub", "answer", x * len(party.name))
    return os.getpid()


async def raiser(party):
    await asyncio.sleep(0.05)
    raise ValueError("boom in raiser")


async def waiter(party):
    """Waits forever for a message that never comes."""
    await party.recv(party.peers[0], "never")


async def sleeper(party):
    """Blocked outside the message buffers: must be stopped by the failure."""
    await asyncio.sleep(600)


async def suicide(party):
    """Kill this party's process the hard way (processes=True tests)."""
    import signal

    await asyncio.sleep(0.3)
    os.kill(os.getpid(), signal.SIGKILL)
