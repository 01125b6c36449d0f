"""The BatchCrypt roles: ``aggregator(party, cfg)`` and ``client(party, cfg, work)``.

One round (mode ``"batchcrypt"``), with k clients::

    client_i  --hdr (length, dtype, layers, key id)---------------------------->  aggregator
    client_i  --[first round, dACIQ] Enc(per-layer Σx²)------------------------>  aggregator
    client_i  <-[first round, dACIQ] Enc(Σ_i Σx²) ------------------------------  aggregator
    client_i  --stream of chunks of Enc(packed quantized lanes)---------------->  aggregator
    client_i  --Enc(per-layer Σx²) for the next round's α---------------------->  aggregator
                                   (the aggregator multiplies chunks as they arrive)
    client_i  <-stream of the aggregate (all of it, or only slice i when shared)-  aggregator
    client_i  --decrypted slice i (packed plaintexts)--------------------------->  client_j
    every client unpacks the lane sums and dequantizes them per layer

The keys: the first client generates the Paillier keypair, sends the private key to the other
clients over their direct channels and only the public key to the aggregator. See
``docs/explanation/batchcrypt.md`` for what each party learns.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from hefl import cpu_count
from hefl.errors import ConfigError, KeyMismatchError, ProtocolError
from hefl.protocols.batchcrypt import work
from hefl.protocols.batchcrypt.aciq import daciq_alpha, sigma_from_sums
from hefl.protocols.batchcrypt.config import AGGREGATOR, BatchCryptConfig
from hefl.protocols.batchcrypt.quantize import dequantize, new_rng, quantize

STATS_FRAC_BITS = 40  # fixed-point fraction bits of the encrypted per-layer sums of squares
_CLIENT_RE = re.compile(r"^(.*?)(\d+)$")


# --------------------------------------------------------------------------------------------
# Who is who
# --------------------------------------------------------------------------------------------
def _order_key(name: str) -> tuple[str, int, str]:
    m = _CLIENT_RE.match(name)
    return (m.group(1), int(m.group(2)), name) if m else (name, -1, name)


def federation_clients(party: Any, cfg: BatchCryptConfig) -> tuple[str, ...]:
    """The clients of the federation ``party`` belongs to, in a fixed order every party agrees on.

    Raises:
        ConfigError: there is no aggregator, or more clients than ``cfg.n_clients`` (the lanes
            are planned for that many summands, so more would overflow them).
    """
    names = {party.name, *party.peers}
    if AGGREGATOR not in names:
        raise ConfigError(f"a BatchCrypt federation needs a party named {AGGREGATOR!r}")
    clients = tuple(sorted((n for n in names if n != AGGREGATOR), key=_order_key))
    if not clients:
        raise ConfigError("a BatchCrypt federation needs at least one client")
    if len(clients) > cfg.n_clients:
        raise ConfigError(
            f"the federation has {len(clients)} clients but the configuration plans for "
            f"n_clients={cfg.n_clients}; raise n_clients (the lanes get more guard bits)"
        )
    return clients


def _slices(total: int, parts: int) -> list[tuple[int, int]]:
    """Split range(total) into ``parts`` contiguous nearly equal [lo, hi) pieces."""
    bounds = [total * i // parts for i in range(parts + 1)]
    return list(itertools.pairwise(bounds))


# --------------------------------------------------------------------------------------------
# Round bookkeeping
# --------------------------------------------------------------------------------------------
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _io_bytes(party: Any) -> tuple[int, int]:
    stats = party.statistics()
    return int(stats.get("bytes_sent", 0)), int(stats.get("bytes_received", 0))


@dataclass
class _Header:
    round: int
    n: int
    dtype: str
    layers: tuple[int, ...]
    mode: str
    key: str
    pre: bool
    done: bool

    @classmethod
    def parse(cls, sender: str, obj: Any) -> _Header:
        if not isinstance(obj, dict):
            raise ProtocolError(f"client {sender!r} sent a malformed round header: {type(obj)}")
        try:
            return cls(
                round=int(obj["round"]),
                n=int(obj["n"]),
                dtype=str(obj["dtype"]),
                layers=tuple(int(v) for v in obj["layers"]),
                mode=str(obj["mode"]),
                key=str(obj["key"]),
                pre=bool(obj["pre"]),
                done=bool(obj["done"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"client {sender!r} sent a malformed round header: {exc}") from exc


def _odd_ones_out(values: dict[str, Any]) -> tuple[Any, list[str]]:
    """The most common value and the clients that disagree with it."""
    counts: dict[Any, int] = {}
    for v in values.values():
        counts[v] = counts.get(v, 0) + 1
    common = max(counts, key=lambda v: counts[v])
    return common, [c for c, v in values.items() if v != common]


# --------------------------------------------------------------------------------------------
# What a client does each round
# --------------------------------------------------------------------------------------------
@runtime_checkable
class RoundSource(Protocol):
    """What a client role drives: where each round's update comes from and where the sum goes.

    ``update(t)`` returns this client's flat float update for round t (None ends the session);
    ``receive(t, total, n_clients)`` gets the decoded sum over all clients; ``result()`` is the
    role's return value.
    """

    layer_sizes: Sequence[int] | None

    def update(self, t: int) -> np.ndarray | None: ...

    def receive(self, t: int, total: np.ndarray, n_clients: int) -> None: ...

    def result(self) -> Any: ...


class OneShot:
    """A single-round source: aggregate one vector and return the decoded sum."""

    def __init__(self, vector: np.ndarray, layer_sizes: Sequence[int] | None = None) -> None:
        self.vector = vector
        self.layer_sizes = layer_sizes
        self.total: np.ndarray | None = None

    def update(self, t: int) -> np.ndarray | None:
        return self.vector if t == 0 else None

    def receive(self, t: int, total: np.ndarray, n_clients: int) -> None:
        self.total = total

    def result(self) -> np.ndarray | None:
        return self.total


class ClientSession:
    """One client's side of a BatchCrypt federation (keys, then one :meth:`aggregate` per round).

    Args:
        party: this client's Party.
        cfg: the federation's configuration.
    """

    def __init__(self, party: Any, cfg: BatchCryptConfig) -> None:
        self.party = party
        self.cfg = cfg
        self.clients = federation_clients(party, cfg)
        if party.name not in self.clients:
            raise ConfigError(f"{party.name!r} is not a client of this federation")
        self.index = self.clients.index(party.name)
        self.keyholder = self.clients[0]
        self.pk: Any = None
        self.sk: Any = None
        self.layout: Any = None
        self.alphas: np.ndarray | None = None
        self.next_alphas: np.ndarray | None = None
        self.timings: list[RoundTiming] = []
        self.rng = new_rng()
        self._round = 0
        self._io_mark = (0, 0)

    @property
    def name(self) -> str:
        return self.party.name

    # -- keys --------------------------------------------------------------------------------
    async def open(self) -> None:
        """Set up keys: the first client generates them and hands them out.

        The private key goes to the other clients over their direct channels; the aggregator
        receives only the public key.
        """
        self._io_mark = _io_bytes(self.party)
        if not self.cfg.encrypted:
            return
        from hefl.crypto import PrivateKey, generate_keypair

        party = self.party
        if self.name == self.keyholder:
            with party.span("keygen", bits=self.cfg.key_bits):
                pk, sk = await party.offload(
                    functools.partial(generate_keypair, allow_insecure=self.cfg.allow_insecure),
                    self.cfg.key_bits,
                )
            secret = sk.to_json()
            for peer in self.clients[1:]:
                await party.send(peer, "bc/key", secret)
            await party.send(AGGREGATOR, "bc/pk", pk)
        else:
            secret = await party.recv(self.keyholder, "bc/key")
            if not isinstance(secret, str):
                raise ProtocolError(f"client {self.keyholder!r} sent a malformed private key")
            sk = PrivateKey.from_json(secret)
            pk = sk.public_key
        if pk.n_bits != self.cfg.key_bits:
            raise ProtocolError(
                f"client {self.keyholder!r} handed out a {pk.n_bits}-bit key; "
                f"the configuration asks for {self.cfg.key_bits} bits"
            )
        self.pk, self.sk = pk, sk
        self._io_mark = _io_bytes(party)  # key set-up is not part of round 0
        if self.cfg.mode == "batchcrypt":
            from hefl.crypto import plan_slots

            self.layout = plan_slots(pk, self.cfg.bits, self.cfg.n_clients, layout=self.cfg.layout)

    async def close(self) -> None:
        """Tell the aggregator this client has no more rounds."""
        await self.party.send(AGGREGATOR, f"bc/{self._round}/hdr", {"done": True, **_EMPTY_HDR})

    # -- one round -------------------------------------------------------------------------
    async def aggregate(
        self, update: np.ndarray, layer_sizes: Sequence[int] | None = None
    ) -> np.ndarray:
        """Securely sum ``update`` with the other clients' updates of this round.

        Args:
            update: this client's flat float32/float64 vector (same length and dtype for all).
            layer_sizes: lengths of the layers ``update`` concatenates (each gets its own α);
                one layer by default.

        Returns:
            The decoded sum over all clients (float64), as every client sees it.

        Raises:
            ConfigError: NaN/inf values, a non-float or non-1-D update, bad layer sizes.
        """
        party, cfg, t = self.party, self.cfg, self._round
        x = np.asarray(update)
        if x.ndim != 1 or x.dtype.kind != "f":
            raise ConfigError(
                f"client {self.name!r}: an update must be a 1-D float array, got "
                f"shape {x.shape} dtype {x.dtype}"
            )
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            raise ConfigError(
                f"client {self.name!r}: the update of round {t} has {bad} NaN or infinite "
                "value(s); refusing to aggregate it"
            )
        if len(x) == 0:
            raise ConfigError(f"client {self.name!r}: an update must hold at least one value")
        layers = tuple(int(v) for v in (layer_sizes or (len(x),)))
        if sum(layers) != len(x) or any(v < 0 for v in layers):
            raise ConfigError(
                f"client {self.name!r}: layer sizes {layers} do not add up to {len(x)} values"
            )
        start = time.perf_counter()
        sent0, recv0 = self._io_mark
        timing = RoundTiming(round=t)
        need_pre = cfg.mode == "batchcrypt" and cfg.clipping == "daciq" and self.alphas is None
        header = {
            "round": t,
            "n": len(x),
            "dtype": x.dtype.str,
            "layers": list(layers),
            "mode": cfg.mode,
            "key": self.pk.key_id.hex() if self.pk is not None else "",
            "pre": need_pre,
            "done": False,
        }
        await party.send(AGGREGATOR, f"bc/{t}/hdr", header)
        if cfg.mode == "plain":
            total = await self._plain_round(t, x)
        elif cfg.mode == "phe":
            total = await self._phe_round(t, x, timing)
        else:
            total = await self._batchcrypt_round(t, x, layers, need_pre, timing)
        timing.wall = time.perf_counter() - start
        # Byte counters are diffed between round ends: a message that arrives early (buffered
        # before this round started) still counts for the round it belongs to.
        self._io_mark = _io_bytes(party)
        timing.bytes_sent = self._io_mark[0] - sent0
        timing.bytes_received = self._io_mark[1] - recv0
        self.timings.append(timing)
        self._round += 1
        # every message of round t has been received: a later one (replayed, duplicated) fails
        # the federation naming its sender instead of waiting unread in a buffer
        party.retire(f"bc/{t}")
        return total

    async def _plain_round(self, t: int, x: np.ndarray) -> np.ndarray:
        await self.party.send(AGGREGATOR, f"bc/{t}/plain", x)
        total = await self.party.recv(AGGREGATOR, f"bc/{t}/plain_sum")
        return np.asarray(total, dtype=np.float64)

    # batchcrypt ----------------------------------------------------------------------------
    def _layer_stats(self, x: np.ndarray, layers: tuple[int, ...]) -> list[int]:
        bounds = np.cumsum((0, *layers))
        ss = [float(np.dot(x[a:b], x[a:b])) for a, b in itertools.pairwise(bounds)]
        return [round(v * 2**STATS_FRAC_BITS) for v in ss]

    async def _exchange_stats(self, t: int, tag: str, x: np.ndarray, layers: tuple[int, ...]):
        cv, secs = await self.party.offload(
            work.encrypt_plain, self.sk, self._layer_stats(x, layers), self.cfg.short_exponent
        )
        await self.party.send(AGGREGATOR, f"bc/{t}/{tag}", cv)
        return secs

    def _alphas_from(self, sums: list[int], layers: tuple[int, ...], m: int) -> np.ndarray:
        ss = np.array([v / 2**STATS_FRAC_BITS for v in sums])
        sigma = sigma_from_sums(ss, np.array(layers) * m)
        return np.array([daciq_alpha(float(s), self.cfg.bits) for s in sigma])

    async def _recv_stats_sum(self, t: int, tag: str) -> list[int]:
        cv = await self.party.recv(AGGREGATOR, f"bc/{t}/{tag}")
        self._check_cv(cv, AGGREGATOR, None)
        ints, _ = work.decrypt_vector(self.sk, cv)
        return ints

    def _check_cv(self, cv: Any, sender: str, length: int | None) -> None:
        from hefl.crypto import CipherVector

        if not isinstance(cv, CipherVector):
            raise ProtocolError(f"{sender!r} sent {type(cv).__name__} where ciphertexts belong")
        if cv.public_key != self.pk:
            raise KeyMismatchError(f"{sender!r} sent ciphertexts under a different key")
        if length is not None and len(cv) != length:
            raise ProtocolError(f"{sender!r} sent {len(cv)} ciphertexts, expected {length}")

    async def _batchcrypt_round(
        self, t: int, x: np.ndarray, layers: tuple[int, ...], need_pre: bool, timing: RoundTiming
    ) -> np.ndarray:
        party, cfg = self.party, self.cfg
        m = len(self.clients)
        daciq = cfg.clipping == "daciq"
        if need_pre:  # the one extra exchange: an encrypted aggregate of Σx² per layer
            timing.encrypt += await self._exchange_stats(t, "pre", x, layers)
            self.alphas = self._alphas_from(await self._recv_stats_sum(t, "pre_sum"), layers, m)
        alphas = self.alphas if daciq else np.full(len(layers), float(cfg.clipping))
        assert alphas is not None
        bounds = np.cumsum((0, *layers))
        t0 = time.thread_time()
        q = np.concatenate(
            [
                quantize(x[a:b], float(al), cfg.bits, self.rng)
                for a, b, al in zip(bounds[:-1], bounds[1:], alphas, strict=True)
            ]
            or [np.zeros(0, dtype=np.int64)]
        )
        timing.encrypt += time.thread_time() - t0
        # Stream chunks as soon as each is encrypted; the loop keeps sending meanwhile.
        per_chunk = cfg.chunk_size * self.layout.slots_per_plaintext
        jobs = [
            asyncio.ensure_future(
                party.offload(
                    work.encrypt_packed,
                    self.sk,
                    self.layout,
                    q[i : i + per_chunk],
                    cfg.short_exponent,
                )
            )
            for i in range(0, len(q), per_chunk)
        ]
        try:
            async with party.stream(AGGREGATOR, f"bc/{t}/up") as s:
                for job in jobs:
                    cv, secs = await job
                    timing.encrypt += secs
                    await s.send(cv)
        finally:
            for job in jobs:
                job.cancel()
        if daciq:  # σ for the next round, from this round's aggregate statistics
            timing.encrypt += await self._exchange_stats(t, "stats", x, layers)
        n_ct = -(-len(q) // self.layout.slots_per_plaintext)
        plaintexts = await self._receive_and_decrypt(t, n_ct, timing)
        t0 = time.thread_time()
        lanes = self.layout.unpack(plaintexts, len(q), n_summands=m)
        total = np.concatenate(
            [
                dequantize(np.asarray(lanes[a:b]), float(al), cfg.bits)
                for a, b, al in zip(bounds[:-1], bounds[1:], alphas, strict=True)
            ]
            or [np.zeros(0)]
        )
        timing.decode += time.thread_time() - t0
        if daciq:
            self.alphas = self._alphas_from(await self._recv_stats_sum(t, "stats_sum"), layers, m)
        return total

    # per-value phe baseline ----------------------------------------------------------------
    async def _phe_round(self, t: int, x: np.ndarray, timing: RoundTiming) -> np.ndarray:
        from hefl.crypto import CipherVector

        party, cfg = self.party, self.cfg
        scale = 2**cfg.phe_frac_bits
        ints = [int(v) for v in np.round(x.astype(np.float64) * scale).astype(object)]
        phe_pk = self.pk.to_phe()
        jobs = [
            asyncio.ensure_future(
                party.offload(work.phe_encrypt, phe_pk, ints[i : i + cfg.chunk_size])
            )
            for i in range(0, len(ints), cfg.chunk_size)
        ]
        try:
            async with party.stream(AGGREGATOR, f"bc/{t}/up") as s:
                for job in jobs:
                    raw, secs = await job
                    timing.encrypt += secs
                    await s.send(CipherVector(self.pk, raw))
        finally:
            for job in jobs:
                job.cancel()
        plaintexts = await self._receive_and_decrypt(t, len(ints), timing, phe=True)
        t0 = time.thread_time()
        total = np.array([v / scale for v in plaintexts], dtype=np.float64)
        timing.decode += time.thread_time() - t0
        return total

    # download, (shared) decryption ---------------------------------------------------------
    async def _receive_and_decrypt(
        self, t: int, n_ct: int, timing: RoundTiming, phe: bool = False
    ) -> list[int]:
        from hefl.crypto import CipherVector

        party, cfg = self.party, self.cfg
        shared = cfg.shared_decryption and len(self.clients) > 1
        slices = _slices(n_ct, len(self.clients)) if shared else [(0, n_ct)] * len(self.clients)
        lo, hi = slices[self.index]
        chunks = []
        async for chunk in party.stream_from(AGGREGATOR, f"bc/{t}/down"):
            self._check_cv(chunk, AGGREGATOR, None)
            chunks.append(chunk)
        mine = CipherVector.concat(chunks) if chunks else None
        got = len(mine) if mine is not None else 0
        if got != hi - lo:
            raise ProtocolError(
                f"the aggregator sent {got} aggregate ciphertexts for round {t}, expected {hi - lo}"
            )
        plain = await self._decrypt_parallel(mine, timing, phe)
        if not shared:
            return plain
        # Shared decryption: my decrypted slice goes straight to every other client.
        t0 = time.thread_time()
        width = (self.pk.n_bits + 7) // 8
        n = int(self.pk.n)
        blob = b"".join((v % n).to_bytes(width, "big") for v in plain)
        timing.decode += time.thread_time() - t0
        others = [c for c in self.clients if c != self.name]
        await party.broadcast(f"bc/{t}/share", blob, peers=others)
        shares = await party.gather(f"bc/{t}/share", peers=others)
        t0 = time.thread_time()  # waiting for the peers' shares is transfer, not decode
        out: list[int] = []
        half = int(self.pk.max_int)
        for j, (a, b) in enumerate(slices):
            peer = self.clients[j]
            if peer == self.name:
                out.extend(plain)
                continue
            data = shares[peer]
            if not isinstance(data, bytes | bytearray) or len(data) != (b - a) * width:
                raise ProtocolError(
                    f"client {peer!r} sent a malformed decrypted share for round {t} "
                    f"(expected {(b - a) * width} bytes)"
                )
            for i in range(b - a):
                v = int.from_bytes(data[i * width : (i + 1) * width], "big")
                if v >= n:
                    raise ProtocolError(f"client {peer!r} sent a share value outside [0, n)")
                out.append(v - n if v > half else v)
        timing.decode += time.thread_time() - t0
        return out

    async def _decrypt_parallel(self, cv: Any, timing: RoundTiming, phe: bool) -> list[int]:
        """Decrypt on all cores: split the ciphertexts into one piece per worker."""
        if cv is None or len(cv) == 0:
            return []

        pieces = _slices(len(cv), max(1, min(cpu_count(), len(cv))))
        if phe:
            phe_pk, phe_sk = self.pk.to_phe(), self.sk.to_phe()
            raw = [int(c) for c in cv.ciphertexts]
            jobs = [
                self.party.offload(work.phe_decrypt, phe_sk, phe_pk, raw[a:b]) for a, b in pieces
            ]
        else:
            jobs = [self.party.offload(work.decrypt_vector, self.sk, cv[a:b]) for a, b in pieces]
        out: list[int] = []
        for ints, secs in await asyncio.gather(*jobs):
            out.extend(ints)
            timing.decrypt += secs
        return out


_EMPTY_HDR = {"round": -1, "n": 0, "dtype": "", "layers": [], "mode": "", "key": "", "pre": False}


async def client(party: Any, cfg: BatchCryptConfig, work_: Any) -> Any:
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
    """
    if callable(work_) and not isinstance(work_, RoundSource):
        work_ = work_()
    source: RoundSource = work_ if isinstance(work_, RoundSource) else OneShot(work_)
    session = ClientSession(party, cfg)
    await session.open()
    t = 0
    while True:
        update = source.update(t)
        if update is None:
            break
        total = await session.aggregate(update, source.layer_sizes)
        source.receive(t, total, len(session.clients))
        t += 1
    await session.close()
    result = source.result()
    if hasattr(source, "record_timings"):
        source.record_timings(session.timings)
    return result


