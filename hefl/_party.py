"""The Party: the context a role coroutine gets, and the per-party message engine.

Each party runs ONE reader task that takes messages off its transport, decodes them and puts
them into tag-addressed buffers: a message that arrives before anyone waits for it waits in
the buffer of its ``(peer, tag)``; waiters and messages are matched FIFO per ``(peer, tag)``;
order across tags does not matter. A pending receive is never cancelled at the transport, so a
role may time out or be cancelled without losing a message.

Failure propagation: when a role raises, its party tells every peer (a FAIL notice naming the
party where the failure started and why). Every other party then wakes all its waiters with
:class:`hefl.PeerFailed`, and cancels its role if the role is blocked elsewhere (computing,
sending into a full queue), so the whole federation stops within a bounded time.

Dropped connections: a transport that can see its connections drop (ZeroMQ) reports them
(:mod:`hefl.transports.base`). Whatever was in flight on a dropped connection is lost, so a
drop before the peer's goodbye (BYE) or failure notice fails the federation naming the party
responsible, after a short grace (``_LINK_GRACE``) in which a goodbye still in flight or the
reconnection is awaited: the peer, if it is gone (process or network) or if it reconnected to
us (it sent a frame over our ``max_message_bytes``, which libzmq drops with the connection);
this party, if the peer dropped our connection and took a new one at once (it refused a
frame of ours).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from hefl._streams import StreamReceiver, StreamSender
from hefl._tracing import Tracer, now_us
from hefl.codec import Codec
from hefl.errors import (
    CodecError,
    ConfigError,
    PeerFailed,
    ProtocolError,
    TransportClosed,
    TransportError,
)

log = logging.getLogger("hefl.runtime")

# Seconds a dropped connection may take to be explained by a goodbye or failure notice still in
# flight, or to come back (ZeroMQ reconnects after 100-200 ms), before the runtime acts on it.
_LINK_GRACE = 1.0

# Channels of the tag-addressed buffers.
_MSG, _STREAM, _CREDIT = 0, 1, 2


class Kind(IntEnum):
    """What a wire message is (the first field of every envelope)."""

    MSG = 0
    CHUNK = 1
    END = 2
    ABORT = 3
    CREDIT = 4
    FAIL = 5
    BYE = 6
    HELLO = 7
    PING = 8


_DATA_KINDS = frozenset((Kind.MSG, Kind.CHUNK, Kind.END, Kind.ABORT))
_KINDS = frozenset(int(k) for k in Kind)


@dataclass(frozen=True)
class RuntimeOptions:
    """Tunables of the runtime shared by all parties of a federation.

    Attributes:
        stream_window: a stream producer waits when this many chunks are unconsumed.
        connect_timeout: seconds to wait for every peer to come up before failing.
        heartbeat_interval: seconds between heartbeats; None disables heartbeats.
        peer_timeout: a peer silent this long is declared failed (needs heartbeats).
        recv_timeout: default timeout of every receive; None waits as long as peers live.
        max_buffered_messages: how many messages one peer may have waiting in this party's
            buffers (delivered, not yet received by the role). More fails the federation
            naming that peer: a flood, or messages under a tag nobody receives, must not grow
            memory without bound. Streams stay far below it (their credit window).
        max_buffered_bytes: the same limit in bytes.
    """

    stream_window: int = 32
    connect_timeout: float = 30.0
    heartbeat_interval: float | None = None
    peer_timeout: float | None = None
    recv_timeout: float | None = None
    max_buffered_messages: int = 100_000
    max_buffered_bytes: int = 1 << 31

    def __post_init__(self) -> None:
        for name in ("stream_window", "max_buffered_messages", "max_buffered_bytes"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        for name in ("connect_timeout", "heartbeat_interval", "peer_timeout", "recv_timeout"):
            value = getattr(self, name)
            if value is None and name != "connect_timeout":
                continue
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        if (self.peer_timeout is None) != (self.heartbeat_interval is None):
            raise ConfigError("peer_timeout and heartbeat_interval must be set together")
        if self.peer_timeout is not None and self.peer_timeout <= 2 * (
            self.heartbeat_interval or 0
        ):
            raise ConfigError("peer_timeout must exceed twice the heartbeat_interval")


class _Slot:
    """The buffer of one ``(peer, channel, tag)``: queued items or queued waiters."""

    __slots__ = ("items", "sizes", "waiters")

    def __init__(self) -> None:
        self.items: deque[Any] = deque()
        self.sizes: deque[int] = deque()  # wire size of each queued item (buffer limits)
        self.waiters: deque[asyncio.Future] = deque()


def check_name(name: Any, what: str = "party name") -> str:
    """Validate a party name (it is a ZeroMQ routing id and a TOML key).

    Raises:
        ConfigError: if the name is not a short non-empty printable string.
    """
    if (
        not isinstance(name, str)
        or not name
        or len(name.encode()) > 200
        or not name.isprintable()
        or name != name.strip()
    ):
        raise ConfigError(
            f"{what} must be a non-empty printable string without edge spaces, got {name!r}"
        )
    return name


class Party:
    """The context of one party: messaging, streams, offloading, spans and statistics.

    A role is ``async def role(party): ...``; the runtime builds the Party.

    Attributes:
        name: this party's name.
        peers: the names of the other parties, in federation order.
        tracer: the party's :class:`hefl.Tracer` (spans recorded so far).
    """

    def __init__(
        self,
        name: str,
        peers: Sequence[str],
        transport: Any,
        *,
        codec: Codec | None = None,
        executor: Any = None,
        options: RuntimeOptions | None = None,
    ) -> None:
        self.name = check_name(name)
        self.peers: tuple[str, ...] = tuple(check_name(p, "peer name") for p in peers)
        if name in self.peers or len(set(self.peers)) != len(self.peers):
            raise ConfigError(f"peers of {name!r} must be unique and exclude itself: {peers}")
        self._peer_set = frozenset(self.peers)
        self._transport = transport
        self._codec = codec or Codec()
        self._executor = executor
        self._opts = options or RuntimeOptions()
        self.tracer = Tracer(name)
        self._slots: dict[tuple[str, int, str], _Slot] = {}
        self._failure: tuple[str, str] | None = None
        self._done_peers: set[str] = set()
        self._lost_peers: set[str] = set()  # failed or dead: they wait for nothing from us
        self._dropped: dict[str, float] = {}  # peer -> when our connection to it last dropped
        self._restored: set[str] = set()  # dropped, then connected again
        self._link_timers: set[asyncio.TimerHandle] = set()
        self._hello: set[str] = set()
        self._changed = asyncio.Event()
        self._last_seen: dict[str, float] = {}
        self._stream_out: dict[tuple[str, str], int] = {}
        self._stream_in: dict[tuple[str, str], int] = {}
        self._open_out: set[tuple[str, str, int]] = set()  # (peer, tag, seq) of open streams
        self._buffered: dict[str, list[int]] = {}  # peer -> [messages, bytes] buffered
        self._retired: set[str] = set()
        self._reader_task: asyncio.Task | None = None
        self._heartbeat_task: asyncio.Task | None = None
        self._role_task: asyncio.Future | None = None
        self._waiting = 0
        self._wait_start = 0.0
        self._idle = 0.0
        self._t_start: float | None = None
        self._t_end: float | None = None
        self.failed_at: float | None = None  # wall time when this party's role failed
        self.error: BaseException | None = None
        self._stats = {
            "messages_sent": 0,
            "bytes_sent": 0,
            "messages_received": 0,
            "bytes_received": 0,
            "control_messages_sent": 0,
            "control_messages_received": 0,
            "rejected_messages": 0,
        }

    def __repr__(self) -> str:
        return f"<Party {self.name!r} peers={list(self.peers)}>"

    # ------------------------------------------------------------------ public API

    async def send(self, peer: str, tag: str, obj: Any) -> None:
        """Send ``obj`` to ``peer`` under ``tag``.

        Args:
            peer: one of :attr:`peers`.
            tag: a string the receiver names in :meth:`recv`.
            obj: None/bool/int/float/str/bytes/list/tuple/dict, numpy arrays, CipherVector,
                PublicKey (encoded by :mod:`hefl.codec`, never pickled).

        Raises:
            ConfigError: unknown peer or bad tag.
            CodecError: ``obj`` cannot be encoded or is too large.
            PeerFailed: the federation has failed.
            TransportError: the transport failed.
        """
        self._check(peer, tag)
        await self._send_frames(peer, self._codec.encode([Kind.MSG, tag, obj]), Kind.MSG)

    async def recv(self, peer: str, tag: str, *, timeout: float | None = None) -> Any:
        """Wait for the next message from ``peer`` under ``tag`` (FIFO per peer and tag).

        Args:
            peer: one of :attr:`peers`.
            tag: the tag the sender used.
            timeout: seconds to wait; defaults to the federation's ``recv_timeout`` (None:
                wait as long as the peer lives).

        Raises:
            PeerFailed: a party failed, or ``peer`` sent nothing within ``timeout``.
            ProtocolError: ``peer`` finished its role without sending such a message.
        """
        self._check(peer, tag)
        return await self._take((peer, _MSG, tag), timeout)

    async def broadcast(self, tag: str, obj: Any, peers: Iterable[str] | None = None) -> None:
        """Send the same ``obj`` to several peers (encoded once).

        Args:
            tag: the message tag.
            obj: the object to send.
            peers: the recipients; defaults to every peer.
        """
        targets = self.peers if peers is None else tuple(peers)
        for peer in targets:
            self._check(peer, tag)
        frames = self._codec.encode([Kind.MSG, tag, obj])
        for peer in targets:
            await self._send_frames(peer, frames, Kind.MSG)

    async def gather(
        self, tag: str, peers: Iterable[str] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Receive one message under ``tag`` from each of ``peers`` (default: every peer).

        Returns:
            ``{peer: obj}`` in the order of ``peers``.
        """
        sources = self.peers if peers is None else tuple(peers)
        for peer in sources:
            self._check(peer, tag)
        # Sequential waits cost nothing extra (all messages must arrive anyway; early ones
        # wait in their buffers) and never leave an orphan waiter behind on failure.
        return {peer: await self._take((peer, _MSG, tag), timeout) for peer in sources}

    def stream(self, peer: str, tag: str) -> StreamSender:
        """Open a chunked stream to ``peer``: ``async with party.stream(p, t) as s: await
        s.send(chunk)``. Leaving the block normally ends the stream; leaving it with an
        exception aborts it (the receiver gets PeerFailed). The producer waits while the
        federation's ``stream_window`` chunks are unconsumed (back-pressure).
        """
        self._check(peer, tag)
        return StreamSender(self, peer, tag, self._opts.stream_window)

    def stream_from(self, peer: str, tag: str) -> StreamReceiver:
        """Iterate over the chunks of the next stream from ``peer`` under ``tag``:
        ``async for chunk in party.stream_from(p, t): ...`` (chunk order is kept).
        """
        self._check(peer, tag)
        return StreamReceiver(self, peer, tag, self._opts.stream_window)

    async def offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the federation's executor (a process pool by default).

        ``fn`` and ``args`` must be picklable for a process pool (module-level functions).
        The event loop keeps sending and receiving meanwhile.
        """
        if self._executor is None:
            return fn(*args)
        return await asyncio.wrap_future(self._executor.submit(fn, *args))

    def span(self, name: str, **attrs: Any) -> AbstractContextManager[dict[str, Any]]:
        """Time a block as a trace span: ``with party.span("encrypt", n=len(x)): ...``."""
        return self.tracer.span(name, **attrs)

    def retire(self, *prefixes: str) -> None:
        """Declare exchanges finished: from now on a message from any peer under a tag
        ``prefix`` or ``prefix/...`` is refused, and so is one already waiting unreceived.

        Protocols put the round in their tags (``bc/3/up``); retiring a round's prefix when
        it ends turns a replayed or duplicated message of that round, which nobody would ever
        receive, into a failure naming the sender instead of a silent leftover.

        Raises:
            PeerFailed: a peer had already sent a message under a retired tag.
        """
        for prefix in prefixes:
            if type(prefix) is not str or not prefix:
                raise ConfigError(f"retire() takes non-empty str tag prefixes, got {prefix!r}")
            self._retired.add(prefix)
        for key in list(self._slots):
            if not self._is_retired(key[2]):
                continue
            slot = self._slots[key]
            if slot.waiters:
                continue
            if slot.items and key[1] != _CREDIT:
                self._refuse_retired(key[0], key[2])
                break
            for size in slot.sizes:  # stale stream credits: drop them
                self._unbuffer(key[0], size)
            del self._slots[key]
        self._raise_if_failed()

    def _is_retired(self, tag: str) -> bool:
        retired = self._retired
        if not retired:
            return False
        if tag in retired:
            return True
        parts = tag.split("/")
        return any("/".join(parts[:i]) in retired for i in range(1, len(parts)))

    def _refuse_retired(self, sender: str, tag: str) -> None:
        self._stats["rejected_messages"] += 1
        self._set_failure(
            sender,
            f"sent a message under tag {tag!r} after party {self.name!r} finished that exchange "
            "(a replayed or duplicated message)",
            refused=True,
        )

    def statistics(self) -> dict[str, Any]:
        """Counters of this party so far.

        Returns:
            messages/bytes sent and received (data messages), control messages, rejected
            messages, ``unreceived_messages`` (delivered to this party, never received by its
            role: messages under a tag it never asked for), ``wall_seconds`` (role running),
            ``idle_seconds`` (waiting for peers), ``busy_seconds`` (the rest) and
            ``span_seconds`` (total time per span name).
        """
        stats: dict[str, Any] = dict(self._stats)
        stats["unreceived_messages"] = sum(
            len(slot.items) for key, slot in self._slots.items() if key[1] != _CREDIT
        )
        end = self._t_end if self._t_end is not None else time.perf_counter()
        wall = 0.0 if self._t_start is None else end - self._t_start
        idle = self._idle + (
            time.perf_counter() - self._wait_start if self._waiting and self._t_end is None else 0
        )
        spans: dict[str, float] = {}
        for s in self.tracer.spans:
            if s.name != "idle":
                spans[s.name] = spans.get(s.name, 0.0) + s.dur_us / 1e6
        stats.update(
            wall_seconds=wall,
            idle_seconds=idle,
            busy_seconds=max(0.0, wall - idle),
            span_seconds=spans,
        )
        return stats

    # ------------------------------------------------------------------ engine

    def _check(self, peer: str, tag: str) -> None:
        if peer not in self._peer_set:
            if peer == self.name:
                raise ConfigError(f"party {self.name!r} cannot send to or receive from itself")
            raise ConfigError(
                f"party {self.name!r} has no peer {peer!r}; its peers are {list(self.peers)}"
            )
        if type(tag) is not str:
            raise ConfigError(f"message tags must be str, got {type(tag).__name__}")

    def _peer_failed(self) -> PeerFailed:
        origin, cause = self._failure  # type: ignore[misc]
        return PeerFailed(origin, cause)

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._peer_failed()

    async def _send_frames(self, peer: str, frames: list, kind: int) -> None:
        self._raise_if_failed()
        await self._transport.send(peer, frames)
        if kind in _DATA_KINDS:
            self._stats["messages_sent"] += 1
            self._stats["bytes_sent"] += sum(len(f) for f in frames)
        else:
            self._stats["control_messages_sent"] += 1

    async def _send_kind(self, peer: str, kind: int, tag: str, body: Any) -> None:
        await self._send_frames(peer, self._codec.encode([kind, tag, body]), kind)

    def _slot(self, key: tuple[str, int, str]) -> _Slot:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        return slot

    def _deliver(self, key: tuple[str, int, str], item: Any, size: int = 0) -> None:
        slot = self._slot(key)
        while slot.waiters:
            waiter = slot.waiters.popleft()
            if not waiter.done():  # a timed-out or cancelled waiter must not eat a message
                waiter.set_result(item)
                if not slot.waiters and not slot.items:
                    del self._slots[key]
                return
        peer = key[0]
        counts = self._buffered.setdefault(peer, [0, 0])
        opts = self._opts
        if counts[0] + 1 > opts.max_buffered_messages or counts[1] + size > opts.max_buffered_bytes:
            self._stats["rejected_messages"] += 1
            self._set_failure(
                peer,
                f"sent more than party {self.name!r} buffers for it ({counts[0]} messages, "
                f"{counts[1]} bytes waiting unreceived; limits max_buffered_messages="
                f"{opts.max_buffered_messages}, max_buffered_bytes={opts.max_buffered_bytes}; "
                f"the last under tag {key[2]!r}): a flood, or messages under a tag nobody "
                "receives",
                refused=True,
            )
            return
        counts[0] += 1
        counts[1] += size
        slot.items.append(item)
        slot.sizes.append(size)

    def _drop_credits(self, peer: str, tag: str, seq: int) -> None:
        """Forget the credits a finished stream was sent but never needed."""
        self._open_out.discard((peer, tag, seq))
        key = (peer, _CREDIT, tag)
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

    def _unbuffer(self, peer: str, size: int) -> None:
        counts = self._buffered[peer]
        counts[0] -= 1
        counts[1] -= size

    async def _take(
        self, key: tuple[str, int, str], timeout: float | None, *, default_timeout: bool = True
    ) -> Any:
        slot = self._slot(key)
        if slot.items:
            self._unbuffer(key[0], slot.sizes.popleft())
            item = slot.items.popleft()
            if not slot.items and not slot.waiters:
                del self._slots[key]  # tags are per round: do not keep one slot per tag forever
            return item
        self._raise_if_failed()
        peer = key[0]
        if peer in self._done_peers:
            raise self._finished_error(key)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        slot.waiters.append(waiter)
        if timeout is None and default_timeout:
            timeout = self._opts.recv_timeout
        timer = None
        if timeout is not None:
            what = "stream" if key[1] == _STREAM else "message"
            timer = loop.call_later(
                timeout,
                _expire,
                waiter,
                PeerFailed(peer, f"sent no {what} with tag {key[2]!r} within {timeout:g} s"),
            )
        if self._waiting == 0:
            self._wait_start = time.perf_counter()
        self._waiting += 1
        try:
            return await waiter
        finally:
            self._waiting -= 1
            if self._waiting == 0:
                now = time.perf_counter()
                idle = now - self._wait_start
                self._idle += idle
                if idle > 1e-4:
                    self.tracer.add("idle", now_us() - idle * 1e6, idle * 1e6)
            if timer is not None:
                timer.cancel()

    def _finished_error(self, key: tuple[str, int, str]) -> ProtocolError:
        what = {_MSG: "message", _STREAM: "stream", _CREDIT: "stream credit"}[key[1]]
        return ProtocolError(
            f"party {key[0]!r} finished its role without sending the {what} with tag "
            f"{key[2]!r} that party {self.name!r} waits for"
        )

    def _set_failure(self, origin: str, cause: str, *, refused: bool = False) -> None:
        """Record the federation's failure once; wake every waiter; stop a busy role.

        ``refused``: the origin is a live peer whose message this party refused (malformed,
        a flood, a replay): it is still told about the failure, or it would wait forever.
        """
        if self._failure is not None:
            return
        self._failure = (origin, cause)
        log.debug("%s: party %s failed: %s", self.name, origin, cause)
        if origin in self._peer_set:
            self._done_peers.add(origin)
            if not refused:
                self._lost_peers.add(origin)
        for slot in self._slots.values():
            while slot.waiters:
                waiter = slot.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(PeerFailed(origin, cause))
        role = self._role_task
        if role is not None and not role.done() and self._waiting == 0:
            role.cancel()  # blocked outside the buffers (computing, sending): stop it
        self._changed.set()

    def _peer_finished(self, peer: str) -> None:
        self._done_peers.add(peer)
        for key, slot in self._slots.items():
            if key[0] == peer:
                while slot.waiters:
                    waiter = slot.waiters.popleft()
                    if not waiter.done():
                        waiter.set_exception(self._finished_error(key))
        self._changed.set()

    def peer_lost(self, peer: str, cause: str) -> None:
        """Declare ``peer`` dead (used by process supervision and heartbeats)."""
        self._done_peers.add(peer)
        self._lost_peers.add(peer)
        self._set_failure(peer, cause)
        self._changed.set()

    def _connection_event(self, peer: str, event: str) -> None:
        """The transport saw a connection with ``peer`` drop or come back: judge it after
        :data:`_LINK_GRACE` (a goodbye may still be in flight, the connection may come back)."""
        if peer not in self._peer_set or self._failure is not None:
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
        self._judge_link_later(peer, event, now, _LINK_GRACE)

    def _judge_link_later(self, peer: str, event: str, since: float, delay: float) -> None:
        def fire() -> None:
            self._link_timers.discard(handle)
            self._judge_link(peer, event, since)

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._link_timers.add(handle)

    def _judge_link(self, peer: str, event: str, since: float) -> None:
        if self._failure is not None:
            return
        if event == "replaced":  # its connection to us dropped, and it reconnected
            if peer in self._done_peers:
                return  # it had said goodbye: nothing of it was in flight
            limit = getattr(self._transport, "max_message_bytes", None)
            over = (
                f"it sent a message over max_message_bytes={limit} (ZeroMQ drops such a frame "
                "together with the connection carrying it), or "
                if limit
                else ""
            )
            self._set_failure(
                peer,
                f"its connection to {self.name!r} dropped before it said goodbye (it "
                f"reconnected at once): {over}the network failed; messages it sent may have "
                "been lost",
                refused=True,  # it is alive: tell it
            )
            return
        if self._dropped.get(peer) != since:
            return  # a later drop has its own timer
        if peer in self._restored:  # it dropped our connection and took a new one
            self._set_failure(
                self.name,
                f"its connection to {peer!r} dropped and {peer!r} accepted a new one at once: "
                f"{peer!r} refused a message over its max_message_bytes (ZeroMQ drops such a "
                f"frame together with the connection carrying it), or the network failed; "
                f"messages to {peer!r} may have been lost",
            )
            return
        if peer in self._done_peers:
            return  # it said goodbye (or failed) and then closed: normal
        if self._last_seen.get(peer, since) > since:
            # its messages still arrive (a long goodbye in flight): wait for the rest
            now = self._dropped[peer] = time.monotonic()
            self._judge_link_later(peer, event, now, _LINK_GRACE)
            return
        self.peer_lost(
            peer,
            f"its connection dropped before it said goodbye and it accepted no new one within "
            f"{_LINK_GRACE:g} s: its process or its network failed, or it closed its transport; "
            "messages may have been lost",
        )

    async def _reader(self) -> None:
        # Awaiting a receive that is already complete does not yield to the loop, so without
        # the explicit yields below the reader would decode everything queued in the socket
        # before any consumer runs: many chunks alive at once (cold memory, page faults)
        # instead of each chunk consumed while it is hot in the cache.
        since_yield = 0
        while True:
            if since_yield >= 1 << 20:
                since_yield = 0
                await asyncio.sleep(0)
            try:
                sender, frames = await self._transport.recv()
            except TransportClosed:
                return
            except TransportError as exc:
                self._set_failure(self.name, f"transport failed: {exc}")
                return
            since_yield += 4096 + sum(len(f) for f in frames)
            try:
                self._dispatch(sender, frames)
            except Exception as exc:  # a bug here must not kill the reader silently
                log.exception("%s: error while dispatching a message from %r", self.name, sender)
                self._set_failure(self.name, f"internal error dispatching a message: {exc!r}")

    def _dispatch(self, sender: str, frames: list) -> None:
        if sender not in self._peer_set:
            self._stats["rejected_messages"] += 1
            log.warning(
                "%s: refused a message from unknown sender %r (not a party of this federation)",
                self.name,
                sender,
            )
            return
        self._last_seen[sender] = time.monotonic()
        try:
            msg = self._codec.decode(frames)
            if (
                type(msg) is not list
                or len(msg) != 3
                or type(msg[0]) is not int
                or msg[0] not in _KINDS
                or type(msg[1]) is not str
            ):
                raise CodecError("not a hefl envelope [kind, tag, body]")
        except CodecError as exc:
            self._stats["rejected_messages"] += 1
            self._set_failure(
                sender, f"sent a malformed message, refused by {self.name!r}: {exc}", refused=True
            )
            return
        kind, tag, body = msg
        size = sum(len(f) for f in frames)
        if kind in _DATA_KINDS:
            self._stats["messages_received"] += 1
            self._stats["bytes_received"] += size
            if self._retired and self._is_retired(tag):
                self._refuse_retired(sender, tag)
                return
        else:
            self._stats["control_messages_received"] += 1
        if kind == Kind.MSG:
            self._deliver((sender, _MSG, tag), body, size)
        elif kind == Kind.CHUNK or kind == Kind.END or kind == Kind.ABORT:
            self._deliver((sender, _STREAM, tag), (kind, body), size)
        elif kind == Kind.CREDIT:
            # only for a stream still open: late credits of a finished one would pile up
            if type(body) is list and body and (sender, tag, body[0]) in self._open_out:
                self._deliver((sender, _CREDIT, tag), body, size)
        elif kind == Kind.PING:
            pass
        elif kind == Kind.HELLO:
            self._hello.add(sender)
            self._changed.set()
        elif kind == Kind.BYE:
            self._peer_finished(sender)
        elif kind == Kind.FAIL:
            if (
                type(body) is not list
                or len(body) != 2
                or not all(isinstance(x, str) for x in body)
            ):
                body = [sender, "failed (malformed failure notice)"]
            self._done_peers.add(sender)
            self._lost_peers.add(sender)
            self._set_failure(body[0], body[1])

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not predicate():
            self._changed.clear()
            if predicate():
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return predicate()
        return True

    async def _handshake(self) -> None:
        timeout = self._opts.connect_timeout
        deadline = time.monotonic() + timeout
        # The hellos go out concurrently and under the same deadline: a send to a peer whose
        # connection never comes up (e.g. its CURVE handshake was refused) can wait forever.
        sends = {
            peer: asyncio.ensure_future(self._send_kind(peer, Kind.HELLO, "", None))
            for peer in self.peers
        }
        try:
            ok = await self._wait_until(
                lambda: self._failure is not None or self._hello >= self._peer_set, timeout
            )
            if ok and self._failure is None:
                left = max(0.0, deadline - time.monotonic())
                await asyncio.wait(sends.values(), timeout=left)
            for task in sends.values():
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            unsent = sorted(p for p, task in sends.items() if not task.done())
        finally:
            for task in sends.values():
                task.cancel()
        self._raise_if_failed()
        if ok and unsent:
            raise PeerFailed(
                unsent[0],
                f"its connection did not come up within {timeout:g} s (party {self.name!r} "
                f"could not send to {unsent}). Check its address, its CURVE key and that "
                "it is started",
            )
        if not ok:
            missing = sorted(self._peer_set - self._hello)
            refused = getattr(self._transport, "refused_keys", None)
            extra = (
                f"; {self.name!r} refused CURVE connections from unenrolled keys {refused}"
                if refused
                else ""
            )
            raise PeerFailed(
                missing[0],
                f"did not come up within {timeout:g} s (no hello reached {self.name!r}; "
                f"not reachable: {missing}). Check its address, its CURVE key and that it is "
                f"started{extra}",
            )

    async def _heartbeat(self, interval: float, peer_timeout: float) -> None:
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for peer in self.peers:
                if peer in self._done_peers:
                    continue
                silent = now - self._last_seen.get(peer, now)
                if silent > peer_timeout:
                    self.peer_lost(
                        peer, f"silent for {silent:.1f} s (peer_timeout={peer_timeout:g} s)"
                    )
                    continue
                # never block on a dead peer's full queue
                with suppress(TimeoutError, TransportError, PeerFailed):
                    await asyncio.wait_for(self._send_kind(peer, Kind.PING, "", None), interval)

    async def _notify_failure(self, origin: str, cause: str) -> None:
        frames = self._codec.encode([Kind.FAIL, "", [origin, cause]])
        # Every peer, also those that said BYE (they wait in their close barrier for us),
        # but not those that failed or died (the notice would only sit in a queue).
        for peer in self.peers:
            if peer in self._lost_peers:
                continue
            try:
                await asyncio.wait_for(self._transport.send(peer, frames), 2.0)
                self._stats["control_messages_sent"] += 1
            except (TimeoutError, TransportError) as exc:
                log.debug("%s: could not tell %s about the failure: %s", self.name, peer, exc)

    async def run_role(self, role: Callable[[Party], Awaitable[Any]]) -> Any:
        """Run ``role(self)`` with handshake, failure propagation and the close barrier.

        Returns:
            the role's return value.

        Raises:
            PeerFailed: another party failed (or this one, for a role raising PeerFailed).
            BaseException: whatever the role raised (after telling the peers).
        """
        now = time.monotonic()
        self._last_seen = dict.fromkeys(self.peers, now)
        watch = getattr(self._transport, "set_connection_listener", None)
        if watch is not None:
            watch(self._connection_event)
        self._reader_task = asyncio.create_task(self._reader(), name=f"hefl-reader-{self.name}")
        opts = self._opts
        try:
            try:
                await self._handshake()
                if opts.heartbeat_interval is not None:
                    self._heartbeat_task = asyncio.create_task(
                        self._heartbeat(opts.heartbeat_interval, opts.peer_timeout)  # type: ignore[arg-type]
                    )
                self._t_start = time.perf_counter()
                self._role_task = asyncio.ensure_future(role(self))
                try:
                    value = await self._role_task
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if self._failure is None or (current is not None and current.cancelling()):
                        raise
                    raise self._peer_failed() from None
                finally:
                    self._t_end = time.perf_counter()
            except BaseException as exc:
                self.failed_at = time.time()
                self.error = exc
                if isinstance(exc, PeerFailed):
                    origin, cause = exc.peer, exc.cause
                elif isinstance(exc, asyncio.CancelledError):
                    origin, cause = self.name, "cancelled"
                else:
                    origin, cause = self.name, f"{type(exc).__name__}: {exc}"
                if self._failure is None:
                    self._failure = (origin, cause)
                await asyncio.shield(self._notify_failure(origin, cause))
                raise
            # Close barrier: say BYE, then wait until every peer has finished or failed, so
            # nothing a peer still sends to us is lost and our last messages are flushed.
            # (a peer that already said BYE still waits for ours.)
            for peer in self.peers:
                with suppress(TransportError, PeerFailed):
                    await self._send_frames(
                        peer, self._codec.encode([Kind.BYE, "", None]), Kind.BYE
                    )
            await self._wait_until(lambda: self._done_peers >= self._peer_set, None)
            left = {k: len(s.items) for k, s in self._slots.items() if s.items and k[1] != _CREDIT}
            if left:
                log.warning(
                    "%s: finished with %d message(s) it never received: %s",
                    self.name,
                    sum(left.values()),
                    ", ".join(
                        f"{n} from {k[0]!r} under {k[2]!r}" for k, n in list(left.items())[:5]
                    ),
                )
            return value
        finally:
            if watch is not None:
                watch(None)
            for timer in self._link_timers:
                timer.cancel()
            self._link_timers.clear()
            for task in (self._heartbeat_task, self._reader_task):
                if task is not None:
                    task.cancel()
            await asyncio.gather(
                *(t for t in (self._heartbeat_task, self._reader_task) if t is not None),
                return_exceptions=True,
            )
            # after a failure peers may be gone: flush briefly instead of lingering on them
            await self._transport.close(linger=None if self.error is None else 1.0)


def _expire(waiter: asyncio.Future, exc: BaseException) -> None:
    if not waiter.done():
        waiter.set_exception(exc)


__all__ = ["Kind", "Party", "RuntimeOptions", "check_name"]
