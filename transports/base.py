"""The Transport protocol: how one party moves frames to and from its peers.

A transport knows nothing about tags, streams or objects: it moves *messages*, each a list of
frames (bytes-like buffers), between named parties. The runtime encodes objects with
:mod:`hefl.codec`, sends the frames, and runs ONE reader task per party that calls
:meth:`Transport.recv` in a loop and feeds the tag-addressed buffers (so a pending receive is
never cancelled and no message is lost).

Optionally a transport judges its links: ``watch_links(listener)`` makes it call
``listener(LinkLost(...))`` on the event loop when messages to or from a peer may have been
lost (ZeroMQ reconnects by itself and drops whatever was in flight, without a word), and
``expect_close(peer)`` tells it that ``peer`` said goodbye, so its link may now drop without
loss. The runtime turns a :class:`LinkLost` into a failure naming the party responsible,
instead of waiting for messages that were lost. A transport whose links cannot drop
(in-process queues) accepts the listener and never calls it; one without the methods is simply
not watched.

Optionally a transport also answers ``link_confidential(peer)``: whether what it sends to
``peer`` cannot be read on the network (CURVE-encrypted, or never leaving the host). Protocols
ask before sending a secret (e.g. a private key); a transport without the method is taken to
answer False.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class LinkLost:
    """A transport's verdict: messages on the link with ``peer`` may have been lost.

    Attributes:
        peer: the peer at the other end of the link.
        origin: the party the failure is to be blamed on: ``peer``, or this party when it was
            the peer that refused something of ours.
        cause: what happened, for the error message.
        peer_alive: the peer still runs (it should be told about the failure); False when
            its process or its network is gone.
    """

    peer: str
    origin: str
    cause: str
    peer_alive: bool


LinkListener = Callable[[LinkLost], None]
"""``listener(lost)``, called on the event loop (see :class:`LinkLost`)."""


@runtime_checkable
class Transport(Protocol):
    """What the runtime needs from a transport (one instance per party).

    Attributes:
        name: the name of the party this transport belongs to.
    """

    name: str

    async def start(self) -> None:
        """Bind and connect. After it returns, :meth:`send` and :meth:`recv` may be used.

        Raises:
            TransportBroken: if the transport cannot bind or connect.
        """
        ...

    async def send(self, peer: str, frames: Sequence[Buffer]) -> None:
        """Send one message (a list of frames) to ``peer``; may wait for back-pressure.

        The transport may keep references to the frames until they are sent, so callers must not
        mutate them afterwards.

        Raises:
            TransportError: if ``peer`` is unknown, or the transport is closed or broken.
        """
        ...

    async def recv(self) -> tuple[str, list[Buffer]]:
        """Wait for the next message from any peer and return ``(sender, frames)``.

        The sender is the authenticated identity where the transport can authenticate.

        Raises:
            TransportClosed: after :meth:`close`.
            TransportBroken: if the transport failed underneath.
        """
        ...

    async def close(self, linger: float | None = None) -> None:
        """Flush what is queued (for at most ``linger`` seconds, default: the transport's own
        setting) and release resources. The runtime passes a short linger after a failure,
        when peers may already be gone."""
        ...


__all__ = ["Buffer", "LinkListener", "LinkLost", "Transport"]
