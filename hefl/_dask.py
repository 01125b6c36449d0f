"""DaskExecutor: one party's heavy work on a Dask cluster (``pip install "hefl[dask]"``).

A party given a :class:`DaskExecutor` runs what it offloads (obfuscators, encryption,
histograms, decryption; BatchCrypt's client encryption and decryption) as tasks of a Dask
cluster, through an asynchronous ``distributed.Client`` opened on the party's own event loop:
submitting and awaiting never block the loop. The executor is started by the runtime when the
party starts (:meth:`DaskExecutor.start`): it connects within ``connect_timeout`` and refuses a
cluster whose workers lack hefl or run another hefl version.

What crosses to the workers: CipherVectors travel as their fixed-width ciphertext bytes (their
pickle form), numpy arrays as buffers, keys as their integers; results are converted back to
plain Python ints and bytes on the worker, so no gmpy2 object is ever pickled. A private key
travels with the key holder's decryption and encryption tasks: give the key holder an
executor on a cluster it runs itself (``private_keys=False`` refuses any task carrying one).

A worker that dies mid-task: the scheduler re-runs its tasks on the others (Dask's own
recovery). When no worker is left for ``lost_timeout`` seconds, or a task killed too many
workers, the party fails with :class:`~hefl.errors.PeerFailed` naming itself and the workers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import time
from collections.abc import Callable, Sequence
from typing import Any

from hefl._party import Party
from hefl._version import __version__
from hefl.crypto import PrivateKey
from hefl.errors import ConfigError, PeerFailed

try:  # gmpy2 is a hefl dependency; the check only converts its integers at the boundary
    from gmpy2 import mpz as _mpz_type

    _MPZ: type = type(_mpz_type(0))
except ImportError:  # pragma: no cover
    _MPZ = int


def portable(obj: Any) -> Any:
    """``obj`` with every gmpy2 integer (in lists, tuples and dicts) made a Python int.

    Returns:
        the same structure, safe to pickle without gmpy2.
    """
    kind = type(obj)
    if kind is _MPZ:
        return int(obj)
    if kind is list or kind is tuple:
        if any(type(v) is _MPZ or type(v) in (list, tuple, dict) for v in obj):
            out = [portable(v) for v in obj]
            return out if kind is list else tuple(out)
        return obj
    if kind is dict:
        return {k: portable(v) for k, v in obj.items()}
    return obj


def call(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, str]:
    """Run on a worker: ``fn(*args)``, its result made :func:`portable`, and the worker's
    address (which worker ran what, without asking the scheduler)."""
    from distributed import get_worker

    return portable(fn(*args)), get_worker().address


class DaskExecutor:
    """Runs a party's offloaded work on a Dask cluster.

    Args:
        scheduler: the scheduler address (``"tcp://host:8786"``) or a ``distributed.Client``
            (an asynchronous client running on the party's loop is used as is; otherwise
            this executor opens its own client to the same scheduler, with its security).
        connect_timeout: seconds to reach the scheduler before a ConfigError.
        max_workers: at most this many tasks in flight (backpressure); default: the
            cluster's worker threads when started.
        private_keys: False refuses any task that would carry a private key (a cluster
            this party does not run).
        lost_timeout: seconds without any worker before the party fails.

    Attributes:
        address: the scheduler's address.
        party: the party it was started for (named in its errors).
        tasks_by_worker: how many tasks each worker ran (observability, tests).

    Raises:
        ConfigError: a bad scheduler, timeout or max_workers.
    """

    placement = True  # data can be placed on chosen workers (see :meth:`scatter_to`)

    def __init__(
        self,
        scheduler: Any,
        *,
        connect_timeout: float = 10.0,
        max_workers: int | None = None,
        private_keys: bool = True,
        lost_timeout: float = 30.0,
    ) -> None:
        if isinstance(scheduler, str):
            if "://" not in scheduler and ":" not in scheduler:
                raise ConfigError(f"Dask scheduler address {scheduler!r} is not host:port")
            self.address, self._given = scheduler, None
        elif hasattr(scheduler, "scheduler") and hasattr(scheduler, "submit"):
            self.address, self._given = _client_address(scheduler), scheduler
        else:
            raise ConfigError(
                f"DaskExecutor takes a scheduler address or a distributed.Client, got {scheduler!r}"
            )
        for name, value in (("connect_timeout", connect_timeout), ("lost_timeout", lost_timeout)):
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"DaskExecutor {name} must be a positive number, got {value!r}")
        if max_workers is not None and (type(max_workers) is not int or max_workers < 1):
            raise ConfigError(
                f"DaskExecutor max_workers must be a positive int, got {max_workers!r}"
            )
        self.connect_timeout, self.lost_timeout = float(connect_timeout), float(lost_timeout)
        self.max_workers, self.private_keys = max_workers, private_keys
        self.party = "?"
        self._client: Any = None
        self._owned = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Task[None] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._users = 0
        self._seen: set[str] = set()
        self._asked: tuple[float, dict[str, int]] | None = None
        self.tasks_by_worker: dict[str, int] = {}
        # tasks run at once once connected: max_workers, else the workers' threads
        self.capacity: int | None = max_workers

    def __repr__(self) -> str:
        return f"DaskExecutor({self.address!r})"

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, party_name: str) -> None:
        """Connect (once per event loop) and check the workers' hefl; called by the runtime
        before the party's role runs.

        Raises:
            ConfigError: the scheduler cannot be reached within ``connect_timeout``, the
                cluster has no workers, or a worker lacks hefl or runs another version.
        """
        self._users += 1
        if self.party == "?":
            self.party = party_name
        loop = asyncio.get_running_loop()
        if self._ready is None or self._loop is not loop:
            # one connection per loop, shared by the parties of this loop that use it
            self._loop = loop
            self._ready = loop.create_task(self._open(loop))
        try:
            await asyncio.shield(self._ready)
        except BaseException:
            self._users -= 1
            raise

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        self._client, self._owned = await self._connect(loop)
        try:
            workers = await self._check_workers()
        except BaseException:
            await self._close()
            raise
        self._seen = set(workers)
        limit = self.max_workers or max(1, sum(workers.values()))
        self._slots = asyncio.Semaphore(limit)
        self.capacity = limit

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> tuple[Any, bool]:
        given = self._given
        if given is not None and given.asynchronous and _client_loop(given) is loop:
            return given, False
        from distributed import Client

        security = getattr(given, "security", None)
        try:
            client = await asyncio.wait_for(
                Client(  # type: ignore[misc]
                    self.address,
                    asynchronous=True,
                    timeout=self.connect_timeout,
                    security=security,
                    set_as_default=False,
                ),
                self.connect_timeout + 1.0,
            )
        except (OSError, TimeoutError) as exc:
            raise ConfigError(
                f"party {self.party!r}: cannot reach the Dask scheduler at {self.address!r} "
                f"within {self.connect_timeout:g} s ({type(exc).__name__}: {exc})"
            ) from None
        return client, True

    async def _check_workers(self) -> dict[str, int]:
        """The workers and their threads, after checking each runs this hefl version."""
        versions = await self._client.get_versions(packages=["hefl", "gmpy2"])
        workers = versions.get("workers") or {}
        if not workers:
            raise ConfigError(
                f"party {self.party!r}: the Dask cluster at {self.address!r} has no workers"
            )
        for addr, info in sorted(workers.items()):
            packages = (info or {}).get("packages", {}) if isinstance(info, dict) else {}
            found = packages.get("hefl")
            if found != __version__:
                has = "does not have hefl" if found is None else f"runs hefl {found}"
                raise ConfigError(
                    f"party {self.party!r}: Dask worker {addr} {has}; this party runs hefl "
                    f"{__version__} (install the same hefl on every worker)"
                )
            if packages.get("gmpy2") is None:
                raise ConfigError(f"party {self.party!r}: Dask worker {addr} lacks gmpy2")
        return dict(await self._client.nthreads())

    async def release(self) -> None:
        """The party is done with the executor: close the client when no party uses it."""
        self._users = max(0, self._users - 1)
        if self._users == 0:
            await self._close()

    async def _close(self) -> None:
        client, owned = self._client, self._owned
        self._client, self._loop, self._ready = None, None, None
        if client is not None and owned:
            await client.close()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to do here: the client is closed by :meth:`release` on its own loop (and
        the cluster belongs to whoever started it)."""

    # -- the executor protocol -------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        """Submit ``fn(*args)`` from the party's loop; the returned future is completed there.

        Raises:
            ConfigError: keyword arguments, or called before :meth:`start`.
        """
        if kwargs:
            raise ConfigError("DaskExecutor.submit takes positional arguments only")
        if self._loop is None:
            raise ConfigError(f"{self!r} was not started (the runtime starts it with the party)")
        return asyncio.run_coroutine_threadsafe(self.run(fn, *args), self._loop)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on a worker and return its result (awaited on the party's loop).

        Raises:
            ConfigError: a private key with ``private_keys=False``.
            PeerFailed: the cluster lost every worker, or the task killed its workers.
        """
        return await self.run_at(None, fn, *args)

    async def run_at(self, worker: str | None, fn: Callable[..., Any], *args: Any) -> Any:
        """Like :meth:`run`, preferably on ``worker`` (where its inputs were placed); Dask
        may move it when that worker is gone. ``args`` may hold futures of :meth:`scatter_to`.
        """
        if not self.private_keys and any(isinstance(a, PrivateKey) for a in args):
            raise ConfigError(
                f"party {self.party!r}: {self!r} was made with private_keys=False, and "
                f"{getattr(fn, '__name__', fn)} would send a private key to its workers"
            )
        if self._client is None or self._slots is None:
            raise ConfigError(f"{self!r} was not started (the runtime starts it with the party)")
        async with self._slots:
            future = self._client.submit(
                call,
                fn,
                portable(args),
                pure=False,
                **({} if worker is None else {"workers": [worker], "allow_other_workers": True}),
            )
            return await self._wait(future, getattr(fn, "__name__", repr(fn)))

    async def _wait(self, future: Any, what: str) -> Any:
        waiter = asyncio.ensure_future(self._result(future, what))
        lost_since: float | None = None
        try:
            while True:
                done, _ = await asyncio.wait({waiter}, timeout=1.0)
                if done:
                    return waiter.result()
                workers = await self._workers_now(max_age=1.0)
                if workers:
                    lost_since = None
                    continue
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > self.lost_timeout:
                    raise PeerFailed(
                        self.party,
                        f"its Dask cluster at {self.address} has had no worker for "
                        f"{self.lost_timeout:g} s (lost {sorted(self._seen)}) while running "
                        f"{what}",
                    )
        finally:
            waiter.cancel()

    async def _result(self, future: Any, what: str) -> Any:
        from distributed.scheduler import KilledWorker

        try:
            result, worker = await future
        except KilledWorker as exc:
            raise PeerFailed(
                self.party, f"Dask workers died running {what} ({exc}); the task was not retried"
            ) from exc
        except OSError as exc:  # the scheduler is gone
            raise PeerFailed(
                self.party, f"lost its Dask scheduler {self.address} running {what}: {exc}"
            ) from exc
        self.tasks_by_worker[worker] = self.tasks_by_worker.get(worker, 0) + 1
        return result

    async def _workers_now(self, max_age: float = 0.0) -> dict[str, int]:
        """The scheduler's workers; asked at most once per ``max_age`` seconds (every
        waiting task checks, one question serves them all)."""
        now = time.monotonic()
        if self._asked is not None and now - self._asked[0] <= max_age:
            return self._asked[1]
        try:
            workers = dict(await self._client.nthreads())
        except OSError as exc:
            raise PeerFailed(self.party, f"lost its Dask scheduler {self.address}: {exc}") from exc
        self._seen |= set(workers)
        self._asked = (time.monotonic(), workers)
        return workers

    # -- placement (data locality) -----------------------------------------------------------
    async def worker_addresses(self) -> list[str]:
        """The cluster's current workers, sorted."""
        return sorted(await self._workers_now())

    async def scatter_to(self, data: Any, worker: str) -> Any:
        """Place ``data`` on ``worker`` once; the returned future can be passed to
        :meth:`run_at` (only the reference is sent with each task)."""
        return await self._client.scatter(portable(data), workers=[worker], hash=False)

    async def forget(self, futures: Sequence[Any]) -> None:
        """Forget placed data (drops the futures' keys on the workers)."""
        await self._client.cancel(list(futures))


def placement_executor(party: Party) -> DaskExecutor | None:
    """The executor of ``party`` if it can place data on chosen workers (a
    :class:`DaskExecutor`: ``scatter_to``, ``run_at``, ``worker_addresses``), else None.

    Protocols use it to keep data where it is used (a passive party's row shards).
    """
    executor = getattr(party, "_executor", None)
    return executor if getattr(executor, "placement", False) else None


def _client_address(client: Any) -> str:
    address = getattr(getattr(client, "scheduler", None), "address", None)
    if not isinstance(address, str):
        raise ConfigError(f"the distributed.Client {client!r} is not connected to a scheduler")
    return address


def _client_loop(client: Any) -> Any:
    loop = getattr(client, "loop", None)
    return getattr(loop, "asyncio_loop", loop)


__all__ = ["DaskExecutor", "call", "placement_executor", "portable"]
