"""The client role: ``client(party, cfg, work_)``, and :class:`ClientSession`, its steps.

A session agrees on the key (:mod:`.keys`), then runs one :meth:`ClientSession.aggregate`
per round: check the update, send the round header, run the round of ``cfg.mode`` and keep
the round's timing. A BatchCrypt round clips (dACIQ) and quantizes each layer, packs and
encrypts chunks in the background while streaming each one as soon as it is ready, sends its
statistics for the next round's clipping, then downloads, decrypts and decodes the sum
(:mod:`.decryption`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from hefl import Party, task_group
from hefl.crypto import CipherVector, PrivateKey, PublicKey, SlotLayout, plan_slots
from hefl.errors import ConfigError
from hefl.protocols.batchcrypt import work
from hefl.protocols.batchcrypt.config import BatchCryptConfig
from hefl.protocols.batchcrypt.decryption import Decryptor
from hefl.protocols.batchcrypt.federation import (
    ByteMeter,
    RoundTiming,
    chunk_bounds,
    download_slices,
    federation_clients,
)
from hefl.protocols.batchcrypt.keys import agree_key
from hefl.protocols.batchcrypt.layers import (
    daciq_alphas,
    dequantize_layers,
    layer_square_sums,
    pack_square_sums,
    quantize_layers,
    stats_layout,
)
from hefl.protocols.batchcrypt.messages import (
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
from hefl.protocols.batchcrypt.quantize import new_rng
from hefl.protocols.batchcrypt.randomness import Reserve

# (worker function, its arguments): one chunk's encryption, run by party.offload
EncryptJob = tuple[Callable[..., tuple[Any, float]], tuple[Any, ...]]


@runtime_checkable
class RoundSource(Protocol):
    """What a client role drives: where each round's update comes from and where the sum goes.

    ``update(t)`` returns this client's flat float update for round t (None ends the session);
    ``receive(t, total, n_clients)`` gets the decoded sum over all clients; ``result()`` is the
    role's return value. A source may also say how many rounds it runs, ``rounds`` (an int;
    optional): with ``background_randomness`` the client then makes no obfuscators for a
    round after the last.
    """

    layer_sizes: Sequence[int] | None

    def update(self, t: int) -> np.ndarray | None: ...

    def receive(self, t: int, total: np.ndarray, n_clients: int) -> None: ...

    def result(self) -> Any: ...


class OneShot:
    """A single-round source: aggregate one vector and return the decoded sum."""

    rounds = 1

    def __init__(self, vector: np.ndarray, layer_sizes: Sequence[int] | None = None) -> None:
        self.vector = vector
        self.layer_sizes = layer_sizes
        self.total: np.ndarray | None = None

    def update(self, t: int) -> np.ndarray | None:
        """The vector in round 0, then None."""
        return self.vector if t == 0 else None

    def receive(self, t: int, total: np.ndarray, n_clients: int) -> None:
        """Keep the decoded sum."""
        self.total = total

    def result(self) -> np.ndarray | None:
        """The decoded sum (None before the round)."""
        return self.total


class ClientSession:
    """One client's side of a BatchCrypt federation (keys, then one :meth:`aggregate` per round).

    Args:
        party: this client's Party.
        cfg: the federation's configuration.

    Raises:
        ConfigError: ``party`` is not a client of a valid federation.
    """

    def __init__(self, party: Party, cfg: BatchCryptConfig) -> None:
        self.party = party
        self.cfg = cfg
        self.clients = federation_clients(party, cfg)
        if party.name not in self.clients:
            raise ConfigError(f"{party.name!r} is not a client of this federation")
        self.pk: PublicKey | None = None
        self.sk: PrivateKey | None = None
        self.layout: SlotLayout | None = None
        self.alphas: np.ndarray | None = None
        self.timings: list[RoundTiming] = []
        self.rng = new_rng()
        self.reserve: Reserve | None = None
        self._round = 0
        self._meter = ByteMeter(party)

    @property
    def name(self) -> str:
        """This client's party name."""
        return self.party.name

    # -- session ---------------------------------------------------------------------------
    async def open(self) -> None:
        """Agree on the keys: the first client generates them and hands them out.

        The private key goes to the other clients over their direct channels; the aggregator
        receives only the public key.

        Raises:
            ProtocolError: the key holder sent a malformed key or one of the wrong size.
        """
        if not self.cfg.encrypted:
            return
        self.pk, self.sk = await agree_key(self.party, self.cfg, self.clients)
        self._meter.restart()  # key set-up is not part of round 0
        if self.cfg.mode == "batchcrypt":
            cfg = self.cfg
            self.layout = plan_slots(self.pk, cfg.bits, cfg.n_clients, layout=cfg.layout)
            if cfg.background_randomness != "off":
                policy = cfg.background_randomness
                self.reserve = Reserve(self.party, self.sk, cfg.short_exponent, policy)

    def prepare(self, layer_sizes: Sequence[int]) -> None:
        """Start making the next round's obfuscators in the background (with
        ``background_randomness``; nothing otherwise), for an update of these layer sizes.

        Must run inside the event loop, after :meth:`open`.
        """
        if self.reserve is None:
            return
        layers = tuple(int(v) for v in layer_sizes)
        pre = self.cfg.clipping == "daciq" and self.alphas is None
        self.reserve.plan(self._randomness_sizes(sum(layers), layers, pre))

    def _randomness_sizes(self, n: int, layers: tuple[int, ...], pre: bool) -> dict[str, list[int]]:
        """Obfuscators per encryption job of a round of ``n`` values, by purpose."""
        n_ct = self._layout().n_plaintexts(n)
        n_stats = self._stats_layout().n_plaintexts(len(layers))
        stats = [n_stats] if self.cfg.clipping == "daciq" else []
        return {
            "pre": stats if pre else [],
            "up": [b - a for a, b in chunk_bounds(0, n_ct, self.cfg.chunk_size)],
            "stats": stats,
        }

    async def close(self) -> None:
        """Drop unused background randomness; tell the aggregator this client has no more
        rounds."""
        if self.reserve is not None:
            await self.reserve.close()
        done = RoundHeader.finished(self._round, self.cfg.mode, self._key_id())
        await self.party.send(self.cfg.aggregator, RoundHeader.tag(t=self._round), done.to_wire())

    def _key_id(self) -> str:
        return self.pk.key_id.hex() if self.pk is not None else ""

    def _keys(self) -> tuple[PublicKey, PrivateKey]:
        if self.pk is None or self.sk is None:
            raise ConfigError(f"client {self.name!r}: open() the session before a round")
        return self.pk, self.sk

    # -- one round -------------------------------------------------------------------------
    async def aggregate(
        self,
        update: np.ndarray,
        layer_sizes: Sequence[int] | None = None,
        *,
        prepare_next: bool = True,
    ) -> np.ndarray:
        """Securely sum ``update`` with the other clients' updates of this round.

        Args:
            update: this client's flat float32/float64 vector (same length and dtype for all).
            layer_sizes: lengths of the layers ``update`` concatenates (each gets its own α);
                one layer by default.
            prepare_next: with ``background_randomness``, start making the next round's
                obfuscators when this round ends (False for the last round).

        Returns:
            The decoded sum over all clients (float64), as every client sees it.

        Raises:
            ConfigError: NaN/inf values, a non-float or non-1-D update, bad layer sizes.
            ProtocolError / KeyMismatchError: a peer sent something malformed (named).
        """
        x, layers = self._checked_update(update, layer_sizes)
        t, start, timing = self._round, time.perf_counter(), RoundTiming(round=self._round)
        daciq = self.cfg.mode == "batchcrypt" and self.cfg.clipping == "daciq"
        need_pre = daciq and self.alphas is None  # no α yet: the start-up exchange first
        self._check_planned(t, x, layers, need_pre, timing)  # before anything is sent
        header = RoundHeader(
            t, len(x), x.dtype.str, layers, self.cfg.mode, self._key_id(), pre=need_pre, done=False
        )
        await self.party.send(self.cfg.aggregator, RoundHeader.tag(t=t), header.to_wire())
        if self.cfg.mode == "plain":
            total = await self._plain_round(t, x)
        elif self.cfg.mode == "phe":
            total = await self._phe_round(t, x, timing)
        else:
            total = await self._batchcrypt_round(t, x, layers, need_pre, timing)
            if prepare_next:  # the next round's randomness, made while the client trains
                self.prepare(layers)
        timing.wall = time.perf_counter() - start
        self._meter.close_round(timing)
        self.timings.append(timing)
        self._round += 1
        # every message of round t has been received: a later one (replayed, duplicated) fails
        # the federation naming its sender instead of waiting unread in a buffer
        self.party.retire(round_prefix(t))
        return total

    def _checked_update(
        self, update: np.ndarray, layer_sizes: Sequence[int] | None
    ) -> tuple[np.ndarray, tuple[int, ...]]:
        x = np.asarray(update)
        if x.ndim != 1 or x.dtype.kind != "f":
            raise ConfigError(
                f"client {self.name!r}: an update must be a 1-D float array, got "
                f"shape {x.shape} dtype {x.dtype}"
            )
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            raise ConfigError(
                f"client {self.name!r}: the update of round {self._round} has {bad} NaN or "
                "infinite value(s); refusing to aggregate it"
            )
        if len(x) == 0:
            raise ConfigError(f"client {self.name!r}: an update must hold at least one value")
        layers = tuple(int(v) for v in (layer_sizes or (len(x),)))
        if sum(layers) != len(x) or any(v < 0 for v in layers):
            raise ConfigError(
                f"client {self.name!r}: layer sizes {layers} do not add up to {len(x)} values"
            )
        return x, layers

    # -- mode "plain" ----------------------------------------------------------------------
    async def _plain_round(self, t: int, x: np.ndarray) -> np.ndarray:
        await self.party.send(
            self.cfg.aggregator, PlainUpdate.tag(t=t), PlainUpdate(values=x).to_wire()
        )
        obj = await self.party.recv(self.cfg.aggregator, PlainSum.tag(t=t))
        total = PlainSum.from_wire(self.cfg.aggregator, obj, Expect(length=len(x))).total
        return np.asarray(total, dtype=np.float64)

    # -- mode "phe": the per-value Paillier baseline ---------------------------------------
    async def _phe_round(self, t: int, x: np.ndarray, timing: RoundTiming) -> np.ndarray:
        pk, _ = self._keys()
        scale = 2**self.cfg.phe_frac_bits
        ints = [int(v) for v in np.round(x.astype(np.float64) * scale).astype(object)]
        size, phe_pk = self.cfg.chunk_size, pk.to_phe()

        async def jobs() -> AsyncIterator[EncryptJob]:
            for i in range(0, len(ints), size):
                yield work.phe_encrypt, (phe_pk, ints[i : i + size])

        await self._upload(t, jobs(), timing, wrap=lambda raw: CipherVector(pk, raw))
        plaintexts = await self._receive_sum(t, len(ints), timing, phe=True)
        t0 = time.thread_time()
        total = np.array([v / scale for v in plaintexts], dtype=np.float64)
        timing.decode += time.thread_time() - t0
        return total

    # -- mode "batchcrypt" -----------------------------------------------------------------
    async def _batchcrypt_round(
        self, t: int, x: np.ndarray, layers: tuple[int, ...], need_pre: bool, timing: RoundTiming
    ) -> np.ndarray:
        cfg, m = self.cfg, len(self.clients)
        if need_pre:  # the one extra exchange: an encrypted aggregate of Σx² per layer
            timing.encrypt += await self._send_square_sums(t, PreStats, x, layers, timing)
            self.alphas = await self._receive_alphas(t, PreStatsSum, layers, timing)
        daciq = cfg.clipping == "daciq"
        alphas = self.alphas if daciq else np.full(len(layers), float(cfg.clipping))
        assert alphas is not None  # set by the first round's exchange above
        t0 = time.thread_time()
        q = quantize_layers(x, layers, alphas, cfg.bits, self.rng)
        timing.encrypt += time.thread_time() - t0
        await self._upload(t, self._packed_jobs(q, timing), timing)
        if daciq:  # σ for the next round, from this round's aggregate statistics
            timing.encrypt += await self._send_square_sums(t, RoundStats, x, layers, timing)
        layout = self._layout()
        plaintexts = await self._receive_sum(t, -(-len(q) // layout.slots_per_plaintext), timing)
        t0 = time.thread_time()
        lanes = layout.unpack(plaintexts, len(q), n_summands=m)
        total = dequantize_layers(np.asarray(lanes), layers, alphas, cfg.bits)
        timing.decode += time.thread_time() - t0
        if daciq:
            self.alphas = await self._receive_alphas(t, RoundStatsSum, layers, timing)
        return total

    def _check_planned(
        self, t: int, x: np.ndarray, layers: tuple[int, ...], pre: bool, timing: RoundTiming
    ) -> None:
        """Refuse an update that does not fit the background randomness planned for it.

        Raises:
            ConfigError: it needs other obfuscator counts than were planned (size, layers).
        """
        if self.reserve is None:
            return
        what = (
            f"client {self.name!r}: round {t}'s update of {len(x)} values in {len(layers)} layers"
        )
        for purpose, counts in self._randomness_sizes(len(x), layers, pre).items():
            self.reserve.check(purpose, counts, what)
        timing.randomness = "ready" if self.reserve.planned else "unplanned"

    def _layout(self) -> SlotLayout:
        if self.layout is None:
            raise ConfigError(f"client {self.name!r}: open() the session before a round")
        return self.layout

    def _stats_layout(self) -> SlotLayout:
        return stats_layout(self._keys()[0], self.cfg.n_clients)

    async def _packed_jobs(self, q: np.ndarray, timing: RoundTiming) -> AsyncIterator[EncryptJob]:
        """One pack-and-encrypt job per chunk of ``chunk_size`` ciphertexts, each with its
        background obfuscators when there are some."""
        _, sk = self._keys()
        layout, short = self._layout(), self.cfg.short_exponent
        slots = layout.slots_per_plaintext
        for a, b in chunk_bounds(0, len(q), self.cfg.chunk_size * slots):
            batch = None
            if self.reserve is not None:
                batch = await self.reserve.take("up", -(-(b - a) // slots), timing)
            yield work.encrypt_packed, (sk, layout, q[a:b], short, batch)

    async def _upload(
        self,
        t: int,
        jobs: AsyncIterator[EncryptJob],
        timing: RoundTiming,
        wrap: Callable[[Any], CipherVector] | None = None,
    ) -> None:
        """Encrypt the chunks in the executor and stream each as soon as it is ready.

        At most two chunks per core are in flight, so the encryption of later chunks
        overlaps the sending of earlier ones while memory stays bounded by the window, not
        by the model's size; a failure anywhere cancels the rest.
        """
        window = 2 * self.party.capacity
        async with task_group() as group:
            pending: deque[asyncio.Task[Any]] = deque()
            async with self.party.stream(self.cfg.aggregator, UploadChunk.tag(t=t)) as stream:

                async def send_oldest() -> None:
                    out, secs = await pending.popleft()
                    t0 = time.thread_time()
                    message = UploadChunk(ciphers=wrap(out) if wrap is not None else out)
                    wire = message.to_wire()
                    timing.encrypt += secs + time.thread_time() - t0
                    await stream.send(wire)

                async for fn, args in jobs:
                    if len(pending) >= window:
                        await send_oldest()
                    pending.append(group.create_task(self.party.offload(fn, *args)))
                while pending:
                    await send_oldest()

    async def _send_square_sums(
        self,
        t: int,
        kind: type[PreStats | RoundStats],
        x: np.ndarray,
        layers: tuple[int, ...],
        timing: RoundTiming,
    ) -> float:
        """Encrypt and send Σx² per layer; returns the encryption's CPU seconds."""
        _, sk = self._keys()
        sums = pack_square_sums(self._stats_layout(), layer_square_sums(x, layers))
        batch = None
        if self.reserve is not None:
            batch = await self.reserve.take(
                "pre" if kind is PreStats else "stats", len(sums), timing
            )
        cv, secs = await self.party.offload(
            work.encrypt_plain, sk, sums, self.cfg.short_exponent, batch
        )
        await self.party.send(self.cfg.aggregator, kind.tag(t=t), kind(sums=cv).to_wire())
        return float(secs)

    async def _receive_alphas(
        self,
        t: int,
        kind: type[PreStatsSum | RoundStatsSum],
        layers: tuple[int, ...],
        timing: RoundTiming,
    ) -> np.ndarray:
        """Receive the summed statistics, decrypt them and derive each layer's α."""
        pk, sk = self._keys()
        obj = await self.party.recv(self.cfg.aggregator, kind.tag(t=t))
        packing = self._stats_layout()
        expect = Expect(pk, length=packing.n_plaintexts(len(layers)))
        sums = kind.from_wire(self.cfg.aggregator, obj, expect).sums
        ints, secs = await self.party.offload(work.decrypt_vector, sk, sums)
        timing.decrypt += secs
        m = len(self.clients)
        totals = [int(v) for v in packing.unpack(ints, len(layers), n_summands=m)]
        return daciq_alphas(totals, layers, m, self.cfg.bits)

    async def _receive_sum(
        self, t: int, n_ct: int, timing: RoundTiming, phe: bool = False
    ) -> list[int]:
        """Download my part of the aggregate, decrypt it and (shared) swap slices."""
        pk, sk = self._keys()
        decryptor = Decryptor(
            self.party, pk, sk, self.clients, self.cfg.chunk_size, self.cfg.aggregator
        )
        parts = download_slices(n_ct, len(self.clients), self.cfg.shared_decryption)
        lo, hi = parts[self.clients.index(self.name)]
        mine = await decryptor.decrypt(await decryptor.download(t, lo, hi, timing), timing, phe)
        if not self.cfg.shared_decryption or len(self.clients) == 1:
            return mine
        return await decryptor.swap_shares(t, mine, parts, timing)


async def client(party: Party, cfg: BatchCryptConfig, work_: Any) -> Any:
    """The client role.

    Args:
        party: this client's Party (named like ``client0``; the first client makes the keys).
        cfg: the federation's configuration.
        work_: a 1-D float array (one round; the role returns the decoded sum), or a
            :class:`RoundSource` (many rounds; the role returns ``source.result()``), or a
            zero-argument callable returning one of those (built inside the party's process,
            so a multi-process run does not pickle the data).

    Returns:
        The decoded sum for one array, or the source's result.

    Raises:
        ConfigError: a bad update; ProtocolError / KeyMismatchError: a peer misbehaved.
    """
    if callable(work_) and not isinstance(work_, RoundSource):
        work_ = work_()
    source: RoundSource = work_ if isinstance(work_, RoundSource) else OneShot(work_)
    session = ClientSession(party, cfg)
    await session.open()
    rounds = getattr(source, "rounds", None)  # known: no randomness after the last round
    if source.layer_sizes is not None and rounds != 0:  # round 0's, made while it trains
        session.prepare(source.layer_sizes)
    try:
        t = 0
        while (update := source.update(t)) is not None:
            more = rounds is None or t + 1 < rounds
            total = await session.aggregate(update, source.layer_sizes, prepare_next=more)
            source.receive(t, total, len(session.clients))
            t += 1
    except BaseException:
        if session.reserve is not None:
            session.reserve.discard()
        raise
    await session.close()
    result = source.result()
    if hasattr(source, "record_timings"):
        source.record_timings(session.timings)
    return result
