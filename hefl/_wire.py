"""One party's end of the wire: envelopes through the codec onto its transport, with counters.

Every outbound message of a party goes through :meth:`Wire.send_frames` (or
:meth:`Wire.send_notice` for a failure notice, which must get out after the failure), so the
statistics count each one once: data messages (see :data:`hefl._envelope.DATA_KINDS`) by
messages and bytes, control messages by number.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from hefl._envelope import DATA_KINDS, encode
from hefl.codec import Codec
from hefl.transports.base import Buffer, Transport


class Wire:
    """Encodes and sends a party's envelopes; counts what goes out and what comes in.

    Args:
        transport: the party's started transport.
        codec: encodes and decodes envelopes (its size limit applies both ways).
        guard: called before every send; raises when the federation has failed.

    Attributes:
        transport: the transport.
        codec: the codec.
        counters: messages/bytes sent and received, control messages, rejected messages.
    """

    def __init__(self, transport: Transport, codec: Codec, guard: Callable[[], None]) -> None:
        self.transport = transport
        self.codec = codec
        self._guard = guard
        self.counters = {
            "messages_sent": 0,
            "bytes_sent": 0,
            "messages_received": 0,
            "bytes_received": 0,
            "control_messages_sent": 0,
            "control_messages_received": 0,
            "rejected_messages": 0,
        }

    def encode(self, kind: int, tag: str, body: Any) -> list[Buffer]:
        """Encode one envelope (see :func:`hefl._envelope.encode`)."""
        return encode(self.codec, kind, tag, body)

    async def send(self, peer: str, kind: int, tag: str, body: Any) -> None:
        """Encode and send one envelope.

        Raises:
            CodecError: ``body`` cannot be encoded.
            PeerFailed: the federation has failed.
            TransportError: the transport failed.
        """
        await self.send_frames(peer, encode(self.codec, kind, tag, body), kind)

    async def send_frames(self, peer: str, frames: Sequence[Buffer], kind: int) -> None:
        """Send frames already encoded (a broadcast encodes once).

        Raises:
            PeerFailed: the federation has failed.
            TransportError: the transport failed.
        """
        self._guard()
        await self.transport.send(peer, frames)
        if kind in DATA_KINDS:
            self.counters["messages_sent"] += 1
            self.counters["bytes_sent"] += sum(len(f) for f in frames)
        else:
            self.counters["control_messages_sent"] += 1

    async def send_notice(self, peer: str, frames: Sequence[Buffer], timeout: float) -> None:
        """Send a control message even though the federation failed, waiting at most
        ``timeout`` seconds (a dead peer's queue may be full).

        Raises:
            TimeoutError: it did not go out in time.
            TransportError: the transport failed.
        """
        await asyncio.wait_for(self.transport.send(peer, frames), timeout)
        self.counters["control_messages_sent"] += 1

    def received(self, kind: int, size: int) -> None:
        """Count one inbound envelope of ``size`` bytes."""
        if kind in DATA_KINDS:
            self.counters["messages_received"] += 1
            self.counters["bytes_received"] += size
        else:
            self.counters["control_messages_received"] += 1

    def rejected(self) -> None:
        """Count one inbound message refused."""
        self.counters["rejected_messages"] += 1


__all__ = ["Wire"]
