"""The mailbox of one party: tag-addressed slots where inbound messages meet their receivers.

A message that arrives before anyone waits for it waits in the slot of its
``(peer, channel, tag)``; waiters and messages are matched FIFO per slot; order across tags
does not matter. A pending receive is a future in a slot, never a pending receive on the
transport, so a role may time out or be cancelled without losing a message.

The mailbox knows nothing of connections, handshakes or heartbeats. Whoever feeds it (the
party's liveness) tells it three things: a message arrived (:meth:`Mailbox.deliver`), a peer
will send nothing more (:meth:`Mailbox.finish_peer`), and the federation failed
(:meth:`Mailbox.fail`, which wakes every waiter with the failure). What the mailbox refuses (a
peer over its buffer limits, a message under a retired tag) it returns as a cause for the
caller to act on.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from hefl._envelope import Channel, SlotKey
from hefl._options import RuntimeOptions
from hefl._tracing import Tracer, now_us
from hefl.errors import PeerFailed, ProtocolError


class _Slot:
    """The buffer of one ``(peer, channel, tag)``: queued items or queued waiters."""

    __slots__ = ("items", "sizes", "waiters")

    def __init__(self) -> None:
        self.items: deque[Any] = deque()
        self.sizes: deque[int] = deque()  # wire size of each queued item (buffer limits)
        self.waiters: deque[asyncio.Future] = deque()


class Mailbox:
    """Slots, buffer limits, retired tags and stream bookkeeping of one party.

    Args:
        owner: the party's name (for messages).
        peers: its peers.
        options: the federation's runtime options (buffer limits, default recv timeout).
        tracer: where waits for peers are recorded as ``idle`` spans.
    """

    def __init__(
        self, owner: str, peers: Sequence[str], options: RuntimeOptions, tracer: Tracer
    ) -> None:
        self.owner = owner
        self._opts = options
        self._tracer = tracer
        self._slots: dict[SlotKey, _Slot] = {}
        self._buffered = {peer: [0, 0] for peer in peers}  # peer -> [messages, bytes]
        self._finished: set[str] = set()
        self._retired: set[str] = set()
        self.failure: PeerFailed | None = None
        self._stream_out: dict[tuple[str, str], int] = {}
        self._stream_in: dict[tuple[str, str], int] = {}
        self._open_out: set[tuple[str, str, int]] = set()  # (peer, tag, seq) of open streams
        self.waiting = 0  # receives pending right now
        self._wait_start = 0.0
        self._idle = 0.0

    # ------------------------------------------------------------------ inbound

    def deliver(self, key: SlotKey, item: Any, size: int) -> str | None:
        """Hand ``item`` to the first waiter of its slot, or queue it.

        Returns:
            None, or why the sender was refused (it has more waiting than the buffer limits).
        """
        slot = self._slot(key)
        while slot.waiters:
            waiter = slot.waiters.popleft()
            if not waiter.done():  # a timed-out or cancelled waiter must not eat a message
                waiter.set_result(item)
                if not slot.waiters and not slot.items:
                    del self._slots[key]
                return None
        counts = self._buffered[key[0]]
        opts = self._opts
        if counts[0] + 1 > opts.max_buffered_messages or counts[1] + size > opts.max_buffered_bytes:
            return (
                f"sent more than party {self.owner!r} buffers for it ({counts[0]} messages, "
                f"{counts[1]} bytes waiting unreceived; limits max_buffered_messages="
                f"{opts.max_buffered_messages}, max_buffered_bytes={opts.max_buffered_bytes}; "
                f"the last under tag {key[2]!r}): a flood, or messages under a tag nobody "
                "receives"
            )
        counts[0] += 1
        counts[1] += size
        slot.items.append(item)
        slot.sizes.append(size)
        return None

    def wants_credit(self, peer: str, tag: str, body: Any) -> bool:
        """Whether a credit is for a stream to ``peer`` still open (late credits of a
        finished stream would pile up unreceived)."""
        return type(body) is list and bool(body) and (peer, tag, body[0]) in self._open_out

    def finish_peer(self, peer: str) -> None:
        """``peer`` will send nothing more: its waiters get ProtocolError, now and later."""
        self._finished.add(peer)
        for key, slot in self._slots.items():
            if key[0] == peer:
                _wake(slot, functools.partial(self._finished_error, key))

    def fail(self, origin: str, cause: str) -> None:
        """The federation failed (first call wins): every waiter, now and later, gets
        :class:`PeerFailed` naming ``origin``."""
        if self.failure is not None:
            return
        self.failure = PeerFailed(origin, cause)
        for slot in self._slots.values():
            _wake(slot, lambda: PeerFailed(origin, cause))

    def raise_if_failed(self) -> None:
        """Raises: PeerFailed: the federation has failed."""
        if self.failure is not None:
            raise PeerFailed(self.failure.peer, self.failure.cause)

    # ------------------------------------------------------------------ receiving

    async def take(
        self, key: SlotKey, timeout: float | None, *, default_timeout: bool = True
    ) -> Any:
        """The next item of a slot, waiting for it if none is queued.

        Args:
            key: the slot.
            timeout: seconds to wait; None: the federation's recv_timeout if
                ``default_timeout``, else forever.

        Raises:
            PeerFailed: the federation failed, or nothing came within the timeout.
            ProtocolError: the peer finished without sending it.
        """
        slot = self._slot(key)
        if slot.items:
            self._unbuffer(key[0], slot.sizes.popleft())
            item = slot.items.popleft()
            if not slot.items and not slot.waiters:
                del self._slots[key]  # tags are per round: do not keep one slot per tag forever
            return item
        self.raise_if_failed()
        if key[0] in self._finished:
            raise self._finished_error(key)
        if timeout is None and default_timeout:
            timeout = self._opts.recv_timeout
        return await self._wait(slot, key, timeout)

    async def _wait(self, slot: _Slot, key: SlotKey, timeout: float | None) -> Any:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        slot.waiters.append(waiter)
        timer = None
        if timeout is not None:
            what = "stream" if key[1] == Channel.STREAM else "message"
            late = PeerFailed(key[0], f"sent no {what} with tag {key[2]!r} within {timeout:g} s")
            timer = loop.call_later(timeout, _expire, waiter, late)
        if self.waiting == 0:
            self._wait_start = time.perf_counter()
        self.waiting += 1
        try:
            return await waiter
        finally:
            self.waiting -= 1
            if self.waiting == 0:
                now = time.perf_counter()
                idle = now - self._wait_start
                self._idle += idle
                if idle > 1e-4:
                    self._tracer.add("idle", now_us() - idle * 1e6, idle * 1e6)
            if timer is not None:
                timer.cancel()

    def idle_seconds(self, running: bool) -> float:
        """Seconds spent waiting for peers (including a wait in progress if ``running``)."""
        current = time.perf_counter() - self._wait_start if self.waiting and running else 0.0
        return self._idle + current

    # ------------------------------------------------------------------ retired tags

    def retire(self, prefixes: Sequence[str]) -> tuple[str, str] | None:
        """Refuse from now on every message under a tag ``prefix`` or ``prefix/...``.

        Returns:
            ``(sender, tag)`` of a message under a retired tag already waiting unreceived,
            else None. Stale stream credits under such tags are dropped.
        """
        self._retired.update(prefixes)
        for key in list(self._slots):
            if not self.is_retired(key[2]):
                continue
            slot = self._slots[key]
            if slot.waiters:
                continue
            if slot.items and key[1] != Channel.CREDIT:
                return key[0], key[2]
            for size in slot.sizes:  # stale stream credits: drop them
                self._unbuffer(key[0], size)
            del self._slots[key]
        return None

    def is_retired(self, tag: str) -> bool:
        """Whether ``tag`` is under a retired prefix."""
        retired = self._retired
        if not retired:
            return False
        if tag in retired:
            return True
        parts = tag.split("/")
        return any("/".join(parts[:i]) in retired for i in range(1, len(parts)))

    # ------------------------------------------------------------------ streams

    def open_stream_out(self, peer: str, tag: str) -> int:
        """Number the next stream to ``(peer, tag)`` and accept credits for it."""
        seq = self._stream_out.get((peer, tag), 0)
        self._stream_out[(peer, tag)] = seq + 1
        self._open_out.add((peer, tag, seq))
        return seq

    def open_stream_in(self, peer: str, tag: str) -> int:
        """Number the next stream from ``(peer, tag)``."""
        seq = self._stream_in.get((peer, tag), 0)
        self._stream_in[(peer, tag)] = seq + 1
        return seq

    def close_stream_out(self, peer: str, tag: str, seq: int) -> None:
        """Forget the credits a finished stream was sent but never needed."""
        self._open_out.discard((peer, tag, seq))
        key = (peer, Channel.CREDIT, tag)
        slot = self._slots.get(key)
        if slot is None or slot.waiters:
            return
        keep: list[tuple[Any, int]] = []
        for item, size in zip(slot.items, slot.sizes, strict=True):
            if type(item) is list and item and item[0] == seq:
                self._unbuffer(peer, size)
            else:
                keep.append((item, size))
        if keep:
            slot.items = deque(i for i, _ in keep)
            slot.sizes = deque(z for _, z in keep)
        else:
            del self._slots[key]

    # ------------------------------------------------------------------ accounting

    def unreceived(self) -> dict[SlotKey, int]:
        """``{slot: count}`` of messages and chunks delivered but never received."""
        return {
            key: len(slot.items)
            for key, slot in self._slots.items()
            if slot.items and key[1] != Channel.CREDIT
        }

    def _slot(self, key: SlotKey) -> _Slot:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        return slot

    def _unbuffer(self, peer: str, size: int) -> None:
        counts = self._buffered[peer]
        counts[0] -= 1
        counts[1] -= size

    def _finished_error(self, key: SlotKey) -> ProtocolError:
        what: dict[int, str] = {
            Channel.MSG: "message",
            Channel.STREAM: "stream",
            Channel.CREDIT: "stream credit",
        }
        return ProtocolError(
            f"party {key[0]!r} finished its role without sending the {what[key[1]]} "
            f"with tag {key[2]!r} that party {self.owner!r} waits for"
        )


def _wake(slot: _Slot, error: Callable[[], BaseException]) -> None:
    while slot.waiters:
        waiter = slot.waiters.popleft()
        if not waiter.done():
            waiter.set_exception(error())


def _expire(waiter: asyncio.Future, exc: BaseException) -> None:
    if not waiter.done():
        waiter.set_exception(exc)


__all__ = ["Mailbox"]
