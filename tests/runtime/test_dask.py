"""hefl.DaskExecutor on a two-worker LocalCluster: the same trees and sums as the process
pool, work on both workers, a killed worker survived, and bad clusters refused."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import threading
import time

import numpy as np
import pytest

import hefl
from hefl.crypto import generate_keypair
from hefl.errors import ConfigError
from hefl.protocols.batchcrypt import BatchCryptConfig, aggregate_local
from hefl.protocols.batchcrypt.quantize import step
from hefl.protocols.vf2boost.config import VF2BoostConfig
from hefl.protocols.vf2boost.local import fit

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0"
    ) as c:
        yield c


@pytest.fixture(scope="module")
def kp():
    return generate_keypair(512, allow_insecure=True)


def data(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    Xa, Xp = rng.normal(size=(n, 3)), rng.normal(size=(n, 4))
    Xp[rng.random(size=Xp.shape) < 0.05] = np.nan
    y = ((Xa[:, 0] + Xp[:, 1] - 0.5 * Xp[:, 2] + rng.normal(0, 0.3, n)) > 0).astype(float)
    return [Xa, Xp], y


def cfg(**kw):
    base = {
        "n_estimators": 1,
        "max_depth": 3,
        "key_bits": 512,
        "allow_insecure": True,
        "chunk_size": 200,
    }
    base.update(kw)
    return VF2BoostConfig(**base)


def spy_payloads(monkeypatch):
    """Record every task's pickled arguments and result as they cross to the workers."""
    seen: list[bytes] = []
    real = hefl.DaskExecutor.run_at

    async def run_at(self, worker, fn, *args):
        seen.append(pickle.dumps(hefl._dask.portable(args)))
        out = await real(self, worker, fn, *args)
        seen.append(pickle.dumps(hefl._dask.portable(out)))
        return out

    monkeypatch.setattr(hefl.DaskExecutor, "run_at", run_at)
    return seen


@pytest.mark.parametrize("blaster", [True, False])
def test_trees_identical_to_process_pool(cluster, kp, monkeypatch, blaster):
    X_parts, y = data()
    c = cfg(blaster=blaster, n_estimators=2)
    want = fit(X_parts, y, c, keypair=kp, executor="process", max_workers=1).model
    seen = spy_payloads(monkeypatch)
    ex = hefl.DaskExecutor(cluster.scheduler_address)
    got = fit(X_parts, y, c, keypair=kp, executor={"active": ex, "passive1": ex}).model
    assert got.resolved_trees() == want.resolved_trees()
    np.testing.assert_array_equal(got.predict_proba(X_parts), want.predict_proba(X_parts))
    # both workers ran tasks, and no gmpy2 object crossed (ciphertexts go as bytes)
    assert sorted(ex.tasks_by_worker) == sorted(cluster.scheduler_info["workers"])
    assert all(count > 0 for count in ex.tasks_by_worker.values())
    assert seen and not any(b"gmpy2" in p for p in seen)
    assert hefl._executor.capacity(ex) == 2  # the workers' threads: what roles keep in flight


def test_batchcrypt_sums_exact(cluster):
    ex = hefl.DaskExecutor(cluster.scheduler_address)
    xs = [np.random.default_rng(i).uniform(-0.5, 0.5, 300) for i in range(3)]
    cfg = BatchCryptConfig(
        n_clients=3, mode="phe", chunk_size=64, key_bits=512, allow_insecure=True
    )
    got = aggregate_local(xs, cfg, executor=ex)
    assert np.allclose(got, np.sum(xs, axis=0), atol=1e-8)
    # packed lanes: within k quantization steps (stochastic rounding), as with any executor
    packed = BatchCryptConfig(
        n_clients=3, clipping=0.5, bits=16, chunk_size=8, key_bits=512, allow_insecure=True
    )
    got = aggregate_local(xs, packed, executor=ex)
    assert np.abs(got - np.sum(xs, axis=0)).max() <= 3 * step(0.5, 16)
    assert sum(ex.tasks_by_worker.values()) > 0


def test_killed_worker_is_recomputed(cluster, kp):
    X_parts, y = data(900, seed=1)
    c = cfg(n_estimators=2, max_depth=3, chunk_size=100)
    want = fit(X_parts, y, c, keypair=kp, executor="inline").model
    ex = hefl.DaskExecutor(cluster.scheduler_address)
    out: dict = {}

    def train():
        try:
            out["model"] = fit(X_parts, y, c, keypair=kp, executor={"active": ex, "passive1": ex})
        except BaseException as exc:  # handed to the assertion below
            out["error"] = exc

    thread = threading.Thread(target=train)
    thread.start()
    deadline = time.monotonic() + 30
    while sum(ex.tasks_by_worker.values()) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    victim = next(iter(cluster.workers.values()))
    os.kill(victim.process.process.pid, signal.SIGKILL)  # the nanny starts a new one
    thread.join(80)
    assert not thread.is_alive()
    assert "error" not in out, out.get("error")
    assert out["model"].model.resolved_trees() == want.resolved_trees()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_a_config_error_within_the_timeout():
    ex = hefl.DaskExecutor(f"tcp://127.0.0.1:{free_port()}", connect_timeout=2)
    X_parts, y = data(100)
    start = time.monotonic()
    with pytest.raises(hefl.PeerFailed) as info:
        fit(X_parts, y, cfg(), executor={"passive1": ex})
    assert time.monotonic() - start < 15
    cause = info.value.__cause__
    assert isinstance(cause, ConfigError), cause
    assert "cannot reach the Dask scheduler" in str(cause) and "'passive1'" in str(cause)


