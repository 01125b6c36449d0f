"""Who is who in a BatchCrypt federation, and the bookkeeping every role keeps per round.

Args/Returns/Raises are given per function; nothing here talks to the network.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from hefl import Party
from hefl.errors import ConfigError
from hefl.protocols.batchcrypt.config import BatchCryptConfig

_CLIENT_RE = re.compile(r"^(.*?)(\d+)$")


def _order_key(name: str) -> tuple[str, int, str]:
    m = _CLIENT_RE.match(name)
    return (m.group(1), int(m.group(2)), name) if m else (name, -1, name)


def client_order(names: Iterable[str]) -> tuple[str, ...]:
    """Client names in the order every party agrees on (a trailing number counts as a
    number: ``client2`` before ``client10``); the first makes the session's keys.

    Args:
        names: the clients' party names (any names but the aggregator's).

    Returns:
        the names, ordered.
    """
    return tuple(sorted(names, key=_order_key))


def federation_clients(party: Party, cfg: BatchCryptConfig) -> tuple[str, ...]:
    """The clients of the federation ``party`` belongs to, in a fixed order every party agrees on.

    Raises:
        ConfigError: there is no aggregator, or more clients than ``cfg.n_clients`` (the lanes
            are planned for that many summands, so more would overflow them).
    """
    names = {party.name, *party.peers}
    if cfg.aggregator not in names:
        raise ConfigError(f"a BatchCrypt federation needs a party named {cfg.aggregator!r}")
    clients = client_order(n for n in names if n != cfg.aggregator)
    if not clients:
        raise ConfigError("a BatchCrypt federation needs at least one client")
    if len(clients) > cfg.n_clients:
        raise ConfigError(
            f"the federation has {len(clients)} clients but the configuration plans for "
            f"n_clients={cfg.n_clients}; raise n_clients (the lanes get more guard bits)"
        )
    return clients


def slices(total: int, parts: int) -> list[tuple[int, int]]:
    """Split range(total) into ``parts`` contiguous nearly equal [lo, hi) pieces."""
    bounds = [total * i // parts for i in range(parts + 1)]
    return list(itertools.pairwise(bounds))


def download_slices(n_ct: int, n_clients: int, shared: bool) -> list[tuple[int, int]]:
    """The [lo, hi) range of the aggregate each client downloads: slice i of ``n_clients``
    with shared decryption (and more than one client), all of it otherwise."""
    if shared and n_clients > 1:
        return slices(n_ct, n_clients)
    return [(0, n_ct)] * n_clients


def chunk_bounds(lo: int, hi: int, chunk_size: int) -> list[tuple[int, int]]:
    """The [a, b) ranges of the chunks that stream positions lo..hi."""
    return [(a, min(hi, a + chunk_size)) for a in range(lo, hi, chunk_size)]


@dataclass
class RoundTiming:
    """Where the time and bytes of one round went, seen from one party.

    Compute times are CPU seconds (of the pool worker that did the work, or of the event-loop
    thread for work done inline), not the time a task waited for a free worker or lost to other
    processes. ``wall`` is the round's elapsed time at this party.
    """

    round: int
    encrypt: float = 0.0  # clip + quantize + pack + encrypt (client)
    aggregate: float = 0.0  # homomorphic sums (aggregator)
    decrypt: float = 0.0  # decryption of this party's share (client)
    decode: float = 0.0  # unpack + dequantize, including the peers' shares (client)
    wall: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    first_sum_at: float = 0.0  # aggregator: when it first combined two clients' chunks
    last_chunk_at: float = 0.0  # aggregator: when the last uploaded chunk arrived
    # client, background randomness: CPU seconds spent making this round's obfuscators ahead
    # of time (not in ``encrypt``), seconds waited for late ones, how many came from the
    # background and how many were made online, and "off" / "unplanned" / "ready" (all in
    # time) / "waited" / "online" (late ones made online)
    background: float = 0.0
    randomness_wait: float = 0.0
    obfuscators_background: int = 0
    obfuscators_online: int = 0
    randomness: str = "off"

    def to_dict(self) -> dict[str, Any]:
        """The figures as a plain dict."""
        return asdict(self)


class ByteMeter:
    """Bytes a party sent and received since the last round ended.

    Counters are diffed between round ends: a message that arrives early (buffered before
    its round started) still counts for the round it belongs to.

    Args:
        party: the party whose ``statistics()`` are read.
    """

    def __init__(self, party: Party) -> None:
        self.party = party
        self.mark = self._read()

    def _read(self) -> tuple[int, int]:
        stats = self.party.statistics()
        return int(stats.get("bytes_sent", 0)), int(stats.get("bytes_received", 0))

    def restart(self) -> None:
        """Forget what was counted so far (key set-up is not part of round 0)."""
        self.mark = self._read()

    def close_round(self, timing: RoundTiming) -> None:
        """Charge the bytes since the last mark to ``timing`` and set a new mark."""
        sent, received = self._read()
        timing.bytes_sent, timing.bytes_received = sent - self.mark[0], received - self.mark[1]
        self.mark = (sent, received)
