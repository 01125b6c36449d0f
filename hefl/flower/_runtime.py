"""Run a ServerApp and its ClientApps in one process on Flower's own simulation engine.

``flwr.simulation.run_simulation`` needs Ray (``flwr[simulation]``) for its one backend. This
module runs the same engine (Flower's in-memory LinkState and ``InMemoryGrid``, the
simulation runtime's worker loop and per-node Contexts) with a small in-process backend in
place of Ray's actors: each ClientApp call runs in a worker thread. Every Message crosses
between server and client as Flower's protobuf bytes (``message_to_proto``), as it would over
gRPC, so no Python object is shared, and :class:`MessageLog` keeps those bytes, so tests and
benchmarks can inspect exactly what the server relays.

It uses the engine's internal helpers (``vce_api.run_api``), which is why the ``flower``
extra pins flwr to one minor version.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flwr.app import Context, Message, RecordDict
from flwr.app.user_config import UserConfig
from flwr.clientapp import ClientApp
from flwr.clientapp.client_app import ClientAppException
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage  # type: ignore[attr-defined]
from flwr.proto.task_pb2 import Task  # type: ignore[attr-defined]
from flwr.server.run_serverapp import run as run_serverapp
from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.fleet.vce.backend.backend import Backend
from flwr.server.superlink.fleet.vce.metrics import VceMetrics
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
from flwr.serverapp import ServerApp
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid import InMemoryGrid

from hefl.errors import ConfigError


@dataclass(frozen=True)
class Relayed:
    """One message as it crossed between the server and a client.

    Attributes:
        node: the client's node id.
        to_client: True for server → client, False for the reply.
        message_type: the Flower message type (``train``, ``evaluate``, ...).
        group: the message's group id (the round, for Flower's and hefl's strategies).
        wire: the message's protobuf bytes.
        at: when it crossed (``time.perf_counter()``).
        cpu: for a reply, the CPU seconds the client's ClientApp spent producing it.
        wall: for a reply, the seconds the ClientApp call took.
    """

    node: int
    to_client: bool
    message_type: str
    group: str
    wire: bytes
    at: float
    cpu: float = 0.0
    wall: float = 0.0


@dataclass
class MessageLog:
    """Every message the server sent or received, in order (thread-safe)."""

    entries: list[Relayed] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, entry: Relayed) -> None:
        """Append one entry."""
        with self._lock:
            self.entries.append(entry)

    def bytes_by_node(self) -> dict[int, tuple[int, int]]:
        """(bytes received, bytes sent) per client node."""
        out: dict[int, tuple[int, int]] = {}
        for e in self.entries:
            down, up = out.get(e.node, (0, 0))
            out[e.node] = (down + len(e.wire), up) if e.to_client else (down, up + len(e.wire))
        return out

    def cpu_by_node(self) -> dict[int, float]:
        """CPU seconds each client's ClientApp spent."""
        out: dict[int, float] = {}
        for e in self.entries:
            out[e.node] = out.get(e.node, 0.0) + e.cpu
        return out


def _cross(message: Message) -> tuple[Message, bytes]:
    """The message as the other side receives it: serialized, then parsed again."""
    wire = message_to_proto(message).SerializeToString()
    return message_from_proto(ProtoMessage.FromString(wire)), wire


class InProcessBackend(Backend):
    """A simulation backend that runs ClientApps in the engine's worker threads.

    Args:
        workers: how many ClientApp calls may run at once.
        log: where every crossing message goes.
    """

    def __init__(self, workers: int, log: MessageLog) -> None:
        super().__init__({})
        self._workers = workers
        self.log = log
        self.app: ClientApp | None = None

    def build(self, app_fn: Callable[[], ClientApp]) -> None:
        """Load the ClientApp once."""
        self.app = app_fn()

    @property
    def num_workers(self) -> int:
        """The number of concurrent ClientApp calls."""
        return self._workers

    def is_worker_idle(self) -> bool:
        """Workers are threads of the engine; one is always free when it asks."""
        return True

    def terminate(self) -> None:
        """Nothing to stop."""

    def process_message(self, message: Message, context: Context) -> tuple[Message, Context]:
        """Run the ClientApp on the message, both ways through protobuf bytes."""
        assert self.app is not None, "build() the backend first"
        node = int(message.metadata.dst_node_id)
        kind, group = message.metadata.message_type, message.metadata.group_id
        inbound, wire = _cross(message)
        self.log.add(Relayed(node, True, kind, group, wire, time.perf_counter()))
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            out = self.app(inbound, context)
        except Exception as exc:  # reported to the server as an Error reply, as Flower does
            raise ClientAppException(str(exc)) from exc
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        reply, back = _cross(out)
        self.log.add(Relayed(node, False, kind, group, back, time.perf_counter(), cpu, wall))
        return reply, context


