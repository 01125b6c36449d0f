"""The same mod around a legacy ``NumPyClient`` app (``ClientApp(client_fn=...)``): the
update is FedAvg's within the quantization step, and evaluate metrics come back averaged."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Array, ArrayRecord, Context
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from hefl.flower import BatchCryptFedAvg, batchcrypt_mod, global_arrays, run_local
from hefl.protocols.batchcrypt import BatchCryptConfig

CFG = BatchCryptConfig(bits=16, n_clients=3, key_bits=512, allow_insecure=True, clipping=1.0)
START = {"w": np.linspace(-1, 1, 20).reshape(4, 5), "b": np.arange(3, dtype=np.float32)}


class StepClient(NumPyClient):
    """Adds (part + 1)·0.01·sign-pattern to every value, weighted by 10·(part + 1)."""

    def __init__(self, part: int) -> None:
        self.part = part

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple:
        step = [
            (self.part + 1) * 0.01 * np.where(np.arange(p.size) % 2, 1, -1).reshape(p.shape)
            for p in parameters
        ]
        new = [(p + s).astype(p.dtype) for p, s in zip(parameters, step, strict=True)]
        return new, 10 * (self.part + 1), {"part": self.part, "note": "text is dropped"}

    def evaluate(self, parameters: list[np.ndarray], config: dict) -> tuple:
        return float(self.part), 10, {"acc": 0.25 * self.part}


def test_a_numpyclient_app_runs_with_the_same_mod():
    def client_fn(context: Context) -> Any:
        return StepClient(int(context.node_config["partition-id"])).to_client()

    client = ClientApp(client_fn=client_fn, mods=[batchcrypt_mod(CFG)])
    server, out = ServerApp(), {}

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        initial = ArrayRecord({k: Array(v) for k, v in START.items()})
        out["result"] = BatchCryptFedAvg(CFG).start(grid=grid, initial_arrays=initial, num_rounds=1)

    run = run_local(server, client, 3)
    # FedAvg of steps 0.01, 0.02, 0.03 with weights 10, 20, 30: (0.1+0.4+0.9)/60 = 0.02333
    step = CFG.clipping / ((1 << (CFG.bits - 1)) - 1)
    for ctx in run.contexts.values():
        model = global_arrays(ctx)
        for name, start in START.items():
            sign = np.where(np.arange(start.size) % 2, 1, -1).reshape(start.shape)
            expected = start.astype(np.float64) + 1.4 / 60 * sign
            got = model[name].numpy()
            assert got.dtype == start.dtype
            assert np.abs(got - expected).max() <= step + 1e-6, name
    result = out["result"]
    assert result.train_metrics_clientapp[1]["part"] == pytest.approx((0 * 10 + 20 + 2 * 30) / 60)
    assert result.evaluate_metrics_clientapp[1]["loss"] == pytest.approx(1.0)
    assert result.evaluate_metrics_clientapp[1]["acc"] == pytest.approx(0.25)
