"""Scale benchmark: VF2Boost from tens of thousands to a million rows, a process pool against
hefl.DaskExecutor, and a projection to more cores.

Synthetic vertical data of the shape production peers publish: 30 columns (the active party 15
with the labels, the passive party 15), 284,807 rows (the credit-card fraud set's shape) and
1,000,000 rows; labels from a noisy linear rule of features of both parties.

Parts (``--parts``, comma-separated; default ``sweep,dask,overhead``):

* ``sweep``: one OS process per party over ZeroMQ, each with its own process pool (the
  default setup), one tree per row count (``--rows``): s/tree, each party's peak RSS (its
  own process: the ciphertexts live there; pool workers hold one chunk at a time), bytes each
  way per tree; then a least-squares line of s/tree against rows (the slope in µs per row)
  and the 300,000 / 100,000 ratio when both were run.
* ``dask``: an encryption-bound tree (``--dask-rows`` rows, depth 1, no obfuscator pool: every
  encryption is a task) with the active party's work on the process pool, on a LocalCluster
  of 1 worker and of 2 workers (one thread each); both parties in one process.
* ``overhead``: Dask's scheduling overhead (round trip of an empty task one at a time, and
  throughput with 400 in flight) and the per-row kernel costs (encryption, histogram,
  decryption) measured in this process; from them a projection of s/tree at 8, 32 and 128
  cores, beside SecretFlow SGB's published figure (credit-card set, 100 trees in 106 s on 8
  cores over a LAN).

Run:  python benchmarks/scale.py                        # short default (1 tree per size)
      python benchmarks/scale.py --parts sweep --rows 284807,1000000
      python benchmarks/scale.py --bits 1024 --rows 5000,10000 --dask-rows 2000   # smoke
Results go to benchmarks/results/scale.json (merged with earlier parts of the same file).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

import hefl
from hefl.crypto import generate_keypair
from hefl.protocols.vf2boost import FitResult, VF2BoostConfig, active_party, passive_party
from hefl.protocols.vf2boost.budget import plan_bits
from hefl.protocols.vf2boost.encgh import build_histogram, decrypt_entries, encrypt_gh

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "scale.json"
NAMES = ["active", "passive1"]
SECRETFLOW = {
    "rows": 284_807,
    "columns": 30,
    "trees": 100,
    "seconds": 106.0,
    "cores": 8,
    "network": "LAN",
    "source": "SecretFlow SGB benchmark page",
}


def synthetic(rows: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Vertical data: 15 active + 15 passive float32 columns and 0/1 labels."""
    rng = np.random.default_rng(seed)
    Xa = rng.standard_normal((rows, 15), dtype=np.float32)
    Xp = rng.standard_normal((rows, 15), dtype=np.float32)
    logit = Xa[:, 0] - 0.7 * Xa[:, 3] + Xp[:, 1] + 0.5 * Xp[:, 4] * Xp[:, 5]
    y = (logit + rng.standard_normal(rows, dtype=np.float32) > 0).astype(np.float64)
    return [Xa, Xp], y


async def measured(party: hefl.Party, role: Any, **kw: Any) -> dict[str, Any]:
    """Run a VF2Boost role and add the party process's peak RSS (MB) and the CPU seconds of
    the party process itself (its event loop and I/O threads; its pool is not included)."""
    out = await role(party, **kw)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["peak_rss_mb"] = usage.ru_maxrss / 1024
    out["cpu_self_s"] = usage.ru_utime + usage.ru_stime
    return out


def roles(parts: list[np.ndarray], y: np.ndarray, cfg: VF2BoostConfig, kp: Any) -> dict:
    return {
        "active": functools.partial(
            measured,
            role=active_party,
            X=parts[0],
            y=y,
            cfg=cfg,
            passives=["passive1"],
            keypair=kp,
        ),
        "passive1": functools.partial(
            measured, role=passive_party, X=parts[1], cfg=cfg, active="active"
        ),
    }


