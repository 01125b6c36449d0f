"""hefl.flower on a small numpy app in Flower's simulation engine (in process, no network):
the federation's update equals plain FedAvg within the quantization step, and the server
never holds the private key nor relays a plaintext update or aggregate."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.common.serde import context_to_proto

from hefl.crypto import PrivateKey
from hefl.flower import global_arrays, run_local
from hefl.flower._state import SESSION
from hefl.protocols.batchcrypt import BatchCryptConfig, aciq_c

from .conftest import LAYERS, Recorder, initial_model, make_client_app, make_server_app

CFG = BatchCryptConfig(bits=16, n_clients=4, key_bits=1024, allow_insecure=True)
ROUNDS = 2


@pytest.fixture(scope="module")
def federation() -> tuple[Any, Recorder, dict[str, Any]]:
    rec, out = Recorder(), {}
    run = run_local(make_server_app(CFG, ROUNDS, out), make_client_app(CFG, rec), CFG.n_clients)
    return run, rec, out


def _models_after(run: Any, rec: Recorder, rnd: int) -> dict[int, dict[str, np.ndarray]]:
    """Every client's global model after round ``rnd`` (what it trains on next, or holds)."""
    if rnd < ROUNDS:
        return {n: rec.received[(n, rnd + 1)] for n in run.contexts}
    return {n: {k: v.numpy() for k, v in global_arrays(c).items()} for n, c in run.contexts.items()}


def test_update_is_fedavg_within_the_quantization_step(federation):
    run, rec, _ = federation
    nodes = sorted(run.contexts)
    k, top = len(nodes), (1 << (CFG.bits - 1)) - 1
    for rnd in range(1, ROUNDS + 1):
        before = rec.received[(nodes[0], rnd)]
        assert all(_same(rec.received[(n, rnd)], before) for n in nodes)
        weights = {n: rec.weights[n] for n in nodes}
        total = sum(weights.values())
        after = _models_after(run, rec, rnd)
        for name, (_, dtype, _) in LAYERS.items():
            deltas = {
                n: rec.trained[(n, rnd)][name].astype(np.float64) - before[name].astype(np.float64)
                for n in nodes
            }
            fedavg = sum(weights[n] * deltas[n] for n in nodes) / total
            # what each client quantized: x_i = n_i·Δ_i·k/N, clipped per layer at α = c(r)·σ
            xs = [weights[n] * deltas[n] * k / total for n in nodes]
            sigma = np.sqrt(sum(float(np.sum(x * x)) for x in xs) / (k * xs[0].size))
            alpha = aciq_c(CFG.bits) * sigma
            assert max(float(np.abs(x).max()) for x in xs) < alpha  # no clipping: bound applies
            step = alpha / top
            for n in nodes:
                got = after[n][name].astype(np.float64) - before[name].astype(np.float64)
                slack = 4 * np.finfo(dtype).eps * (np.abs(after[n][name]).max() + 1)
                err = np.abs(got - fedavg)
                assert err.max() <= step + slack, (rnd, name, err.max(), step)
                # the bound is not vacuous: the step is far below the update itself
                assert step < 1e-3 * np.abs(fedavg).max()
            assert all(_same(after[n], after[nodes[0]]) for n in nodes)


