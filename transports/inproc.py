"""The in-process transport: all parties are coroutines of one event loop.

Messages still go through the codec (the runtime encodes them), so tests exercise the same
bytes a network would carry and the byte counts in the statistics are real. Frames are copied on
send so a receiver never aliases the sender's memory (e.g. a numpy array it keeps mutating).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from hefl.errors import ConfigError, TransportClosed, TransportError

from .base import Buffer, LinkListener

_CLOSED = object()


class InprocNetwork:
    """A set of in-process endpoints that can reach each other by name.

    Args:
        names: the party names.

    Raises:
        ConfigError: if a name is repeated.
    """

    def __init__(self, names: Iterable[str]) -> None:
        names = list(names)
        if len(set(names)) != len(names):
            raise ConfigError(f"party names must be unique, got {names}")
        self._queues: dict[str, asyncio.Queue] = {name: asyncio.Queue() for name in names}

    def transport(self, name: str) -> InprocTransport:
        """Return the endpoint of party ``name``."""
        if name not in self._queues:
            raise ConfigError(f"unknown party {name!r}; known: {sorted(self._queues)}")
        return InprocTransport(name, self)


class InprocTransport:
    """One party's endpoint on an :class:`InprocNetwork`."""

    def __init__(self, name: str, network: InprocNetwork) -> None:
        self.name = name
        self._network = network
        self._closed = False

    async def start(self) -> None:
        """Nothing to bind: the network's queues already exist."""

    async def send(self, peer: str, frames: Sequence[Buffer]) -> None:
        """Queue a copy of ``frames`` for ``peer``."""
        if self._closed:
            raise TransportClosed(f"party {self.name!r} cannot send: its transport is closed")
        queue = self._network._queues.get(peer)
        if queue is None:
            raise TransportError(f"party {self.name!r} cannot send to unknown peer {peer!r}")
        queue.put_nowait((self.name, [f if type(f) is bytes else bytes(f) for f in frames]))

    async def recv(self) -> tuple[str, list[Buffer]]:
        """Return the next ``(sender, frames)`` addressed to this party."""
        if self._closed:
            raise TransportClosed(f"party {self.name!r} cannot receive: its transport is closed")
        item = await self._network._queues[self.name].get()
        if item is _CLOSED:
            self._closed = True
            raise TransportClosed(f"party {self.name!r}: transport closed")
        return item

    def link_confidential(self, peer: str) -> bool:
        """Always True: in-process queues never leave the process."""
        return True

    def watch_links(self, listener: LinkListener | None) -> None:
        """Accepted for symmetry with the ZeroMQ transport: queues never lose a message."""

    def expect_close(self, peer: str) -> None:
        """Accepted for symmetry with the ZeroMQ transport (nothing to judge)."""

    async def close(self, linger: float | None = None) -> None:
        """Stop this endpoint (``linger`` is accepted for symmetry; nothing is queued); a pending :meth:`recv` raises TransportClosed."""
        if not self._closed:
            self._closed = True
            self._network._queues[self.name].put_nowait(_CLOSED)


__all__ = ["InprocNetwork", "InprocTransport"]