# --------------------------------------------------------------------------------------------
# The aggregator
# --------------------------------------------------------------------------------------------
@dataclass
class AggregatorReport:
    """What the aggregator role returns: its per-round timings and what it was ever sent."""

    rounds: int
    timings: list[RoundTiming] = field(default_factory=list)
    received_types: list[str] = field(default_factory=list)


async def aggregator(party: Any, cfg: BatchCryptConfig) -> AggregatorReport:
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
    from hefl.crypto import CipherVector, PublicKey

    clients = federation_clients(party, cfg)
    report = AggregatorReport(rounds=0)
    seen = report.received_types

    def note(obj: Any) -> Any:
        name = type(obj).__name__
        if name not in seen:
            seen.append(name)
        return obj

    pk: PublicKey | None = None
    io_mark = _io_bytes(party)
    if cfg.encrypted:
        pk = note(await party.recv(clients[0], "bc/pk"))
        if not isinstance(pk, PublicKey):
            raise ProtocolError(
                f"client {clients[0]!r} sent {type(pk).__name__} where the public key belongs"
            )
        if pk.n_bits != cfg.key_bits:
            raise ProtocolError(
                f"client {clients[0]!r} sent a {pk.n_bits}-bit public key; "
                f"the configuration asks for {cfg.key_bits} bits"
            )
        layout = None
        if cfg.mode == "batchcrypt":
            from hefl.crypto import plan_slots

            layout = plan_slots(pk, cfg.bits, cfg.n_clients, layout=cfg.layout)

    def check_cv(cv: Any, sender: str, length: int) -> None:
        note(cv)
        if not isinstance(cv, CipherVector):
            raise ProtocolError(
                f"client {sender!r} sent {type(cv).__name__} where ciphertexts belong"
            )
        if pk is None:  # unreachable: only the encrypted modes exchange ciphertexts
            raise ProtocolError(f"client {sender!r} sent ciphertexts in mode {cfg.mode!r}")
        if cv.public_key != pk:
            raise KeyMismatchError(
                f"client {sender!r} sent ciphertexts under key {cv.public_key.key_id.hex()}, "
                f"not the federation's key {pk.key_id.hex()}"
            )
        if len(cv) != length:
            raise ProtocolError(f"client {sender!r} sent {len(cv)} ciphertexts, expected {length}")

    t = 0
    while True:
        raw = await party.gather(f"bc/{t}/hdr", peers=list(clients))
        headers = {c: _Header.parse(c, note(raw[c])) for c in clients}
        done = [c for c, h in headers.items() if h.done]
        if done:
            if len(done) != len(clients):
                live = [c for c in clients if c not in done]
                raise ProtocolError(
                    f"client(s) {done} ended the session while {live} started round {t}"
                )
            break
        start = time.perf_counter()
        timing = RoundTiming(round=t)
        _check_headers(headers, t, cfg, pk)
        h = headers[clients[0]]
        if cfg.mode == "plain":
            arrays = await party.gather(f"bc/{t}/plain", peers=list(clients))
            t0 = time.thread_time()
            total = np.zeros(h.n, dtype=np.float64)
            for c in clients:
                a = note(arrays[c])
                if not isinstance(a, np.ndarray) or a.shape != (h.n,) or a.dtype.str != h.dtype:
                    raise ProtocolError(f"client {c!r} sent a malformed plaintext update")
                if not np.all(np.isfinite(a)):
                    raise ProtocolError(f"client {c!r} sent NaN or infinite values")
                total += a
            timing.aggregate += time.thread_time() - t0
            await party.broadcast(f"bc/{t}/plain_sum", total, peers=list(clients))
        else:
            n_ct = -(-h.n // layout.slots_per_plaintext) if layout is not None else h.n
            daciq = cfg.mode == "batchcrypt" and cfg.clipping == "daciq"
            if h.pre:
                pre = await party.gather(f"bc/{t}/pre", peers=list(clients))
                for c in clients:
                    check_cv(pre[c], c, len(h.layers))
                await party.broadcast(
                    f"bc/{t}/pre_sum", _sum([pre[c] for c in clients]), peers=list(clients)
                )
            total = await _sum_streams(party, t, clients, n_ct, cfg.chunk_size, check_cv, timing)
            stats_sum = None
            if daciq:
                stats = await party.gather(f"bc/{t}/stats", peers=list(clients))
                for c in clients:
                    check_cv(stats[c], c, len(h.layers))
                stats_sum = _sum([stats[c] for c in clients])
            shared = cfg.shared_decryption and len(clients) > 1
            slices = _slices(n_ct, len(clients)) if shared else [(0, n_ct)] * len(clients)
            await asyncio.gather(
                *(
                    _send_down(party, c, f"bc/{t}/down", total, a, b, cfg.chunk_size)
                    for c, (a, b) in zip(clients, slices, strict=True)
                )
            )
            if stats_sum is not None:
                await party.broadcast(f"bc/{t}/stats_sum", stats_sum, peers=list(clients))
        timing.wall = time.perf_counter() - start
        sent1, recv1 = _io_bytes(party)
        timing.bytes_sent, timing.bytes_received = sent1 - io_mark[0], recv1 - io_mark[1]
        io_mark = (sent1, recv1)
        report.timings.append(timing)
        party.retire(f"bc/{t}")  # a replayed or duplicated round-t message is refused from now
        t += 1
    report.rounds = t
    return report


def _sum(vectors: list[Any]) -> Any:
    acc = vectors[0]
    for v in vectors[1:]:
        acc = acc + v
    return acc


def _check_headers(headers: dict[str, _Header], t: int, cfg: BatchCryptConfig, pk: Any) -> None:
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
    for what, get in (
        ("vector length", lambda h: h.n),
        ("dtype", lambda h: h.dtype),
        ("layer sizes", lambda h: h.layers),
        ("dACIQ start-up exchange", lambda h: h.pre),
    ):
        common, odd = _odd_ones_out({c: get(h) for c, h in headers.items()})
        if odd:
            detail = ", ".join(f"{c!r}: {get(headers[c])}" for c in odd)
            raise ProtocolError(
                f"round {t}: client(s) disagree on the {what} (most clients: {common}; {detail})"
            )


async def _sum_streams(
    party: Any,
    t: int,
    clients: Sequence[str],
    n_ct: int,
    chunk_size: int,
    check_cv: Callable[[Any, str, int], None],
    timing: RoundTiming,
) -> Any:
    """Receive every client's chunk stream and multiply chunks into the running sum as they land.

    Chunk i of every client covers the same ciphertext positions, so the sum of position i can
    start as soon as two clients' chunk i are in, long before the last client finishes.
    """
    n_chunks = -(-n_ct // chunk_size)
    acc: list[Any] = [None] * n_chunks
    origin = time.perf_counter()

    async def consume(c: str) -> None:
        i = 0
        async for chunk in party.stream_from(c, f"bc/{t}/up"):
            if i >= n_chunks:
                raise ProtocolError(
                    f"client {c!r} sent more than the {n_chunks} chunks of round {t}"
                )
            expected = min(chunk_size, n_ct - i * chunk_size)
            check_cv(chunk, c, expected)
            t0, c0 = time.perf_counter(), time.thread_time()
            if acc[i] is None:
                acc[i] = chunk
            else:
                acc[i] = acc[i] + chunk
                if not timing.first_sum_at:
                    timing.first_sum_at = t0 - origin
            timing.aggregate += time.thread_time() - c0
            timing.last_chunk_at = max(timing.last_chunk_at, time.perf_counter() - origin)
            i += 1
        if i != n_chunks:
            raise ProtocolError(
                f"client {c!r} dropped out of round {t}: its stream ended after {i} of "
                f"{n_chunks} chunks"
            )

    await asyncio.gather(*(consume(c) for c in clients))
    from hefl.crypto import CipherVector

    return CipherVector.concat(acc) if acc else None


async def _send_down(
    party: Any, peer: str, tag: str, total: Any, lo: int, hi: int, chunk_size: int
) -> None:
    async with party.stream(peer, tag) as s:
        for a in range(lo, hi, chunk_size):
            await s.send(total[a : min(hi, a + chunk_size)])


def chunk_count(n_values: int, slots: int, chunk_size: int) -> int:
    """Number of streamed chunks for ``n_values`` values (helper for callers and tests)."""
    return math.ceil(math.ceil(n_values / slots) / chunk_size)
