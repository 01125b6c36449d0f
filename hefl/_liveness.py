"""Liveness of one party: handshake, heartbeats, failure propagation and the close barrier.

:class:`Liveness` drives a party's :class:`~hefl._mailbox.Mailbox`: its ONE reader task takes
messages off the transport, decodes them (:mod:`hefl._envelope`) and delivers data to the
mailbox; control messages (hello, ping, goodbye, failure notice) it handles itself. A hello
carries the values every party must share (:mod:`hefl._agreement`); a peer that disagrees
fails the handshake with a :class:`~hefl.errors.ConfigError`.

Failure propagation: when a role raises, its party tells every peer (a FAIL notice naming the
party where the failure started and why). Every other party then fails its mailbox, which wakes
all waiters with :class:`hefl.PeerFailed`, and cancels its role if the role is blocked
elsewhere (computing, sending into a full queue), so the whole federation stops within a
bounded time. A party is also failed by what it refuses (a malformed message, a flood, a
replay), by heartbeats (a peer silent past ``peer_timeout``), by its supervisor (a dead party
process) and by its transport: a transport that judges its links (ZeroMQ, see
:mod:`hefl.transports.links`) reports a link on which messages may have been lost.

Close barrier: a party whose role returned says goodbye (BYE) to every peer and waits until
every peer has said goodbye or failed, so nothing a peer still sends is lost and its own last
messages are flushed before the transport closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any

from hefl._agreement import disagreement, hello_values
from hefl._envelope import DATA_KINDS, Channel, Kind, decode
from hefl._mailbox import Mailbox
from hefl._options import RuntimeOptions
from hefl._wire import Wire
from hefl.errors import CodecError, ConfigError, PeerFailed, TransportClosed, TransportError
from hefl.transports.base import Buffer, LinkLost

log = logging.getLogger("hefl.runtime")

# seconds a party that found a disagreement still gives its own hellos to go out
_DISAGREEMENT_FLUSH = 2.0
# seconds a party failed by a peer during the handshake waits for the hellos still due
_DISAGREEMENT_GRACE = 0.5


class Liveness:
    """Keeps one party's view of who is alive, and stops it when the federation fails.

    Args:
        name: the party's name.
        peers: its peers.
        wire: its end of the wire.
        mailbox: the mailbox it feeds.
        options: the federation's runtime options.
        agreement: values every peer must share (the hefl version is added); see
            :mod:`hefl._agreement`.

    Attributes:
        error: what the role raised (None while it runs or if it returned).
        failed_at: wall time when the role failed (orders failures across processes).
        started, ended: ``time.perf_counter()`` when the role started and ended.
    """

    def __init__(
        self,
        name: str,
        peers: Sequence[str],
        wire: Wire,
        mailbox: Mailbox,
        options: RuntimeOptions,
        agreement: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.peers = tuple(peers)
        self._peer_set = frozenset(self.peers)
        self._wire = wire
        self._mailbox = mailbox
        self._opts = options
        self._done: set[str] = set()  # said goodbye, failed or died
        self._lost: set[str] = set()  # failed or died: they wait for nothing from us
        self._hello: set[str] = set()
        self._agreement = hello_values(agreement)
        self._disagreement: ConfigError | None = None
        self._changed = asyncio.Event()
        self._last_seen: dict[str, float] = {}
        self._expect_close = getattr(wire.transport, "expect_close", None)
        self._role_task: asyncio.Future | None = None
        self._tasks: list[asyncio.Task] = []
        self.error: BaseException | None = None
        self.failed_at: float | None = None
        self.started: float | None = None
        self.ended: float | None = None

    # ------------------------------------------------------------------ failing

    def fail(self, origin: str, cause: str, *, refused: bool = False) -> None:
        """Record the federation's failure once; wake every waiter; stop a busy role.

        Args:
            origin: the party where the failure started.
            cause: why.
            refused: the origin is a live peer whose message this party refused
                (malformed, a flood, a replay): it is still told about the failure, or it
                would wait forever.
        """
        if self._mailbox.failure is not None:
            return
        self._mailbox.fail(origin, cause)
        log.debug("%s: party %s failed: %s", self.name, origin, cause)
        if origin in self._peer_set:
            self._mark_done(origin, lost=not refused)
        role = self._role_task
        if role is not None and not role.done() and self._mailbox.waiting == 0:
            role.cancel()  # blocked outside the mailbox (computing, sending): stop it
        self._changed.set()

    def refuse(self, sender: str, cause: str) -> None:
        """Refuse a message of ``sender`` and fail the federation naming it."""
        self._wire.rejected()
        self.fail(sender, cause, refused=True)

    def peer_lost(self, peer: str, cause: str) -> None:
        """Declare ``peer`` dead (heartbeats, process supervision, a lost link)."""
        self._mark_done(peer, lost=True)
        self.fail(peer, cause)
        self._changed.set()

    def _mark_done(self, peer: str, *, lost: bool) -> None:
        self._done.add(peer)
        if lost:
            self._lost.add(peer)
        if self._expect_close is not None:
            self._expect_close(peer)

    def _on_link_lost(self, lost: LinkLost) -> None:
        if lost.peer not in self._peer_set or self._mailbox.failure is not None:
            return
        if lost.peer_alive:
            self.fail(lost.origin, lost.cause, refused=True)
        else:
            self.peer_lost(lost.peer, lost.cause)

    # ------------------------------------------------------------------ inbound

    async def _reader(self) -> None:
        # Awaiting a receive that is already complete does not yield to the loop, so without
        # the explicit yields below the reader would decode everything queued in the socket
        # before any consumer runs: many chunks alive at once (cold memory, page faults)
        # instead of each chunk consumed while it is hot in the cache.
        since_yield = 0
        recv = self._wire.transport.recv
        while True:
            if since_yield >= 1 << 20:
                since_yield = 0
                await asyncio.sleep(0)
            try:
                sender, frames = await recv()
            except TransportClosed:
                return
            except TransportError as exc:
                self.fail(self.name, f"transport failed: {exc}")
                return
            since_yield += 4096 + sum(len(f) for f in frames)
            try:
                self._dispatch(sender, frames)
            except Exception as exc:  # a bug here must not kill the reader silently
                log.exception("%s: error while dispatching a message from %r", self.name, sender)
                self.fail(self.name, f"internal error dispatching a message: {exc!r}")

    def _dispatch(self, sender: str, frames: list[Buffer]) -> None:
        if sender not in self._peer_set:
            self._wire.rejected()
            log.warning(
                "%s: refused a message from unknown sender %r (not a party of this federation)",
                self.name,
                sender,
            )
            return
        self._last_seen[sender] = time.monotonic()
        try:
            kind, tag, body = decode(self._wire.codec, frames)
        except CodecError as exc:
            self.refuse(sender, f"sent a malformed message, refused by {self.name!r}: {exc}")
            return
        size = sum(len(f) for f in frames)
        self._wire.received(kind, size)
        mailbox = self._mailbox
        if kind in DATA_KINDS and mailbox.is_retired(tag):
            self.refuse(sender, retired_cause(self.name, tag))
            return
        if kind == Kind.MSG:
            refusal = mailbox.deliver((sender, Channel.MSG, tag), body, size)
        elif kind == Kind.CHUNK or kind == Kind.END or kind == Kind.ABORT:
            refusal = mailbox.deliver((sender, Channel.STREAM, tag), (kind, body), size)
        elif kind == Kind.CREDIT:
            if not mailbox.wants_credit(sender, tag, body):
                return
            refusal = mailbox.deliver((sender, Channel.CREDIT, tag), body, size)
        else:
            self._control(sender, kind, body)
            return
        if refusal is not None:
            self.refuse(sender, refusal)

    def _control(self, sender: str, kind: int, body: Any) -> None:
        if kind == Kind.HELLO:
            self._hello.add(sender)
            why = disagreement(self.name, self._agreement, sender, body)
            if why is not None and self._disagreement is None:
                # not fail(): the handshake first lets our hellos out, so that every peer
                # finds the disagreement itself, then fails with it (and tells the peers)
                self._disagreement = ConfigError(why)
        elif kind == Kind.BYE:
            self._mark_done(sender, lost=False)
            self._mailbox.finish_peer(sender)
        elif kind == Kind.FAIL:
            if (
                type(body) is not list
                or len(body) != 2
                or not all(isinstance(x, str) for x in body)
            ):
                body = [sender, "failed (malformed failure notice)"]
            self._mark_done(sender, lost=True)
            self.fail(body[0], body[1])
        else:  # PING: being heard is all it is for
            return
        self._changed.set()

    # ------------------------------------------------------------------ the run

    async def run(self, role: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``role()`` with handshake, heartbeats, failure propagation and the close
        barrier; close the transport at the end.

        Returns:
            the role's return value.

        Raises:
            PeerFailed: another party failed (or this one, for a role raising PeerFailed).
            BaseException: whatever the role raised (after telling the peers).
        """
        self._last_seen = dict.fromkeys(self.peers, time.monotonic())
        watch = getattr(self._wire.transport, "watch_links", None)
        if watch is not None:
            watch(self._on_link_lost)
        self._tasks.append(asyncio.create_task(self._reader(), name=f"hefl-reader-{self.name}"))
        try:
            value = await self._run_role(role)
            await self._close_barrier()
            return value
        finally:
            if watch is not None:
                watch(None)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            # after a failure peers may be gone: flush briefly instead of lingering on them
            await self._wire.transport.close(linger=None if self.error is None else 1.0)

    async def _run_role(self, role: Callable[[], Awaitable[Any]]) -> Any:
        try:
            await self._handshake()
            opts = self._opts
            if opts.heartbeat_interval is not None and opts.peer_timeout is not None:
                beat = self._heartbeat(opts.heartbeat_interval, opts.peer_timeout)
                self._tasks.append(asyncio.create_task(beat, name=f"hefl-heartbeat-{self.name}"))
            self.started = time.perf_counter()
            self._role_task = asyncio.ensure_future(role())
            try:
                return await self._role_task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                failure = self._mailbox.failure
                if failure is None or (current is not None and current.cancelling()):
                    raise
                raise PeerFailed(failure.peer, failure.cause) from None
            finally:
                self.ended = time.perf_counter()
        except BaseException as exc:
            self.failed_at = time.time()
            self.error = exc
            origin, cause = _origin_of(self.name, exc)
            # no fail(): the role is over, and the origin is not a lost peer to skip
            self._mailbox.fail(origin, cause)
            await asyncio.shield(self._notify_failure(origin, cause))
            raise

    async def _notify_failure(self, origin: str, cause: str) -> None:
        frames = self._wire.encode(Kind.FAIL, "", [origin, cause])
        # Every peer, also those that said BYE (they wait in their close barrier for us),
        # but not those that failed or died (the notice would only sit in a queue).
        for peer in self.peers:
            if peer in self._lost:
                continue
            try:
                await self._wire.send_notice(peer, frames, 2.0)
            except (TimeoutError, TransportError) as exc:
                log.debug("%s: could not tell %s about the failure: %s", self.name, peer, exc)

    async def _close_barrier(self) -> None:
        # Say BYE, then wait until every peer has finished or failed, so nothing a peer still
        # sends to us is lost and our last messages are flushed (a peer that already said
        # BYE still waits for ours).
        for peer in self.peers:
            with suppress(TransportError, PeerFailed):
                await self._wire.send(peer, Kind.BYE, "", None)
        await self._wait_until(lambda: self._done >= self._peer_set, None)
        left = self._mailbox.unreceived()
        if left:
            log.warning(
                "%s: finished with %d message(s) it never received: %s",
                self.name,
                sum(left.values()),
                ", ".join(f"{n} from {k[0]!r} under {k[2]!r}" for k, n in list(left.items())[:5]),
            )

    # ------------------------------------------------------------------ handshake, heartbeat

    async def _handshake(self) -> None:
        timeout = self._opts.connect_timeout
        deadline = time.monotonic() + timeout
        # The hellos go out concurrently and under the same deadline: a send to a peer whose
        # connection never comes up (e.g. its CURVE handshake was refused) can wait forever.
        sends = {
            peer: asyncio.ensure_future(self._wire.send(peer, Kind.HELLO, "", self._agreement))
            for peer in self.peers
        }
        try:
            ok = await self._wait_until(
                lambda: (
                    self._mailbox.failure is not None
                    or self._disagreement is not None
                    or self._hello >= self._peer_set
                ),
                timeout,
            )
            if self._mailbox.failure is not None and self._disagreement is None:
                # a peer failed, perhaps on a disagreement: give the hellos still on their
                # way a moment, so this party names the disagreement itself too
                await self._wait_until(
                    lambda: self._disagreement is not None or self._hello >= self._peer_set,
                    _DISAGREEMENT_GRACE,
                )
            if self._disagreement is not None:
                await asyncio.wait(sends.values(), timeout=_DISAGREEMENT_FLUSH)
                raise self._disagreement
            if ok and self._mailbox.failure is None:
                left = max(0.0, deadline - time.monotonic())
                await asyncio.wait(sends.values(), timeout=left)
            for task in sends.values():
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            unsent = sorted(p for p, task in sends.items() if not task.done())
        finally:
            for task in sends.values():
                task.cancel()
        self._mailbox.raise_if_failed()
        if not ok or unsent:
            raise self._not_up(timeout, unsent if ok else None)

    def _not_up(self, timeout: float, unsent: list[str] | None) -> PeerFailed:
        if unsent:
            return PeerFailed(
                unsent[0],
                f"its connection did not come up within {timeout:g} s (party {self.name!r} "
                f"could not send to {unsent}). Check its address, its CURVE key and that "
                "it is started",
            )
        missing = sorted(self._peer_set - self._hello)
        refused = getattr(self._wire.transport, "refused_keys", None)
        extra = (
            f"; {self.name!r} refused CURVE connections from unenrolled keys {refused}"
            if refused
            else ""
        )
        return PeerFailed(
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
                if peer in self._done:
                    continue
                silent = now - self._last_seen.get(peer, now)
                if silent > peer_timeout:
                    self.peer_lost(
                        peer, f"silent for {silent:.1f} s (peer_timeout={peer_timeout:g} s)"
                    )
                    continue
                # never block on a dead peer's full queue
                ping = self._wire.send(peer, Kind.PING, "", None)
                with suppress(TimeoutError, TransportError, PeerFailed):
                    await asyncio.wait_for(ping, interval)

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


def retired_cause(owner: str, tag: str) -> str:
    """Why a message under a retired tag is refused."""
    return (
        f"sent a message under tag {tag!r} after party {owner!r} finished that exchange "
        "(a replayed or duplicated message)"
    )


def _origin_of(name: str, exc: BaseException) -> tuple[str, str]:
    """Where a role's exception says the failure started, and why."""
    if isinstance(exc, PeerFailed):
        return exc.peer, exc.cause
    if isinstance(exc, asyncio.CancelledError):
        return name, "cancelled"
    return name, f"{type(exc).__name__}: {exc}"


__all__ = ["Liveness", "retired_cause"]