def sweep_row(rows: int, cfg: VF2BoostConfig, kp: Any) -> dict[str, Any]:
    """One tree at ``rows`` rows, one process per party (each with its own pool)."""
    parts, y = synthetic(rows)
    start = time.perf_counter()
    result = hefl.run(roles(parts, y, cfg, kp), processes=True)
    res = FitResult.from_run(result, NAMES, time.perf_counter() - start)
    trees = len(res.tree_seconds)
    out = {
        "rows": rows,
        "seconds_per_tree": statistics.median(res.tree_seconds),
        "run_seconds": res.seconds,
        "peak_rss_mb": {n: round(result[n]["peak_rss_mb"], 1) for n in NAMES},
        "party_process_cpu_s": {n: round(result[n]["cpu_self_s"], 2) for n in NAMES},
        "bytes_active_to_passive_per_tree": res.bytes_sent["active"] / trees,
        "bytes_passive_to_active_per_tree": res.bytes_sent["passive1"] / trees,
    }
    print(json.dumps(out), flush=True)
    return out


def line_fit(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Least squares s/tree = a + b·rows (b in µs per row), and the 300k/100k ratio."""
    out: dict[str, Any] = {}
    if len(points) >= 2:
        x = np.array([p["rows"] for p in points], dtype=float)
        t = np.array([p["seconds_per_tree"] for p in points])
        b, a = np.polyfit(x, t, 1)
        out.update(intercept_s=float(a), slope_us_per_row=float(b) * 1e6)
    by = {p["rows"]: p["seconds_per_tree"] for p in points}
    if 100_000 in by and 300_000 in by:
        out["ratio_300k_over_100k"] = by[300_000] / by[100_000]
        out["ratio_bar"] = 3.3
    return out


def dask_cfg(bits: int) -> VF2BoostConfig:
    """An encryption-bound tree: one split, no obfuscator pool (every encryption a task)."""
    return VF2BoostConfig(
        n_estimators=1,
        max_depth=1,
        key_bits=bits,
        allow_insecure=bits < 2048,
        precompute=False,
        chunk_size=1024,
    )


def dask_compare(rows: int, bits: int, kp: Any, repeats: int) -> dict[str, Any]:
    """The active party's encryption on the pool (2 processes) and on 1 and 2 Dask workers,
    interleaved ``repeats`` times (medians: the machine is shared)."""
    from distributed import LocalCluster

    from hefl.protocols.vf2boost import fit

    parts, y = synthetic(rows, seed=1)
    cfg = dask_cfg(bits)
    times: dict[str, list[float]] = {
        "pool_2_processes": [],
        "dask_1_workers": [],
        "dask_2_workers": [],
    }
    trees, tasks = [], {}
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as one,
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as two,
    ):
        for _ in range(repeats):
            res = fit(parts, y, cfg, keypair=kp, executor="process", max_workers=2)
            times["pool_2_processes"].append(res.tree_seconds[0])
            trees.append(res.model.resolved_trees())
            for n, cluster in ((1, one), (2, two)):
                ex = hefl.DaskExecutor(cluster.scheduler_address)
                res = fit(parts, y, cfg, keypair=kp, executor={"active": ex})
                times[f"dask_{n}_workers"].append(res.tree_seconds[0])
                tasks[f"dask_{n}_workers_tasks"] = dict(ex.tasks_by_worker)
                trees.append(res.model.resolved_trees())
            print(json.dumps(times), flush=True)
    out: dict[str, Any] = {"rows": rows, "key_bits": bits, "repeats": repeats, "runs": times}
    out.update({f"{k}_s": statistics.median(v) for k, v in times.items()})
    out.update(tasks)
    out["speedup_2_over_1_workers"] = out["dask_1_workers_s"] / out["dask_2_workers_s"]
    out["speedup_bar"] = 1.6
    out["trees_identical"] = all(t == trees[0] for t in trees)
    return out


async def _encrypt_wall(address: str, kp: Any, chunks: int, rows: int) -> float:
    """Wall seconds to encrypt ``chunks`` chunks of g‖h through a DaskExecutor (after one
    warm-up task per worker builds the key holder's tables)."""
    pk, sk = kp
    plan = plan_bits(rows * chunks, 53, pk.n_bits, pack_gh=True, pack_histograms=True)
    rng = np.random.default_rng(0)
    g, h = rng.integers(-(2**40), 2**40, rows), rng.integers(0, 2**40, rows)
    ex = hefl.DaskExecutor(address)
    await ex.start("bench")
    try:
        job = (encrypt_gh, sk, g, h, plan, "packed", "djn")
        workers = await ex.worker_addresses()
        await asyncio.gather(
            *(ex.run_at(w, encrypt_gh, sk, g[:1], h[:1], plan, "packed", "djn") for w in workers)
        )
        t0 = time.perf_counter()
        await asyncio.gather(*(ex.run(*job) for _ in range(chunks)))
        return time.perf_counter() - t0
    finally:
        await ex.release()


def spin(seconds: float) -> float:
    """Burn ``seconds`` of CPU time; returns the wall time it took."""
    t0, w0 = time.process_time(), time.perf_counter()
    while time.process_time() - t0 < seconds:
        pass
    return time.perf_counter() - w0


async def _cores_available(address: str) -> float:
    """How many cores the workers got: CPU seconds done per wall second by two tasks that
    each burn 1 s of CPU at once (2.0 on an idle two-core machine)."""
    ex = hefl.DaskExecutor(address)
    await ex.start("bench")
    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(ex.run(spin, 1.0) for _ in range(2)))
        return 2.0 / (time.perf_counter() - t0)
    finally:
        await ex.release()


def encrypt_scaling(bits: int, kp: Any, repeats: int) -> dict[str, Any]:
    """Encryption alone (the key holder's bulk work) on 1 and 2 Dask workers, interleaved."""
    from distributed import LocalCluster

    chunks, rows = 16, 1024
    walls: dict[str, list[float]] = {"1": [], "2": []}
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as one,
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as two,
    ):
        cores = []
        for _ in range(repeats):
            for n, cluster in (("1", one), ("2", two)):
                wall = asyncio.run(_encrypt_wall(cluster.scheduler_address, kp, chunks, rows))
                walls[n].append(wall)
            cores.append(asyncio.run(_cores_available(two.scheduler_address)))
            print(json.dumps({**walls, "cores_available": cores}), flush=True)
    one_s, two_s = statistics.median(walls["1"]), statistics.median(walls["2"])
    return {
        "chunks": chunks,
        "rows_per_chunk": rows,
        "key_bits": bits,
        "runs": walls,
        "workers_1_s": one_s,
        "workers_2_s": two_s,
        "speedup_2_over_1": one_s / two_s,
        "cores_available_median": statistics.median(cores),
        "speedup_bar": 1.6,
    }


