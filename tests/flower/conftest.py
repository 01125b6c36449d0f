"""A small numpy Flower app for the hefl.flower tests: each client's "training" adds a
Gaussian step of a per-layer scale to the model it receives, and the test keeps every update
it made (the clients' own knowledge, to compare with what the federation computed)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

flwr = pytest.importorskip("flwr")

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402

from hefl.flower import BatchCryptFedAvg, batchcrypt_mod  # noqa: E402
from hefl.protocols.batchcrypt import BatchCryptConfig  # noqa: E402

# layer name -> (shape, dtype, scale of a client's step)
LAYERS = {
    "w": ((12, 8), np.float64, 0.05),
    "b": ((8,), np.float32, 0.002),
    "head": ((8, 3), np.float64, 1.5),
}


def initial_model(seed: int = 7) -> ArrayRecord:
    """A random initial model (distinctive bytes, unlike zeros)."""
    rng = np.random.default_rng(seed)
    return ArrayRecord(
        {
            name: flwr.app.Array(rng.normal(0, 1, shape).astype(dt))
            for name, (shape, dt, _) in LAYERS.items()
        }
    )


@dataclass
class Recorder:
    """What the test's clients did: per (node, round) the model received, the model
    trained and the weight; and the evaluate calls."""

    received: dict[tuple[int, int], dict[str, np.ndarray]] = field(default_factory=dict)
    trained: dict[tuple[int, int], dict[str, np.ndarray]] = field(default_factory=dict)
    weights: dict[int, int] = field(default_factory=dict)
    evaluated: dict[tuple[int, int], dict[str, np.ndarray]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def make_client_app(
    cfg: BatchCryptConfig,
    rec: Recorder,
    *,
    mod: Callable[..., Message] | None = None,
    poison: Callable[[int, int, dict[str, np.ndarray]], None] | None = None,
) -> ClientApp:
    """The numpy ClientApp: ``mods=[batchcrypt_mod(cfg)]`` (or ``mod``) around plain
    train/evaluate functions. ``poison(partition, round, arrays)`` may alter an update."""
    app = ClientApp(mods=[mod if mod is not None else batchcrypt_mod(cfg)])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        part = int(context.node_config["partition-id"])
        rnd = int(msg.content["config"].get("server-round", 0))
        arrays = {k: v.numpy() for k, v in msg.content["arrays"].items()}
        rng = np.random.default_rng(1000 * part + rnd)
        new = {
            k: (a.astype(np.float64) + rng.normal(0, LAYERS[k][2], a.shape)).astype(a.dtype)
            for k, a in arrays.items()
        }
        if poison is not None:
            poison(part, rnd, new)
        weight = 10 * (part + 1)
        with rec.lock:
            rec.received[(context.node_id, rnd)] = arrays
            rec.trained[(context.node_id, rnd)] = new
            rec.weights[context.node_id] = weight
        out = ArrayRecord({k: flwr.app.Array(v) for k, v in new.items()})
        metrics = MetricRecord({"loss": float(part), "num-examples": weight})
        return Message(RecordDict({"arrays": out, "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        rnd = int(msg.content["config"].get("server-round", 0))
        with rec.lock:
            rec.evaluated[(context.node_id, rnd)] = {
                k: v.numpy() for k, v in msg.content["arrays"].items()
            }
        metrics = MetricRecord({"acc": 0.5, "num-examples": 1})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


def make_server_app(
    cfg: BatchCryptConfig,
    rounds: int,
    out: dict[str, Any],
    timeout: float = 120.0,
    **strategy_args: Any,
) -> ServerApp:
    """The ServerApp: BatchCryptFedAvg; keeps the strategy and the result in ``out``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = BatchCryptFedAvg(cfg, **strategy_args)
        out["strategy"] = strategy
        out["result"] = strategy.start(
            grid=grid,
            initial_arrays=initial_model(),
            num_rounds=rounds,
            timeout=timeout,
        )

    return app
