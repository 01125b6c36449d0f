"""``hefl.run(..., processes=True)``: one OS process per party, supervised by the caller.

Each party runs in a *spawned* process (never forked: the parent may hold ZeroMQ contexts and
threads) with its own event loop and ZeroMQ transport. The parent talks to each child over a
LOCAL pipe (pickle is fine there: both ends are this program):

1. the child binds its ROUTER on a free port and reports the address;
2. the parent sends everyone the address book (and CURVE keys), the children connect and run;
3. each child reports its outcome (result or exception, statistics, spans).

Liveness does not depend on heartbeats: the parent waits on every child's process sentinel, so
a party killed with SIGKILL is noticed at once and every other child is told over its pipe,
which makes it fail with :class:`hefl.PeerFailed` naming the dead party. After the first
failure the others get ``kill_grace`` seconds to report, then whatever is left is killed: no
process outlives :func:`run_processes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
import signal
import time
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any

from hefl._executor import cpu_count, make_executor
from hefl._federation import RunResult, as_peer_failed, loop_factory
from hefl._party import Party, RuntimeOptions
from hefl.codec import Codec
from hefl.errors import ConfigError, PeerFailed, ProtocolError

_SUPERVISOR = "<supervisor>"


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "its process vanished"
    if code < 0:
        try:
            sig = signal.Signals(-code).name
        except ValueError:
            sig = f"signal {-code}"
        return f"its process was killed by {sig}"
    return f"its process exited with code {code} before reporting a result"


def _picklable(value: Any) -> Any:
    try:
        pickle.dumps(value)
        return value
    except Exception:
        return None


def _child_main(name: str, role: Any, names: list[str], conn: Connection, cfg: dict) -> None:
    """Entry point of a party process."""
    # The parent supervises; a Ctrl-C in the terminal must not kill children mid-flush.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with asyncio.Runner(loop_factory=loop_factory(cfg["use_uvloop"])) as runner:
            runner.run(_child_async(name, role, names, conn, cfg))
    except BaseException as exc:  # report what we can; the parent treats silence as death
        with contextlib.suppress(Exception):
            conn.send(("failed", time.time(), _picklable(exc), traceback.format_exc(), {}, []))
    finally:
        conn.close()


async def _recv_pipe(conn: Connection) -> Any:
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def ready() -> None:
        if not future.done():
            future.set_result(None)

    loop.add_reader(conn.fileno(), ready)
    try:
        await future
    finally:
        _unwatch(loop, conn)
    return conn.recv()


def _unwatch(loop: asyncio.AbstractEventLoop, conn: Connection) -> None:
    """Stop watching the pipe and make it blocking again: uvloop's add_reader switches the fd
    to non-blocking, and Connection.send on a non-blocking fd can fail halfway through a large
    message, corrupting the pipe's framing."""
    with contextlib.suppress(Exception):
        loop.remove_reader(conn.fileno())
    with contextlib.suppress(OSError):
        os.set_blocking(conn.fileno(), True)


