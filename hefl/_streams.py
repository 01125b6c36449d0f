"""Chunked streams between two parties, with credit-based back-pressure.

A stream is a sequence of CHUNK messages ended by END (or ABORT if the producer failed) under
one ``(peer, tag)``; the single ordered connection between two parties keeps chunks in order,
and several streams on the same tag follow each other FIFO. The consumer returns credits as it
consumes, so a producer never runs more than ``window`` chunks ahead: memory stays bounded and
encryption of the next chunk overlaps with sending and consuming the previous ones.
"""

from __future__ import annotations

from contextlib import suppress
from types import TracebackType
from typing import TYPE_CHECKING, Any

from hefl.errors import PeerFailed, ProtocolError

if TYPE_CHECKING:
    from hefl._party import Party


def _kinds():
    from hefl._party import Kind

    return Kind


class StreamSender:
    """The producing end: ``async with party.stream(peer, tag) as s: await s.send(chunk)``."""

    def __init__(self, party: Party, peer: str, tag: str, window: int) -> None:
        self._party = party
        self.peer = peer
        self.tag = tag
        self._window = window
        self._seq: int | None = None
        self._sent = 0
        self._allowed = window
        self._closed = False

    async def __aenter__(self) -> StreamSender:
        key = (self.peer, self.tag)
        self._seq = self._party._stream_out.get(key, 0)
        self._party._stream_out[key] = self._seq + 1
        self._party._open_out.add((self.peer, self.tag, self._seq))
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
        from hefl._party import _CREDIT

        while self._sent >= self._allowed:
            # No recv_timeout here: a busy consumer is alive, just slow (liveness is the
            # heartbeats' and the supervisor's job).
            credit = await self._party._take(
                (self.peer, _CREDIT, self.tag), None, default_timeout=False
            )
            if (
                type(credit) is list
                and len(credit) == 2
                and type(credit[0]) is int
                and type(credit[1]) is int
                and credit[0] == self._seq
            ):
                self._allowed = max(self._allowed, credit[1] + self._window)
        await self._party._send_kind(self.peer, _kinds().CHUNK, self.tag, chunk)
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
            self._party._drop_credits(self.peer, self.tag, self._seq)
        kind = _kinds()
        if exc is None:
            await self._party._send_kind(self.peer, kind.END, self.tag, self._sent)
        elif self._party._failure is None:
            # the original error matters more than the notice
            with suppress(Exception):
                await self._party._send_kind(
                    self.peer, kind.ABORT, self.tag, f"{type(exc).__name__}: {exc}"
                )


class StreamReceiver:
    """The consuming end: ``async for chunk in party.stream_from(peer, tag): ...``."""

    def __init__(self, party: Party, peer: str, tag: str, window: int) -> None:
        self._party = party
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
        from hefl._party import _STREAM

        if self._seq is None:
            key = (self.peer, self.tag)
            self._seq = self._party._stream_in.get(key, 0)
            self._party._stream_in[key] = self._seq + 1
        try:
            kind, body = await self._party._take((self.peer, _STREAM, self.tag), None)
        except BaseException:
            self._done = True
            raise
        k = _kinds()
        if kind == k.END:
            self._done = True
            if body != self._consumed:
                raise ProtocolError(
                    f"stream {self.tag!r} from {self.peer!r} ended after {self._consumed} "
                    f"chunks but the sender says it sent {body!r}"
                )
            raise StopAsyncIteration
        if kind == k.ABORT:
            self._done = True
            raise PeerFailed(self.peer, f"aborted stream {self.tag!r}: {body}")
        self._consumed += 1
        if self._consumed % self._every == 0:
            await self._party._send_kind(self.peer, k.CREDIT, self.tag, [self._seq, self._consumed])
        return body

    async def collect(self) -> list[Any]:
        """Consume the whole stream and return its chunks as a list."""
        return [chunk async for chunk in self]


__all__ = ["StreamReceiver", "StreamSender"]
