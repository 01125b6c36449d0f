"""The ZeroMQ link judge on its own: which connection events become a LinkLost, and whose."""

from __future__ import annotations

import asyncio

import pytest

from hefl.transports import links
from hefl.transports.links import LinkJudge

pytestmark = pytest.mark.timeout(10, method="thread")


@pytest.fixture(autouse=True)
def short_grace(monkeypatch):
    monkeypatch.setattr(links, "LINK_GRACE", 0.05)


def _judge(max_message_bytes=None):
    verdicts = []
    judge = LinkJudge("me", max_message_bytes)
    judge.listener = verdicts.append
    return judge, verdicts


async def test_a_drop_without_a_new_connection_is_a_lost_peer():
    judge, verdicts = _judge()
    judge.event("p", "up")
    judge.event("p", "down")
    await asyncio.sleep(0.15)
    (lost,) = verdicts
    assert lost.peer == lost.origin == "p" and not lost.peer_alive
    assert "dropped before it said goodbye" in lost.cause


async def test_a_drop_after_goodbye_is_normal():
    judge, verdicts = _judge()
    judge.event("p", "up")
    judge.expect_close("p")
    judge.event("p", "down")
    judge.event("p", "replaced")
    await asyncio.sleep(0.15)
    assert verdicts == []


async def test_a_drop_with_an_immediate_reconnection_blames_this_party():
    judge, verdicts = _judge()
    judge.event("p", "up")
    judge.event("p", "down")
    judge.event("p", "up")
    await asyncio.sleep(0.15)
    (lost,) = verdicts
    assert lost.origin == "me" and lost.peer_alive and "refused a message" in lost.cause


async def test_a_replaced_inbound_connection_blames_the_peer_and_names_the_limit():
    judge, verdicts = _judge(max_message_bytes=4096)
    judge.event("p", "replaced")
    await asyncio.sleep(0.15)
    (lost,) = verdicts
    assert lost.origin == "p" and lost.peer_alive and "max_message_bytes=4096" in lost.cause


async def test_messages_still_arriving_postpone_the_verdict_and_stop_cancels_it(monkeypatch):
    monkeypatch.setattr(links, "LINK_GRACE", 0.5)
    judge, verdicts = _judge()
    judge.event("p", "down")
    await asyncio.sleep(0.01)
    judge.heard("p")  # a long goodbye still in flight
    await asyncio.sleep(0.75)  # the first grace is over: postponed, p was heard after the drop
    assert verdicts == []
    judge.stop()
    await asyncio.sleep(0.5)
    assert verdicts == []
