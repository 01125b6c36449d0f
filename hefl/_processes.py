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
process outlives :func:`run_processes`. Every child also watches the supervisor's pid (and its
pool workers watch the child), so even a SIGKILLed supervisor leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import pickle
import signal
import time
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any

from hefl._assembly import (
    Outcome,
    Role,
    RunResult,
    executor_scope,
    loop_factory,
    run_party_role,
    run_result,
)
from hefl._executor import cpu_count
from hefl._liveness import Liveness
from hefl._options import RunOptions
from hefl.crypto._orphans import check_main_guarded, watch_owner
from hefl.errors import ConfigError, PeerFailed, ProtocolError

_SUPERVISOR = "<supervisor>"


# ---------------------------------------------------------------------- the party process


def _child_main(
    name: str, role: Role, names: list[str], conn: Connection, options: RunOptions, setup: dict
) -> None:
    """Entry point of a party process."""
    # Exit with the supervisor, even a SIGKILLed one (the pipe's EOF is only watched while
    # the role runs); ignore Ctrl-C: the supervisor decides how its children end.
    watch_owner(setup["supervisor"])
    try:
        with asyncio.Runner(loop_factory=loop_factory(options.use_uvloop)) as runner:
            runner.run(_child_async(name, role, names, conn, options, setup))
    except BaseException as exc:  # report what we can; the parent treats silence as death
        with contextlib.suppress(Exception):
            conn.send(("outcome", _sendable(Outcome(name, error=exc, failed_at=time.time()))))
    finally:
        conn.close()


async def _child_async(
    name: str, role: Role, names: list[str], conn: Connection, options: RunOptions, setup: dict
) -> None:
    from hefl.transports.zmq import ZmqTransport

    keys = setup["curve_keys"]
    peers = [p for p in names if p != name]
    transport = ZmqTransport(
        name,
        setup["address"],
        curve=keys[name] if keys else None,
        peer_keys={p: keys[p].public for p in peers} if keys else None,
        max_message_bytes=options.max_message_bytes,
    )
    try:
        conn.send(("bound", transport.bind()))
        message = await _recv_pipe(conn)
        if message[0] != "book":  # another party failed to start
            await transport.close(linger=0)
            return
    except BaseException:
        await transport.close(linger=0)
        raise
    transport.connect({p: message[1][p] for p in peers})
    await transport.start()
    loop = asyncio.get_running_loop()

    def supervise(liveness: Liveness) -> None:
        loop.add_reader(conn.fileno(), _on_pipe, loop, conn, liveness)

    try:
        with executor_scope(options.executor, options.max_workers) as pool:
            outcome = await run_party_role(name, peers, transport, role, options, pool, supervise)
    finally:
        _unwatch(loop, conn)
    try:
        conn.send(("outcome", _sendable(outcome)))
    except Exception as exc:  # e.g. an unpicklable return value
        why = f"the result of party {name!r} cannot be sent to the parent: {exc}"
        outcome = dataclasses.replace(outcome, value=None, error=ConfigError(why))
        conn.send(("outcome", dataclasses.replace(outcome, failed_at=time.time())))


def _on_pipe(loop: asyncio.AbstractEventLoop, conn: Connection, liveness: Liveness) -> None:
    """The parent tells us about dead peers; EOF means the parent itself is gone."""
    try:
        os.set_blocking(conn.fileno(), True)  # read whole messages (see _unwatch)
        msg = conn.recv()
    except (EOFError, OSError):
        _unwatch(loop, conn)
        liveness.fail(_SUPERVISOR, "the supervising process exited")
        return
    if msg[0] == "lost":
        liveness.peer_lost(msg[1], msg[2])


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


def _sendable(outcome: Outcome) -> Outcome:
    """The outcome with its error ready for the pipe: the child's traceback as a note, and a
    ProtocolError standing in for an exception that cannot be pickled."""
    exc = outcome.error
    if exc is None:
        return outcome
    text = "".join(traceback.format_exception(exc))
    try:
        pickle.dumps(exc)
    except Exception:
        exc = ProtocolError(f"party {outcome.name!r} failed with an unpicklable exception")
    with contextlib.suppress(Exception):
        exc.add_note(f"in the process of party {outcome.name!r}:\n{text}")
    return dataclasses.replace(outcome, error=exc)


# ---------------------------------------------------------------------- the supervisor


