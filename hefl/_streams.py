"""Chunked streams between two parties, with credit-based back-pressure.

A stream is a sequence of CHUNK messages ended by END (or ABORT if the producer failed) under
one ``(peer, tag)``; the single ordered connection between two parties keeps chunks in order,
and several streams on the same tag follow each other FIFO. The consumer returns credits as it
consumes, so a producer never runs more than ``window`` chunks ahead: memory stays bounded and
encryption of the next chunk overlaps with sending and consuming the previous ones.

Streams see the party's mailbox and wire only through the two small protocols below: the
slots they take chunks and credits from, the numbering of streams per ``(peer, tag)``, and a
way to send one envelope.
"""

from __future__ import annotations

from contextlib import suppress
from types import TracebackType
from typing import Any, Protocol

from hefl._envelope import Channel, Kind, SlotKey
from hefl.errors import PeerFailed, ProtocolError


class StreamMailbox(Protocol):
    """What a stream needs from its party's mailbox (:class:`hefl._mailbox.Mailbox`)."""

    failure: PeerFailed | None

    def open_stream_out(self, peer: str, tag: str) -> int:
        """Number the next stream to ``(peer, tag)`` and accept credits for it."""
        ...

    def open_stream_in(self, peer: str, tag: str) -> int:
        """Number the next stream from ``(peer, tag)``."""
        ...

    def close_stream_out(self, peer: str, tag: str, seq: int) -> None:
        """Forget the credits of a finished stream."""
        ...

    async def take(
        self, key: SlotKey, timeout: float | None, *, default_timeout: bool = True
    ) -> Any:
        """The next item of a slot, waiting for it."""
        ...


class StreamWire(Protocol):
    """What a stream needs from its party's wire (:class:`hefl._wire.Wire`)."""

    async def send(self, peer: str, kind: int, tag: str, body: Any) -> None:
        """Encode and send one envelope."""
        ...


class StreamSender:
    """The producing end: ``async with party.stream(peer, tag) as s: await s.send(chunk)``."""

    def __init__(
        self, mailbox: StreamMailbox, wire: StreamWire, peer: str, tag: str, window: int
    ) -> None:
        self._mailbox = mailbox
        self._wire = wire
        self.peer = peer
        self.tag = tag
        self._window = window
        self._seq: int | None = None
        self._sent = 0
        self._allowed = window
        self._closed = False

    async def __aenter__(self) -> StreamSender:
        self._seq = self._mailbox.open_stream_out(self.peer, self.tag)
        return self

    async def send(self, chunk: Any) -> None:
        """Send one chunk (any object the codec accepts); waits when the window is full.

        Raises:
            ProtocolError: the stream is closed or was not entered with ``async with``.
            PeerFailed: the federation failed.
        """
        if self._seq is None or self._closed:
            raise ProtocolError(
                f"stream {self.tag!r} to {self.peer!r} is not open; use "
                "'async with party.stream(peer, tag) as s: await s.send(chunk)'"
            )
        while self._sent >= self._allowed:
            # No recv_timeout here: a busy consumer is alive, just slow (liveness is the
            # heartbeats' and the supervisor's job).
            credit = await self._mailbox.take(
                (self.peer, Channel.CREDIT, self.tag), None, default_timeout=False
            )
            if (
                type(credit) is list
                and len(credit) == 2
                and type(credit[0]) is int
                and type(credit[1]) is int
                and credit[0] == self._seq
            ):
                self._allowed = max(self._allowed, credit[1] + self._window)
        await self._wire.send(self.peer, Kind.CHUNK, self.tag, chunk)
        self._sent += 1

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._closed:
            return
        self._closed = True
        if self._seq is not None:
            self._mailbox.close_stream_out(self.peer, self.tag, self._seq)
        if exc is None:
            await self._wire.send(self.peer, Kind.END, self.tag, self._sent)
        elif self._mailbox.failure is None:
            # the original error matters more than the notice
            with suppress(Exception):
                await self._wire.send(
                    self.peer, Kind.ABORT, self.tag, f"{type(exc).__name__}: {exc}"
                )


class StreamReceiver:
    """The consuming end: ``async for chunk in party.stream_from(peer, tag): ...``."""

    def __init__(
        self, mailbox: StreamMailbox, wire: StreamWire, peer: str, tag: str, window: int
    ) -> None:
        self._mailbox = mailbox
        self._wire = wire
        self.peer = peer
        self.tag = tag
        self._every = max(1, window // 4)
        self._seq: int | None = None
        self._consumed = 0
        self._done = False

    def __aiter__(self) -> StreamReceiver:
        return self

    async def __anext__(self) -> Any:
        if self._done:
            raise StopAsyncIteration
        if self._seq is None:
            self._seq = self._mailbox.open_stream_in(self.peer, self.tag)
        try:
            kind, body = await self._mailbox.take((self.peer, Channel.STREAM, self.tag), None)
        except BaseException:
            self._done = True
            raise
        if kind == Kind.END:
            self._done = True
            if body != self._consumed:
                raise ProtocolError(
                    f"stream {self.tag!r} from {self.peer!r} ended after {self._consumed} "
                    f"chunks but the sender says it sent {body!r}"
                )
            raise StopAsyncIteration
        if kind == Kind.ABORT:
            self._done = True
            raise PeerFailed(self.peer, f"aborted stream {self.tag!r}: {body}")
        self._consumed += 1
        if self._consumed % self._every == 0:
            credit = [self._seq, self._consumed]
            await self._wire.send(self.peer, Kind.CREDIT, self.tag, credit)
        return body

    async def collect(self) -> list[Any]:
        """Consume the whole stream and return its chunks as a list."""
        return [chunk async for chunk in self]


__all__ = ["StreamReceiver", "StreamSender"]
