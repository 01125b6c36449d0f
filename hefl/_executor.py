"""Executors: where CPU-heavy crypto runs so the event loop keeps moving messages.

gmpy2 holds the GIL for short operations, so encrypting or summing chunks on the event loop
(or in threads) stalls sending and receiving. The default executor is a local process pool,
created lazily on the first :meth:`hefl.Party.offload` and shared by the parties of one process.
Any ``concurrent.futures.Executor`` works (a thread pool for tests, or a Dask
``client.get_executor()`` to spread one party's crypto over a cluster).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from hefl.crypto._orphans import check_main_guarded, watch_owner
from hefl.errors import ConfigError


@runtime_checkable
class Executor(Protocol):
    """What :meth:`hefl.Party.offload` needs: ``concurrent.futures.Executor``'s two methods."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future: ...

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...


def cpu_count() -> int:
    """The number of CPUs this process may use (affinity-aware where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class InlineExecutor:
    """Runs the function immediately in the caller (blocks the loop): for tests and debugging."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        """Run ``fn(*args, **kwargs)`` now and return a finished future."""
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the awaiting role, like a pool would
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to release."""


class LazyProcessPool:
    """A process pool created on first use (spawn context: never fork after zmq/threads).

    Its workers exit as soon as the process that made the pool ends, however it ends (even
    SIGKILL), and leave Ctrl-C to it (see :mod:`hefl.crypto._orphans`).

    Args:
        max_workers: pool size; defaults to the CPUs this process may use.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        if max_workers is not None and (type(max_workers) is not int or max_workers < 1):
            raise ConfigError(f"max_workers must be a positive int, got {max_workers!r}")
        self.max_workers = max_workers or cpu_count()
        self._pool: cf.ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        """Submit ``fn(*args)`` to the pool, creating it on first use."""
        with self._lock:
            if self._pool is None:
                check_main_guarded()
                self._pool = cf.ProcessPoolExecutor(
                    self.max_workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=watch_owner,  # no worker outlives this process
                    initargs=(os.getpid(),),
                )
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Shut the pool down if it was ever created (its worker processes exit)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def make_executor(spec: str | Executor | None, max_workers: int | None = None) -> tuple[Any, bool]:
    """Resolve an executor option into ``(executor, owned)``; owned ones are shut down by hefl.

    Args:
        spec: ``"process"`` (default), ``"thread"``, ``"inline"``, or an executor object (which
            the caller keeps owning).
        max_workers: pool size for ``"process"``/``"thread"``.

    Raises:
        ConfigError: for an unknown spec.
    """
    if spec is None or spec == "process":
        return LazyProcessPool(max_workers), True
    if spec == "thread":
        return cf.ThreadPoolExecutor(max_workers or cpu_count()), True
    if spec == "inline":
        return InlineExecutor(), True
    if isinstance(spec, str):
        raise ConfigError(
            f"unknown executor {spec!r}; use 'process', 'thread', 'inline' or an Executor object"
        )
    if not callable(getattr(spec, "submit", None)):
        raise ConfigError(f"executor {spec!r} has no submit(fn, *args) method")
    return spec, False


def capacity(executor: Any) -> int:
    """How many tasks ``executor`` runs at once: 1 inline, its pool size for a process or
    thread pool, its workers' threads for a connected :class:`~hefl.DaskExecutor`, and this
    machine's CPUs for an executor that does not say."""
    if executor is None or isinstance(executor, InlineExecutor):
        return 1
    for attr in ("capacity", "max_workers", "_max_workers"):
        value = getattr(executor, attr, None)
        if type(value) is int and value >= 1:
            return value
    return cpu_count()


__all__ = [
    "Executor",
    "InlineExecutor",
    "LazyProcessPool",
    "capacity",
    "cpu_count",
    "make_executor",
]
