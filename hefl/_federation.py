"""Running a federation: ``hefl.run`` / ``hefl.run_async``.

The same role functions run with every party as a coroutine of one event loop (over the
in-process transport or real ZeroMQ sockets), or as one OS process per party (see
:mod:`hefl._processes`). The result is a :class:`RunResult`: a ``dict`` of the roles' return
values that also carries every party's statistics and trace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from hefl._executor import make_executor
from hefl._party import Party, RuntimeOptions, check_name
from hefl._tracing import Span, Trace
from hefl.codec import DEFAULT_MAX_MESSAGE_BYTES, Codec
from hefl.errors import ConfigError, PeerFailed, ProtocolError

Role = Callable[[Party], Awaitable[Any]]


class RunResult(dict):
    """The roles' return values by party name (a plain ``dict``), plus observability.

    Attributes:
        statistics: ``{party: Party.statistics()}`` of every party.
        trace: a :class:`hefl.Trace` of every party's spans (``save_chrome``, ``save_gantt``).
    """

    def __init__(
        self,
        results: Mapping[str, Any],
        statistics: Mapping[str, dict[str, Any]],
        spans: list[Span],
    ) -> None:
        super().__init__(results)
        self.statistics = dict(statistics)
        self.trace = Trace(spans)


def loop_factory(use_uvloop: bool = True) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event-loop factory hefl runs on: uvloop's when installed (and wanted), else None.

    pyzmq's asyncio sockets work on uvloop (they register the socket's FD with
    ``loop.add_reader``, which uvloop implements), so one loop type serves both transports.
    Loops are created with ``asyncio.Runner(loop_factory=...)``: event-loop policies are
    deprecated since Python 3.14.
    """
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def validate_roles(roles: Any) -> dict[str, Role]:
    """Check the roles mapping: ``{name: callable(party) -> awaitable}``.

    Raises:
        ConfigError: if it is empty, a name is invalid or a role is not callable.
    """
    if not isinstance(roles, Mapping) or not roles:
        raise ConfigError("roles must be a non-empty mapping {party name: async role function}")
    out: dict[str, Role] = {}
    for name, role in roles.items():
        check_name(name)
        if not callable(role):
            raise ConfigError(f"the role of party {name!r} must be callable, got {role!r}")
        out[name] = role
    return out


def make_options(**kwargs: Any) -> RuntimeOptions:
    """Build :class:`RuntimeOptions` from keyword arguments, dropping unset (None) ones."""
    return RuntimeOptions(**{k: v for k, v in kwargs.items() if v is not None})


def root_failure(parties: Mapping[str, Party]) -> BaseException | None:
    """The exception to raise for a failed run: the earliest failure, as a PeerFailed."""
    failed = [(p.failed_at, name, p.error) for name, p in parties.items() if p.error is not None]
    if not failed:
        return None
    _, name, exc = min(failed, key=lambda item: item[0] or 0.0)
    return as_peer_failed(name, exc)


def as_peer_failed(name: str, exc: BaseException) -> PeerFailed:
    """Wrap the exception of party ``name`` as PeerFailed (PeerFailed passes through)."""
    if isinstance(exc, PeerFailed):
        return exc
    failed = PeerFailed(name, f"{type(exc).__name__}: {exc}")
    failed.__cause__ = exc
    return failed