def test_evaluate_gets_the_clients_global_model(federation):
    run, rec, out = federation
    for n in run.contexts:
        assert _same(rec.evaluated[(n, ROUNDS)], _models_after(run, rec, ROUNDS)[n])
    result = out["result"]
    assert sorted(result.train_metrics_clientapp) == list(range(1, ROUNDS + 1))
    # the train metric "loss" is the partition id, averaged with weights 10, 20, 30, 40
    assert result.train_metrics_clientapp[1]["loss"] == pytest.approx(2.0)
    assert result.evaluate_metrics_clientapp[ROUNDS]["acc"] == pytest.approx(0.5)
    assert len(result.arrays) == 0  # the server has no model to report


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _secrets(run: Any) -> list[bytes]:
    """The private key in every form it could travel: JSON, factors as bytes, hex, decimal."""
    blobs = []
    for ctx in run.contexts.values():
        text = str(ctx.state.config_records[SESSION]["secret_json"])
        sk = PrivateKey.from_json(text)
        for f in (int(sk.p), int(sk.q)):
            blobs += [
                f.to_bytes((f.bit_length() + 7) // 8, "big"),
                f.to_bytes((f.bit_length() + 7) // 8, "little"),
            ]
            blobs += [format(f, "x").encode(), str(f).encode()]
        blobs.append(text.encode())
    return blobs


def _plain_updates(run: Any, rec: Recorder) -> list[bytes]:
    """Every trained model, update and aggregate of every round, as the bytes of its arrays
    (float64 and float32), a 48-byte run of each."""
    arrays: list[np.ndarray] = []
    for (n, rnd), trained in rec.trained.items():
        for name, a in trained.items():
            d = a.astype(np.float64) - rec.received[(n, rnd)][name].astype(np.float64)
            arrays += [a, d, d * rec.weights[n]]
    for rnd in range(1, ROUNDS + 1):
        arrays += [a for m in _models_after(run, rec, rnd).values() for a in m.values()]
    out = []
    for a in arrays:
        for dt in (np.float64, np.float32):
            raw = np.ascontiguousarray(a, dtype=dt).tobytes()
            out.append(raw[16:64])
    return out


def test_server_never_holds_the_key_nor_relays_plaintext(federation):
    run, rec, out = federation
    keys, updates = _secrets(run), _plain_updates(run, rec)
    assert len(run.log.entries) > 8 * ROUNDS * CFG.n_clients
    # the log holds the initial model in the clear: the check finds arrays it can see
    init = np.ascontiguousarray(initial_model()["w"].numpy()).tobytes()[16:64]
    assert any(init in e.wire for e in run.log.entries)
    for entry in run.log.entries:
        for blob in keys:
            assert blob not in entry.wire, (entry.node, entry.to_client, entry.message_type)
        for blob in updates:
            assert blob not in entry.wire, (entry.node, entry.to_client, entry.message_type)
    held = pickle.dumps(out["strategy"]) + context_to_proto(run.server_context).SerializeToString()
    for blob in keys + updates:
        assert blob not in held
    assert out["strategy"].public_key is not None
    assert not any(isinstance(v, PrivateKey) for v in vars(out["strategy"]).values())


def test_every_client_took_part_with_a_sealed_key(federation):
    run, _, out = federation
    jsons = {str(c.state.config_records[SESSION]["secret_json"]) for c in run.contexts.values()}
    assert len(jsons) == 1  # one key, agreed by all clients
    sk = PrivateKey.from_json(jsons.pop())
    assert sk.public_key == out["strategy"].public_key
    assert sk.public_key.n_bits == CFG.key_bits
    per_node = run.log.bytes_by_node()
    assert sorted(per_node) == sorted(run.contexts)
    assert all(down > 0 and up > 0 for down, up in per_node.values())


def test_a_fixed_clipping_threshold_bounds_the_error_by_its_step():
    cfg = CFG.with_(clipping=8.0, n_clients=3)
    rec, out = Recorder(), {}
    run = run_local(make_server_app(cfg, 1, out), make_client_app(cfg, rec), cfg.n_clients)
    nodes = sorted(run.contexts)
    total = sum(rec.weights[n] for n in nodes)
    step = 8.0 / ((1 << (cfg.bits - 1)) - 1)
    for n, ctx in run.contexts.items():
        after = {k: v.numpy() for k, v in global_arrays(ctx).items()}
        for name, (_, dtype, _) in LAYERS.items():
            before = rec.received[(n, 1)][name].astype(np.float64)
            fedavg = (
                sum(
                    rec.weights[m] * (rec.trained[(m, 1)][name].astype(np.float64) - before)
                    for m in nodes
                )
                / total
            )
            xs = [
                rec.weights[m] * (rec.trained[(m, 1)][name] - before) * len(nodes) / total
                for m in nodes
            ]
            assert max(float(np.abs(x).max()) for x in xs) < 8.0  # nothing clipped
            slack = 4 * np.finfo(dtype).eps * (np.abs(after[name]).max() + 1)
            assert np.abs(after[name] - before - fedavg).max() <= step + slack, name
