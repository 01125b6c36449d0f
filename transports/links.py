"""Judging dropped connections: when does a drop mean lost messages, and whose fault is it?

ZeroMQ reconnects by itself and drops whatever was in flight, without a word; libzmq also
drops an inbound frame over ``max_message_bytes`` together with the connection carrying it.
:class:`LinkJudge` takes the raw connection events a ZeroMQ transport sees (``"down"``,
``"up"``, ``"replaced"``) and, after a short grace (:data:`LINK_GRACE`) in which a goodbye
still in flight or the reconnection is awaited, reports a :class:`~hefl.transports.base.LinkLost`
naming the party responsible:

- the peer, if it is gone (process or network): its connection dropped and it accepted no new
  one (``peer_alive=False``);
- the peer, if it reconnected to us before saying goodbye (it sent a frame over our
  ``max_message_bytes``, or the network failed; ``peer_alive=True``);
- this party, if the peer dropped our connection and took a new one at once (it refused a
  frame of ours).

A drop after the peer's goodbye (:meth:`LinkJudge.expect_close`) is the normal end of a run.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .base import LinkListener, LinkLost

log = logging.getLogger("hefl.transports.links")

LINK_GRACE = 1.0
"""Seconds a dropped connection may take to be explained by a goodbye or failure notice still
in flight, or to come back (ZeroMQ reconnects after 100-200 ms), before it is judged."""


class LinkJudge:
    """Turns one party's connection events into :class:`LinkLost` verdicts.

    Args:
        name: the party this transport belongs to.
        max_message_bytes: the transport's inbound frame limit (named in verdicts), or None.
    """

    def __init__(self, name: str, max_message_bytes: int | None) -> None:
        self.name = name
        self.max_message_bytes = max_message_bytes
        self.listener: LinkListener | None = None
        self._closing: set[str] = set()  # said goodbye: their links may drop
        self._dropped: dict[str, float] = {}  # peer -> when our connection to it last dropped
        self._restored: set[str] = set()  # dropped, then connected again
        self._last_heard: dict[str, float] = {}
        self._timers: set[asyncio.TimerHandle] = set()

    def heard(self, peer: str) -> None:
        """A message from ``peer`` arrived (a long goodbye may still be in flight)."""
        self._last_heard[peer] = time.monotonic()

    def expect_close(self, peer: str) -> None:
        """``peer`` said goodbye (or failed): its link dropping from now on loses nothing."""
        self._closing.add(peer)

    def event(self, peer: str, event: str) -> None:
        """Record a connection event and judge it after :data:`LINK_GRACE`.

        Args:
            peer: the peer the connection belongs to.
            event: ``"down"`` (our connection to it dropped), ``"up"`` (connected, maybe
                again) or ``"replaced"`` (it connected anew after sending us messages).
        """
        if self.listener is None:
            return
        now = time.monotonic()
        if event == "up":
            if peer in self._dropped:
                self._restored.add(peer)
            return
        if event == "down":
            self._dropped[peer] = now
            self._restored.discard(peer)
        elif event != "replaced":
            return
        self._judge_later(peer, event, now)

    def stop(self) -> None:
        """Forget the listener and every pending judgement."""
        self.listener = None
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def _judge_later(self, peer: str, event: str, since: float) -> None:
        def fire() -> None:
            self._timers.discard(handle)
            self._judge(peer, event, since)

        handle = asyncio.get_running_loop().call_later(LINK_GRACE, fire)
        self._timers.add(handle)

    def _judge(self, peer: str, event: str, since: float) -> None:
        if event == "replaced":  # its connection to us dropped, and it reconnected
            if peer not in self._closing:  # after a goodbye nothing of it was in flight
                self._report(LinkLost(peer, peer, self._replaced_cause(), peer_alive=True))
            return
        if self._dropped.get(peer) != since or peer in self._closing:
            return  # a later drop has its own timer; or it said goodbye and then closed
        if peer in self._restored:  # it dropped our connection and took a new one
            cause = (
                f"its connection to {peer!r} dropped and {peer!r} accepted a new one at once: "
                f"{peer!r} refused a message over its max_message_bytes (ZeroMQ drops such a "
                f"frame together with the connection carrying it), or the network failed; "
                f"messages to {peer!r} may have been lost"
            )
            self._report(LinkLost(peer, self.name, cause, peer_alive=True))
        elif self._last_heard.get(peer, since) > since:
            # its messages still arrive (a long goodbye in flight): wait for the rest
            now = self._dropped[peer] = time.monotonic()
            self._judge_later(peer, event, now)
        else:
            cause = (
                f"its connection dropped before it said goodbye and it accepted no new one "
                f"within {LINK_GRACE:g} s: its process or its network failed, or it closed its "
                "transport; messages may have been lost"
            )
            self._report(LinkLost(peer, peer, cause, peer_alive=False))

    def _replaced_cause(self) -> str:
        limit = self.max_message_bytes
        over = (
            f"it sent a message over max_message_bytes={limit} (ZeroMQ drops such a frame "
            "together with the connection carrying it), or "
            if limit
            else ""
        )
        return (
            f"its connection to {self.name!r} dropped before it said goodbye (it reconnected "
            f"at once): {over}the network failed; messages it sent may have been lost"
        )

    def _report(self, lost: LinkLost) -> None:
        listener = self.listener
        if listener is None:
            return
        try:
            listener(lost)
        except Exception:  # a bug there must not kill the caller silently
            log.exception("%s: link listener failed on %s", self.name, lost)


__all__ = ["LINK_GRACE", "LinkJudge"]