def run_processes(
    roles: dict[str, Role],
    options: RunOptions,
    *,
    address: str = "tcp://127.0.0.1:*",
    kill_grace: float = 5.0,
) -> RunResult:
    """Run every role in its own spawned process over ZeroMQ; see :func:`hefl.run`.

    Returns:
        the :class:`RunResult` of the run.

    Raises:
        ConfigError: a role is not picklable or the executor is not given by name.
        PeerFailed: a party failed or its process died.
        ProtocolError: the federation did not finish within ``options.timeout``.
    """
    if not isinstance(options.executor, str):
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
    check_main_guarded()
    names = list(roles)
    if options.executor in ("process", "thread") and options.max_workers is None:
        # the parties share this machine's cores
        workers = max(1, cpu_count() // len(names))
        options = dataclasses.replace(options, max_workers=workers)
    setup = {
        "curve_keys": _curve_keys(names) if options.curve else None,
        "address": address,
        "supervisor": os.getpid(),
    }
    ctx = multiprocessing.get_context("spawn")
    supervisor = _Supervisor(names, options, kill_grace)
    try:
        for name in names:
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(
                target=_child_main,
                args=(name, roles[name], names, child_end, options, setup),
                name=f"hefl-party-{name}",
            )
            proc.start()
            child_end.close()
            supervisor.conns[name], supervisor.procs[name] = parent_end, proc
        return supervisor.run()
    finally:
        supervisor.reap()


def _curve_keys(names: list[str]) -> dict[str, Any]:
    from hefl.transports.curve import generate_curve_keypair

    return {name: generate_curve_keypair() for name in names}


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


class _Supervisor:
    """Waits on the party processes (pipes and process sentinels) from the calling thread."""

    def __init__(self, names: list[str], options: RunOptions, kill_grace: float) -> None:
        self.names = names
        self.options = options
        self.kill_grace = kill_grace
        self.conns: dict[str, Connection] = {}
        self.procs: dict[str, Any] = {}
        self.book: dict[str, str] = {}
        self.outcomes: dict[str, Outcome] = {}
        self.start = time.monotonic()

    def run(self) -> RunResult:
        """Hand out the address book once every child is bound, then collect the outcomes.

        Returns:
            the :class:`RunResult` of the run.

        Raises:
            PeerFailed: a party failed, died or did not start in time.
            ProtocolError: the federation did not finish within the timeout.
        """
        self._collect_addresses()
        if self.outcomes:  # a party failed to start: stop the others
            for name in self.book:
                with contextlib.suppress(OSError):
                    self.conns[name].send(("stop",))
            return run_result(self.outcomes.values())
        for name in self.names:
            self.conns[name].send(("book", self.book))
        self._collect_outcomes()
        return run_result(self.outcomes[name] for name in self.names)

    def reap(self) -> None:
        """Kill whatever still runs; close the pipes."""
        for proc in self.procs.values():
            if proc.is_alive():
                proc.kill()
        for proc in self.procs.values():
            proc.join(5)
        for conn in self.conns.values():
            conn.close()

    def _died(self, name: str, cause: str) -> None:
        self.outcomes[name] = Outcome(name, error=PeerFailed(name, cause), failed_at=time.time())

    def _collect_addresses(self) -> None:
        """Phase 1: every child binds and reports its address (or fails)."""
        timeout = self.options.timeout
        setup_seconds = self.options.runtime.connect_timeout + 60.0  # spawning imports numpy
        if timeout is not None:
            setup_seconds = min(setup_seconds, timeout)
        deadline = self.start + setup_seconds
        closed: set[str] = set()  # pipe closed before a report: wait for the exit code instead
        while True:
            waiting = [n for n in self.names if n not in self.book and n not in self.outcomes]
            if not waiting:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PeerFailed(
                    waiting[0], f"its process did not start within {setup_seconds:g} s"
                )
            pipes = [self.conns[n] for n in waiting if n not in closed]
            ready = wait(pipes + [self.procs[n].sentinel for n in waiting], remaining)
            for name in waiting:
                conn, proc = self.conns[name], self.procs[name]
                if name not in closed and (conn in ready or conn.poll()):
                    try:
                        msg = conn.recv()
                    except EOFError:  # the child is dying before reporting anything
                        closed.add(name)
                        continue
                    if msg[0] == "bound":
                        self.book[name] = msg[1]
                    else:
                        self.outcomes[name] = msg[1]
                elif proc.sentinel in ready:
                    proc.join(5)  # the sentinel closes a moment before the exit is reapable
                    self._died(name, _describe_exit(proc.exitcode))

    def _collect_outcomes(self) -> None:
        """Phase 2: wait for outcomes; a dead process is reported to everyone still running."""
        timeout = self.options.timeout
        deadline = None if timeout is None else self.start + timeout
        kill_at: float | None = None
        while len(self.outcomes) < len(self.names):
            limits = [t for t in (deadline, kill_at) if t is not None]
            wait_for = None if not limits else max(0.0, min(limits) - time.monotonic())
            live = [n for n in self.names if n not in self.outcomes]
            ready = wait(
                [self.conns[n] for n in live] + [self.procs[n].sentinel for n in live], wait_for
            )
            for name in live:
                self._check_child(name, ready)
            if kill_at is None and any(o.error is not None for o in self.outcomes.values()):
                kill_at = time.monotonic() + self.kill_grace
            now = time.monotonic()
            if kill_at is not None and now >= kill_at:
                for name in self.names:
                    if name not in self.outcomes:
                        self.procs[name].kill()
                        self._died(name, "killed after the federation failed")
            if deadline is not None and now >= deadline and len(self.outcomes) < len(self.names):
                stuck = [n for n in self.names if n not in self.outcomes]
                raise ProtocolError(
                    f"the federation did not finish within {timeout:g} s; still running: {stuck}"
                )

    def _check_child(self, name: str, ready: list[Any]) -> None:
        conn, proc = self.conns[name], self.procs[name]
        if conn in ready or conn.poll():
            try:
                self.outcomes[name] = conn.recv()[1]
                return
            except EOFError:
                proc.join(1)
        if proc.sentinel not in ready or name in self.outcomes:
            return
        if conn.poll():
            with contextlib.suppress(EOFError):
                self.outcomes[name] = conn.recv()[1]
                return
        proc.join(1)
        cause = _describe_exit(proc.exitcode)
        self._died(name, cause)
        for other in self.names:
            if other not in self.outcomes:
                with contextlib.suppress(OSError):
                    self.conns[other].send(("lost", name, cause))


__all__ = ["run_processes"]