async def _overhead(address: str) -> dict[str, float]:
    ex = hefl.DaskExecutor(address)
    await ex.start("bench")
    try:
        await ex.run(int, 0)  # warm the connection and the workers
        lat = []
        for _ in range(40):
            t0 = time.perf_counter()
            await ex.run(int, 0)
            lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await asyncio.gather(*(ex.run(int, i) for i in range(400)))
        throughput = 400 / (time.perf_counter() - t0)
    finally:
        await ex.release()
    return {"task_round_trip_ms": statistics.median(lat) * 1e3, "tasks_per_second": throughput}


def kernels(bits: int, kp: Any) -> dict[str, float]:
    """Per-row costs (µs) of the three kernels, in this process, one core."""
    pk, sk = kp
    rows, features, width = 2048, 15, 32
    plan = plan_bits(rows, 53, pk.n_bits, pack_gh=True, pack_histograms=True)
    rng = np.random.default_rng(0)
    g = rng.integers(-(2**40), 2**40, rows)
    h = rng.integers(0, 2**40, rows)
    sk.obfuscators(1, method="djn")  # build the tables outside the timing
    t0 = time.process_time()
    enc = encrypt_gh(sk, g, h, plan, "packed", "djn")
    enc_us = (time.process_time() - t0) / rows * 1e6
    bins = rng.integers(0, width, (rows, features))
    t0 = time.process_time()
    hist = build_histogram(enc, bins, width)
    hist_us = (time.process_time() - t0) / rows * 1e6
    t0 = time.process_time()
    decrypt_entries(
        sk, hist, plan_bits(rows, 53, pk.n_bits, pack_gh=True, pack_histograms=False), len(hist)
    )
    dec_us = (time.process_time() - t0) / len(hist) * 1e6
    # the protocol sends histograms Horner-packed: plan.slots entries per ciphertext
    return {
        "encrypt_us_per_row": enc_us,
        "histogram_us_per_row_15_features": hist_us,
        "decrypt_us_per_ciphertext": dec_us,
        "entries_per_ciphertext": plan.slots,
    }