def test_other_hefl_version_on_the_workers_is_refused(cluster, monkeypatch):
    monkeypatch.setattr(hefl._dask, "__version__", "9.9.9")
    ex = hefl.DaskExecutor(cluster.scheduler_address)
    X_parts, y = data(100)
    with pytest.raises(hefl.PeerFailed) as info:
        fit(X_parts, y, cfg(), executor={"active": ex})
    text = str(info.value.__cause__)
    assert f"runs hefl {hefl.__version__}" in text and "this party runs hefl 9.9.9" in text


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_max_workers_must_be_positive(bad):
    with pytest.raises(ConfigError, match="max_workers"):
        hefl.DaskExecutor("tcp://127.0.0.1:8786", max_workers=bad)


def _decrypt(sk, cv):
    return sk.decrypt(cv)


def test_private_keys_false_refuses_the_key_holders_tasks(cluster, kp):
    pk, sk = kp
    cv = pk.encrypt([1, 2, 3])

    async def holder(party):
        return await party.offload(_decrypt, sk, cv)

    async def other(party):
        return None

    roles = {"holder": holder, "other": other}
    trusted = hefl.DaskExecutor(cluster.scheduler_address)
    assert hefl.run(roles, executor={"holder": trusted})["holder"] == [1, 2, 3]
    ex = hefl.DaskExecutor(cluster.scheduler_address, private_keys=False)
    with pytest.raises(hefl.PeerFailed) as info:
        hefl.run(roles, executor={"holder": ex})
    assert "private_keys=False" in str(info.value) and "'holder'" in str(info.value)


def test_bad_scheduler_argument():
    with pytest.raises(ConfigError, match=r"scheduler address or a distributed\.Client"):
        hefl.DaskExecutor(8786)


def test_passive_histograms_run_on_row_shards(cluster, kp, monkeypatch):
    from hefl.crypto import CipherVector
    from hefl.protocols.vf2boost import shards
    from hefl.protocols.vf2boost.encgh import EncGH

    calls: list[tuple[str, tuple]] = []
    placed: list[type] = []
    real_run, real_scatter = hefl.DaskExecutor.run_at, hefl.DaskExecutor.scatter_to

    async def run_at(self, worker, fn, *args):
        calls.append((fn.__name__, args))
        return await real_run(self, worker, fn, *args)

    async def scatter_to(self, data, worker):
        placed.append(type(data))
        return await real_scatter(self, data, worker)

    monkeypatch.setattr(hefl.DaskExecutor, "run_at", run_at)
    monkeypatch.setattr(hefl.DaskExecutor, "scatter_to", scatter_to)
    X_parts, y = data()
    c = cfg(n_estimators=2)
    want = fit(X_parts, y, c, keypair=kp, executor="inline").model
    ex = hefl.DaskExecutor(cluster.scheduler_address)
    got = fit(X_parts, y, c, keypair=kp, executor={"passive1": ex}).model
    assert got.resolved_trees() == want.resolved_trees()
    names = [name for name, _ in calls]
    assert "_hist_job" not in names  # no histogram went the plain way
    assert names.count("piece_histogram") >= 2 * 3  # 600 rows in 200-row chunks, 2 trees
    assert names.count("shard_histogram") > 0
    # the bins went once (one shard per worker); per tree only ciphertext pieces travel
    assert placed.count(np.ndarray) == 2 and set(placed) == {np.ndarray, EncGH}
    for name, args in calls:
        if name == "shard_histogram":  # row indices and references, never ciphertexts
            assert not any(isinstance(a, EncGH | CipherVector) for a in args)
    assert shards.ShardedHistograms  # the module the passive party used


def _slow(seconds):
    time.sleep(seconds)
    return seconds


def test_cluster_losing_every_worker_fails_the_party_naming_it():
    with distributed.LocalCluster(
        n_workers=1, processes=True, threads_per_worker=1, dashboard_address=":0"
    ) as small:
        ex = hefl.DaskExecutor(small.scheduler_address, lost_timeout=2)
        lost = []

        async def busy(party):
            return await party.offload(_slow, 30)

        async def other(party):
            return None

        def scale_down():
            while not ex._seen:
                time.sleep(0.05)
            lost.extend(ex._seen)
            time.sleep(0.5)
            small.scale(0)

        threading.Thread(target=scale_down, daemon=True).start()
        start = time.monotonic()
        with pytest.raises(hefl.PeerFailed) as info:
            hefl.run({"busy": busy, "other": other}, executor={"busy": ex})
        assert time.monotonic() - start < 20
    assert info.value.peer == "busy"
    assert "no worker for 2 s" in str(info.value) and lost[0] in str(info.value)


def test_hefl_party_dask_flag(cluster, tmp_path, free_ports):
    import subprocess
    import sys

    ports = free_ports(2)
    lines = ["[federation]", 'active = "bank"']
    for name, port in zip(["bank", "shop"], ports, strict=True):
        lines += [f"[parties.{name}]", f'address = "tcp://127.0.0.1:{port}"']
    (tmp_path / "federation.toml").write_text("\n".join(lines) + "\n")
    flags = [
        "--config",
        "federation.toml",
        "--protocol",
        "vf2boost",
        "--rows",
        "800",
        "--trees",
        "1",
        "--depth",
        "2",
        "--bits",
        "512",
        "--insecure",
        "--json",
    ]
    dask = ["--dask", cluster.scheduler_address]
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "hefl.cli", "party", *flags, "--name", name, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        for name, extra in (("bank", dask), ("shop", dask))
    }
    outs = {name: p.communicate(timeout=80) for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, outs[name][1]
    report = json.loads(outs["bank"][0])
    assert report["party"] == "bank" and report["test_auc"] > 0.5