async def run_async(
    roles: Mapping[str, Role],
    *,
    transport: str | Mapping[str, Any] = "inproc",
    processes: bool = False,
    executor: Any = "process",
    max_workers: int | None = None,
    timeout: float | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    curve: bool = False,
    use_uvloop: bool = True,
    stream_window: int | None = None,
    connect_timeout: float | None = None,
    heartbeat_interval: float | None = None,
    peer_timeout: float | None = None,
    recv_timeout: float | None = None,
    max_buffered_messages: int | None = None,
    max_buffered_bytes: int | None = None,
) -> RunResult:
    """Run a federation inside a running event loop; see :func:`run` for the arguments."""
    roles = validate_roles(roles)
    if processes:
        from hefl._processes import run_processes

        return await asyncio.to_thread(
            run_processes,
            roles,
            executor=executor,
            max_workers=max_workers,
            timeout=timeout,
            max_message_bytes=max_message_bytes,
            curve=curve,
            use_uvloop=use_uvloop,
            options=make_options(
                stream_window=stream_window,
                connect_timeout=connect_timeout,
                heartbeat_interval=heartbeat_interval,
                peer_timeout=peer_timeout,
                recv_timeout=recv_timeout,
                max_buffered_messages=max_buffered_messages,
                max_buffered_bytes=max_buffered_bytes,
            ),
        )
    options = make_options(
        stream_window=stream_window,
        connect_timeout=connect_timeout,
        heartbeat_interval=heartbeat_interval,
        peer_timeout=peer_timeout,
        recv_timeout=recv_timeout,
        max_buffered_messages=max_buffered_messages,
        max_buffered_bytes=max_buffered_bytes,
    )
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    names = list(roles)
    transports = await _make_transports(names, transport, curve, max_message_bytes)
    pool, owned = make_executor(executor, max_workers)
    parties = {
        name: Party(
            name,
            [p for p in names if p != name],
            transports[name],
            codec=Codec(max_message_bytes=max_message_bytes),
            executor=pool,
            options=options,
        )
        for name in names
    }
    tasks = {
        name: asyncio.create_task(parties[name].run_role(roles[name]), name=f"hefl-party-{name}")
        for name in names
    }
    try:
        _, pending = await asyncio.wait(tasks.values(), timeout=timeout)
        if pending:
            stuck = [name for name, task in tasks.items() if task in pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise ProtocolError(
                f"the federation did not finish within {timeout:g} s; still running: {stuck}"
            )
    finally:
        for task in tasks.values():
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        if owned:
            pool.shutdown(wait=True, cancel_futures=True)
    failure = root_failure(parties)
    if failure is not None:
        raise failure
    return RunResult(
        {name: task.result() for name, task in tasks.items()},
        {name: p.statistics() for name, p in parties.items()},
        [s for p in parties.values() for s in p.tracer.spans],
    )


async def _make_transports(
    names: list[str], transport: str | Mapping[str, Any], curve: bool, max_message_bytes: int
) -> dict[str, Any]:
    if isinstance(transport, Mapping):
        if set(transport) != set(names):
            raise ConfigError(
                f"transport mapping must have one transport per party {names}, "
                f"got {sorted(transport)}"
            )
        for t in transport.values():
            await t.start()
        return dict(transport)
    if transport == "inproc":
        if curve:
            raise ConfigError("curve=True needs transport='zmq' (inproc never leaves the process)")
        from hefl.transports import InprocNetwork

        network = InprocNetwork(names)
        return {name: network.transport(name) for name in names}
    if transport == "zmq":
        from hefl.transports.zmq import local_zmq_transports

        return await local_zmq_transports(names, curve=curve, max_message_bytes=max_message_bytes)
    raise ConfigError(f"unknown transport {transport!r}; use 'inproc', 'zmq' or a mapping")


def run(
    roles: Mapping[str, Role],
    *,
    transport: str | Mapping[str, Any] = "inproc",
    processes: bool = False,
    executor: Any = "process",
    max_workers: int | None = None,
    timeout: float | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    curve: bool = False,
    use_uvloop: bool = True,
    stream_window: int | None = None,
    connect_timeout: float | None = None,
    heartbeat_interval: float | None = None,
    peer_timeout: float | None = None,
    recv_timeout: float | None = None,
    max_buffered_messages: int | None = None,
    max_buffered_bytes: int | None = None,
) -> RunResult:
    """Run a federation of roles and return their results.

    Args:
        roles: ``{party name: async def role(party)}``; with ``processes=True`` the roles must
            be picklable (module-level functions or ``functools.partial`` of them).
        transport: ``"inproc"`` (asyncio queues, default), ``"zmq"`` (real ZeroMQ sockets on
            free localhost ports) or a mapping ``{name: Transport}``. ``processes=True`` always
            uses ZeroMQ.
        processes: run each party in its own OS process (spawned), supervised by this one.
        executor: where :meth:`Party.offload` runs work: ``"process"`` (a lazy local process
            pool, default), ``"thread"``, ``"inline"``, or a ``concurrent.futures.Executor``.
        max_workers: pool size for ``"process"``/``"thread"`` executors.
        timeout: fail if the whole federation takes longer (seconds).
        max_message_bytes: refuse messages larger than this (both ways).
        curve: with ZeroMQ, encrypt and authenticate every connection with CURVE keys
            generated for this run; the sender is taken from the authenticated key.
        use_uvloop: run on uvloop when it is installed.
        stream_window: chunks a stream producer may run ahead of its consumer (default 32).
        connect_timeout: seconds for every peer to come up (default 30).
        heartbeat_interval, peer_timeout: enable heartbeats; a peer silent for peer_timeout
            seconds fails the federation (process mode watches child processes instead and
            reports a killed party within about a second regardless).
        recv_timeout: default timeout of every receive (default: none).
        max_buffered_messages, max_buffered_bytes: how much one peer may have waiting
            unreceived in a party's buffers (default 100,000 messages, 2 GiB); more fails the
            federation with PeerFailed naming the peer (a flood, or an unknown tag).

    Returns:
        :class:`RunResult`, a dict ``{party: role return value}`` with ``.statistics`` and
        ``.trace``.

    Raises:
        PeerFailed: a party failed; names the party where the failure started and why (the
            original exception is chained as ``__cause__`` where available).
        ProtocolError: the federation did not finish within ``timeout``.
        ConfigError: invalid arguments.
    """
    kwargs = dict(
        transport=transport,
        processes=processes,
        executor=executor,
        max_workers=max_workers,
        timeout=timeout,
        max_message_bytes=max_message_bytes,
        curve=curve,
        use_uvloop=use_uvloop,
        stream_window=stream_window,
        connect_timeout=connect_timeout,
        heartbeat_interval=heartbeat_interval,
        peer_timeout=peer_timeout,
        recv_timeout=recv_timeout,
        max_buffered_messages=max_buffered_messages,
        max_buffered_bytes=max_buffered_bytes,
    )
    roles = validate_roles(roles)
    if processes:
        from hefl._processes import run_processes

        kwargs.pop("processes")
        kwargs.pop("transport")
        return run_processes(
            roles,
            executor=executor,
            max_workers=max_workers,
            timeout=timeout,
            max_message_bytes=max_message_bytes,
            curve=curve,
            use_uvloop=use_uvloop,
            options=make_options(
                stream_window=stream_window,
                connect_timeout=connect_timeout,
                heartbeat_interval=heartbeat_interval,
                peer_timeout=peer_timeout,
                recv_timeout=recv_timeout,
                max_buffered_messages=max_buffered_messages,
                max_buffered_bytes=max_buffered_bytes,
            ),
        )
    with asyncio.Runner(loop_factory=loop_factory(use_uvloop)) as runner:
        return runner.run(run_async(roles, **kwargs))  # type: ignore[arg-type]


def wall_time() -> float:
    """Seconds since the epoch (for failure ordering across processes)."""
    return time.time()


__all__ = ["RunResult", "loop_factory", "run", "run_async"]
