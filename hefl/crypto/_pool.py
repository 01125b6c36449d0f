"""`ObfuscatorPool`: Paillier randomness made in the background, used once each.

The expensive part of an encryption is the obfuscator r (an n-th residue). It does not depend
on the message, so it can be made ahead of time while a party would otherwise idle. The pool
keeps a buffer of fresh obfuscators that a ``concurrent.futures`` process pool refills in the
background; ``pk.encrypt(ints, pool=pool)`` then costs only (1 + m·n)·r mod n² per value on the
critical path.

Every obfuscator is handed out exactly once (``take`` removes it from the buffer): reusing r
for two messages would reveal their difference. Workers draw their own randomness from the OS
CSPRNG (each process draws its own DJN base), and return obfuscators as fixed-width bytes, so
nothing but local worker results is ever unpickled.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import sys
import threading
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any

from gmpy2 import mpz

from hefl.crypto._obfuscation import CrtObfuscator, check_method, public_obfuscators
from hefl.crypto._orphans import check_main_guarded, watch_owner
from hefl.crypto._types import KeyFactors, KeyModulus
from hefl.errors import ConfigError, CryptoError


def _make_chunk(n: int, count: int, method: str, factors: tuple[int, int] | None) -> bytes:
    """Worker: ``count`` fresh obfuscators mod n², as fixed-width big-endian bytes."""
    n_m = mpz(n)
    if factors is not None:
        rs = CrtObfuscator(mpz(factors[0]), mpz(factors[1])).obfuscators(count, method)
    else:
        rs = public_obfuscators(n_m, count, method)
    w = (2 * n_m.bit_length() + 7) // 8
    return b"".join([r.to_bytes(w, "big") for r in rs])


def _init_worker(owner_pid: int, low_priority: bool) -> None:
    """Worker initializer: exit with the owner; at low priority, only use idle CPU time."""
    watch_owner(owner_pid)
    if low_priority:
        with contextlib.suppress(AttributeError, OSError):  # no os.nice: normal priority
            os.nice(19)


def _default_context() -> Any:
    # fork is unsafe in a process that already runs threads (asyncio, executors)
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


class ObfuscatorPool:
    """A background-filled buffer of single-use obfuscators for one public key.

    Args:
        public_key: the key the obfuscators are for.
        capacity: how many obfuscators to keep ready (the refill target).
        chunk: obfuscators per background task.
        workers: processes of the internal process pool (default 1); ignored with ``executor``.
        executor: an existing ``concurrent.futures`` executor to fill from (not shut down by
            :meth:`close`); by default the pool starts its own process pool.
        method: ``"djn"`` (default), ``"djn-short"`` (opt-in) or ``"rn"``.
        private_key: if given, workers use the key-holder CRT fast path (p, q go to LOCAL
            worker processes only).
        low_priority: run the internal pool's processes at the lowest CPU priority (nice 19),
            so they make obfuscators only from CPU time the rest of the machine leaves idle
            and may have one worker per core without slowing the critical path.
        start: start filling immediately (default True); otherwise call :meth:`start`.

    Use as a context manager, or call :meth:`close`. The internal process pool uses the
    ``forkserver`` start method on Linux (``spawn`` elsewhere), so, as with any such pool, a
    script that creates one must guard its entry point with ``if __name__ == "__main__":``.
    """

    def __init__(
        self,
        public_key: KeyModulus,
        *,
        capacity: int = 4096,
        chunk: int = 128,
        workers: int | None = None,
        executor: Executor | None = None,
        method: str = "djn",
        private_key: KeyFactors | None = None,
        low_priority: bool = False,
        start: bool = True,
    ) -> None:
        check_method(method)
        for name, v in (("capacity", capacity), ("chunk", chunk)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive int, got {v!r}")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ConfigError(f"workers must be a positive int, got {workers!r}")
        if private_key is not None and private_key.public_key != public_key:
            raise ConfigError("private_key does not belong to public_key")
        self.public_key = public_key
        self.capacity = capacity
        self.chunk = chunk
        self.method = method
        self._factors = (
            (int(private_key.p), int(private_key.q)) if private_key is not None else None
        )
        self._own_executor = executor is None
        self._workers = workers or 1
        self._low_priority = low_priority
        self._executor = executor
        self._buf: deque[mpz] = deque()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._in_flight = 0
        self._closed = False
        self._error: BaseException | None = None
        self.produced = 0
        self.handed_out = 0
        # Refills are submitted from one small thread, never from a future's done-callback
        # (which runs on the process pool's own manager thread).
        self._wake = threading.Event()
        self._filler: threading.Thread | None = None
        if start:
            self.start()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> ObfuscatorPool:
        """Start (or resume) background filling.

        Raises:
            CryptoError: the pool is closed.
            ConfigError: called from the top level of an unguarded main script.
        """
        if self._closed:
            raise CryptoError("the obfuscator pool is closed")
        if self._executor is None:
            check_main_guarded()
            self._executor = ProcessPoolExecutor(
                max_workers=self._workers,
                mp_context=_default_context(),
                initializer=_init_worker,
                initargs=(os.getpid(), self._low_priority),
            )
        if self._filler is None:
            self._filler = threading.Thread(
                target=self._fill_loop, name="hefl-obfuscator-pool", daemon=True
            )
            self._filler.start()
        self._wake.set()
        return self

    def _fill_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            self._refill()

    def close(self) -> None:
        """Stop filling, drop the buffer, and shut down the internal process pool."""
        with self._lock:
            self._closed = True
            self._buf.clear()
            self._cond.notify_all()
        self._wake.set()
        if self._filler is not None:
            self._filler.join(timeout=5)
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self._executor = None

    def __enter__(self) -> ObfuscatorPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> Any:
        raise TypeError("an ObfuscatorPool cannot be pickled (it would duplicate randomness)")

    def __repr__(self) -> str:
        return (
            f"ObfuscatorPool(available={len(self._buf)}, capacity={self.capacity}, "
            f"method={self.method!r})"
        )

    def resize(self, capacity: int) -> None:
        """Change the refill target. Lowering it stops further refills (nothing buffered is
        dropped): a caller that knows how many obfuscators it will still need avoids making
        ones it would throw away.

        Raises:
            ConfigError: ``capacity`` is not a non-negative int.
        """
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ConfigError(f"capacity must be a non-negative int, got {capacity!r}")
        with self._lock:
            self.capacity = capacity
        self._wake.set()

    # -- filling --------------------------------------------------------------------------
    def _refill(self) -> None:
        """Submit tasks until buffered + in-flight reaches capacity."""
        with self._lock:
            if self._closed or self._executor is None:
                return
            need = self.capacity - len(self._buf) - self._in_flight
            tasks = []
            while need > 0:
                k = min(self.chunk, need)
                self._in_flight += k
                need -= k
                tasks.append(k)
        for k in tasks:
            try:
                fut = self._executor.submit(
                    _make_chunk, int(self.public_key.n), k, self.method, self._factors
                )
            except RuntimeError:  # executor shut down underneath us
                with self._lock:
                    self._in_flight -= k
                return
            fut.add_done_callback(functools.partial(self._done, k=k))

    def _done(self, fut: Future, *, k: int) -> None:
        with self._lock:
            self._in_flight -= k
            if fut.cancelled() or self._closed:
                return
            exc = fut.exception()
            if exc is not None:
                self._error = exc
                self._cond.notify_all()
                return
            data = fut.result()
            w = self.public_key.ciphertext_bytes
            from_bytes = mpz.from_bytes
            self._buf.extend(from_bytes(data[i : i + w], "big") for i in range(0, len(data), w))
            self.produced += len(data) // w
            self._cond.notify_all()
        self._wake.set()

    def fill_now(self, count: int) -> None:
        """Compute ``count`` obfuscators in this process and add them (no background work)."""
        rs = public_obfuscators(self.public_key.n, count, self.method)
        with self._lock:
            self._buf.extend(rs)
            self.produced += len(rs)

    def wait(self, count: int | None = None, timeout: float | None = None) -> bool:
        """Block until at least ``count`` (default: capacity) obfuscators are ready.

        Returns:
            True if ready, False on timeout.

        Raises:
            CryptoError: a background task failed, or the pool is closed.
        """
        target = self.capacity if count is None else count
        with self._cond:
            ok = self._cond.wait_for(
                lambda: len(self._buf) >= target or self._error is not None or self._closed,
                timeout,
            )
            self._raise_if_failed()
            return ok and len(self._buf) >= target

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise CryptoError(f"obfuscator pool worker failed: {self._error!r}") from self._error
        if self._closed:
            raise CryptoError("the obfuscator pool is closed")

    # -- consuming ------------------------------------------------------------------------
    @property
    def available(self) -> int:
        """Obfuscators ready right now."""
        return len(self._buf)

    def take(self, count: int) -> list[mpz]:
        """Remove and return up to ``count`` obfuscators (fewer if the buffer runs dry: the
        caller computes the rest). Triggers a background refill.

        Raises:
            CryptoError: a background task failed, or the pool is closed.
        """
        with self._lock:
            self._raise_if_failed()
            k = min(count, len(self._buf))
            popleft = self._buf.popleft
            out = [popleft() for _ in range(k)]
            self.handed_out += k
        self._wake.set()
        return out


class ObfuscatorBatch:
    """A fixed number of fresh obfuscators made ahead of time for one use: an
    :class:`~hefl.crypto._types.ObfuscatorSource` that hands every value out once and then
    refuses.

    A party that knows how many ciphertexts it will make (a BatchCrypt client: one chunk of
    its next upload) draws a batch in the background and later encrypts with
    ``pk.encrypt(ints, pool=batch)``, which then costs one product per value. ``take`` never
    returns fewer values than asked (the caller would silently fall back to fresh ones) and
    never the same value twice: asking past the end, or for anything after the batch has been
    used up, raises. The values travel as one fixed-width byte string, so a batch pickles to
    a local worker cheaply; a batch already (partly) taken refuses to be pickled, so no copy of
    a used value can leave the process.

    Args:
        public_key: the key the obfuscators belong to.
        data: ``count`` obfuscators as big-endian numbers of ``public_key.ciphertext_bytes``
            bytes each, concatenated.

    Raises:
        ConfigError: ``data`` is not a whole number of obfuscators.
    """

    __slots__ = ("_data", "_next", "count", "public_key")

    def __init__(self, public_key: KeyModulus, data: bytes) -> None:
        width = public_key.ciphertext_bytes
        if len(data) % width:
            raise ConfigError(
                f"{len(data)} bytes are not a whole number of {width}-byte obfuscators"
            )
        self.public_key = public_key
        self._data = bytes(data)
        self.count = len(data) // width
        self._next = 0

    @classmethod
    def draw(cls, key: Any, count: int, method: str = "djn") -> ObfuscatorBatch:
        """Draw ``count`` fresh obfuscators now: with the CRT fast path when ``key`` is a
        private key (it has ``p`` and ``q``), with the public key otherwise.

        Raises:
            ConfigError: a negative count or an unknown method.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ConfigError(f"count must be a non-negative int, got {count!r}")
        public = getattr(key, "public_key", key)
        factors = (int(key.p), int(key.q)) if hasattr(key, "p") else None
        return cls(public, _make_chunk(int(public.n), count, check_method(method), factors))

    @property
    def remaining(self) -> int:
        """Obfuscators not handed out yet."""
        return self.count - self._next

    def take(self, count: int) -> list[mpz]:
        """Hand out the next ``count`` obfuscators, each exactly once.

        Raises:
            CryptoError: fewer than ``count`` remain (the batch was planned for fewer values,
                or has been used already).
        """
        if count > self.remaining:
            used = "has been used up" if self.remaining == 0 else f"has {self.remaining} left"
            raise CryptoError(
                f"an obfuscator batch of {self.count} {used}; {count} asked for (obfuscators "
                "are never handed out twice)"
            )
        w = self.public_key.ciphertext_bytes
        view = memoryview(self._data)
        a = self._next
        self._next += count
        out = [mpz.from_bytes(view[i * w : (i + 1) * w], "big") for i in range(a, a + count)]
        if self._next == self.count:
            self._data = b""  # nothing of a used-up batch stays behind
        return out

    def __reduce__(self) -> Any:
        if self._next:
            raise CryptoError("an obfuscator batch already (partly) used cannot be copied")
        return (ObfuscatorBatch, (self.public_key, self._data))

    def __repr__(self) -> str:
        return f"ObfuscatorBatch(count={self.count}, remaining={self.remaining})"
