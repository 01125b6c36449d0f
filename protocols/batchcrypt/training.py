"""Federated training (FedAvg / FedSGD) of numpy models over horizontal data splits.

The same loop runs with BatchCrypt aggregation, the per-value Paillier baseline and plaintext
aggregation (``cfg.mode``), in one process or one OS process per party over ZeroMQ.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from hefl import Party
from hefl.errors import ConfigError
from hefl.protocols.batchcrypt.aggregator import aggregator
from hefl.protocols.batchcrypt.checkpoint import resumed
from hefl.protocols.batchcrypt.client import client
from hefl.protocols.batchcrypt.config import BatchCryptConfig
from hefl.protocols.batchcrypt.datasets import DATASETS, TrainTest, load_task, split_horizontal
from hefl.protocols.batchcrypt.federation import RoundTiming
from hefl.protocols.batchcrypt.models import MLP, MODELS, make_model

ALGORITHMS = ("fedavg", "fedsgd")
TRANSPORTS = ("inproc", "zmq")

# Loaded datasets, shared by the clients that run in one process (a multi-process run loads
# the data once per party process instead of pickling it to every process).
_TASKS: dict[str, TrainTest] = {}


def _task(name: str) -> TrainTest:
    if name not in _TASKS:
        _TASKS[name] = load_task(name)
    return _TASKS[name]


@dataclass(frozen=True)
class TrainSpec:
    """The training hyperparameters every client agrees on (small and picklable).

    Attributes:
        dataset: ``"adult"`` or ``"fmnist"``.
        model: ``"logreg"`` or ``"mlp"``.
        rounds: federated rounds.
        algorithm: ``"fedavg"`` (``local_steps`` minibatch SGD steps per round, then average
            the model deltas) or ``"fedsgd"`` (one step: average the gradients).
        lr: client learning rate.
        local_steps: SGD steps per round for FedAvg.
        batch_size: minibatch size.
        hidden: hidden width of the MLP.
        seed: seed of the data split, model initialisation and batch sampling (the same for
            every mode, so plaintext and encrypted runs see the same batches).
        max_train_rows: use only the first rows of the shuffled training set (0: all).
    """

    dataset: str = "adult"
    model: str = "logreg"
    rounds: int = 20
    algorithm: str = "fedavg"
    lr: float = 0.1
    local_steps: int = 10
    batch_size: int = 64
    hidden: int = 128
    seed: int = 0
    max_train_rows: int = 0

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"dataset must be one of {DATASETS}, not {self.dataset!r}")
        if self.model not in MODELS:
            raise ConfigError(f"model must be one of {MODELS}, not {self.model!r}")
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"algorithm must be one of {ALGORITHMS}, not {self.algorithm!r}")
        for name in ("rounds", "local_steps", "batch_size", "hidden"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, not {v!r}")
        if not (isinstance(self.lr, int | float) and np.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, not {self.lr!r}")
        if isinstance(self.max_train_rows, bool) or self.max_train_rows < 0:
            raise ConfigError(f"max_train_rows must be >= 0, not {self.max_train_rows!r}")


class FedTrainer:
    """One client's local training, driven round by round by the client role.

    Args:
        spec: the shared hyperparameters.
        index: this client's index (its shard of the data).
        n_clients: number of clients (the data is split k ways).
        evaluate: evaluate the global model on the test set after each round.
        progress: called as ``progress(round, accuracy)`` after each evaluated round.
    """

    def __init__(
        self,
        spec: TrainSpec,
        index: int,
        n_clients: int,
        evaluate: bool = False,
        progress: Callable[[int, float], None] | None = None,
    ) -> None:
        self.spec = spec
        task = _task(spec.dataset)
        X, y = task.X_train, task.y_train
        if spec.max_train_rows:
            X, y = X[: spec.max_train_rows], y[: spec.max_train_rows]
        self.X, self.y = split_horizontal(X, y, n_clients, seed=spec.seed)[index]
        self.task = task if evaluate else None
        self.model: MLP = make_model(
            spec.model, task.n_features, task.n_classes, hidden=spec.hidden, seed=spec.seed
        )
        self.layer_sizes = self.model.layer_sizes
        self.rng = np.random.default_rng([spec.seed, index])
        self.progress = progress
        self.accuracy: list[float] = []
        self.loss: list[float] = []
        self.timings: list[RoundTiming] = []
        self._start: np.ndarray | None = None

    @property
    def rounds(self) -> int:
        """The rounds this training runs."""
        return int(self.spec.rounds)

    def update(self, t: int) -> np.ndarray | None:
        """Run local SGD from the global model; return the model delta (None after the last round)."""
        if t >= self.spec.rounds:
            return None
        spec = self.spec
        self._start = self.model.get_flat()
        steps = 1 if spec.algorithm == "fedsgd" else spec.local_steps
        w = self._start.copy()
        for _ in range(steps):
            idx = self.rng.integers(0, len(self.y), size=min(spec.batch_size, len(self.y)))
            self.model.set_flat(w)
            w = w - spec.lr * self.model.gradient(self.X[idx], self.y[idx])
        self.model.set_flat(self._start)
        return w - self._start

    def receive(self, t: int, total: np.ndarray, n_clients: int) -> None:
        """Apply the average of the clients' deltas to the global model."""
        assert self._start is not None
        self.model.set_flat(self._start + total / n_clients)
        if self.task is not None:
            acc = self.model.accuracy(self.task.X_test, self.task.y_test)
            self.accuracy.append(acc)
            self.loss.append(self.model.loss(self.task.X_test, self.task.y_test))
            if self.progress is not None:
                self.progress(t, acc)

    def record_timings(self, timings: list[RoundTiming]) -> None:
        self.timings = timings

    def result(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "loss": self.loss}


