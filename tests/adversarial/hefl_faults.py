"""Fault injection for the adversarial tests: a role wrapper, no hooks in library code.

``faulty(party, role=..., fault=Fault(...))`` runs ``role`` with a proxy of its Party that
watches the messages the role sends and receives. When the fault's trigger fires (the n-th
``send``/``recv`` under a tag matching a regex, stream chunks included) it acts:

* ``kill``    SIGKILL this party's own process (only with ``processes=True``)
* ``stall``   sleep forever in the event loop (the transport stays alive: heartbeats go on)
* ``freeze``  block the whole process (``time.sleep``: no heartbeats, no reads)
* ``raise``   raise RuntimeError in the role
* ``tamper``  replace the object being sent by ``TAMPERS[arg](obj)``
* ``replay``  also send, under their original tags, the messages captured under ``arg``
  (a regex) earlier: a verbatim replay of an earlier round's message
* ``resend``  send the first message captured under ``arg`` instead of the current one
  (an earlier round's content under the current tag)

Everything here is module level and picklable, so the same wrapped roles run as coroutines and
as one process per party.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import signal
import time
from dataclasses import dataclass
from typing import Any

import msgpack

from hefl.codec import EXT_CIPHERS

#: Counters the tests bump (inputs tried, faults injected); conftest records them as each
#: test's user properties, where benchmarks/hardening.py reads them.
TALLY = {"inputs": 0, "faults": 0}


@dataclass(frozen=True)
class Fault:
    op: str  # "send" or "recv" (stream chunks count as sends / receives of their tag)
    tag: str  # regex, full match
    action: str
    nth: int = 1
    arg: str = ""


class FaultyParty:
    """A Party proxy: every attribute is the real party's except the messaging calls."""

    def __init__(self, party: Any, fault: Fault) -> None:
        self._party = party
        self._fault = fault
        self._seen = 0
        self._fired = False
        self._captured: list[tuple[str, str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._party, name)

    async def _hit(self, op: str, peer: str | None, tag: str, obj: Any = None) -> Any:
        f = self._fault
        if op == "send" and f.action in ("replay", "resend") and re.fullmatch(f.arg, tag):
            self._captured.append((peer, tag, obj))
        if self._fired or op != f.op or not re.fullmatch(f.tag, tag):
            return obj
        self._seen += 1
        if self._seen < f.nth:
            return obj
        self._fired = True
        if f.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if f.action == "stall":
            await asyncio.sleep(3600)
        if f.action == "freeze":
            time.sleep(3600)
        if f.action == "raise":
            raise RuntimeError(f"injected failure at {op} {tag!r}")
        if f.action == "tamper":
            return TAMPERS[f.arg](obj)
        if f.action == "replay":
            for old_peer, old_tag, old_obj in self._captured:
                if old_tag != tag and old_peer is not None:
                    await self._party.send(old_peer, old_tag, old_obj)
        if f.action == "resend":
            return self._captured[0][2]
        return obj

    async def send(self, peer: str, tag: str, obj: Any) -> None:
        obj = await self._hit("send", peer, tag, obj)
        await self._party.send(peer, tag, obj)

    async def broadcast(self, tag: str, obj: Any, peers: Any = None) -> None:
        targets = self._party.peers if peers is None else tuple(peers)
        for peer in targets:
            await self.send(peer, tag, obj)

    async def recv(self, peer: str, tag: str, **kw: Any) -> Any:
        obj = await self._party.recv(peer, tag, **kw)
        await self._hit("recv", peer, tag)
        return obj

    async def gather(self, tag: str, peers: Any = None, **kw: Any) -> dict[str, Any]:
        sources = self._party.peers if peers is None else tuple(peers)
        return {p: await self.recv(p, tag, **kw) for p in sources}

    def stream(self, peer: str, tag: str) -> _Sender:
        return _Sender(self, self._party.stream(peer, tag))

    def stream_from(self, peer: str, tag: str) -> _Receiver:
        return _Receiver(self, self._party.stream_from(peer, tag))


class _Sender:
    def __init__(self, owner: FaultyParty, inner: Any) -> None:
        self._owner, self._inner = owner, inner

    async def __aenter__(self) -> _Sender:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._inner.__aexit__(*exc)

    async def send(self, chunk: Any) -> None:
        chunk = await self._owner._hit("send", None, self._inner.tag, chunk)
        await self._inner.send(chunk)


class _Receiver:
    def __init__(self, owner: FaultyParty, inner: Any) -> None:
        self._owner, self._inner = owner, inner

    def __aiter__(self) -> _Receiver:
        return self

    async def __anext__(self) -> Any:
        chunk = await self._inner.__anext__()
        await self._owner._hit("recv", None, self._inner.tag)
        return chunk


async def faulty(party: Any, *, role: Any, fault: Fault) -> Any:
    """The wrapped role: ``functools.partial(faulty, role=inner, fault=Fault(...))``."""
    return await role(FaultyParty(party, fault))


def wrap(role: Any, fault: Fault | None) -> Any:
    return role if fault is None else functools.partial(faulty, role=role, fault=fault)


# ---------------------------------------------------------------------------------------------
# tampering: replace every CipherVector in a message by raw ciphertexts that hefl must refuse


def _map_ciphers(obj: Any, fn: Any) -> Any:
    from hefl.crypto import CipherVector

    if isinstance(obj, CipherVector):
        return fn(obj)
    if isinstance(obj, list):
        return [_map_ciphers(x, fn) for x in obj]
    if isinstance(obj, tuple):
        return tuple(_map_ciphers(x, fn) for x in obj)
    if isinstance(obj, dict):
        return {k: _map_ciphers(v, fn) for k, v in obj.items()}
    return obj


def raw_ciphers(cv: Any, value_of: Any) -> msgpack.ExtType:
    """The wire form of ``cv`` with every ciphertext replaced by ``value_of(pk)`` (unchecked)."""
    pk = cv.public_key
    width = pk.ciphertext_bytes
    c = int(value_of(pk))
    raw = c.to_bytes(width, "big") * len(cv)
    n = int(pk.n)
    n_bytes = n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True)
    return msgpack.ExtType(EXT_CIPHERS, msgpack.packb([n_bytes, len(cv), raw], use_bin_type=True))


