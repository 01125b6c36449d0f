"""The Party: the context a role coroutine gets.

A role is ``async def role(party): ...``; it sees only this facade: ``name``, ``peers``,
messaging (:meth:`Party.send`, :meth:`Party.recv`, :meth:`Party.broadcast`,
:meth:`Party.gather`), streams (:meth:`Party.stream`, :meth:`Party.stream_from`),
:meth:`Party.offload`, :meth:`Party.span`, :meth:`Party.statistics` and :meth:`Party.retire`.
Behind it (built by :func:`hefl._assembly.build_party`): the :class:`~hefl._wire.Wire` sends,
the :class:`~hefl._mailbox.Mailbox` holds what arrived until the role receives it, and the
:class:`~hefl._liveness.Liveness` feeds the mailbox and stops everything when the federation
fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from hefl._envelope import Channel, Kind
from hefl._executor import Executor, capacity
from hefl._liveness import Liveness, retired_cause
from hefl._mailbox import Mailbox
from hefl._options import check_name
from hefl._streams import StreamReceiver, StreamSender
from hefl._tracing import Tracer
from hefl._wire import Wire
from hefl.errors import ConfigError


class Party:
    """The context of one party: messaging, streams, offloading, spans and statistics.

    A role is ``async def role(party): ...``; the runtime builds the Party (a role never
    constructs one).

    Attributes:
        name: this party's name.
        peers: the names of the other parties, in federation order.
    """

    def __init__(
        self,
        name: str,
        peers: Sequence[str],
        *,
        wire: Wire,
        mailbox: Mailbox,
        liveness: Liveness,
        tracer: Tracer,
        executor: Executor | None,
        stream_window: int,
    ) -> None:
        self.name = name
        self.peers: tuple[str, ...] = tuple(peers)
        self._peer_set = frozenset(self.peers)
        self._wire = wire
        self._mailbox = mailbox
        self._liveness = liveness
        self._tracer = tracer
        self._executor = executor
        self._window = stream_window

    def __repr__(self) -> str:
        return f"<Party {self.name!r} peers={list(self.peers)}>"

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
        await self._wire.send(peer, Kind.MSG, tag, obj)

    async def recv(self, peer: str, tag: str, *, timeout: float | None = None) -> Any:
        """Wait for the next message from ``peer`` under ``tag`` (FIFO per peer and tag).

        Args:
            peer: one of :attr:`peers`.
            tag: the tag the sender used.
            timeout: seconds to wait; defaults to the federation's ``recv_timeout`` (None:
                wait as long as the peer lives).

        Returns:
            the decoded object.

        Raises:
            PeerFailed: a party failed, or ``peer`` sent nothing within ``timeout``.
            ProtocolError: ``peer`` finished its role without sending such a message.
        """
        self._check(peer, tag)
        return await self._mailbox.take((peer, Channel.MSG, tag), timeout)

    def link_confidential(self, peer: str) -> bool:
        """Whether what this party sends to ``peer`` cannot be read on the network: the link is
        in-process, on this host (loopback, ipc://) or CURVE-encrypted. Ask before sending a
        secret, such as a private key.

        Raises:
            ConfigError: ``peer`` is not a peer of this party.
        """
        if peer not in self._peer_set:
            raise ConfigError(f"{peer!r} is not a peer of {self.name!r}; peers: {list(self.peers)}")
        judge = getattr(self._wire.transport, "link_confidential", None)
        return bool(judge(peer)) if judge is not None else False

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
        frames = self._wire.encode(Kind.MSG, tag, obj)
        for peer in targets:
            await self._wire.send_frames(peer, frames, Kind.MSG)

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
        # wait in their slots) and never leave an orphan waiter behind on failure.
        take = self._mailbox.take
        return {peer: await take((peer, Channel.MSG, tag), timeout) for peer in sources}

    def stream(self, peer: str, tag: str) -> StreamSender:
        """Open a chunked stream to ``peer``: ``async with party.stream(p, t) as s: await
        s.send(chunk)``. Leaving the block normally ends the stream; leaving it with an
        exception aborts it (the receiver gets PeerFailed). The producer waits while the
        federation's ``stream_window`` chunks are unconsumed (back-pressure).
        """
        self._check(peer, tag)
        return StreamSender(self._mailbox, self._wire, peer, tag, self._window)

    def stream_from(self, peer: str, tag: str) -> StreamReceiver:
        """Iterate over the chunks of the next stream from ``peer`` under ``tag``:
        ``async for chunk in party.stream_from(p, t): ...`` (chunk order is kept).
        """
        self._check(peer, tag)
        return StreamReceiver(self._mailbox, self._wire, peer, tag, self._window)

    @property
    def capacity(self) -> int:
        """How many :meth:`offload` calls the party's executor runs at once (its processes,
        threads or Dask workers' threads; 1 without an executor). Roles size their in-flight
        work by it, so a party on a cluster keeps the cluster busy."""
        return capacity(self._executor)

    async def offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the federation's executor (a process pool by default).

        ``fn`` and ``args`` must be picklable for a process pool (module-level functions).
        The event loop keeps sending and receiving meanwhile.

        Returns:
            what ``fn`` returned.
        """
        if self._executor is None:
            return fn(*args)
        return await asyncio.wrap_future(self._executor.submit(fn, *args))

    def span(self, name: str, **attrs: Any) -> AbstractContextManager[dict[str, Any]]:
        """Time a block as a trace span: ``with party.span("encrypt", n=len(x)): ...``."""
        return self._tracer.span(name, **attrs)

    def retire(self, *prefixes: str) -> None:
        """Declare exchanges finished: from now on a message from any peer under a tag
        ``prefix`` or ``prefix/...`` is refused, and so is one already waiting unreceived.

        Protocols put the round in their tags (``bc/3/up``); retiring a round's prefix when
        it ends turns a replayed or duplicated message of that round, which nobody would ever
        receive, into a failure naming the sender instead of a silent leftover.

        Raises:
            ConfigError: a prefix is not a non-empty str.
            PeerFailed: a peer had already sent a message under a retired tag.
        """
        for prefix in prefixes:
            if type(prefix) is not str or not prefix:
                raise ConfigError(f"retire() takes non-empty str tag prefixes, got {prefix!r}")
        waiting = self._mailbox.retire(prefixes)
        if waiting is not None:
            sender, tag = waiting
            self._liveness.refuse(sender, retired_cause(self.name, tag))
        self._mailbox.raise_if_failed()

    def statistics(self) -> dict[str, Any]:
        """Counters of this party so far.

        Returns:
            messages/bytes sent and received (data messages), control messages, rejected
            messages, ``unreceived_messages`` (delivered to this party, never received by its
            role: messages under a tag it never asked for), ``wall_seconds`` (role running),
            ``idle_seconds`` (waiting for peers), ``busy_seconds`` (the rest) and
            ``span_seconds`` (total time per span name).
        """
        stats: dict[str, Any] = dict(self._wire.counters)
        stats["unreceived_messages"] = sum(self._mailbox.unreceived().values())
        live = self._liveness
        end = live.ended if live.ended is not None else time.perf_counter()
        wall = 0.0 if live.started is None else end - live.started
        idle = self._mailbox.idle_seconds(running=live.ended is None)
        spans: dict[str, float] = {}
        for s in self._tracer.spans:
            if s.name != "idle":
                spans[s.name] = spans.get(s.name, 0.0) + s.dur_us / 1e6
        stats.update(
            wall_seconds=wall,
            idle_seconds=idle,
            busy_seconds=max(0.0, wall - idle),
            span_seconds=spans,
        )
        return stats

    def _check(self, peer: str, tag: str) -> None:
        if peer not in self._peer_set:
            if peer == self.name:
                raise ConfigError(f"party {self.name!r} cannot send to or receive from itself")
            raise ConfigError(
                f"party {self.name!r} has no peer {peer!r}; its peers are {list(self.peers)}"
            )
        if type(tag) is not str:
            raise ConfigError(f"message tags must be str, got {type(tag).__name__}")


def check_peers(name: str, peers: Sequence[str]) -> tuple[str, ...]:
    """Validate a party's name and peers.

    Returns:
        the peers as a tuple.

    Raises:
        ConfigError: a bad name, a repeated peer, or the party among its own peers.
    """
    check_name(name)
    out = tuple(check_name(p, "peer name") for p in peers)
    if name in out or len(set(out)) != len(out):
        raise ConfigError(f"peers of {name!r} must be unique and exclude itself: {list(peers)}")
    return out


__all__ = ["Party", "check_peers"]
