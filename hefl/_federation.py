"""Running a federation: ``hefl.run`` / ``hefl.run_async``.

The same role functions run with every party as a coroutine of one event loop (over the
in-process transport or real ZeroMQ sockets), or as one OS process per party (see
:mod:`hefl._processes`). Either way each party is assembled and run by
:func:`hefl._assembly.run_party_role`, and the result is a :class:`RunResult`: a ``dict`` of
the roles' return values that also carries every party's statistics and trace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hefl._assembly import (
    Role,
    RunResult,
    executor_scope,
    loop_factory,
    run_party_role,
    run_result,
)
from hefl._options import RunKeywords, RunOptions, check_name
from hefl._processes import run_processes
from hefl.crypto._orphans import check_main_guarded
from hefl.errors import ConfigError, ProtocolError

if TYPE_CHECKING:
    from typing_extensions import Unpack

Transports = str | Mapping[str, Any] | None


def validate_roles(roles: Any) -> dict[str, Role]:
    """Check the roles mapping: ``{name: callable(party) -> awaitable}``.

    Returns:
        the roles as a dict.

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


def _prepare(
    roles: Any, transport: Transports, processes: bool, keywords: RunKeywords
) -> tuple[dict[str, Role], RunOptions]:
    """Validate everything a run is given, before anything starts.

    Raises:
        ConfigError: bad roles or options, or options that contradict each other.
    """
    checked = validate_roles(roles)
    options = RunOptions.from_keywords(keywords)
    if processes or options.executor == "process":
        check_main_guarded()  # before any party or worker process exists
    if processes:
        if transport not in (None, "zmq"):
            raise ConfigError(
                f"processes=True runs every party over ZeroMQ; transport={transport!r} cannot "
                "be used with it (leave transport out, or pass transport='zmq')"
            )
    elif options.curve and isinstance(transport, Mapping):
        raise ConfigError(
            "curve=True cannot apply to a mapping of transports built by the caller: "
            "create them with CURVE keys instead (ZmqTransport(curve=..., peer_keys=...))"
        )
    elif options.curve and transport in (None, "inproc"):
        raise ConfigError("curve=True needs transport='zmq' (inproc never leaves the process)")
    return checked, options


async def run_async(
    roles: Mapping[str, Role],
    *,
    transport: Transports = None,
    processes: bool = False,
    **options: Unpack[RunKeywords],
) -> RunResult:
    """Run a federation inside a running event loop; see :func:`run` for the arguments.

    With ``processes=True`` the supervisor runs in a worker thread, so the loop stays free.
    """
    checked, opts = _prepare(roles, transport, processes, options)
    if processes:
        return await asyncio.to_thread(run_processes, checked, opts)
    return await _run_in_process(checked, transport or "inproc", opts)


async def _run_in_process(
    roles: dict[str, Role], transport: str | Mapping[str, Any], options: RunOptions
) -> RunResult:
    names = list(roles)
    transports = await _make_transports(names, transport, options)
    with executor_scope(options.executor, options.max_workers) as pool:
        tasks = {}
        for name in names:
            peers = [p for p in names if p != name]
            run = run_party_role(name, peers, transports[name], roles[name], options, pool)
            tasks[name] = asyncio.create_task(run, name=f"hefl-party-{name}")
        try:
            _, pending = await asyncio.wait(tasks.values(), timeout=options.timeout)
            if pending:
                stuck = [name for name, task in tasks.items() if task in pending]
                raise ProtocolError(
                    f"the federation did not finish within {options.timeout:g} s; "
                    f"still running: {stuck}"
                )
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
    return run_result(task.result() for task in tasks.values())