async def _child_async(name: str, role: Any, names: list[str], conn: Connection, cfg: dict) -> None:
    from hefl.transports.zmq import ZmqTransport

    keys = cfg["curve_keys"]
    transport = ZmqTransport(
        name,
        cfg["address"],
        curve=keys[name] if keys else None,
        peer_keys={p: keys[p].public for p in names if p != name} if keys else None,
        max_message_bytes=cfg["max_message_bytes"],
    )
    try:
        address = transport.bind()
    except BaseException:
        await transport.close(linger=0)
        raise
    conn.send(("bound", address))
    message = await _recv_pipe(conn)
    if message[0] != "book":
        await transport.close(linger=0)
        return
    peers = [p for p in names if p != name]
    transport.connect({p: message[1][p] for p in peers})
    await transport.start()
    pool, owned = make_executor(cfg["executor"], cfg["max_workers"])
    party = Party(
        name,
        peers,
        transport,
        codec=Codec(max_message_bytes=cfg["max_message_bytes"]),
        executor=pool,
        options=cfg["options"],
    )
    loop = asyncio.get_running_loop()

    def on_pipe() -> None:
        # The parent tells us about dead peers; EOF means the parent itself is gone.
        try:
            os.set_blocking(conn.fileno(), True)  # read whole messages (see _unwatch)
            msg = conn.recv()
        except (EOFError, OSError):
            _unwatch(loop, conn)
            party._set_failure(_SUPERVISOR, "the supervising process exited")
            return
        if msg[0] == "lost":
            party.peer_lost(msg[1], msg[2])

    loop.add_reader(conn.fileno(), on_pipe)
    outcome: tuple
    try:
        try:
            value = await party.run_role(role)
        except BaseException as exc:
            outcome = (
                "failed",
                party.failed_at or time.time(),
                _picklable(exc),
                "".join(traceback.format_exception(exc)),
            )
        else:
            outcome = ("done", value)
    finally:
        _unwatch(loop, conn)
        if owned:
            pool.shutdown(wait=True, cancel_futures=True)
    stats = party.statistics()
    spans = party.tracer.spans
    try:
        conn.send((*outcome, stats, spans))
    except Exception as exc:  # e.g. an unpicklable return value
        conn.send(
            (
                "failed",
                time.time(),
                ConfigError(f"the result of party {name!r} cannot be sent to the parent: {exc}"),
                "",
                stats,
                spans,
            )
        )