async def _client_role(
    party: Party,
    cfg: BatchCryptConfig,
    spec: TrainSpec,
    index: int,
    progress: Callable[[int, float], None] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    # loading and splitting the data takes seconds: off the event loop (heartbeats go on)
    trainer = await asyncio.to_thread(
        FedTrainer, spec, index, _n_clients(party, cfg), evaluate=index == 0, progress=progress
    )
    source = await resumed(party, cfg, spec, trainer, checkpoint_dir, resume)
    out = await client(party, cfg, source)
    return {
        "result": out,
        "timings": [t.to_dict() for t in trainer.timings],
        "statistics": party.statistics(),
    }


async def _aggregator_role(
    party: Party,
    cfg: BatchCryptConfig,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    # the aggregator keeps no checkpoint: it holds no state between rounds (see .checkpoint)
    report = await aggregator(party, cfg)
    return {
        "timings": [t.to_dict() for t in report.timings],
        "received_types": report.received_types,
        "statistics": party.statistics(),
    }


def party_role(
    name: str,
    cfg: BatchCryptConfig,
    spec: TrainSpec,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
) -> Callable[[Any], Any]:
    """The training role of one party, for running a federation one party at a time
    (``hefl party`` on several hosts: every host passes the same cfg and spec).

    Args:
        name: ``cfg.aggregator`` or one of ``cfg.clients``.
        cfg: the federation's configuration.
        spec: the training hyperparameters.
        checkpoint_dir: a client saves the model after every round into
            ``<checkpoint_dir>/<name>`` (see :mod:`~hefl.protocols.batchcrypt.checkpoint`).
        resume: continue from the last round every client completed.

    Returns:
        A picklable ``async def role(party)``. Client ``client0`` returns
        ``{"result": {"accuracy": [...], "loss": [...]}, "timings": [...], "statistics": {...}}``;
        the aggregator ``{"timings": [...], "received_types": [...], "statistics": {...}}``.

    Raises:
        ConfigError: an unknown party name.
    """
    if resume and checkpoint_dir is None:
        raise ConfigError("resume=True needs checkpoint_dir (where the checkpoints are)")
    where = None if checkpoint_dir is None else os.path.abspath(checkpoint_dir)
    if name == cfg.aggregator:
        return functools.partial(_aggregator_role, cfg=cfg)
    if name not in cfg.clients:
        raise ConfigError(f"{name!r} is not a party of this federation; parties: {cfg.parties}")
    return functools.partial(
        _client_role,
        cfg=cfg,
        spec=spec,
        index=cfg.clients.index(name),
        checkpoint_dir=where,
        resume=resume,
    )


def _n_clients(party: Party, cfg: BatchCryptConfig) -> int:
    return sum(1 for n in (party.name, *party.peers) if n != cfg.aggregator)


@dataclass
class TrainResult:
    """The outcome of :func:`train`.

    Attributes:
        accuracy: test accuracy of the global model after each round.
        loss: test cross-entropy after each round.
        final_accuracy: accuracy after the last round.
        rounds: per round: ``encrypt``, ``aggregate``, ``decrypt``, ``decode`` (compute seconds;
            client figures are means over clients), ``transfer`` (the rest of the round's wall
            time: waiting on the network and on other parties), ``wall`` (slowest client) and
            ``bytes`` (all bytes sent by all parties that round).
        bytes_on_wire: total bytes sent by all parties over all rounds.
        seconds: wall time of the whole federation (key generation and data loading included).
        statistics: the runtime's statistics of every party.
        aggregator_received: type names of every object the aggregator received.
        mode, dataset, model, n_clients: what ran.
    """

    accuracy: list[float]
    loss: list[float]
    final_accuracy: float
    rounds: list[dict[str, float]]
    bytes_on_wire: int
    seconds: float
    statistics: dict[str, Any]
    aggregator_received: list[str]
    mode: str
    dataset: str
    model: str
    n_clients: int
    spec: dict[str, Any] = field(default_factory=dict)
    trace: Any = field(default=None, repr=False)  # hefl.Trace of every party's spans

    def mean_round(self) -> dict[str, float]:
        """The per-round figures averaged over rounds."""
        if not self.rounds:
            return {}
        return {k: float(np.mean([r[k] for r in self.rounds])) for k in self.rounds[0]}

    def summary(self) -> dict[str, Any]:
        """The headline figures, for a one-screen report (the CLI prints these)."""
        mean = self.mean_round()
        return {
            "mode": self.mode,
            "dataset": self.dataset,
            "model": self.model,
            "clients": self.n_clients,
            "rounds": len(self.rounds),
            "final_accuracy": self.final_accuracy,
            "seconds": self.seconds,
            "mean_round_seconds": {
                k: mean.get(k, 0.0)
                for k in ("encrypt", "transfer", "aggregate", "decrypt", "decode", "wall")
            },
            "bytes_per_round": mean.get("bytes", 0.0),
            "bytes_on_wire": self.bytes_on_wire,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything but the trace, as plain data (for ``--json``)."""
        out = asdict(replace(self, trace=None))
        out.pop("trace")
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=_jsonable)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def train(
    cfg: BatchCryptConfig,
    model: str = "logreg",
    dataset: str = "adult",
    rounds: int = 20,
    *,
    transport: str = "inproc",
    processes: bool = False,
    progress: Callable[[int, float], None] | None = None,
    spec: TrainSpec | None = None,
    executor: Any = None,
    run_options: dict[str, Any] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    **spec_options: Any,
) -> TrainResult:
    """Train a model with ``cfg.n_clients`` clients and one aggregator.

    Args:
        cfg: the federation's configuration; ``cfg.mode`` selects BatchCrypt, the per-value
            phe baseline or plaintext aggregation.
        model: ``"logreg"`` or ``"mlp"``.
        dataset: ``"adult"`` (bundled) or ``"fmnist"`` (Debian ``dataset-fashion-mnist``).
        rounds: federated rounds.
        transport: ``"inproc"`` (one process, asyncio queues) or ``"zmq"``.
        processes: one OS process per party (needs ``transport="zmq"``).
        progress: ``progress(round, test_accuracy)`` after every round, called by the first
            client (with ``processes=True`` it must be picklable and runs in that client's
            process, so it reports live from there).
        spec: full hyperparameters (overrides model/dataset/rounds; not with spec_options).
        executor: where each party's crypto runs (``hefl.run``'s ``executor``: ``"process"``
            pool by default, ``"thread"``, ``"inline"``).
        run_options: further keyword arguments for :func:`hefl.run` (timeouts, CURVE, ...).
        checkpoint_dir: every client saves the model there after every round (atomically).
        resume: continue those checkpoints from the last round every client completed.
        **spec_options: other :class:`TrainSpec` fields (lr, local_steps, batch_size, ...).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ConfigError: bad options, or spec together with spec_options; PeerFailed: a party
            failed (named).
    """
    import hefl

    if spec is not None and spec_options:
        raise ConfigError(
            f"pass either spec or TrainSpec fields ({', '.join(sorted(spec_options))}), not both"
        )
    spec = spec or TrainSpec(dataset=dataset, model=model, rounds=rounds, **spec_options)
    options = _run_options(cfg, transport, processes, executor, run_options)
    roles: dict[str, Any] = {
        name: party_role(name, cfg, spec, checkpoint_dir, resume) for name in cfg.parties
    }
    if progress is not None:
        roles[cfg.clients[0]] = functools.partial(roles[cfg.clients[0]], progress=progress)
    start = time.perf_counter()
    results = hefl.run(roles, **options)
    return _train_result(results, cfg, spec, time.perf_counter() - start)


def _run_options(
    cfg: BatchCryptConfig,
    transport: str,
    processes: bool,
    executor: Any,
    run_options: dict[str, Any] | None,
) -> dict[str, Any]:
    """The keyword arguments of :func:`hefl.run` for :func:`train`.

    Raises:
        ConfigError: an unknown transport, or processes without sockets.
    """
    if transport not in TRANSPORTS:
        raise ConfigError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
    if processes and transport != "zmq":
        raise ConfigError("processes=True needs transport='zmq' (parties talk over sockets)")
    options: dict[str, Any] = dict(run_options or {})
    options.setdefault("recv_timeout", cfg.round_timeout)
    if executor is not None:
        options["executor"] = executor
    if transport != "inproc":
        options["transport"] = transport
    if processes:
        options["processes"] = True
    return options


def _train_result(
    results: Any, cfg: BatchCryptConfig, spec: TrainSpec, seconds: float
) -> TrainResult:
    """Assemble :class:`TrainResult` from the parties' role results."""
    first = results[cfg.clients[0]]["result"]
    per_round = _round_table(results, cfg)
    return TrainResult(
        accuracy=list(first["accuracy"]),
        loss=list(first["loss"]),
        final_accuracy=float(first["accuracy"][-1]) if first["accuracy"] else float("nan"),
        rounds=per_round,
        bytes_on_wire=int(sum(r["bytes"] for r in per_round)),
        seconds=seconds,
        statistics={name: r["statistics"] for name, r in results.items()},
        aggregator_received=list(results[cfg.aggregator]["received_types"]),
        mode=cfg.mode,
        dataset=spec.dataset,
        model=spec.model,
        n_clients=cfg.n_clients,
        spec=asdict(spec),
        trace=getattr(results, "trace", None),
    )


def _round_table(results: dict[str, Any], cfg: BatchCryptConfig) -> list[dict[str, float]]:
    client_t = [results[c]["timings"] for c in cfg.clients]
    agg_t = results[cfg.aggregator]["timings"]
    table = []
    for t in range(len(agg_t)):
        rows = [ct[t] for ct in client_t]
        row = {k: float(np.mean([r[k] for r in rows])) for k in ("encrypt", "decrypt", "decode")}
        for k in ("background", "randomness_wait", "obfuscators_background", "obfuscators_online"):
            row[k] = float(np.mean([r.get(k, 0.0) for r in rows]))  # background randomness
        row["aggregate"] = float(agg_t[t]["aggregate"])
        row["wall"] = float(max(r["wall"] for r in rows))
        compute = row["encrypt"] + row["aggregate"] + row["decrypt"] + row["decode"]
        row["transfer"] = max(0.0, row["wall"] - compute)
        row["bytes"] = float(sum(r["bytes_sent"] for r in rows) + agg_t[t]["bytes_sent"])
        row["client_bytes"] = float(np.mean([r["bytes_sent"] + r["bytes_received"] for r in rows]))
        table.append(row)
    return table