@functools.cache
def _other_keypair(bits: int) -> Any:
    from hefl.crypto import generate_keypair

    return generate_keypair(bits, allow_insecure=True)


def _under_other_key(cv: Any) -> Any:
    pk, _ = _other_keypair(cv.public_key.n_bits)
    return pk.encrypt([1] * len(cv))


TAMPERS = {
    "zero": lambda obj: _map_ciphers(obj, lambda cv: raw_ciphers(cv, lambda pk: 0)),
    "n_squared": lambda obj: _map_ciphers(obj, lambda cv: raw_ciphers(cv, lambda pk: pk.nsquare)),
    "not_invertible": lambda obj: _map_ciphers(obj, lambda cv: raw_ciphers(cv, lambda pk: pk.n)),
    "other_key": lambda obj: _map_ciphers(obj, _under_other_key),
}


# ---------------------------------------------------------------------------------------------
# leftovers: child processes and sockets


def child_pids(root: int | None = None) -> set[int]:
    """Every live descendant of ``root`` (default: this process), from /proc (no psutil)."""
    root = os.getpid() if root is None else root
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] == b"Z":  # a zombie is dead; it only waits to be reaped
            continue
        parents[int(entry)] = int(fields[1])
    out: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - out
        out |= frontier
    return {pid for pid in out if not _is_resource_tracker(pid)}


def _is_resource_tracker(pid: int) -> bool:
    """multiprocessing's resource tracker: started by the first spawn, lives on by design."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"resource_tracker" in fh.read()
    except OSError:
        return False


def open_sockets() -> int:
    """Sockets this process holds open (/proc/self/fd)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


# ---------------------------------------------------------------------------------------------
# the real protocols, small enough for tests (module level: picklable for processes=True)


class Rounds:
    """A BatchCrypt RoundSource: the same update for ``rounds`` rounds; returns the sums."""

    def __init__(self, vector: Any, rounds: int) -> None:
        self.vector, self.rounds, self.layer_sizes = vector, rounds, None
        self.totals: list[Any] = []

    def update(self, t: int) -> Any:
        return self.vector if t < self.rounds else None

    def receive(self, t: int, total: Any, n_clients: int) -> None:
        self.totals.append(total)

    def result(self) -> Any:
        return self.totals


def client_work(index: int, n: int, rounds: int) -> Rounds:
    import numpy as np

    return Rounds(np.random.default_rng(index).uniform(-0.5, 0.5, n), rounds)


def batchcrypt_roles(
    k: int = 2, n: int = 60, rounds: int = 1, faults: dict | None = None, **cfg_kw: Any
) -> dict[str, Any]:
    from hefl.protocols.batchcrypt import BatchCryptConfig
    from hefl.protocols.batchcrypt.roles import aggregator, client

    kw = {"key_bits": 512, "allow_insecure": True, "chunk_size": 8, "n_clients": k}
    cfg = BatchCryptConfig(**{**kw, **cfg_kw})
    faults = faults or {}
    roles = {"aggregator": wrap(functools.partial(aggregator, cfg=cfg), faults.get("aggregator"))}
    for i in range(k):
        name = f"client{i}"
        work = functools.partial(client_work, i, n, rounds)
        roles[name] = wrap(functools.partial(client, cfg=cfg, work_=work), faults.get(name))
    return roles


def batchcrypt_expected(k: int = 2, n: int = 60) -> Any:
    import numpy as np

    return sum(np.random.default_rng(i).uniform(-0.5, 0.5, n) for i in range(k))


def vf2boost_data(n_rows: int = 240, seed: int = 0) -> tuple[Any, Any, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, 4))
    y = (X[:, 0] + X[:, 2] + 0.3 * rng.normal(size=n_rows) > 0).astype(np.float64)
    return X[:, :2], X[:, 2:], y


@functools.cache
def small_keypair(bits: int = 512) -> Any:
    from hefl.crypto import generate_keypair

    return generate_keypair(bits, allow_insecure=True)


def vf2boost_roles(faults: dict | None = None, keypair: Any = None, **cfg_kw: Any):
    from hefl.protocols.vf2boost.active import active_party
    from hefl.protocols.vf2boost.config import VF2BoostConfig
    from hefl.protocols.vf2boost.passive import passive_party

    kw = {"n_estimators": 2, "max_depth": 2, "key_bits": 512, "allow_insecure": True,
          "chunk_size": 64}  # fmt: skip
    cfg = VF2BoostConfig(**{**kw, **cfg_kw})
    Xa, Xp, y = vf2boost_data()
    faults = faults or {}
    active = functools.partial(active_party, X=Xa, y=y, cfg=cfg, passives=["passive1"],
                               keypair=keypair)  # fmt: skip
    return {
        "active": wrap(active, faults.get("active")),
        "passive1": wrap(functools.partial(passive_party, X=Xp, cfg=cfg), faults.get("passive1")),
    }
