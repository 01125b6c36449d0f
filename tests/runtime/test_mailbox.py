"""The mailbox on its own (no transport, no liveness): slots, limits, retired tags, failure."""

from __future__ import annotations

import asyncio

import pytest

from hefl._envelope import Channel
from hefl._mailbox import Mailbox
from hefl._options import RuntimeOptions
from hefl._tracing import Tracer
from hefl.errors import PeerFailed, ProtocolError

pytestmark = pytest.mark.timeout(10, method="thread")


def _mailbox(**options):
    return Mailbox("me", ["a", "b"], RuntimeOptions(**options), Tracer("me"))


async def test_early_items_wait_fifo_per_slot_and_waiters_get_later_ones():
    box = _mailbox()
    assert box.deliver(("a", Channel.MSG, "t"), 1, 10) is None
    assert box.deliver(("a", Channel.MSG, "t"), 2, 10) is None
    assert box.deliver(("a", Channel.MSG, "u"), "other tag", 10) is None
    assert await box.take(("a", Channel.MSG, "t"), None) == 1
    waiter = asyncio.ensure_future(box.take(("b", Channel.MSG, "t"), None))
    await asyncio.sleep(0)
    assert box.waiting == 1
    box.deliver(("b", Channel.MSG, "t"), "to the waiter", 10)
    assert await waiter == "to the waiter"
    assert box.unreceived() == {("a", Channel.MSG, "t"): 1, ("a", Channel.MSG, "u"): 1}


async def test_buffer_limits_refuse_with_a_cause_naming_the_limit():
    box = _mailbox(max_buffered_messages=2)
    assert box.deliver(("a", Channel.MSG, "t"), 1, 1) is None
    assert box.deliver(("a", Channel.MSG, "t"), 2, 1) is None
    cause = box.deliver(("a", Channel.MSG, "t"), 3, 1)
    assert cause is not None and "max_buffered_messages=2" in cause
    assert box.deliver(("b", Channel.MSG, "t"), 1, 1) is None  # limits are per peer


async def test_retire_reports_a_waiting_message_and_drops_stale_credits():
    box = _mailbox()
    seq = box.open_stream_out("a", "r/0/s")
    box.deliver(("a", Channel.CREDIT, "r/0/s"), [seq, 8], 5)
    box.close_stream_out("a", "r/0/s", seq)
    assert box.retire(["r/0"]) is None and box.is_retired("r/0/x")
    box.deliver(("b", Channel.MSG, "r/1/x"), "late", 5)
    assert box.retire(["r/1"]) == ("b", "r/1/x")


async def test_fail_and_finish_wake_waiters():
    box = _mailbox(recv_timeout=5)
    from_a = asyncio.ensure_future(box.take(("a", Channel.MSG, "t"), None))
    from_b = asyncio.ensure_future(box.take(("b", Channel.STREAM, "s"), None))
    await asyncio.sleep(0)
    box.finish_peer("a")
    with pytest.raises(ProtocolError, match="finished its role without sending the message"):
        await from_a
    box.fail("b", "it broke")
    with pytest.raises(PeerFailed, match="it broke"):
        await from_b
    with pytest.raises(PeerFailed):
        box.raise_if_failed()


async def test_take_times_out_naming_the_peer():
    box = _mailbox()
    with pytest.raises(PeerFailed, match=r"sent no message with tag 't' within 0\.05 s"):
        await box.take(("a", Channel.MSG, "t"), 0.05)
    assert box.idle_seconds(running=False) >= 0.04