def run_processes(
    roles: dict[str, Any],
    *,
    executor: Any = "process",
    max_workers: int | None = None,
    timeout: float | None = None,
    max_message_bytes: int,
    curve: bool = False,
    use_uvloop: bool = True,
    options: RuntimeOptions,
    address: str = "tcp://127.0.0.1:*",
    kill_grace: float = 5.0,
) -> RunResult:
    """Run every role in its own spawned process over ZeroMQ; see :func:`hefl.run`.

    Raises:
        ConfigError: a role is not picklable or the executor is not given by name.
        PeerFailed: a party failed or its process died.
        ProtocolError: the federation did not finish within ``timeout``.
    """
    if not isinstance(executor, str):
        raise ConfigError(
            "with processes=True the executor must be given by name ('process', 'thread', "
            "'inline'): each party process creates its own"
        )
    for name, role in roles.items():
        try:
            pickle.dumps(role)
        except Exception as exc:
            raise ConfigError(
                f"the role of party {name!r} cannot be sent to a process ({exc}); with "
                "processes=True use module-level functions or functools.partial of them"
            ) from exc
    names = list(roles)
    keys = None
    if curve:
        from hefl._curve import generate_curve_keypair

        keys = {name: generate_curve_keypair() for name in names}
    cfg = {
        "executor": executor,
        "max_workers": max_workers or max(1, cpu_count() // len(names)),
        "max_message_bytes": max_message_bytes,
        "use_uvloop": use_uvloop,
        "options": options,
        "curve_keys": keys,
        "address": address,
    }
    ctx = multiprocessing.get_context("spawn")
    conns: dict[str, Connection] = {}
    procs: dict[str, Any] = {}
    try:
        for name in names:
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(
                target=_child_main,
                args=(name, roles[name], names, child_end, cfg),
                name=f"hefl-party-{name}",
            )
            proc.start()
            child_end.close()
            conns[name], procs[name] = parent_end, proc
        return _supervise(names, conns, procs, options, timeout, kill_grace)
    finally:
        for proc in procs.values():
            if proc.is_alive():
                proc.kill()
        for proc in procs.values():
            proc.join(5)
        for conn in conns.values():
            conn.close()


def _supervise(
    names: list[str],
    conns: dict[str, Connection],
    procs: dict[str, Any],
    options: RuntimeOptions,
    timeout: float | None,
    kill_grace: float,
) -> RunResult:
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    # phase 1: every child binds and reports its address
    book: dict[str, str] = {}
    setup_seconds = options.connect_timeout + 60.0  # spawning imports numpy etc.
    setup_deadline = start + setup_seconds
    if timeout is not None:  # then deadline == start + timeout
        setup_deadline = min(setup_deadline, start + timeout)
        setup_seconds = min(setup_seconds, timeout)
    outcomes: dict[str, tuple] = {}
    closed: set[str] = set()  # pipe closed before a report: wait for the exit code instead
    while len(book) + len(outcomes) < len(names):
        pending = [
            conns[n] for n in names if n not in book and n not in outcomes and n not in closed
        ]
        sentinels = [procs[n].sentinel for n in names if n not in book and n not in outcomes]
        remaining = setup_deadline - time.monotonic()
        if remaining <= 0:
            missing = [n for n in names if n not in book and n not in outcomes]
            raise PeerFailed(missing[0], f"its process did not start within {setup_seconds:g} s")
        ready = wait(pending + sentinels, remaining)
        for name in names:
            if name in book or name in outcomes:
                continue
            if name not in closed and (conns[name] in ready or conns[name].poll()):
                try:
                    msg = conns[name].recv()
                except EOFError:  # the child is dying before reporting anything
                    closed.add(name)
                    continue
                if msg[0] == "bound":
                    book[name] = msg[1]
                else:
                    outcomes[name] = msg
            elif procs[name].sentinel in ready:
                procs[name].join(5)  # the sentinel closes a moment before the exit is reapable
                outcomes[name] = ("died", time.time(), _describe_exit(procs[name].exitcode))
    if outcomes:
        for name in book:
            with contextlib.suppress(OSError):
                conns[name].send(("stop",))
        return _result(names, outcomes)
    for name in names:
        conns[name].send(("book", book))
    # phase 2: wait for outcomes; a dead process is reported to everyone still running
    kill_at: float | None = None
    while len(outcomes) < len(names):
        now = time.monotonic()
        limits = [t for t in (deadline, kill_at) if t is not None]
        wait_for = None if not limits else max(0.0, min(limits) - now)
        live = [n for n in names if n not in outcomes]
        ready = wait([conns[n] for n in live] + [procs[n].sentinel for n in live], wait_for)
        for name in live:
            if conns[name] in ready or conns[name].poll():
                try:
                    outcomes[name] = conns[name].recv()
                    continue
                except EOFError:
                    procs[name].join(1)
            if procs[name].sentinel in ready and name not in outcomes:
                if conns[name].poll():
                    with contextlib.suppress(EOFError):
                        outcomes[name] = conns[name].recv()
                        continue
                procs[name].join(1)
                cause = _describe_exit(procs[name].exitcode)
                outcomes[name] = ("died", time.time(), cause)
                for other in names:
                    if other not in outcomes:
                        with contextlib.suppress(OSError):
                            conns[other].send(("lost", name, cause))
        if kill_at is None and any(o[0] != "done" for o in outcomes.values()):
            kill_at = time.monotonic() + kill_grace
        now = time.monotonic()
        if kill_at is not None and now >= kill_at and len(outcomes) < len(names):
            for name in names:
                if name not in outcomes:
                    procs[name].kill()
                    outcomes[name] = ("died", time.time(), "killed after the federation failed")
        if deadline is not None and now >= deadline and len(outcomes) < len(names):
            stuck = [n for n in names if n not in outcomes]
            raise ProtocolError(
                f"the federation did not finish within {timeout:g} s; still running: {stuck}"
            )
    return _result(names, outcomes)


def _result(names: list[str], outcomes: dict[str, tuple]) -> RunResult:
    failures = []
    for name, outcome in outcomes.items():
        if outcome[0] == "died":
            failures.append((outcome[1], name, PeerFailed(name, outcome[2])))
        elif outcome[0] == "failed":
            exc = outcome[2]
            if exc is None:
                exc = ProtocolError(f"party {name!r} failed with an unpicklable exception")
            if outcome[3]:
                with contextlib.suppress(Exception):
                    exc.add_note(f"in the process of party {name!r}:\n{outcome[3]}")
            failures.append((outcome[1], name, exc))
    if failures:
        _, name, exc = min(failures, key=lambda f: f[0])
        raise as_peer_failed(name, exc)
    return RunResult(
        {name: outcomes[name][1] for name in names},
        {name: outcomes[name][2] for name in names},
        [s for name in names for s in outcomes[name][3]],
    )


__all__ = ["run_processes"]