async def _make_transports(
    names: list[str], transport: str | Mapping[str, Any], options: RunOptions
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
        from hefl.transports import InprocNetwork

        network = InprocNetwork(names)
        return {name: network.transport(name) for name in names}
    if transport == "zmq":
        from hefl.transports.zmq import local_zmq_transports

        return await local_zmq_transports(
            names, curve=options.curve, max_message_bytes=options.max_message_bytes
        )
    raise ConfigError(f"unknown transport {transport!r}; use 'inproc', 'zmq' or a mapping")


def run(
    roles: Mapping[str, Role],
    *,
    transport: Transports = None,
    processes: bool = False,
    **options: Unpack[RunKeywords],
) -> RunResult:
    """Run a federation of roles and return their results.

    Scripts: with ``processes=True`` or the default ``"process"`` executor, hefl starts
    processes that re-import the main script (to find the role functions); a script calling
    this must keep its top-level code under ``if __name__ == "__main__":``, or it gets a
    ConfigError before any process starts.

    Args:
        roles: ``{party name: async def role(party)}``; with ``processes=True`` the roles must
            be picklable (module-level functions or ``functools.partial`` of them).
        transport: ``"inproc"`` (asyncio queues, the default), ``"zmq"`` (real ZeroMQ sockets
            on free localhost ports) or a mapping ``{name: Transport}``. ``processes=True``
            always uses ZeroMQ (any other transport is a ConfigError).
        processes: run each party in its own OS process (spawned), supervised by this one.
        **options: any of these keywords (:class:`hefl._options.RunOptions`):

            - ``executor``: where :meth:`Party.offload` runs work: ``"process"`` (a lazy local
              process pool, default), ``"thread"``, ``"inline"``, or a
              ``concurrent.futures.Executor``.
            - ``max_workers``: pool size for ``"process"``/``"thread"`` executors.
            - ``timeout``: fail if the whole federation takes longer (seconds).
            - ``max_message_bytes``: refuse messages larger than this (both ways).
            - ``curve``: with ZeroMQ, encrypt and authenticate every connection with CURVE
              keys generated for this run; the sender is taken from the authenticated key.
            - ``use_uvloop``: run on uvloop when it is installed (default True).
            - ``stream_window``: chunks a stream producer may run ahead of its consumer
              (default 32).
            - ``connect_timeout``: seconds for every peer to come up (default 30).
            - ``heartbeat_interval``, ``peer_timeout``: enable heartbeats; a peer silent for
              peer_timeout seconds fails the federation (process mode watches child
              processes instead and reports a killed party within about a second
              regardless).
            - ``recv_timeout``: default timeout of every receive (default: none).
            - ``max_buffered_messages``, ``max_buffered_bytes``: how much one peer may have
              waiting unreceived in a party's buffers (default 100,000 messages, 2 GiB); more
              fails the federation with PeerFailed naming the peer (a flood, or an unknown
              tag).
            - ``agreement``: values every party must share, ``{field: value}`` of strings
              (``{party: {field: value}}`` gives each party its own, for tests). Parties
              compare them, and the hefl version, in the handshake; any difference fails the
              run at once: PeerFailed with the ConfigError of the party that found it as
              ``__cause__``, naming the field, both values and the peer.

    Returns:
        :class:`RunResult`, a dict ``{party: role return value}`` with ``.statistics`` and
        ``.trace``.

    Raises:
        PeerFailed: a party failed; names the party where the failure started and why (the
            original exception is chained as ``__cause__`` where available).
        ProtocolError: the federation did not finish within ``timeout``.
        ConfigError: invalid or contradicting arguments, or a call from an unguarded script's
            top level that would start processes.
    """
    checked, opts = _prepare(roles, transport, processes, options)
    if processes:
        # The supervisor waits on the children from this thread, so Ctrl-C reaches it and
        # it kills them; no event loop is needed here.
        return run_processes(checked, opts)
    with asyncio.Runner(loop_factory=loop_factory(opts.use_uvloop)) as runner:
        return runner.run(run_async(checked, transport=transport, **options))


__all__ = ["RunResult", "loop_factory", "run", "run_async"]
