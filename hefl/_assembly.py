"""The one way a party is put together and run.

Every runner (:func:`hefl.run` in one process, the process runner of ``processes=True``, and
:func:`hefl.run_party` for one party of a multi-host federation) goes through the same steps:
a started transport -> an executor -> the Party and its parts (:func:`build_party`) -> run the
role (:func:`run_party_role`) -> shut the executor down -> an :class:`Outcome` per party ->
:func:`run_result`, the :class:`RunResult` (or the earliest failure).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hefl._executor import Executor, make_executor
from hefl._liveness import Liveness
from hefl._mailbox import Mailbox
from hefl._options import RunOptions, RuntimeOptions
from hefl._party import Party, check_peers
from hefl._tracing import Span, Trace, Tracer
from hefl._wire import Wire
from hefl.codec import Codec
from hefl.errors import PeerFailed
from hefl.transports.base import Transport

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


@dataclass
class Outcome:
    """How one party's run ended (picklable: a party process sends it to its supervisor).

    Attributes:
        name: the party.
        value: the role's return value.
        error: what the party failed with, or None.
        failed_at: wall time of the failure (orders failures across processes).
        statistics: the party's :meth:`Party.statistics`.
        spans: the party's trace spans.
    """

    name: str
    value: Any = None
    error: BaseException | None = None
    failed_at: float = 0.0
    statistics: dict[str, Any] = field(default_factory=dict)
    spans: list[Span] = field(default_factory=list)


@dataclass(frozen=True)
class Assembled:
    """A party's parts, as :func:`build_party` returns them.

    Attributes:
        party: the facade its role gets.
        liveness: what runs the role (handshake, failures, close barrier).
        tracer: its spans.
    """

    party: Party
    liveness: Liveness
    tracer: Tracer


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


@contextmanager
def executor_scope(spec: Any, max_workers: int | None) -> Iterator[Any]:
    """The executor named by ``spec`` (see :func:`hefl._executor.make_executor`), shut down
    on leaving if it was made here. A mapping ``{party name: spec}`` gives each party its own
    (:class:`PartyExecutors`; parties it does not name share a default process pool).

    Raises:
        ConfigError: an unknown executor name or object.
    """
    made: list[Any] = []
    try:
        if isinstance(spec, Mapping):
            by_party = {}
            for name, one in spec.items():
                pool, owned = make_executor(one, max_workers)
                by_party[name] = pool
                if owned:
                    made.append(pool)
            default, _ = make_executor("process", max_workers)
            made.append(default)
            yield PartyExecutors(by_party, default)
        else:
            pool, owned = make_executor(spec, max_workers)
            if owned:
                made.append(pool)
            yield pool
    finally:
        for pool in made:
            pool.shutdown(wait=True, cancel_futures=True)


class PartyExecutors(dict):
    """Each party's executor by name (``executor={"active": DaskExecutor(...), ...}``).

    Args:
        by_party: the executors of the parties named.
        default: the executor of every other party.
    """

    def __init__(self, by_party: Mapping[str, Any], default: Any) -> None:
        super().__init__(by_party)
        self.default = default


def executor_of(pool: Any, name: str) -> Any:
    """Party ``name``'s executor out of what :func:`executor_scope` yielded."""
    if isinstance(pool, PartyExecutors):
        return pool.get(name, pool.default)
    return pool


async def _run_with_executor(executor: Any, party: Party, role: Role) -> Any:
    """Start an executor that needs the party's loop (e.g. :class:`hefl.DaskExecutor`),
    run the role, then release it."""
    start = getattr(executor, "start", None)
    if start is None or not inspect.iscoroutinefunction(start):
        return await role(party)
    await start(party.name)
    try:
        return await role(party)
    finally:
        await executor.release()


def build_party(
    name: str,
    peers: Sequence[str],
    transport: Transport,
    *,
    codec: Codec,
    executor: Executor | None,
    options: RuntimeOptions,
    agreement: Mapping[str, str] | None = None,
) -> Assembled:
    """Build a party's parts around its started transport.

    Returns:
        the :class:`Party` its role gets, the :class:`Liveness` that runs it and its tracer.

    Raises:
        ConfigError: a bad name, or bad peers.
    """
    peers = check_peers(name, peers)
    tracer = Tracer(name)
    mailbox = Mailbox(name, peers, options, tracer)
    wire = Wire(transport, codec, mailbox.raise_if_failed)
    liveness = Liveness(name, peers, wire, mailbox, options, agreement)
    party = Party(
        name,
        peers,
        wire=wire,
        mailbox=mailbox,
        liveness=liveness,
        tracer=tracer,
        executor=executor,
        stream_window=options.stream_window,
    )
    return Assembled(party, liveness, tracer)


async def run_party_role(
    name: str,
    peers: Sequence[str],
    transport: Transport,
    role: Role,
    options: RunOptions,
    executor: Executor | None,
    supervise: Callable[[Liveness], None] | None = None,
) -> Outcome:
    """Run one party's role over its started transport (which is closed at the end).

    Args:
        name, peers: the party and its peers.
        transport: its started transport.
        role: ``async def role(party)``.
        options: the run's options.
        executor: where :meth:`Party.offload` runs work (None: inline).
        supervise: called with the party's :class:`Liveness` before the role starts, e.g. to
            fail it when a supervisor reports a dead peer.

    Returns:
        the :class:`Outcome`; a failure of the party is in its ``error``.

    Raises:
        asyncio.CancelledError: the run was cancelled from outside.
    """
    codec = Codec(max_message_bytes=options.max_message_bytes)
    executor = executor_of(executor, name)
    parts = build_party(
        name,
        peers,
        transport,
        codec=codec,
        executor=executor,
        options=options.runtime,
        agreement=options.agreement_of(name),
    )
    party, liveness = parts.party, parts.liveness
    if supervise is not None:
        supervise(liveness)
    try:
        value = await liveness.run(lambda: _run_with_executor(executor, party, role))
    except BaseException as exc:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # not an outcome: whoever cancelled us is in charge
        failed_at = liveness.failed_at or time.time()
        return Outcome(name, None, exc, failed_at, party.statistics(), list(parts.tracer.spans))
    return Outcome(name, value, None, 0.0, party.statistics(), list(parts.tracer.spans))


def run_result(outcomes: Iterable[Outcome]) -> RunResult:
    """Combine the parties' outcomes.

    Returns:
        the :class:`RunResult` of a run in which every party succeeded.

    Raises:
        PeerFailed: the earliest failure, naming the party where it started (the original
            exception chained as ``__cause__``).
    """
    done = list(outcomes)
    failed = [o for o in done if o.error is not None]
    if failed:
        first = min(failed, key=lambda o: o.failed_at)
        raise as_peer_failed(first.name, first.error)  # type: ignore[arg-type]
    return RunResult(
        {o.name: o.value for o in done},
        {o.name: o.statistics for o in done},
        [s for o in done for s in o.spans],
    )


def as_peer_failed(name: str, exc: BaseException) -> PeerFailed:
    """Wrap the exception of party ``name`` as PeerFailed (PeerFailed passes through)."""
    if isinstance(exc, PeerFailed):
        return exc
    failed = PeerFailed(name, f"{type(exc).__name__}: {exc}")
    failed.__cause__ = exc
    return failed


__all__ = [
    "Assembled",
    "Outcome",
    "PartyExecutors",
    "Role",
    "RunResult",
    "as_peer_failed",
    "build_party",
    "executor_of",
    "executor_scope",
    "loop_factory",
    "run_party_role",
    "run_result",
]
