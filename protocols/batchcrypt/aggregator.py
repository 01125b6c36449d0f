"""The aggregator role: ``aggregator(party, cfg)``, and :class:`Aggregator`, its steps.

The aggregator receives the session's public key (never the private key), then per round:
gathers and cross-checks the clients' headers, sums the first-round dACIQ statistics, sums
the clients' upload streams chunk by chunk as they arrive, sums the statistics for the next
round, and streams each client its part of the aggregate. Anything malformed or inconsistent
fails the round naming the client; nothing is sent back then.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import numpy as np

from hefl import Party, task_group
from hefl.crypto import CipherVector, PublicKey, SlotLayout, plan_slots
from hefl.errors import KeyMismatchError, ProtocolError
from hefl.protocols.batchcrypt.config import BatchCryptConfig
from hefl.protocols.batchcrypt.federation import (
    ByteMeter,
    RoundTiming,
    chunk_bounds,
    download_slices,
    federation_clients,
)
from hefl.protocols.batchcrypt.keys import receive_public_key
from hefl.protocols.batchcrypt.layers import stats_layout
from hefl.protocols.batchcrypt.messages import (
    BatchCryptMessage,
    DownloadChunk,
    Expect,
    PlainSum,
    PlainUpdate,
    PreStats,
    PreStatsSum,
    RoundHeader,
    RoundStats,
    RoundStatsSum,
    UploadChunk,
    round_prefix,
)


class _ChunkSink(Protocol):
    """The sending end of a stream (what ``party.stream(peer, tag)`` enters as)."""

    async def send(self, chunk: Any) -> None: ...


@dataclass
class AggregatorReport:
    """What the aggregator role returns: its per-round timings and what it was ever sent.

    ``received_types`` names the keys, ciphertexts and arrays the clients' messages carried
    (``PublicKey``, ``CipherVector``, ``ndarray``), and the message type of those that carry
    none of them (``RoundHeader``): never a ``PrivateKey``.
    """

    rounds: int
    timings: list[RoundTiming] = field(default_factory=list)
    received_types: list[str] = field(default_factory=list)

    def note(self, message: BatchCryptMessage) -> None:
        """Record the types a received message carried."""
        values = [getattr(message, f.name) for f in fields(message)]  # type: ignore[arg-type]
        carried = [v for v in values if isinstance(v, PublicKey | CipherVector | np.ndarray)]
        names = [type(v).__name__ for v in carried] or [type(message).__name__]
        self.received_types.extend(n for n in dict.fromkeys(names) if n not in self.received_types)


class Aggregator:
    """The aggregator's side of a BatchCrypt federation; it never holds a private key.

    Args:
        party: the Party named ``aggregator``.
        cfg: the federation's configuration.

    Raises:
        ConfigError: the federation does not fit ``cfg`` (no clients, too many clients).
    """

    def __init__(self, party: Party, cfg: BatchCryptConfig) -> None:
        self.party = party
        self.cfg = cfg
        self.clients = federation_clients(party, cfg)
        self.report = AggregatorReport(rounds=0)
        self.pk: PublicKey | None = None
        self.layout: SlotLayout | None = None
        self._meter = ByteMeter(party)

    async def run(self) -> AggregatorReport:
        """Set up, then run rounds until every client has said it is done."""
        await self.setup()
        t = 0
        while (header := await self.receive_headers(t)) is not None:
            await self.run_round(t, header)
            t += 1
        self.report.rounds = t
        return self.report

    async def setup(self) -> None:
        """Receive the public key (encrypted modes) and plan the lanes it carries."""
        if not self.cfg.encrypted:
            return
        notice = await receive_public_key(self.party, self.cfg, self.clients[0])
        self.report.note(notice)
        self.pk = notice.key
        if self.cfg.mode == "batchcrypt":
            cfg = self.cfg
            self.layout = plan_slots(self.pk, cfg.bits, cfg.n_clients, layout=cfg.layout)

    async def receive_headers(self, t: int) -> RoundHeader | None:
        """Gather every client's round-``t`` header: the one they agree on, or None when all
        have ended the session.

        Raises:
            ProtocolError: a malformed header, disagreeing headers, or only some clients done.
            KeyMismatchError: a client encrypts under another key.
        """
        raw = await self.party.gather(RoundHeader.tag(t=t), peers=list(self.clients))
        headers = {c: RoundHeader.from_wire(c, raw[c]) for c in self.clients}
        for h in headers.values():
            self.report.note(h)
        done = [c for c, h in headers.items() if h.done]
        if done:
            if len(done) != len(self.clients):
                live = [c for c in self.clients if c not in done]
                raise ProtocolError(
                    f"client(s) {done} ended the session while {live} started round {t}"
                )
            return None
        check_headers(headers, t, self.cfg, self.pk)
        return headers[self.clients[0]]

    async def run_round(self, t: int, header: RoundHeader) -> None:
        """Sum round ``t``, send the sums back and keep the round's timing."""
        start, timing = time.perf_counter(), RoundTiming(round=t)
        if self.cfg.mode == "plain":
            await self.sum_plain(t, header, timing)
        else:
            await self.sum_encrypted(t, header, timing)
        timing.wall = time.perf_counter() - start
        self._meter.close_round(timing)
        self.report.timings.append(timing)
        # a replayed or duplicated round-t message is refused from now on
        self.party.retire(round_prefix(t))

    async def sum_plain(self, t: int, header: RoundHeader, timing: RoundTiming) -> None:
        """Mode "plain": add the clients' updates in the clear and send the sum back."""
        raw = await self.party.gather(PlainUpdate.tag(t=t), peers=list(self.clients))
        expect = Expect(length=header.n, dtype=header.dtype)
        updates = [PlainUpdate.from_wire(c, raw[c], expect) for c in self.clients]
        t0 = time.thread_time()
        total = np.zeros(header.n, dtype=np.float64)
        for update in updates:
            self.report.note(update)
            total += update.values
        timing.aggregate += time.thread_time() - t0
        message = PlainSum(total=total).to_wire()
        await self.party.broadcast(PlainSum.tag(t=t), message, peers=list(self.clients))

    async def sum_encrypted(self, t: int, header: RoundHeader, timing: RoundTiming) -> None:
        """Modes "batchcrypt" and "phe": statistics, uploads, then the aggregate back down."""
        n_ct = self._ciphertexts(header.n)
        daciq = self.cfg.mode == "batchcrypt" and self.cfg.clipping == "daciq"
        if header.pre:
            pre_sum = await self.sum_statistics(t, PreStats, len(header.layers))
            await self._broadcast(t, PreStatsSum(sums=pre_sum))
        total = await self.sum_uploads(t, n_ct, timing)
        stats_sum = None
        if daciq:
            stats_sum = await self.sum_statistics(t, RoundStats, len(header.layers))
        await self.send_down(t, total, n_ct, timing)
        if stats_sum is not None:
            await self._broadcast(t, RoundStatsSum(sums=stats_sum))

    def _ciphertexts(self, n: int) -> int:
        return -(-n // self.layout.slots_per_plaintext) if self.layout is not None else n

    async def _broadcast(self, t: int, message: BatchCryptMessage) -> None:
        await self.party.broadcast(message.tag(t=t), message.to_wire(), peers=list(self.clients))

    async def sum_statistics(
        self, t: int, kind: type[PreStats | RoundStats], n_layers: int
    ) -> CipherVector:
        """Gather every client's encrypted per-layer Σx² (packed, :func:`stats_layout`) and
        add them up."""
        raw = await self.party.gather(kind.tag(t=t), peers=list(self.clients))
        assert self.pk is not None  # statistics come only in encrypted modes
        packed = stats_layout(self.pk, self.cfg.n_clients).n_plaintexts(n_layers)
        expect = Expect(self.pk, length=packed)
        total: CipherVector | None = None
        for c in self.clients:
            message = kind.from_wire(c, raw[c], expect)
            self.report.note(message)
            total = message.sums if total is None else total + message.sums
        assert total is not None  # a federation has at least one client
        return total

    async def sum_uploads(self, t: int, n_ct: int, timing: RoundTiming) -> CipherVector | None:
        """Receive every client's chunk stream and add chunks into the running sum as they land.

        Chunk i of every client covers the same ciphertext positions, so the sum of chunk i
        can start as soon as two clients' chunk i are in, long before the last client ends.

        Raises:
            ProtocolError: a malformed chunk, too many chunks, or a stream that ended early.
            KeyMismatchError: a chunk under another key.
        """
        bounds = chunk_bounds(0, n_ct, self.cfg.chunk_size)
        sums: list[CipherVector | None] = [None] * len(bounds)
        origin = time.perf_counter()

        def add(i: int, chunk: CipherVector) -> None:
            t0, c0 = time.perf_counter(), time.thread_time()
            previous = sums[i]
            sums[i] = chunk if previous is None else previous + chunk
            if previous is not None and not timing.first_sum_at:
                timing.first_sum_at = t0 - origin
            timing.aggregate += time.thread_time() - c0
            timing.last_chunk_at = max(timing.last_chunk_at, time.perf_counter() - origin)

        async with task_group() as group:
            for c in self.clients:
                group.create_task(self._receive_upload(t, c, bounds, add, timing))
        done = [s for s in sums if s is not None]
        return CipherVector.concat(done) if done else None

    async def _receive_upload(
        self,
        t: int,
        sender: str,
        bounds: list[tuple[int, int]],
        add: Callable[[int, CipherVector], None],
        timing: RoundTiming,
    ) -> None:
        i = 0
        async for obj in self.party.stream_from(sender, UploadChunk.tag(t=t)):
            if i >= len(bounds):
                raise ProtocolError(
                    f"client {sender!r} sent more than the {len(bounds)} chunks of round {t}"
                )
            a, b = bounds[i]
            c0 = time.thread_time()  # parsing and checking a chunk is part of summing it
            chunk = UploadChunk.from_wire(sender, obj, Expect(self.pk, length=b - a))
            timing.aggregate += time.thread_time() - c0
            self.report.note(chunk)
            add(i, chunk.ciphers)
            i += 1
        if i != len(bounds):
            raise ProtocolError(
                f"client {sender!r} dropped out of round {t}: its stream ended after {i} of "
                f"{len(bounds)} chunks"
            )

    async def send_down(
        self, t: int, total: CipherVector | None, n_ct: int, timing: RoundTiming
    ) -> None:
        """Stream each client its part of the aggregate (all of it, or its slice when the
        clients share the decryption), all clients at once."""
        parts = download_slices(n_ct, len(self.clients), self.cfg.shared_decryption)
        tag = DownloadChunk.tag(t=t)
        async with contextlib.AsyncExitStack() as stack:
            streams = [
                await stack.enter_async_context(self.party.stream(c, tag)) for c in self.clients
            ]
            async with task_group() as group:
                for stream, (lo, hi) in zip(streams, parts, strict=True):
                    group.create_task(self._send_slice(stream, total, lo, hi, timing))

    async def _send_slice(
        self,
        stream: _ChunkSink,
        total: CipherVector | None,
        lo: int,
        hi: int,
        timing: RoundTiming,
    ) -> None:
        for a, b in chunk_bounds(lo, hi, self.cfg.chunk_size):
            assert total is not None  # a non-empty range means there were uploads
            c0 = time.thread_time()  # serializing the aggregate is the aggregator's CPU too
            wire = DownloadChunk(ciphers=total[a:b]).to_wire()
            timing.aggregate += time.thread_time() - c0
            await stream.send(wire)


async def aggregator(party: Party, cfg: BatchCryptConfig) -> AggregatorReport:
    """The aggregator role: sums the clients' ciphertexts; never holds a private key.

    Args:
        party: the Party named ``aggregator``.
        cfg: the federation's configuration.

    Returns:
        An :class:`AggregatorReport`.

    Raises:
        ProtocolError / KeyMismatchError / ConfigError: a client sent something inconsistent
            (named in the message); the round is abandoned, nothing is sent back.
    """
    return await Aggregator(party, cfg).run()


def _odd_ones_out(values: dict[str, Any]) -> tuple[Any, list[str]]:
    """The most common value and the clients that disagree with it."""
    counts: dict[Any, int] = {}
    for v in values.values():
        counts[v] = counts.get(v, 0) + 1
    common = max(counts, key=lambda v: counts[v])
    return common, [c for c, v in values.items() if v != common]


def check_headers(
    headers: dict[str, RoundHeader], t: int, cfg: BatchCryptConfig, pk: PublicKey | None
) -> None:
    """Check that the clients' round-``t`` headers fit the round, the session and each other.

    Raises:
        ProtocolError: a wrong round or mode, or clients disagreeing on the vector length,
            dtype, layer sizes or dACIQ start-up exchange (the odd ones out are named).
        KeyMismatchError: a client encrypts under another key.
    """
    for c, h in headers.items():
        if h.round != t:
            raise ProtocolError(f"client {c!r} sent a header for round {h.round} in round {t}")
        if h.mode != cfg.mode:
            raise ProtocolError(f"client {c!r} runs mode {h.mode!r}, the aggregator {cfg.mode!r}")
        if pk is not None and h.key != pk.key_id.hex():
            raise KeyMismatchError(
                f"client {c!r} encrypts under key {h.key or '(none)'}, not the federation's "
                f"key {pk.key_id.hex()}"
            )
    for what, name in (
        ("vector length", "n"),
        ("dtype", "dtype"),
        ("layer sizes", "layers"),
        ("dACIQ start-up exchange", "pre"),
    ):
        values = {c: getattr(h, name) for c, h in headers.items()}
        common, odd = _odd_ones_out(values)
        if odd:
            detail = ", ".join(f"{c!r}: {values[c]}" for c in odd)
            raise ProtocolError(
                f"round {t}: client(s) disagree on the {what} (most clients: {common}; {detail})"
            )