def projection(k: dict[str, float], o: dict[str, float], sweep: dict, rows: int) -> dict:
    """s/tree at 8, 32, 128 cores per party: the parallel work (encryption once per row,
    histograms of depth 5 ≈ one pass over the rows per layer, halved by sibling subtraction,
    decryption of the packed histograms) spread over the cores, plus the tasks' scheduling
    cost (the scheduler's measured throughput), plus the party processes' own work measured
    in the sweep, which does not shrink with more workers."""
    depth = 5
    parallel_us = k["encrypt_us_per_row"] + k["histogram_us_per_row_15_features"] * (
        1 + (depth - 1) / 2
    )
    # the work of the party processes themselves (event loops: (de)serialization, checks,
    # sums, binning), measured as their CPU time in the sweep: it does not shrink with more
    # workers; summed over both parties (conservative: they partly overlap)
    own = [
        sum(p["party_process_cpu_s"].values()) / p["rows"] * 1e6
        for p in sweep.get("points", [])
        if "party_process_cpu_s" in p
    ]
    serial_us = statistics.median(own) if own else float("nan")
    tasks = rows / 4096 * 2 + 2**depth * 2  # chunks (encrypt + histogram) and node tasks
    # decryption: every open node's 15 features × 32 bins (unpacked: an upper bound)
    entries = (2**depth - 1) * 15 * 32
    decrypt_s = entries / k["entries_per_ciphertext"] * k["decrypt_us_per_ciphertext"] / 1e6
    out = {
        "rows": rows,
        "parallel_us_per_row": parallel_us,
        "serial_us_per_row": serial_us,
        "tasks_per_tree": tasks,
        "decrypt_s_one_core": decrypt_s,
    }
    for cores in (8, 32, 128):
        work = (rows * parallel_us / 1e6 + decrypt_s) / cores
        sched = tasks / o["tasks_per_second"]
        out[f"cores_{cores}_s_per_tree"] = work + sched + rows * serial_us / 1e6
    out["secretflow_s_per_tree_8_cores"] = SECRETFLOW["seconds"] / SECRETFLOW["trees"]
    return out


def save(report: dict[str, Any]) -> None:
    """Write the results so far (a long run keeps what it measured if a later part fails)."""
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="dask,sweep,overhead")
    ap.add_argument("--rows", default="50000,100000,300000")
    ap.add_argument("--dask-rows", type=int, default=20000)
    ap.add_argument("--bits", type=int, default=2048)
    ap.add_argument("--trees", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds of the dask part")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    kp = generate_keypair(args.bits, allow_insecure=args.bits < 2048)
    report: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    report["machine"] = {"cpus": hefl.cpu_count(), "python": platform.python_version()}
    cfg = VF2BoostConfig(
        n_estimators=args.trees, key_bits=args.bits, allow_insecure=args.bits < 2048
    )
    if "sweep" in parts:
        done = {
            p["rows"]: p
            for p in report.get("sweep", {}).get("points", [])
            if p.get("key_bits") == args.bits
        }
        for rows in (int(r) for r in args.rows.split(",")):
            done[rows] = {**sweep_row(rows, cfg, kp), "key_bits": args.bits}
            points = sorted(done.values(), key=lambda p: p["rows"])
            report["sweep"] = {"points": points, "fit": line_fit(points)}
            save(report)
    save(report)
    if "dask" in parts:
        report["dask"] = dask_compare(args.dask_rows, args.bits, kp, args.repeats)
        save(report)
    if "encrypt" in parts:
        report["dask_encrypt"] = encrypt_scaling(args.bits, kp, args.repeats)
        save(report)
    if "overhead" in parts:
        from distributed import LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as c:
            over = asyncio.run(_overhead(c.scheduler_address))
        k = kernels(args.bits, kp)
        fit_ = report.get("sweep", {})
        report["overhead"] = {**over, **k}
        report["projection"] = {str(r): projection(k, over, fit_, r) for r in (284_807, 1_000_000)}
        report["secretflow"] = SECRETFLOW
    save(report)
    print(json.dumps({k: report[k] for k in report if k != "sweep"}, indent=1, default=str))
    print(json.dumps(report.get("sweep", {}).get("fit", {})))


if __name__ == "__main__":
    main()