@dataclass
class LocalRun:
    """What :func:`run_local` leaves behind.

    Attributes:
        server_context: the ServerApp's Context after the run.
        contexts: each client node's Context after the run (node id → Context).
        log: every message between server and clients, as bytes.
        seconds: the run's wall time.
    """

    server_context: Context
    contexts: dict[int, Context]
    log: MessageLog
    seconds: float


def _new_run(state_factory: LinkStateFactory) -> Run:
    run = Run.create_empty(run_id=secrets.randbits(63))
    run.primary_task_id = secrets.randbits(63)
    run.federation_id = NOOP_FEDERATION_ID
    # the process-wide identity server-side Messages are stamped with (as Flower's own
    # Python-API simulation sets it)
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run.run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    state = state_factory.state()
    state.run_ids[run.run_id] = RunRecord(run=run)  # type: ignore[attr-defined]
    state.task_store[run.primary_task_id] = Task(  # type: ignore[attr-defined]
        task_id=run.primary_task_id, run_id=run.run_id
    )
    return run


def run_local(
    server_app: ServerApp, client_app: ClientApp, num_supernodes: int, *, workers: int = 0
) -> LocalRun:
    """Run ``server_app`` against ``num_supernodes`` copies of ``client_app`` in this process.

    Args:
        server_app: the ServerApp.
        client_app: the ClientApp every simulated node runs.
        num_supernodes: how many client nodes (1..64).
        workers: concurrent ClientApp calls (default: one per node).

    Returns:
        A :class:`LocalRun`.

    Raises:
        ConfigError: a bad ``num_supernodes``.
        Exception: whatever the ServerApp raised (a hefl strategy's ConfigError,
            ProtocolError, ...), unchanged.
    """
    if isinstance(num_supernodes, bool) or not isinstance(num_supernodes, int):
        raise ConfigError(f"num_supernodes must be an integer, not {num_supernodes!r}")
    if not 1 <= num_supernodes <= 64:
        raise ConfigError(f"num_supernodes must be between 1 and 64, not {num_supernodes}")
    state_factory = LinkStateFactory(
        FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory()
    )
    run = _new_run(state_factory)
    grid = InMemoryGrid(state_factory=state_factory)
    grid.set_run(run)
    nodes = vce_api._register_nodes(num_nodes=num_supernodes, state_factory=state_factory)
    stores = vce_api._register_node_info_stores(nodes_mapping=nodes, run=run, app_dir=None)
    log, stop, failures = MessageLog(), threading.Event(), []
    context = Context(
        run_id=run.run_id,
        node_id=0,
        node_config=UserConfig(),
        state=RecordDict(),
        run_config=UserConfig(),
    )

    def serve() -> None:
        try:
            run_serverapp(
                grid=grid, context=context, server_app_dir="", loaded_server_app=server_app
            )
        except BaseException as exc:  # handed to the caller's thread below
            failures.append(exc)
        finally:
            stop.set()

    start = time.perf_counter()
    server = threading.Thread(target=serve, name="hefl-flower-server", daemon=True)
    server.start()
    backend = InProcessBackend(workers or num_supernodes, log)
    vce_api.run_api(
        lambda: client_app, lambda: backend, nodes, state_factory, stores, stop, VceMetrics()
    )
    server.join()
    if failures:
        raise failures[0]
    contexts = {n: stores[n].retrieve_context(run.run_id) for n in nodes}
    return LocalRun(context, contexts, log, time.perf_counter() - start)
